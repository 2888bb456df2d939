"""The run machinery: gold.pipeline_runs rows, attempts, the run lock, and jobs killed at their commits."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog, quality, runs
from shoplens import schemas as S
from shoplens.config import ConfigError, load_config
from shoplens.io import LandingNotFound
from shoplens.jobs import build_silver_events, ingest_landing
from shoplens.locks import Lock, LockLost, LockTimeout

from .conftest import CONF_DIR, FAST_RUNS, ONE_JOB_JVM, ROOT

DAY1, DAY2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
INGEST_TABLES = (catalog.BRONZE_EVENTS, catalog.QUARANTINE, catalog.QUALITY_RESULTS)


def _overrides(warehouse, landing) -> list[str]:
    return [
        f"paths.warehouse={warehouse}", f"paths.landing={landing}",
        "spark.conf.spark.sql.shuffle.partitions=2", "spark.conf.spark.default.parallelism=2", *FAST_RUNS,
        ONE_JOB_JVM,
    ]


def _argv(run_date: dt.date, overrides: list[str], *extra: str) -> list[str]:
    argv = ["--run-date", run_date.isoformat(), "--conf-dir", str(CONF_DIR), *extra]
    for item in overrides:
        argv += ["--set", item]
    return argv


def _runs(spark, cfg, run_date: dt.date | None = None):
    table = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(cfg))
    return table if run_date is None else table.where(F.col(S.RUN_DATE) == F.lit(run_date))


def test_run_records_a_success_and_a_failure_and_numbers_attempts(spark, fresh_cfg, fixture_landing):
    overrides = _overrides(fresh_cfg.paths.warehouse, fixture_landing)
    argv = _argv(DAY1, overrides)
    assert ingest_landing.main(argv) == 0

    row = _runs(spark, fresh_cfg, DAY1).collect()
    assert len(row) == 1
    got = row[0].asDict()
    assert got[S.STARTED_AT] <= got[S.ENDED_AT]
    assert got[S.DRIVER] == f"{os.uname().nodename}:{os.getpid()}"
    n_checks = len(ingest_landing.bronze_expectations(fresh_cfg))
    quality = spark.read.format("delta").load(catalog.QUALITY_RESULTS.location(fresh_cfg))
    assert quality.count() == n_checks
    # What the run cost beyond its rows: its Spark jobs and tasks (by the run's job group) and its
    # commits: three data commits, the running record (the table's creation and the row's append in
    # one commit of the run) and the final one; no earlier attempt to abandon.
    cost = {k: got[S.METRICS].pop(k) for k in ("spark_jobs", "spark_tasks", "commits")}
    assert cost["commits"] == 5.0 and 0 < cost["spark_jobs"] <= cost["spark_tasks"]
    del got[S.STARTED_AT], got[S.ENDED_AT], got[S.DRIVER]
    assert got == {
        S.JOB: "ingest_landing", S.RUN_DATE: DAY1, S.ATTEMPT: 1, S.DATASET: None, S.STATUS: "succeeded",
        S.ERROR: None, S.APP_ID: spark.sparkContext.applicationId, S.ARGUMENTS: " ".join(argv),
        S.INPUT_ROWS: 24, S.OUTPUT_ROWS: 24 + n_checks,
        S.ROWS_WRITTEN: {"ops.quality_results": n_checks, "bronze.events": 24, "silver.quarantine": 0},
        S.TABLE_VERSIONS: {"ops.quality_results": 0, "bronze.events": 0, "silver.quarantine": 0},
        S.QUALITY_CHECKS: n_checks, S.QUALITY_FAILED: 0, S.QUALITY_FAILED_GATES: [],
        S.METRICS: {"lines_accepted": 24.0, "lines_quarantined": 0.0},
    }

    # A date with nothing landed fails before writing: recorded as failed, with the error's class.
    # --attempt sets the attempt; without it, the next one is one more than the highest recorded.
    missing = dt.date(2024, 1, 9)
    with pytest.raises(LandingNotFound):
        ingest_landing.main(_argv(missing, overrides, "--attempt", "7"))
    with pytest.raises(LandingNotFound):
        ingest_landing.main(_argv(missing, overrides))
    failed = _runs(spark, fresh_cfg, missing).orderBy(S.ATTEMPT).collect()
    assert [(r[S.ATTEMPT], r[S.STATUS], r[S.OUTPUT_ROWS]) for r in failed] == [(7, "failed", None), (8, "failed", None)]
    assert all(r[S.ERROR].startswith("LandingNotFound: no landing files for events on 2024-01-09") for r in failed)
    # No run left a lock behind.
    assert not any(Path(fresh_cfg.paths.warehouse, "_locks").rglob("*.lock"))


def test_the_record_writer_is_delta_rs_on_a_local_warehouse_unless_told():
    def uses(writer: str, location: str) -> bool:
        return runs.uses_deltalake(load_config("local", CONF_DIR, [f"runs.record_writer={writer}"]), location)

    assert uses("auto", "/wh/gold/pipeline_runs") and uses("auto", "file:/wh/gold/pipeline_runs")
    assert not uses("auto", "s3a://bucket/wh/gold/pipeline_runs") and not uses("auto", "hdfs://nn/wh/x")
    assert uses("deltalake", "s3a://bucket/wh/gold/pipeline_runs") and not uses("spark", "/wh/gold/pipeline_runs")
    with pytest.raises(ConfigError, match="runs.record_writer: one of auto, deltalake, spark"):
        load_config("local", CONF_DIR, ["runs.record_writer=rust"])


def test_the_record_written_by_delta_rs_checkpoints_and_spark_reads_and_updates_it(spark, tmp_path):
    """Most of gold.pipeline_runs' commits are delta-rs': its checkpoints must serve Spark, and a
    Spark UPDATE (abandoned, rewound) must serve delta-rs' next read and write."""
    from delta.tables import DeltaTable

    cfg = load_config("local", CONF_DIR, [f"paths.warehouse={tmp_path}", *FAST_RUNS, "runs.record_writer=deltalake"])
    location = catalog.PIPELINE_RUNS.location(cfg)
    days = [DAY1 + dt.timedelta(days=i) for i in range(7)]
    for day in days:  # 14 record commits after the table's creation: past the checkpoint interval
        with runs.job_run(spark, cfg, "build_sessions", day, dataset="demo"):
            pass
    log_dir = Path(location) / "_delta_log"
    checkpoints = sorted(p.name for p in log_dir.glob("*.checkpoint.parquet"))
    # delta-rs checkpoints the version that completes each interval (9, 19, ...), as Spark does 10, 20, ...
    assert checkpoints and int(checkpoints[-1][:20]) >= runs.RECORD_CHECKPOINT_INTERVAL - 1
    assert '"delta-rs' in (log_dir / f"{int(checkpoints[-1][:20]):020d}.json").read_text()

    DeltaTable.forPath(spark, location).update(F.col(S.RUN_DATE) == F.lit(days[0]), {S.STATUS: F.lit("rewound")})
    with runs.job_run(spark, cfg, "build_sessions", days[0], dataset="other"):
        pass
    got = sorted((r[S.RUN_DATE], r[S.ATTEMPT], r[S.STATUS]) for r in _runs(spark, cfg).collect())
    assert got == sorted([(days[0], 1, "rewound"), (days[0], 2, "succeeded")] + [(d, 1, "succeeded") for d in days[1:]])
    assert runs.recorded_runs(spark, cfg, "build_sessions", days[0], "demo").attempts == {1: "rewound", 2: "succeeded"}


