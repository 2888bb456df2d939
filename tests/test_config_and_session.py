"""Configuration loading and the environment checks of the session factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shoplens.config import ConfigError, load_config
from shoplens.session import EnvironmentNotReady, check_java, delta_jar_paths, spark_conf
from shoplens.submit import SubmitSpec, command, spec_from_clone

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_overlay_and_overrides_merge_key_by_key():
    cfg = load_config("cluster", CONF, ["spark.conf.spark.driver.memory=3g", "horovod.num_proc=4"])
    assert cfg.spark.master == "spark://127.0.0.1:7077"
    assert cfg.spark.conf["spark.driver.memory"] == "3g"
    assert cfg.spark.conf["spark.cores.max"] == "2"  # from the overlay
    assert cfg.spark.conf["spark.ui.enabled"] == "false"  # from the base, YAML bool kept as Spark's string
    assert cfg.horovod.num_proc == 4
    assert cfg.paths.warehouse == str(CONF.parent / "data" / "warehouse")


def test_remote_paths_are_kept_as_given():
    cfg = load_config("cluster", CONF, ["paths.warehouse=s3a://bucket/shoplens/warehouse", "paths.jars_dir="])
    assert cfg.paths.warehouse == "s3a://bucket/shoplens/warehouse"
    assert delta_jar_paths(cfg) == []
    assert "spark.jars" not in spark_conf(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["shop.currency=EUR"], r"shop: unknown key\(s\) currency"),
        (["horovod.num_proc=two"], r"horovod.num_proc: expected a number"),
        (["horovod.num_proc=1.5"], r"horovod.num_proc: expected an integer"),
        (["horovod.use_gpu=1"], r"horovod.use_gpu: expected true or false"),
        (["nonsense"], r"not of the form key.path=value"),
        (["spark.jit=c2"], r"spark.jit: one of tiered, c1, got 'c2'"),
    ],
)
def test_bad_configuration_is_rejected_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("local", CONF, overrides)


def test_missing_key_and_unknown_environment_are_rejected(tmp_path):
    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text().replace("  timezone: UTC\n", "  {}\n"))
    (tmp_path / "local.yaml").write_text("")
    with pytest.raises(ConfigError, match="missing configuration key shop.timezone|shop: expected a mapping"):
        load_config("local", tmp_path)
    with pytest.raises(ConfigError, match="unknown environment 'prod'"):
        load_config("prod", CONF)
    with pytest.raises(ConfigError, match=r"configuration file not found: .*/nowhere/base.yaml"):
        load_config("local", tmp_path / "nowhere")


def test_missing_delta_jars_name_the_file_and_the_fix(tmp_path):
    cfg = load_config("local", CONF, [f"paths.jars_dir={tmp_path}"])
    with pytest.raises(EnvironmentNotReady, match=r"delta-spark_2.13-4.0.0.jar.*make setup"):
        delta_jar_paths(cfg)


def test_wrong_java_names_the_fix(tmp_path, monkeypatch):
    fake_java = tmp_path / "bin" / "java"
    fake_java.parent.mkdir()
    fake_java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake_java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(EnvironmentNotReady, match=r"Spark 4 needs Java 17.*JAVA_HOME"):
        check_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "absent"))
    with pytest.raises(EnvironmentNotReady, match=r"Java 17 not found.*openjdk-17"):
        check_java()


def test_submit_command_carries_the_session_settings_and_the_run_date():
    cfg = load_config("cluster", CONF, ["paths.warehouse=/tmp/wh"])
    spec = spec_from_clone(cfg, CONF, CONF.parent, ("paths.warehouse=/tmp/wh",))
    argv = command(spec, "ingest_landing", "2024-01-02")
    assert argv[:5] == ["spark-submit", "--master", "spark://127.0.0.1:7077", "--deploy-mode", "client"]
    assert argv[argv.index("--jars") + 1] == spark_conf(cfg)["spark.jars"]
    assert argv[argv.index("--driver-memory") + 1] == "2g"
    assert "spark.sql.session.timeZone=UTC" in argv
    assert argv[-9:] == [
        str(CONF.parent / "jobs" / "ingest_landing.py"),
        "--run-date", "2024-01-02", "--env", "cluster", "--conf-dir", str(CONF), "--set", "paths.warehouse=/tmp/wh",
    ]
    assert SubmitSpec.from_json(spec.to_json()) == dataclasses.replace(spec, conf=dict(spec.conf))


def test_a_jobs_session_registers_no_table_and_a_query_session_every_existing_one(spark, fresh_cfg, monkeypatch):
    """Jobs read by path (a spark-submitted job's catalog dies with it): their session skips the
    registration, one Delta log read per table. Sessions that query by name register."""
    import os
    import sys

    from shoplens import catalog
    from shoplens.jobs import build_silver_items
    from shoplens.session import build_session

    spec = catalog.SILVER_ITEMS
    location = spec.location(fresh_cfg)
    spark.createDataFrame([], spec.schema).write.format("delta").save(location)
    # Set first, so that teardown restores the variable whether or not it was set before.
    monkeypatch.setenv("PYSPARK_PYTHON", "unset by this test")
    monkeypatch.delenv("PYSPARK_PYTHON")
    assert build_session(fresh_cfg, "a job", register=False) is spark
    assert spark.conf.get(f"shoplens.registered.{spec.name}", None) != location
    # A job's main (cli.run_job) builds such a session: a night without catalogue lines writes only
    # its run record, and registers nothing else.
    argv = ["--run-date", "2024-01-01", "--env", "local", "--conf-dir", str(CONF)]
    for item in (
        f"paths.warehouse={fresh_cfg.paths.warehouse}", f"paths.landing={fresh_cfg.paths.landing}",
        "spark.conf.spark.sql.shuffle.partitions=2", "spark.conf.spark.default.parallelism=2",
    ):
        argv += ["--set", item]
    assert build_silver_items.main(argv) == 0
    assert spark.conf.get(f"shoplens.registered.{spec.name}", None) != location
    # Started from Python, Spark's Python workers run this interpreter unless told otherwise.
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    build_session(fresh_cfg, "a query")
    assert spark.conf.get(f"shoplens.registered.{spec.name}", None) == location
    assert spark.table(spec.name).count() == 0


def test_a_pinned_read_keeps_its_version_and_its_cache_through_a_write_to_its_table(spark, fresh_cfg):
    """io.read_table reads the table as of its version at the read: later writes to the table are
    not seen, and Spark's re-caching after a write (recacheByPlan of the written relation) leaves a
    frame cached from such a read alone. A plain read is re-planned and emptied instead."""
    import datetime as dt

    from pyspark.sql import functions as F

    from shoplens import catalog
    from shoplens.io import TableNotFound, read_table, replace_slice

    spec = catalog.USER_INDEX
    location = spec.location(fresh_cfg)
    with pytest.raises(TableNotFound, match="no Delta table"):
        read_table(spark, location)
    rows = spark.createDataFrame([("landing", "u1", 0, dt.date(2024, 1, 1))], spec.schema)
    replace_slice(rows, spec, fresh_cfg, {"dataset": "landing"})
    assert catalog.table_version(spark, location) == 0

    def is_loaded(df) -> bool:
        plan = df._jdf.queryExecution().withCachedData()
        cached = [node for node in _nodes(plan) if node.nodeName() == "InMemoryRelation"]
        return bool(cached) and cached[0].cacheBuilder().isCachedColumnBuffersLoaded()

    pinned = read_table(spark, location).where(F.col("dataset") == "landing").persist()
    plain = spark.read.format("delta").load(location).where(F.col("dataset") == "other").persist()
    try:
        assert pinned.count() == 1 and plain.count() == 0
        assert is_loaded(pinned) and is_loaded(plain)
        replace_slice(rows.limit(0), spec, fresh_cfg, {"dataset": "landing"})  # empties the slice: version 1
        assert catalog.table_version(spark, location) == 1
        assert is_loaded(pinned)
        assert not is_loaded(plain)  # re-planned by the write, to be recomputed on its next use
        assert pinned.count() == 1  # version 0, from the cache it kept
        assert read_table(spark, location).count() == 0
    finally:
        pinned.unpersist()
        plain.unpersist()


def _nodes(plan) -> list:
    found, stack = [], [plan]
    while stack:
        node = stack.pop()
        found.append(node)
        children = node.children()
        stack.extend(children.apply(i) for i in range(children.size()))
    return found


def test_the_c1_jit_reaches_the_driver_and_the_executors_after_their_own_options():
    custom = ["spark.conf.spark.driver.extraJavaOptions=-Dmine=1", "spark.conf.spark.executor.extraJavaOptions=-Dtheirs=2"]
    tiered = spark_conf(load_config("cluster", CONF, ["paths.jvm_archive=", *custom]))
    assert (tiered["spark.driver.extraJavaOptions"], tiered["spark.executor.extraJavaOptions"]) == ("-Dmine=1", "-Dtheirs=2")
    c1 = spark_conf(load_config("cluster", CONF, ["paths.jvm_archive=", *custom, "spark.jit=c1"]))
    assert c1["spark.driver.extraJavaOptions"] == "-Dmine=1 -XX:TieredStopAtLevel=1"
    assert c1["spark.executor.extraJavaOptions"] == "-Dtheirs=2 -XX:TieredStopAtLevel=1"


def test_the_jvm_class_archive_is_used_only_where_the_file_is(tmp_path):
    archive = tmp_path / "spark-classes.jsa"
    custom = "spark.conf.spark.driver.extraJavaOptions=-Dmine=1"
    cfg = load_config("local", CONF, [f"paths.jvm_archive={archive}", custom])
    assert spark_conf(cfg)["spark.driver.extraJavaOptions"] == "-Dmine=1"  # no file: as configured
    archive.write_bytes(b"made by make setup")
    options = spark_conf(cfg)["spark.driver.extraJavaOptions"]
    assert options == f"-Dmine=1 -XX:SharedArchiveFile={archive} -Xshare:auto"  # auto: a stale file is ignored
    assert "SharedArchiveFile" not in spark_conf(cfg).get("spark.executor.extraJavaOptions", "")
    # Executors map it only where they run on this machine: the standalone cluster on 127.0.0.1.
    on_this_machine = spark_conf(load_config("cluster", CONF, [f"paths.jvm_archive={archive}"]))
    assert on_this_machine["spark.executor.extraJavaOptions"].endswith(f"-XX:SharedArchiveFile={archive} -Xshare:auto")
    elsewhere = load_config("cluster", CONF, [f"paths.jvm_archive={archive}", "spark.executor_class_archive=false"])
    assert "SharedArchiveFile" not in spark_conf(elsewhere)["spark.executor.extraJavaOptions"]
    off = load_config("local", CONF, ["paths.jvm_archive="])
    assert "SharedArchiveFile" not in spark_conf(off)["spark.driver.extraJavaOptions"]
    relative = load_config("local", CONF, [])
    assert relative.paths.jvm_archive == str(CONF.parent / ".jvm" / "spark-classes.jsa")
