"""ShopLens: nightly PySpark batch jobs for e-commerce behaviour analytics."""

import sys
from pathlib import Path

__version__ = "0.1.0"


def _installed_spark_zips(path: list[str]) -> list[str]:
    """The entries of ``path`` that are the zips inside an installed ``pyspark`` package.

    spark-submit puts ``$SPARK_HOME/python/lib/pyspark.zip`` and its py4j zip first on the driver's
    path. Python compiles every module it imports from a zip at each start (it cannot cache the
    bytecode there): about 200 modules, 0.5 s of every spark-submitted job's start. When Spark is the
    pip-installed package (``SPARK_HOME`` is ``site-packages/pyspark``, as ``make setup`` makes it),
    the zips hold the very code of the package beside them, whose compiled modules Python keeps.
    """
    found = []
    for entry in path:
        zipped = Path(entry)
        package = zipped.parents[2] if len(zipped.parents) > 2 else None
        if (
            zipped.suffix == ".zip"
            and zipped.parent.name == "lib"
            and package is not None
            and package.name == "pyspark"
            and (package / "__init__.py").is_file()
            and (zipped.name == "pyspark.zip" or _same_py4j(zipped.name))
        ):
            found.append(entry)
    return found


def _same_py4j(zip_name: str) -> bool:
    """Whether ``zip_name`` (``py4j-<version>-src.zip``) is the py4j version installed beside."""
    from importlib import metadata

    try:
        return zip_name == f"py4j-{metadata.version('py4j')}-src.zip"
    except metadata.PackageNotFoundError:
        return False


if "pyspark" not in sys.modules:
    for _entry in _installed_spark_zips(sys.path):
        sys.path.remove(_entry)