@pytest.mark.parametrize("writer", ["deltalake", "spark"])
def test_a_run_start_numbers_abandons_and_refuses_out_of_order_from_its_one_read(spark, tmp_path, writer):
    """Under the run lock, the start reads gold.pipeline_runs once; from it come the attempt, the dead
    attempts to mark abandoned and the later dates that refuse an out-of-order run. The same with the
    record written by delta-rs (the default) or by Spark (runs.record_writer)."""
    cfg = load_config("local", CONF_DIR, [f"paths.warehouse={tmp_path}", *FAST_RUNS, f"runs.record_writer={writer}"])
    location = catalog.PIPELINE_RUNS.location(cfg)
    record = ("gold.pipeline_runs", "record", None)
    with runs.job_run(spark, cfg, "build_sessions", DAY2, dataset="demo"):
        pass
    # The first run creates the table with its running row, registers it, and MERGEs its end.
    assert runs.last_run().commits == [record, record]
    assert spark.sql("SELECT attempt, status FROM gold.pipeline_runs").collect() == [(1, "succeeded")]

    # As a killed run leaves its row: attempt 2 still running, no end.
    killed = spark.read.format("delta").load(location).withColumns(
        {S.ATTEMPT: F.lit(2), S.STATUS: F.lit(S.STATUS_RUNNING), S.ENDED_AT: F.lit(None).cast("timestamp")}
    )
    killed.write.format("delta").mode("append").save(location)
    with runs.job_run(spark, cfg, "build_sessions", DAY2, dataset="demo"):
        pass
    assert runs.last_run().attempt == 3 and runs.last_run().commits == [record] * 3  # running, abandoned, end
    # --attempt re-using a recorded number MERGEs its row again: still one row per attempt.
    with runs.job_run(spark, cfg, "build_sessions", DAY2, attempt=1, dataset="demo"):
        pass

    # DAY2 succeeded on demo: DAY1 on demo is refused, recorded; on another dataset it runs.
    with pytest.raises(runs.OutOfOrderRun, match=r"build_sessions already succeeded for later run dates \(2024-01-02\)"):
        with runs.job_run(spark, cfg, "build_sessions", DAY1, dataset="demo"):
            pytest.fail("an out-of-order run must not start its work")
    with runs.job_run(spark, cfg, "build_sessions", DAY1, dataset="other"):
        pass
    got = sorted((r[S.RUN_DATE], r[S.DATASET], r[S.ATTEMPT], r[S.STATUS]) for r in _runs(spark, cfg).collect())
    assert got == [
        (DAY1, "demo", 1, "failed"), (DAY1, "other", 2, "succeeded"),
        (DAY2, "demo", 1, "succeeded"), (DAY2, "demo", 2, "abandoned"), (DAY2, "demo", 3, "succeeded"),
    ]
    abandoned = _runs(spark, cfg, DAY2).where(F.col(S.ATTEMPT) == 2).first()
    assert abandoned[S.ENDED_AT] is None and "found still running by attempt 3" in abandoned[S.ERROR]
    assert not any(Path(tmp_path, "_locks").rglob("*.lock"))
    # The start's one read (by delta-rs: the Delta log and the runs' own files, no Spark job) is Spark's read.
    for day, dataset in ((DAY1, "demo"), (DAY1, "other"), (DAY2, "demo"), (DAY2, "other")):
        rows = _runs(spark, cfg).where(F.col(S.RUN_DATE) >= day).collect()
        assert runs.recorded_runs(spark, cfg, "build_sessions", day, dataset) == runs.RecordedRuns(
            table_exists=True,
            attempts={r[S.ATTEMPT]: r[S.STATUS] for r in rows if r[S.RUN_DATE] == day},
            later_dates=tuple(sorted({
                r[S.RUN_DATE] for r in rows
                if r[S.RUN_DATE] > day and r[S.STATUS] == "succeeded" and r[S.DATASET] == dataset
            })),
        )


