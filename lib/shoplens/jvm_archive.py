"""A class-data-sharing archive of the classes a ShopLens driver loads, made once by ``make setup``.

A spark-submitted job starts a new JVM, and a new JVM loads and verifies Spark's and Delta's
classes one by one from their JARs before it plans anything: on the 2-core machines here a
job's first Spark job came 15 s after its start, and a small job that runs in 4 s in a warm session
took 30 s (docs/BENCHMARKS.md). The JDK's dynamic class-data sharing (JEP 350, JDK 13+) dumps the
classes a run loaded, already parsed and verified, into an archive that later JVMs map instead.

``python -m shoplens.jvm_archive`` spark-submits :func:`warm_up` (a small Delta workload: create,
append, replace a slice, MERGE, DELETE, time travel, joins, windows, an ML fit) with
``-XX:ArchiveClassesAtExit``, into ``paths.jvm_archive``. Every driver then starts with
``-XX:SharedArchiveFile`` (:func:`driver_options`) when that file exists on the machine that starts
it. The JVM checks the archive against its own version and class path and, with ``-Xshare:auto``,
ignores one that does not match (a warning line) or is missing: the archive makes starts faster and
never makes one fail. Executors map it only with ``spark.executor_class_archive`` (the standalone
cluster on 127.0.0.1, whose executors run on this machine with the driver's class path). Rebuild it
after changing Java or Spark: ``rm -f .jvm/*.jsa .stamps/jvm-archive && make setup`` (the Makefile
rebuilds it when the Spark lock file changes).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from shoplens.config import Config

log = logging.getLogger(__name__)

_WARM_UP_FLAG = "--warm-up-in"


def driver_options(cfg: Config) -> str:
    """The driver JVM options that map the archive, or "" when there is none on this machine."""
    archive = cfg.paths.jvm_archive
    if not archive or "://" in archive or not Path(archive).is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} -Xshare:auto"


def build(cfg: Config, out: Path) -> None:
    """Dumps the archive of a warm-up run into ``out`` (through ``out``.tmp: a failed dump leaves
    the previous archive, or none, in place)."""
    from shoplens import submit
    from shoplens.session import spark_conf

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    partial.unlink(missing_ok=True)
    conf = spark_conf(dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, jvm_archive="")))
    conf["spark.driver.extraJavaOptions"] = (
        conf.get("spark.driver.extraJavaOptions", "") + f" -XX:ArchiveClassesAtExit={partial}"
    ).strip()
    command = [submit.spark_submit_path(), "--master", "local[2]", *submit.conf_args(conf)]
    with tempfile.TemporaryDirectory(prefix="shoplens-jvm-archive-") as folder:
        command += [__file__, _WARM_UP_FLAG, folder]
        env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not partial.is_file():
        raise RuntimeError(f"the warm-up run failed (exit {done.returncode}): {done.stderr[-2000:]}")
    partial.replace(out)
    log.info("JVM class archive written to %s (%d MB)", out, out.stat().st_size // 2**20)


def warm_up(folder: str) -> None:
    """What a nightly driver does, in miniature, so that the archive holds the classes it loads."""
    from delta.tables import DeltaTable
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    spark = SparkSession.builder.getOrCreate()
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=n) for n in range(3)]
    rows = [
        (f"u{n % 7}", f"i{n % 11}", "view" if n % 3 else "purchase", float(n % 5), days[n % 3],
         dt.datetime(2024, 1, 1 + n % 3, n % 24, n % 60), f'{{"n": {n}, "tags": ["a", "b"]}}')
        for n in range(200)
    ]
    schema = "user string, item string, kind string, price double, day date, ts timestamp, raw string"
    events = spark.createDataFrame(rows, schema)
    table = f"{folder}/events"
    events.write.format("delta").partitionBy("day").save(table)
    parsed = events.withColumn("doc", F.from_json("raw", "n long, tags array<string>"))
    (
        events.where(F.col("day") == F.lit(days[0])).withColumn("price", F.col("price") + 1)
        .write.format("delta").mode("overwrite")
        .option("replaceWhere", f"day >= DATE'{days[0]}' AND day <= DATE'{days[0]}'").save(table)
    )
    appended = events.limit(10).write.format("delta").mode("append")
    appended.option("txnAppId", "warm-up").option("txnVersion", 0).save(table)
    target = DeltaTable.forPath(spark, table)
    (
        target.alias("t").merge(events.limit(20).alias("s"), "t.user = s.user AND t.ts = s.ts")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    )
    target.delete(F.col("kind") == "nothing")
    target.history(5).collect()
    read = spark.read.format("delta").option("versionAsOf", 1).load(table).where(F.col("day") >= F.lit(days[1]))
    by_user = Window.partitionBy("user").orderBy("ts")
    sessions = (
        read.withColumn("gap", F.col("ts").cast("long") - F.lag(F.col("ts").cast("long")).over(by_user))
        .withColumn("n", F.row_number().over(by_user))
        .groupBy("user").agg(F.count("*").alias("events"), F.collect_list("item").alias("items"),
                             F.approx_count_distinct("item").alias("distinct_items"), F.max("gap").alias("gap"))
    )
    joined = sessions.join(F.broadcast(parsed.select("user", "doc.n").distinct()), "user", "left")
    joined.cache().count()
    joined.write.format("delta").mode("overwrite").save(f"{folder}/sessions")
    features = VectorAssembler(inputCols=["events", "distinct_items"], outputCol="raw_features")
    labelled = sessions.withColumn("label", (F.col("events") > 10).cast("double")).fillna(0)
    model = Pipeline(stages=[
        features, StandardScaler(inputCol="raw_features", outputCol="features"), LogisticRegression(maxIter=3)
    ]).fit(labelled)
    model.transform(labelled).select("probability").collect()
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    from shoplens import cli

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_WARM_UP_FLAG]:
        warm_up(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_env_args(parser)
    args = cli.parse(parser, argv)
    cfg = cli.load_job_config(args)
    if not cfg.paths.jvm_archive:
        log.info("paths.jvm_archive is empty: no JVM class archive")
        return 0
    build(cfg, Path(cfg.paths.jvm_archive))
    return 0


if __name__ == "__main__":
    sys.exit(main())
