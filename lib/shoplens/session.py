"""The one place that builds a SparkSession, for jobs and tests alike.

Everything Spark needs comes from :func:`spark_conf`, which ``shoplens.submit`` also turns into
spark-submit arguments, so a job started from Python and one started by spark-submit (by hand or by
Airflow) run with the same settings.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from shoplens import jvm_archive
from shoplens.catalog import register_tables
from shoplens.config import Config

log = logging.getLogger(__name__)

DELTA_VERSION = "4.0.0"
DELTA_JARS = (f"delta-spark_2.13-{DELTA_VERSION}.jar", f"delta-storage-{DELTA_VERSION}.jar")
REQUIRED_JAVA_MAJOR = 17
# spark.jit: c1 (config.JIT_MODES).
C1_ONLY = "-XX:TieredStopAtLevel=1"

# Settings that only take effect when they reach the JVM at start-up (spark-submit or gateway launch).
_LAUNCH_ONLY = ("spark.driver.memory", "spark.driver.cores", "spark.driver.extraJavaOptions", "spark.jars")


class EnvironmentNotReady(RuntimeError):
    """Something the session needs is missing on this machine; the message names the fix."""


def delta_jar_paths(cfg: Config) -> list[str]:
    """Returns the Delta JARs to put on ``spark.jars``, or [] when the cluster provides them."""
    if not cfg.paths.jars_dir:
        return []
    jars = [Path(cfg.paths.jars_dir) / name for name in DELTA_JARS]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        raise EnvironmentNotReady(
            f"Delta Lake JAR(s) missing: {', '.join(missing)}. Run `make setup` to fetch them once "
            "through Maven, or set paths.jars_dir to \"\" if the cluster provides Delta."
        )
    return [str(j) for j in jars]


def spark_conf(cfg: Config) -> dict[str, str]:
    """Returns every Spark setting a ShopLens job runs with (Delta, catalog, time zone, config)."""
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Tables are path-based Delta tables registered per session: no Derby metastore to share.
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.warehouse.dir": _join(cfg.paths.warehouse, "_catalog"),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -Dderby.system.home=/tmp",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        # Analysts read gold tables without Spark (deltalake, DuckDB, Polars): keep the protocol
        # readable by them.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    }
    jars = delta_jar_paths(cfg)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    conf.update(cfg.spark.conf)
    driver_options = [jvm_archive.driver_options(cfg)]
    if cfg.spark.executor_class_archive:
        _append_option(conf, "spark.executor.extraJavaOptions", driver_options[0])
    if cfg.spark.jit == "c1":
        driver_options.append(C1_ONLY)
        _append_option(conf, "spark.executor.extraJavaOptions", C1_ONLY)
    _append_option(conf, "spark.driver.extraJavaOptions", " ".join(o for o in driver_options if o))
    return conf


def _append_option(conf: dict[str, str], key: str, option: str) -> None:
    if option:
        conf[key] = f"{conf.get(key, '')} {option}".strip()


def build_session(cfg: Config, app_name: str, register: bool = True) -> SparkSession:
    """Returns the SparkSession for a job: Delta on, UTC, and with ``register`` every existing table
    registered as bronze/silver/gold/ops.<name>.

    Started from Python, it launches the JVM with the configured master, memory and JARs. Started
    by spark-submit, the JVM already runs with the submit arguments and only the SQL settings apply.
    Jobs read and write their tables by path and register the tables they create or overwrite
    (the catalog is in-memory, one per process), so a job's own session needs no registration: it
    read every table's Delta log, about 5 s of a spark-submitted job's start (docs/BENCHMARKS.md).
    Sessions that query by name (``shoplens.sql``, the local pipeline, tests) register.
    """
    conf = spark_conf(cfg)
    launched_by_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(app_name)
    if not launched_by_submit:
        check_java()
        builder = builder.master(cfg.spark.master)
        # Python workers (UDFs, Horovod's training processes) run this interpreter, with this
        # environment's packages, unless PYSPARK_PYTHON names another; Spark's own default is the
        # `python3` on PATH, which may lack them.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in conf.items():
        if launched_by_submit and key in _LAUNCH_ONLY:
            continue
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # A warm session (the local pipeline runs every job's main in one) registered every existing
    # table when it first started on this warehouse; tables created since were registered by their
    # first write. Looking at every table again at each job's start cost a Delta log read per table.
    marker = "shoplens.registered.warehouse"
    if register and spark.conf.get(marker, None) != cfg.paths.warehouse:
        register_tables(spark, cfg)
        spark.conf.set(marker, cfg.paths.warehouse)
    return spark


def check_java() -> None:
    """Fails with the fix when ``java`` is missing or not the version Spark 4 needs."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise EnvironmentNotReady(
            f"Java {REQUIRED_JAVA_MAJOR} not found (JAVA_HOME={java_home!r}, no java on PATH). "
            "Install OpenJDK 17 (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    major = _java_major(out)
    if major is None or major < REQUIRED_JAVA_MAJOR:
        raise EnvironmentNotReady(
            f"{java} reports {out.splitlines()[0] if out else 'nothing'}; Spark 4 needs Java "
            f"{REQUIRED_JAVA_MAJOR} or newer. Point JAVA_HOME at a JDK 17."
        )


def _java_major(version_output: str) -> int | None:
    for token in version_output.replace('"', " ").split():
        head = token.split(".")[0].split("-")[0]
        if head.isdigit() and "." in token:
            major = int(head)
            return int(token.split(".")[1]) if major == 1 else major
    return None


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])