def test_a_failed_quality_gate_is_in_the_failed_runs_row_as_stored_in_quality_results(spark, fresh_cfg):
    folder = Path(fresh_cfg.paths.landing) / "events" / DAY1.isoformat()
    folder.mkdir(parents=True)
    fields = {"event_time": "2024-01-01T10:00:00Z", "event_type": "view", "user_id": "u1", "item_id": "i1"}
    lines = [json.dumps({"event_id": f"e{i}" if i < 6 else None, **fields}) for i in range(10)]
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(quality.QualityGateFailed):
        with runs.job_run(spark, fresh_cfg, "ingest_landing", DAY1):
            ingest_landing.run(spark, fresh_cfg, DAY1)
    # The run's summary comes from the report in memory; it says what ops.quality_results stored.
    stored = spark.read.format("delta").load(catalog.QUALITY_RESULTS.location(fresh_cfg)).collect()
    failed_gates = [quality.describe(r.asDict()) for r in stored if r[S.IS_GATE] and not r[S.SUCCESS]]
    row = _runs(spark, fresh_cfg, DAY1).first()
    assert (row[S.STATUS], row[S.QUALITY_CHECKS], row[S.QUALITY_FAILED]) == ("failed", len(stored), 1)
    assert row[S.QUALITY_FAILED_GATES] == failed_gates and len(failed_gates) == 1
    assert row[S.ERROR].startswith("QualityGateFailed: quality gate failed: expect_column_values_to_not_be_null")


