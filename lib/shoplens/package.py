"""``make package``: everything spark-submit needs on a cluster whose nodes lack our Python packages.

Builds ``dist/``:

- ``shoplens.zip``: the ``shoplens`` package, for ``--py-files``;
- ``jobs/``: the thin entry points spark-submit runs;
- ``conf/``: the configuration (the jobs read ``--conf-dir``);
- ``.jars/``: Delta Lake's JARs (``paths.jars_dir: .jars`` resolves here, next to ``conf/``);
- ``shoplens-env.tar.gz``: a packed Python environment (venv-pack) with pyspark, TensorFlow and
  Horovod, for ``--archives ...#environment``; executors run ``./environment/bin/python``;
- ``submit.json``: the :class:`shoplens.submit.SubmitSpec` of the ``cluster`` environment, read by
  ``python -m shoplens.submit --package dist`` and by the Airflow DAG.

The packed environment is built from ``requirements/spark.lock`` plus the Horovod wheel in a venv of
its own (``build/pack-venv``), never from the developer's ``.venv`` (which has ``shoplens``
installed in editable mode). venv-pack links ``bin/python`` to the interpreter the venv was made
from, so that interpreter must exist at the same path on every node (true on this one-machine
cluster; on a real cluster build the package on an image identical to the nodes', or use PEX).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from shoplens.config import load_config
from shoplens.submit import SUBMIT_JSON, SubmitSpec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ENV_ARCHIVE = "shoplens-env.tar.gz"
ENV_ALIAS = "environment"
PACKED_PYTHON = f"./{ENV_ALIAS}/bin/python"
# Executors run inside a Spark JVM that has its own JARs: pyspark's ~400 MB of JARs stay out of the
# archive (the client-mode driver runs from the unpacked build/pack-venv, which keeps them).
PACK_EXCLUDES = ("lib/python3.11/site-packages/pyspark/jars/*",)


def build_zip(package_dir: Path, out: Path) -> Path:
    """Zips the ``shoplens`` package (sources and data, no caches) for ``--py-files``."""
    out.unlink(missing_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package_dir.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                # A fixed timestamp keeps the zip byte-identical across builds of the same sources.
                info = zipfile.ZipInfo(str(path.relative_to(package_dir.parent)), (2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return out


def _lock_digest(requirements: Path, wheels: list[Path]) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    for item in [*(w.name for w in wheels), *PACK_EXCLUDES]:
        digest.update(item.encode())
    return digest.hexdigest()


def build_env_archive(build_dir: Path, python: str) -> Path:
    """Builds the clean environment and packs it with venv-pack into ``build_dir``, or reuses the
    archive built from the same lock file and wheels; returns the archive."""
    requirements = ROOT / "requirements" / "spark.lock"
    wheels = sorted((ROOT / ".wheels").glob("horovod-*.whl"))
    if not wheels:
        raise FileNotFoundError("no Horovod wheel in .wheels/: run `make setup` first")
    venv = build_dir / "pack-venv"
    out = build_dir / ENV_ARCHIVE
    stamp = build_dir / "pack-venv.sha256"
    digest = _lock_digest(requirements, wheels)
    if not (stamp.is_file() and stamp.read_text() == digest and out.is_file()):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        subprocess.run([*pip, "--no-deps", *map(str, wheels)], check=True)
        out.unlink(missing_ok=True)
        excludes = [arg for pattern in PACK_EXCLUDES for arg in ("--exclude", pattern)]
        subprocess.run(
            [str(Path(sys.executable).parent / "venv-pack"), "--prefix", str(venv), "--output", str(out),
             "--compress-level", "1", "--quiet", *excludes],
            check=True,
        )
        stamp.write_text(digest)
    return out


def build(dist: Path, build_dir: Path, python: str, overrides: Sequence[str] = ()) -> SubmitSpec:
    """Builds ``dist/`` (see the module docstring) and returns the SubmitSpec it wrote; ``overrides``
    (``key.path=value``) apply to the cluster configuration its Spark settings come from."""
    from shoplens.session import spark_conf

    dist.mkdir(parents=True, exist_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("jobs", "conf", ".jars"):
        shutil.rmtree(dist / sub, ignore_errors=True)
    shutil.copytree(ROOT / "jobs", dist / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", dist / "conf")
    shutil.copytree(ROOT / ".jars", dist / ".jars")
    zip_path = build_zip(ROOT / "lib" / "shoplens", dist / "shoplens.zip")
    archive = _link_or_copy(build_env_archive(build_dir, python), dist / ENV_ARCHIVE)

    cfg = load_config("cluster", dist / "conf", list(overrides))
    conf = spark_conf(cfg)
    driver_python = str(build_dir / "pack-venv" / "bin" / "python")
    conf["spark.pyspark.python"] = PACKED_PYTHON
    # spark.pyspark.python would also apply to the client-mode driver, which has no ./environment.
    conf["spark.pyspark.driver.python"] = driver_python
    # Spark puts --py-files on its Python workers' sys.path at run time, not in their PYTHONPATH;
    # processes those workers start (Horovod's training processes) only inherit PYTHONPATH. The
    # zip is fetched into the executor's working directory, where this relative entry resolves.
    conf["spark.executorEnv.PYTHONPATH"] = zip_path.name
    spec = SubmitSpec(
        master=cfg.spark.master,
        env="cluster",
        conf_dir=str(dist / "conf"),
        jobs_dir=str(dist / "jobs"),
        conf=conf,
        py_files=(str(zip_path),),
        archives=(f"{archive}#{ENV_ALIAS}",),
        # Client mode: the driver runs here, from the same clean environment, unpacked.
        driver_python=driver_python,
    )
    (dist / SUBMIT_JSON).write_text(spec.to_json())
    log.info("package ready in %s", dist)
    return spec


def _link_or_copy(source: Path, target: Path) -> Path:
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)
    return target


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="build dist/ for spark-submit on a cluster")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build")
    parser.add_argument("--python", default=sys.executable, help="interpreter the packed venv is made from")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a cluster configuration override for the packaged Spark settings (repeatable)")
    args = parser.parse_args(argv)
    python = str(Path(args.python).resolve()) if "/" in args.python else args.python
    spec = build(args.out.resolve(), args.build_dir.resolve(), _base_interpreter(python), args.overrides)
    print(spec.to_json())
    return 0


def _base_interpreter(python: str) -> str:
    """The base interpreter behind a venv's python (venv-pack links to it)."""
    out = subprocess.run(
        [python, "-c", "import sys; print(sys._base_executable)"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