def _lock(spark, path: str, job: str, *, lease_s: float = 60, heartbeat_s: float = 30, wait_s: float = 0) -> Lock:
    owner = {"purpose": "run", "job": job, "run_date": "2024-01-01", "attempt": 1, "app_id": "app-test"}
    return Lock(spark, path, owner, lease_s=lease_s, heartbeat_s=heartbeat_s, wait_s=wait_s, poll_s=0.1)


def test_a_second_holder_waits_then_fails_naming_the_first(spark, tmp_path):
    path = str(tmp_path / "_locks" / "run_date=2024-01-01" / "build_sessions.lock")
    with _lock(spark, path, "build_sessions"):
        second = _lock(spark, path, "build_sessions_again", wait_s=1.0)
        started = time.monotonic()
        with pytest.raises(LockTimeout) as err:
            second.acquire()
        assert time.monotonic() - started >= 1.0
        message = str(err.value)
        assert f"held by job build_sessions run date 2024-01-01 attempt 1 on {os.uname().nodename}:{os.getpid()}" in message
        assert "(app app-test)" in message and "waited 1 s" in message
        content = json.loads((tmp_path / "_locks" / "run_date=2024-01-01" / "build_sessions.lock").read_text())
        assert {"job", "run_date", "attempt", "host", "pid", "app_id", "acquired_at", "lease_expires_at"} <= set(content)
    # Released: the next one takes it at once.
    with _lock(spark, path, "build_sessions_again"):
        pass


def test_a_renewed_lease_holds_and_an_expired_one_is_broken(spark, tmp_path, caplog):
    path = str(tmp_path / "_locks" / "table.lock")
    renewed = _lock(spark, path, "alive", lease_s=1.0, heartbeat_s=0.2)
    renewed.acquire()
    time.sleep(1.5)
    with pytest.raises(LockTimeout):
        _lock(spark, path, "other").acquire()
    renewed.check()
    renewed.release()

    dead = _lock(spark, path, "killed", lease_s=1.0, heartbeat_s=60)  # never renews: as if killed
    dead.acquire()
    time.sleep(1.2)
    with caplog.at_level(logging.WARNING, logger="shoplens.locks"):
        breaker = _lock(spark, path, "next")
        breaker.acquire()
    assert any("breaking lock" in r.getMessage() and "job killed" in r.getMessage() for r in caplog.records)
    with pytest.raises(LockLost):
        dead.check()
    dead.release()  # not its lock any more: leaves the new holder's file alone
    assert json.loads((tmp_path / "_locks" / "table.lock").read_text())["job"] == "next"
    breaker.release()
    assert not (tmp_path / "_locks" / "table.lock").exists()


def test_fault_spec_is_parsed_and_checked():
    faults = runs.parse_faults("a:before_commit:bronze.events, b:during_commit:silver.events:2")
    assert faults == (
        runs.Fault("a", "before_commit", "bronze.events"), runs.Fault("b", "during_commit", "silver.events", 2)
    )
    assert faults[1].fires("b", "during_commit", "silver.events", 2)
    assert not faults[1].fires("b", "during_commit", "silver.events", 1)
    with pytest.raises(runs.FaultSpecError):
        runs.parse_faults("a:in_the_middle:bronze.events")


@pytest.fixture(scope="module")
def shared_landing(tmp_path_factory):
    from shoplens.demo import FIXTURE_LANDING

    target = tmp_path_factory.mktemp("runs") / "landing"
    shutil.copytree(FIXTURE_LANDING, target)
    return target


@pytest.fixture(scope="module")
def clean_tables(spark, shared_landing, tmp_path_factory):
    """The ingest tables after one clean run of each of the two fixture dates."""
    cfg = load_config("local", CONF_DIR, _overrides(tmp_path_factory.mktemp("clean") / "warehouse", shared_landing))
    for day in (DAY1, DAY2):
        ingest_landing.run(spark, cfg, day)
    return {spec.name: spark.read.format("delta").load(spec.location(cfg)).collect() for spec in INGEST_TABLES}


def _versions(spark, cfg) -> dict[str, int]:
    from delta.tables import DeltaTable

    found = {}
    for spec in INGEST_TABLES:
        if catalog.table_exists(spark, spec.location(cfg)):
            found[spec.name] = DeltaTable.forPath(spark, spec.location(cfg)).history(1).first()["version"]
    return found


@pytest.mark.parametrize("point", ["before_commit", "during_commit", "after_commit"])
def test_a_job_killed_at_a_commit_leaves_readable_tables_and_a_rerun_equals_a_clean_run(
    spark, tmp_path, shared_landing, clean_tables, point
):
    overrides = _overrides(tmp_path / "warehouse", shared_landing)
    cfg = load_config("local", CONF_DIR, overrides)
    ingest_landing.run(spark, cfg, DAY1)  # the day before, without a run record (cheaper)
    before = _versions(spark, cfg)
    snapshot = {name: spark.read.format("delta").load(catalog.table_spec(name).location(cfg)).collect() for name in before}

    env = {**os.environ, runs.FAULT_ENV_VAR: f"ingest_landing:{point}:bronze.events", "PYTHONPATH": str(ROOT / "lib")}
    killed = subprocess.run(
        [sys.executable, "-m", "shoplens.jobs.ingest_landing", *_argv(DAY2, overrides)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"fault hook: {point} of bronze.events" in killed.stderr

    # Every table reads at its previous version; bronze.events moved only if the kill came after its commit.
    # Killed during the commit, the day's data files are in the folder but no version references them.
    day2_files = list((tmp_path / "warehouse" / "bronze" / "events" / f"run_date={DAY2}").glob("part-*.parquet"))
    assert bool(day2_files) == (point != "before_commit")
    after = _versions(spark, cfg)
    moved = {"bronze.events"} if point == "after_commit" else set()
    assert {n for n in before if after[n] != before[n]} == moved | {"ops.quality_results"}
    for name, rows in snapshot.items():
        location = catalog.table_spec(name).location(cfg)
        assertDataFrameEqual(spark.read.format("delta").option("versionAsOf", before[name]).load(location), rows)
        spark.read.format("delta").load(location).count()
    died = _runs(spark, cfg, DAY2).collect()
    assert [(r[S.ATTEMPT], r[S.STATUS], r[S.ENDED_AT]) for r in died] == [(1, "running", None)]

    # The retry breaks the dead run's expired locks and ends equal to one clean run.
    assert ingest_landing.main(_argv(DAY2, overrides)) == 0
    for spec in INGEST_TABLES:
        assertDataFrameEqual(spark.read.format("delta").load(spec.location(cfg)), clean_tables[spec.name])
    retried = _runs(spark, cfg, DAY2).orderBy(S.ATTEMPT).collect()
    # Holding the run lock, the retry knows attempt 1 is dead: it is marked abandoned, its end unknown.
    assert [(r[S.ATTEMPT], r[S.STATUS], r[S.ENDED_AT]) for r in retried][0] == (1, "abandoned", None)
    assert "found still running by attempt 2" in retried[0][S.ERROR]
    assert (retried[1][S.ATTEMPT], retried[1][S.STATUS]) == (2, "succeeded")


SILVER_TABLES = (catalog.SILVER_EVENTS, catalog.SILVER_REVIEWS, catalog.QUARANTINE, catalog.DUPLICATES)


def test_a_job_killed_between_its_tables_commits_is_retried_to_one_clean_run(spark, tmp_path, shared_landing):
    """build_silver_events writes several tables, one commit each: killed after its first, the run
    leaves silver.events new and the others old; the retry brings every table to one clean run."""
    overrides = _overrides(tmp_path / "warehouse", shared_landing)
    cfg = load_config("local", CONF_DIR, overrides)
    clean_cfg = load_config("local", CONF_DIR, _overrides(tmp_path / "clean", shared_landing))
    for config in (cfg, clean_cfg):
        for day in (DAY1, DAY2):
            ingest_landing.run(spark, config, day)
        build_silver_events.run(spark, config, DAY1, demo=True)
    build_silver_events.run(spark, clean_cfg, DAY2, demo=True)
    clean = {spec.name: spark.read.format("delta").load(spec.location(clean_cfg)).collect() for spec in SILVER_TABLES}
    before = {spec.name: _version(spark, spec.location(cfg)) for spec in SILVER_TABLES}

    env = {**os.environ, runs.FAULT_ENV_VAR: "build_silver_events:after_commit:silver.events:1",
           "PYTHONPATH": str(ROOT / "lib")}
    argv = _argv(DAY2, overrides, "--demo")
    killed = subprocess.run([sys.executable, "-m", "shoplens.jobs.build_silver_events", *argv],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    after = {spec.name: _version(spark, spec.location(cfg)) for spec in SILVER_TABLES}
    assert {name for name in before if after[name] != before[name]} == {"silver.events"}

    # The same fault stays armed for attempt 1 only: Airflow's second try (--attempt 2) gets through.
    retried = subprocess.run([sys.executable, "-m", "shoplens.jobs.build_silver_events", *argv, "--attempt", "2"],
                             env=env, capture_output=True, text=True, timeout=600, check=False)
    assert retried.returncode == 0, retried.stderr[-3000:]
    for spec in SILVER_TABLES:
        assertDataFrameEqual(spark.read.format("delta").load(spec.location(cfg)), clean[spec.name])
    attempts = _runs(spark, cfg, DAY2).where(F.col(S.JOB) == "build_silver_events").orderBy(S.ATTEMPT).collect()
    assert [(r[S.ATTEMPT], r[S.STATUS]) for r in attempts] == [(1, "abandoned"), (2, "succeeded")]


def _version(spark, location: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, location).history(1).first()["version"]


def test_a_second_run_of_a_date_while_the_first_runs_fails_naming_it_and_the_tables_stay_clean(
    spark, tmp_path, shared_landing, clean_tables
):
    # The locks live outside the warehouse here (runs.lock_dir, as for a warehouse on S3).
    lock_dir = tmp_path / "shared" / "locks"
    overrides = [*_overrides(tmp_path / "warehouse", shared_landing), f"runs.lock_dir={lock_dir}"]
    cfg = load_config("local", CONF_DIR, overrides)
    ingest_landing.run(spark, cfg, DAY1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    first = subprocess.Popen([sys.executable, "-m", "shoplens.jobs.ingest_landing", *_argv(DAY2, overrides)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = Path(runs.run_lock_path(cfg, "ingest_landing", DAY2))
        assert lock.is_relative_to(lock_dir)
        deadline = time.monotonic() + 300
        while not lock.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took its run lock"
            time.sleep(0.05)

        # The second run of the same (run date, job) waits lock_wait_s (0 here), then fails naming the first
        # (whose attempt is numbered under the lock, after the lock file was written: "next").
        with pytest.raises(LockTimeout, match="held by job ingest_landing run date 2024-01-02 attempt next"):
            ingest_landing.main(_argv(DAY2, [*overrides, "runs.lock_wait_s=0"]))
    finally:
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]

    for spec in INGEST_TABLES:
        assertDataFrameEqual(spark.read.format("delta").load(spec.location(cfg)), clean_tables[spec.name])
    # Only the first run is recorded: the second stopped before writing anything.
    assert [(r[S.ATTEMPT], r[S.STATUS]) for r in _runs(spark, cfg, DAY2).collect()] == [(1, "succeeded")]
    # Every lock, run and table commit alike, was taken under runs.lock_dir and released there.
    assert not (tmp_path / "warehouse" / runs.LOCKS_DIR).exists()
    assert {p.name for p in lock_dir.iterdir()} == {f"run_date={DAY2}", "tables"}
    assert not list(lock_dir.rglob("*.lock"))


def test_rows_written_count_the_new_rows_only_when_a_replace_rewrites_shared_files(spark, fresh_cfg):
    """A slice that is not a whole partition (one dataset of a start date) rewrites the files it shares
    with other slices; the commit's rows written are the slice's new rows, not the copied ones."""
    from pyspark.sql import types as T

    from shoplens.catalog import TableSpec
    from shoplens.io import replace_slice

    schema = T.StructType([T.StructField("dataset", T.StringType()), T.StructField("day", T.IntegerType()),
                           T.StructField("v", T.IntegerType())])
    spec = TableSpec("gold.shared_partitions", schema, ("day",), "test table")
    rows = [("a", 1, 1), ("a", 1, 2), ("b", 1, 3), ("b", 1, 4), ("b", 1, 5)]
    assert replace_slice(spark.createDataFrame(rows, schema).coalesce(1), spec, fresh_cfg, {"day": 1}) == 5
    replaced = replace_slice(spark.createDataFrame([("a", 1, 9)], schema), spec, fresh_cfg, {"dataset": "a", "day": 1})
    assert replaced == 1  # 3 rows of b were copied into a new file beside it
    assert spark.read.format("delta").load(spec.location(fresh_cfg)).count() == 4


def test_a_table_delta_rs_writes_checkpoints_as_often_as_spark_would(tmp_path):
    """A table made without delta.checkpointInterval (Spark's tables) is checkpointed every 10 commits
    by shoplens.deltars' writes, as Spark would (delta-rs alone: every 100)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from shoplens import deltars

    location = str(tmp_path / "t")
    write_deltalake(location, pa.table({"d": pa.array(["a"]), "x": pa.array([0])}), partition_by=["d"])
    for n in range(1, 12):
        data = pa.table({"d": pa.array(["a"]), "x": pa.array([n])})
        assert deltars.replace_where(location, data, "\"d\" = 'a'", f"tag {n}") == n
    checkpoints = sorted(p.name for p in (tmp_path / "t" / "_delta_log").glob("*.checkpoint.parquet"))
    assert checkpoints == [f"{10:020d}.checkpoint.parquet"]


def test_a_small_cached_slice_goes_through_the_driver_and_a_larger_one_through_spark(spark, fresh_cfg):
    """io.replace_slice(driver_rows=N): up to N rows are collected and written by delta-rs (one
    tagged commit, the run's); more are written by Spark; a row outside the slice fails either way
    and leaves the table as it was."""
    from deltalake import DeltaTable as RsTable
    from pyspark.sql import types as T

    from shoplens.catalog import TableSpec
    from shoplens.io import replace_slice

    schema = T.StructType([T.StructField("dataset", T.StringType()), T.StructField("day", T.DateType()),
                           T.StructField("v", T.IntegerType())])
    spec = TableSpec("gold.driver_or_spark", schema, ("day",), "test table")
    d1, d2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    location = spec.location(fresh_cfg)

    def write(rows, where):
        return replace_slice(spark.createDataFrame(rows, schema).cache(), spec, fresh_cfg, where, driver_rows=2)

    def last_commit() -> dict:
        return RsTable(location).history(1)[0]

    assert write([("a", d1, 1), ("a", d2, 2), ("b", d2, 3)], {"day": (d1, d2)}) == 3  # the first write: Spark
    assert write([("a", d1, 7), ("a", d1, 8)], {"day": d1}) == 2
    assert "delta-rs" in last_commit().get("clientVersion", "")
    assert last_commit()["userMetadata"].startswith("shoplens gold.driver_or_spark ")
    assert write([("a", d2, 4), ("b", d2, 5), ("c", d2, 6)], {"day": d2}) == 3
    assert "Apache-Spark" in last_commit().get("engineInfo", "")
    version = RsTable(location).version()
    for rows in ([("a", d1, 9)], [("a", d1, 9), ("a", d1, 9), ("a", d1, 9)]):  # delta-rs, then Spark
        with pytest.raises(Exception, match="(?i)invalid data|does not conform|replaceWhere|DELTA_REPLACE_WHERE"):
            write(rows, {"day": d2})
    assert RsTable(location).version() == version
    got = sorted(tuple(r) for r in spark.read.format("delta").load(location).collect())
    assert got == [("a", d1, 7), ("a", d1, 8), ("a", d2, 4), ("b", d2, 5), ("c", d2, 6)]


@pytest.mark.parametrize("writer", ["deltalake", "spark"])
def test_a_slice_the_driver_holds_is_replaced_alike_by_delta_rs_and_spark(spark, fresh_cfg, writer):
    """io.replace_rows: the first write makes the table (Spark); later ones replace exactly their slice,
    through delta-rs on a local warehouse (no Spark job) or Spark, with the same rows, types and tag;
    io.small_query reads them back alike through either engine (no Spark job through delta-rs)."""
    import dataclasses
    from decimal import Decimal

    from delta.tables import DeltaTable
    from pyspark.sql import types as T

    from shoplens.catalog import TableSpec
    from shoplens.io import replace_rows, small_query

    cfg = dataclasses.replace(fresh_cfg, runs=dataclasses.replace(fresh_cfg.runs, record_writer=writer))
    schema = T.StructType([
        T.StructField("day", T.DateType()), T.StructField("dataset", T.StringType()),
        T.StructField("ok", T.BooleanType()), T.StructField("money", T.DecimalType(18, 2)),
        T.StructField("at", T.TimestampType()), T.StructField("versions", T.MapType(T.StringType(), T.LongType())),
    ])
    spec = TableSpec("gold.driver_slices", schema, ("day",), "test table")
    d1, d2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    at = dt.datetime(2024, 3, 2, 23, 59, 1, tzinfo=dt.UTC)

    def row(day, dataset, money):
        return {"day": day, "dataset": dataset, "ok": True, "money": Decimal(money), "at": at, "versions": {"t": 3}}

    assert replace_rows(spark, [row(d1, "a", "1.50"), row(d1, "b", "2.00"), row(d2, "a", "3.00")], spec, cfg,
                        {"day": (d1, d2)}) == 3
    group = f"replace_rows {writer}"
    spark.sparkContext.setJobGroup(group, group)
    # One dataset of one day: the other dataset's row of that day and the other day are kept.
    assert replace_rows(spark, [row(d1, "a", "9.99"), row(d1, "a", "0.01")], spec, cfg, {"day": d1, "dataset": "a"}) == 2
    assert replace_rows(spark, [(d2, "a", False, Decimal("4.00"), at, {"t": 4})], spec, cfg, {"day": d2}) == 1
    # io.small_query reads it back the same way: an aggregate, DISTINCT over an IN list, a quoted
    # value, a LIMIT, and no table at all.
    location = spec.location(cfg)
    assert small_query(spark, cfg, location, "max(money) AS m, count(*) AS n", {"dataset": "a"}) == [
        {"m": Decimal("9.99"), "n": 3}
    ]
    pairs = small_query(spark, cfg, location, "DISTINCT day, dataset", {"day": [d1, d2], "ok": True})
    assert sorted((r["day"], r["dataset"]) for r in pairs) == [(d1, "a"), (d1, "b")]
    assert small_query(spark, cfg, location, "1 AS found", {"dataset": "it's", "day": (d1, d2)}, limit=1) == []
    assert small_query(spark, cfg, location, "1 AS found", {"day": []}) == []
    assert small_query(spark, cfg, location + "_absent", "1 AS found", {"day": d1}) == []
    spark_jobs = len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert (spark_jobs == 0) == (writer == "deltalake")
    got = sorted(
        (r["day"], r["dataset"], r["ok"], r["money"], r["at"], r["versions"])
        for r in spark.read.format("delta").load(spec.location(cfg)).collect()
    )
    naive = at.replace(tzinfo=None)  # Spark returns session-time (UTC) timestamps without a zone
    assert got == [
        (d1, "a", True, Decimal("0.01"), naive, {"t": 3}),
        (d1, "a", True, Decimal("9.99"), naive, {"t": 3}),
        (d1, "b", True, Decimal("2.00"), naive, {"t": 3}),
        (d2, "a", False, Decimal("4.00"), naive, {"t": 4}),
    ]
    last = DeltaTable.forPath(spark, spec.location(cfg)).history(1).collect()[0]
    assert last["userMetadata"].startswith("shoplens gold.driver_slices ")
