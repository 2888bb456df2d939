"""A job's run: its run lock, its ``gold.pipeline_runs`` row, every commit it makes, and the fault hook.

Every job's ``main`` runs its work inside :func:`job_run` (through ``cli.run_job``), which

1. takes the run lock of (run date, job) under ``runs.lock_dir`` (default ``{warehouse}/_locks/``,
   ``shoplens.locks``), so two runs of one job and date never write at once;
2. reads ``gold.pipeline_runs`` once (:func:`recorded_runs`: the job's attempts of the run date and
   the later dates it already succeeded for), numbers the attempt from it (``--attempt N``, else one
   more than recorded), appends a ``running`` row and marks every earlier attempt of the same (job,
   run date) still ``running`` as ``abandoned``: holding the run lock, it knows they are dead;
3. makes itself the *current run*, which every table write reports to: each write goes through
   :func:`commit`, which holds the table's commit lock around the Delta commit, fires the fault hook
   and records the table's new version and the rows the commit wrote (from the Delta log);
4. at the end writes the row again as ``succeeded`` or ``failed`` (a replace of its own partition)
   and releases the lock.

The current run is module state rather than an argument because the writers sit deep in library
code whose signatures (``run(spark, cfg, run_date)``) tests and the local pipeline call directly;
outside a run (those callers) :func:`commit` just writes: no locks, no record, no fault hook.

The fault hook: ``SHOPLENS_FAULT=<job>:<point>:<table>[:<attempt>]`` kills the job's own process with
SIGKILL at ``before_commit``, ``during_commit`` (data files written, Delta log entry not yet) or
``after_commit`` of that table, on every attempt or only the given one. Several are comma-separated.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, deltars
from shoplens import schemas as S
from shoplens.catalog import TableSpec, register_table
from shoplens.config import Config
from shoplens.faults import (  # noqa: F401 - FaultSpecError, Fault and parse_faults are part of this API
    AFTER_COMMIT,
    BEFORE_COMMIT,
    DURING_COMMIT,
    FAULT_ENV_VAR,
    Fault,
    FaultSpecError,
    kill_self,
    parse_faults,
)
from shoplens.locks import Lock

if TYPE_CHECKING:
    from shoplens.quality import QualityReport

log = logging.getLogger(__name__)

ERROR_MAX_CHARS = 2000
RECORD_CHECKPOINT_INTERVAL = 10
LOCKS_DIR = "_locks"
_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
_DURING_COMMIT_POLL_S = 0.02
# Jobs that may run for any date in any order: the backfill (it rewinds, then runs the dates in order),
# a bulk load (it owns all of its dataset's history) and the Horovod check (it writes no table).
ORDER_FREE_JOBS = frozenset({"backfill", "load_history", "check_horovod"})


class OutOfOrderRun(RuntimeError):
    """A job was started for a run date earlier than one it has already processed."""


class RunRecordError(RuntimeError):
    """gold.pipeline_runs could not be written: the job's outcome is not recorded, so it fails."""


class _DataFileWatcher:
    """Kills the process once a new data file appears in a table's folder while the table's Delta
    log has not moved: a commit whose files are written and whose log entry is not.

    Polls the folder from a thread during the write: every 5 ms with ``os.walk`` on a local file
    system (Hadoop's local listing shells out to ``ls`` per file and takes ~100 ms), through Hadoop's
    FileSystem elsewhere. A write that adds no data file, or commits within one poll of its first
    file, is not caught: the watcher then logs that the fault did not fire, and the job goes on."""

    def __init__(self, spark: SparkSession, table: str, location: str) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._table = table
        self._location = location
        path = jvm.org.apache.hadoop.fs.Path(location)
        self._fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
        self._local = self._fs.getScheme() == "file"
        self._root = path.toUri().getPath() if self._local else location
        self._poll_s = 0.005 if self._local else 0.05
        self._jvm = jvm
        self._before, self._log_before = self._files()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"fault watcher {location}", daemon=True)

    def _files(self) -> tuple[set[str], set[str]]:
        """(data files, log entries) under the table folder; hidden files (checksums, temporaries) skipped."""
        names: list[tuple[str, str]] = []
        if self._local:
            for folder, _, files in os.walk(self._root):
                names += [(folder, f) for f in files]
        else:
            root = self._jvm.org.apache.hadoop.fs.Path(self._root)
            if self._fs.exists(root):
                listing = self._fs.listFiles(root, True)
                while listing.hasNext():
                    found = listing.next().getPath()
                    names.append((found.getParent().toString(), found.getName()))
        data = {f"{d}/{f}" for d, f in names if f.endswith(".parquet") and not f.startswith((".", "_"))}
        logs = {f for d, f in names if d.rstrip("/").endswith("_delta_log") and f.endswith(".json") and f[0].isdigit()}
        return data - {f for f in data if "/_delta_log/" in f}, logs

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                data, logs = self._files()
            except Exception:  # noqa: BLE001 - a file vanished while listed: look again
                continue
            if data - self._before:
                if logs - self._log_before:
                    return  # too late: the log entry is already there
                kill_self(f"{DURING_COMMIT} of {self._table}: data files written, log entry not yet")

    def __enter__(self) -> _DataFileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            log.warning("fault hook %s on %s did not fire: no data file seen before the log entry",
                        DURING_COMMIT, self._table)


# --- the current run -----------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What one run of a job has done so far; becomes its gold.pipeline_runs row."""

    spark: SparkSession
    cfg: Config
    job: str
    run_date: dt.date
    # 0 until numbered under the run lock (when --attempt is not given).
    attempt: int
    dataset: str | None
    arguments: str | None
    started_at: dt.datetime
    lock: Lock | None
    faults: tuple[Fault, ...] = ()
    input_rows: int | None = None
    rows_written: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)
    quality_checks: int | None = None
    quality_failed: int | None = None
    quality_failed_gates: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    exit_error: str | None = None
    # Every Delta commit of the run, its own records included: (table, operation, rows written).
    commits: list[tuple[str, str, int | None]] = field(default_factory=list)
    _commits: int = 0

    # Unique to the run: names its Spark job group and its running row's idempotent write.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The Spark job group of the run's jobs (the status tracker counts them by it).
    job_group: str = field(init=False)

    def __post_init__(self) -> None:
        self.job_group = f"shoplens run {self.run_id}"

    def fault(self, point: str, table: str) -> bool:
        return any(f.fires(self.job, point, table, self.attempt) for f in self.faults)

    def next_commit_tag(self) -> str:
        self._commits += 1
        unique = uuid.uuid4().hex[:8]
        return f"shoplens {self.job} {self.run_date} attempt {self.attempt} commit {self._commits} {unique}"

    def record_commit(self, table: str, version: int | None, rows: int) -> None:
        self.rows_written[table] = self.rows_written.get(table, 0) + rows
        if version is not None:
            self.table_versions[table] = version

    def add_quality(self, report: QualityReport) -> None:
        self.quality_checks = (self.quality_checks or 0) + len(report.rows)
        self.quality_failed = (self.quality_failed or 0) + sum(1 for r in report.rows if not r[S.SUCCESS])
        self.quality_failed_gates += sorted(report.failed_gates)

    def mark_failed(self, reason: str) -> None:
        """Records the run as failed without an exception (e.g. a job that returns exit code 1)."""
        self.exit_error = reason

    def row(self, status: str, error: str | None, ended_at: dt.datetime | None) -> tuple:
        app = self.spark.sparkContext.applicationId
        return (
            self.job, self.run_date, self.attempt, self.dataset, status, self.started_at, ended_at,
            None if error is None else error[:ERROR_MAX_CHARS], app, f"{socket.gethostname()}:{os.getpid()}",
            self.arguments, self.input_rows, sum(self.rows_written.values()) if self.rows_written else None,
            dict(self.rows_written) or None, dict(self.table_versions) or None,
            self.quality_checks, self.quality_failed, list(self.quality_failed_gates) if self.quality_checks else None,
            dict(self.metrics) or None,
        )


_current: RunContext | None = None


_last: RunContext | None = None


def current() -> RunContext | None:
    """The run this process is in, or None outside a job's main (tests, the local pipeline)."""
    return _current


def last_run() -> RunContext | None:
    """The run this process finished last (succeeded or failed), or None: what the night bench reads."""
    return _last


def spark_job_counts(spark: SparkSession, group: str) -> tuple[int, int]:
    """(Spark jobs, tasks) run so far under the job group ``group``, from Spark's status tracker.

    Through the JVM's tracker directly, each array of ids read in one py4j call: PySpark's wrapper
    makes a call per array element and seven per stage (about 4,000 calls, 1.2 s, for the 144 jobs
    of a demo night's build_recommendations)."""
    sc = spark.sparkContext
    tracker = sc._jsc.statusTracker()
    text = sc._jvm.java.util.Arrays.toString

    def ids(java_array) -> list[int]:
        inner = text(java_array).strip("[]")
        return [int(i) for i in inner.split(",")] if inner else []

    job_ids = ids(tracker.getJobIdsForGroup(group))
    tasks = 0
    for job_id in job_ids:
        job = tracker.getJobInfo(job_id)
        for stage_id in ids(job.stageIds()) if job is not None else ():
            stage = tracker.getStageInfo(stage_id)
            tasks += stage.numTasks() if stage is not None else 0
    return len(job_ids), tasks


def add_metrics(figures: Mapping[str, float | int | None]) -> None:
    """Adds key figures to the current run's row (``metrics``); None values are skipped. No-op outside a run."""
    if _current is not None:
        _current.metrics.update({k: float(v) for k, v in figures.items() if v is not None})


def add_input_rows(rows: int) -> None:
    """Adds to the rows the current run read (``input_rows``). No-op outside a run."""
    if _current is not None:
        _current.input_rows = (_current.input_rows or 0) + int(rows)


def add_quality(report: QualityReport) -> None:
    """Adds a validation's report to the current run's quality summary (``quality_checks``,
    ``quality_failed``, ``quality_failed_gates``); ``quality.validate`` calls it. No-op outside a run."""
    if _current is not None:
        _current.add_quality(report)


# --- commits -------------------------------------------------------------------------------------------
def lock_root(cfg: Config) -> str:
    """The folder of the lock files: ``runs.lock_dir``, or ``<warehouse>/_locks`` when it is empty."""
    return (cfg.runs.lock_dir or f"{cfg.paths.warehouse.rstrip('/')}/{LOCKS_DIR}").rstrip("/")


def table_lock_path(cfg: Config, table: str) -> str:
    return f"{lock_root(cfg)}/tables/{table}.lock"


def run_lock_path(cfg: Config, job: str, run_date: dt.date) -> str:
    return f"{lock_root(cfg)}/run_date={run_date.isoformat()}/{job}.lock"


def _lock(run: RunContext, path: str, wait_s: float, purpose: str) -> Lock:
    runs = run.cfg.runs
    # The run lock is taken before the attempt is numbered (under it): "next" until then.
    owner = {
        "purpose": purpose, "job": run.job, "run_date": run.run_date.isoformat(), "attempt": run.attempt or "next",
        "app_id": run.spark.sparkContext.applicationId,
    }
    return Lock(
        run.spark, path, owner, lease_s=runs.lease_s, heartbeat_s=runs.heartbeat_s, wait_s=wait_s, poll_s=runs.poll_s
    )


def commit(spark: SparkSession, spec: TableSpec, cfg: Config, write: Callable[[], object]) -> int:
    """Runs ``write`` (one Delta commit to ``spec``'s table, or the creation of the table) as a commit
    of the current run: under the table's commit lock, with the fault hook around it, and records the
    version it made and the rows it wrote (Delta's operation metrics, not a recount).

    Outside a run, just calls ``write``, tagged the same way. Returns the rows the commit wrote, from
    its own log entry (0 when it is not found there: another writer committed after it unlocked).
    A ``write`` that commits without Spark (delta-rs) tags its commit with :func:`commit_tag` and
    returns what it committed (:class:`Written`): delta-rs names its metrics differently, and Spark
    reading back a log entry it did not write costs a Spark job (no checksum file beside it).
    """
    run = _current
    if run is None:
        tag = f"shoplens {spec.name} {uuid.uuid4().hex}"
        spark.conf.set(_USER_METADATA_CONF, tag)
        try:
            result = write()
        finally:
            spark.conf.unset(_USER_METADATA_CONF)
        if isinstance(result, Written):
            return result.rows
        return _committed(spark, spec.location(cfg), tag)[1]
    return _commit(run, spec, cfg, write, record=True)


def commit_tag(spark: SparkSession) -> str | None:
    """The tag (Delta's ``userMetadata``) of the commit being made, for a write inside
    :func:`commit` that does not go through Spark."""
    return spark.conf.get(_USER_METADATA_CONF, None)


@dataclass(frozen=True)
class Written:
    """A commit made without Spark, as its writer saw it: the table version it made, its rows."""

    version: int
    rows: int


def _commit(run: RunContext, spec: TableSpec, cfg: Config, write: Callable[[], object], record: bool) -> int:
    spark = run.spark
    if run.lock is not None:
        run.lock.check()  # never write without the run lock: another run may hold it now
    table_lock = (
        _lock(run, table_lock_path(cfg, spec.name), cfg.runs.table_lock_wait_s, f"commit to {spec.name}")
        if cfg.runs.table_locks
        else None
    )
    if table_lock is not None:
        table_lock.acquire()
    try:
        if record and run.fault(BEFORE_COMMIT, spec.name):
            kill_self(f"{BEFORE_COMMIT} of {spec.name}")
        tag = run.next_commit_tag()
        # A write may commit nothing (Delta makes no commit for a MERGE without changes): the
        # version before tells that apart from a commit by another writer, without reading history.
        before = catalog.table_version(spark, spec.location(cfg)) if record else None
        spark.conf.set(_USER_METADATA_CONF, tag)
        try:
            if record and run.fault(DURING_COMMIT, spec.name):
                with _DataFileWatcher(spark, spec.name, spec.location(cfg)):
                    result = write()
            else:
                result = write()
        finally:
            spark.conf.unset(_USER_METADATA_CONF)
        if not record:
            run.commits.append((spec.name, "record", None))
            return 0
        if isinstance(result, Written):
            version, rows = result.version, result.rows
        else:
            version, rows = _committed(spark, spec.location(cfg), tag, before)
            if version == before:
                log.info("no commit to %s: the write changed nothing", spec.name)
                return 0
        run.record_commit(spec.name, version, rows)
        run.commits.append((spec.name, "data", rows))
        if run.fault(AFTER_COMMIT, spec.name):
            kill_self(f"{AFTER_COMMIT} of {spec.name}")
        return rows
    finally:
        if table_lock is not None:
            table_lock.release()


def _committed(spark: SparkSession, location: str, tag: str, before: int | None = None) -> tuple[int | None, int]:
    """The version of the commit tagged ``tag`` (Delta's userMetadata) and the rows it wrote; with
    ``before`` (the version before the write), ``(before, 0)`` when the table is still at it: no commit."""
    # The table's commit lock is held: the newest entry is this commit, unless the lock is off. Its
    # commitInfo is read from the log file itself, which costs no Spark job (history() costs one).
    version = catalog.table_version(spark, location)
    if before is not None and version == before:
        return before, 0
    info = _commit_info(spark, location, version) if version >= 0 else None
    if info is None or info.get("userMetadata") != tag:
        info, version = _commit_in_history(spark, location, tag)
    if info is None:
        log.warning("commit %r not found in the last 20 entries of %s's history: version not recorded", tag, location)
        return None, 0
    metrics = info.get("operationMetrics") or {}
    if info.get("operation") == "MERGE":
        rows = int(metrics.get("numTargetRowsInserted", 0)) + int(metrics.get("numTargetRowsUpdated", 0))
    else:
        # A replaceWhere not aligned with the partitions rewrites the files it touches: numOutputRows
        # then counts the other rows of those files too, as numCopiedRows.
        rows = int(metrics.get("numOutputRows", 0)) - int(metrics.get("numCopiedRows", 0))
    return int(version), rows


def _commit_info(spark: SparkSession, location: str, version: int) -> dict | None:
    """The ``commitInfo`` action of the table's commit ``version``, from its JSON log file."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(f"{location.rstrip('/')}/_delta_log/{version:020d}.json")
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    stream = fs.open(path)
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    for line in text.splitlines():
        if '"commitInfo"' in line:
            action = json.loads(line)
            if "commitInfo" in action:
                return action["commitInfo"]
    return None


def _commit_in_history(spark: SparkSession, location: str, tag: str) -> tuple[dict | None, int | None]:
    """The commit tagged ``tag`` among the table's last 20 (a writer without the commit lock)."""
    from delta.tables import DeltaTable

    found = (
        DeltaTable.forPath(spark, location).history(20).where(F.col("userMetadata") == tag)
        .select("version", "operation", "operationMetrics").first()
    )
    if found is None:
        return None, None
    return {"operation": found["operation"], "operationMetrics": found["operationMetrics"]}, int(found["version"])


# --- the run record --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedRuns:
    """What gold.pipeline_runs holds about one (job, run date) when a run of it starts."""

    table_exists: bool
    # attempt -> status, for every attempt of (job, run_date).
    attempts: Mapping[int, str]
    # The run dates after run_date for which the job (on the same dataset) has a succeeded run, sorted.
    later_dates: tuple[dt.date, ...]

    @property
    def next_attempt(self) -> int:
        """One more than the highest attempt recorded for (job, run_date); 1 if none."""
        return 1 + max(self.attempts, default=0)

    def stale(self, attempt: int) -> list[int]:
        """The other attempts still ``running``: dead, when read under the run lock."""
        return sorted(a for a, status in self.attempts.items() if status == S.STATUS_RUNNING and a != attempt)


def recorded_runs(
    spark: SparkSession, cfg: Config, job: str, run_date: dt.date, dataset: str | None
) -> RecordedRuns:
    """Reads gold.pipeline_runs once for a run's start: the job's attempts of ``run_date`` and the
    later run dates it succeeded for on ``dataset``.

    Returns: the attempts as attempt -> status (one entry per attempt of (job, run_date)) and the
    later dates, sorted and distinct; empty when the table does not exist yet.
    """
    location = catalog.PIPELINE_RUNS.location(cfg)
    exists = deltars.table_exists(location) if uses_deltalake(cfg, location) else catalog.table_exists(spark, location)
    if not exists:
        return RecordedRuns(table_exists=False, attempts={}, later_dates=())
    if _record_by_deltalake(cfg, location):
        # The files of the job's partitions from run_date on, found in the log: no Spark job.
        rows = [
            (r[S.RUN_DATE], r[S.ATTEMPT], r[S.STATUS], r[S.DATASET])
            for r in deltars.read_rows(
                location, [(S.JOB, "=", job), (S.RUN_DATE, ">=", run_date)],
                (S.RUN_DATE, S.ATTEMPT, S.STATUS, S.DATASET),
            )
        ]
    else:
        # Spark; also a table made before the per-run partitions (partitioned by job only).
        this_date = F.col(S.RUN_DATE) == F.lit(run_date)
        later = (
            (F.col(S.RUN_DATE) > F.lit(run_date)) & (F.col(S.STATUS) == S.STATUS_SUCCEEDED)
            & F.col(S.DATASET).eqNullSafe(F.lit(dataset))
        )
        rows = [
            (r[S.RUN_DATE], r[S.ATTEMPT], r[S.STATUS], r[S.DATASET])
            for r in spark.read.format("delta").load(location)
            .where((F.col(S.JOB) == job) & (this_date | later))
            .select(S.RUN_DATE, S.ATTEMPT, S.STATUS, S.DATASET)
            .collect()  # the attempts of one date plus one row per later night processed: a few hundred at most
        ]
    return RecordedRuns(
        table_exists=True,
        attempts={attempt: status for date, attempt, status, _ in rows if date == run_date},
        later_dates=tuple(sorted({
            date for date, _, status, ds in rows
            if date > run_date and status == S.STATUS_SUCCEEDED and ds == dataset
        })),
    )


def _write_start(run: RunContext, recorded: RecordedRuns) -> None:
    """Writes the run's ``running`` row. No row yet for (job, run_date, attempt), the usual case:
    an idempotent append (creating the table first if it does not exist). A row already there (an
    explicit ``--attempt N`` that re-uses a number): the replace of :func:`_write_record`."""
    if run.attempt in recorded.attempts:
        _write_record(run, S.STATUS_RUNNING)
        return
    from delta.tables import DeltaTable

    spark, cfg, spec = run.spark, run.cfg, catalog.PIPELINE_RUNS
    location = spec.location(cfg)
    row = run.row(S.STATUS_RUNNING, None, None)
    # Delta's idempotent write: the same (txnAppId, txnVersion) committed again adds nothing.
    app_id = f"shoplens {run.job} {run.run_date} attempt {run.attempt} {run.run_id}"

    def append() -> None:
        if not recorded.table_exists:
            # Under the table's commit lock: another job may have created it since the read.
            (
                DeltaTable.createIfNotExists(spark).location(location).addColumns(spec.schema)
                .partitionedBy(*spec.partition_by)
                # Spark's default, written down for delta-rs (whose default is 100), which makes
                # most of this table's commits and so its checkpoints.
                .property("delta.checkpointInterval", str(RECORD_CHECKPOINT_INTERVAL))
                .execute()
            )
        if _record_by_deltalake(cfg, location):
            deltars.append_once(location, deltars.arrow_rows([row], S.PIPELINE_RUNS), app_id)
            return
        (
            spark.createDataFrame([row], schema=S.PIPELINE_RUNS).write.format("delta").mode("append")
            .option("txnAppId", app_id).option("txnVersion", 0).save(location)
        )

    _commit(run, spec, cfg, append, record=False)
    if not recorded.table_exists:
        register_table(spark, spec, cfg)


def uses_deltalake(cfg: Config, location: str) -> bool:
    """Whether small reads and writes of the table at ``location`` go through delta-rs
    (``runs.record_writer``: deltalake, or auto on a local warehouse)."""
    writer = cfg.runs.record_writer
    return writer == "deltalake" or (writer == "auto" and deltars.is_local(location))


def _record_by_deltalake(cfg: Config, location: str) -> bool:
    """Whether the run record goes through delta-rs: so configured, and the table is partitioned
    per run (a table made before that is replaced through a scan: Spark's)."""
    return uses_deltalake(cfg, location) and set(catalog.PIPELINE_RUNS.partition_by) <= set(
        deltars.partition_columns(location)
    )


def _write_record(run: RunContext, status: str, error: str | None = None) -> None:
    """Writes the run's row over its earlier one: a replace of the (job, run_date, attempt) slice.

    The slice is the table's partition (``catalog.PIPELINE_RUNS``), so Delta replaces it from the
    log alone (no scan, no join), and two runs recording at once touch disjoint partitions. Through
    delta-rs on a local warehouse (``runs.record_writer``); a table made before that partitioning (by job
    only) is replaced by Spark through a scan of the job's rows."""
    spark, cfg, spec = run.spark, run.cfg, catalog.PIPELINE_RUNS
    location = spec.location(cfg)
    ended_at = None if status == S.STATUS_RUNNING else _utc_now()
    row = run.row(status, error, ended_at)

    def replace() -> None:
        if _record_by_deltalake(cfg, location):
            key = {S.JOB: run.job, S.RUN_DATE: run.run_date, S.ATTEMPT: run.attempt}
            predicate = " AND ".join(deltars.condition(column, value) for column, value in key.items())
            deltars.replace_where(location, deltars.arrow_rows([row], S.PIPELINE_RUNS), predicate)
            return
        job = run.job.replace("\\", "\\\\").replace("'", "\\'")
        this_run = (
            f"`{S.JOB}` = '{job}' AND `{S.RUN_DATE}` = DATE'{run.run_date.isoformat()}'"
            f" AND `{S.ATTEMPT}` = {run.attempt}"
        )
        source = spark.createDataFrame([row], schema=S.PIPELINE_RUNS)
        source.write.format("delta").mode("overwrite").option("replaceWhere", this_run).save(location)

    _commit(run, spec, cfg, replace, record=False)


def _abandon_earlier(run: RunContext, attempts: Sequence[int]) -> None:
    """Marks ``attempts`` of the run's (job, run date), found still ``running``, as ``abandoned`` (the
    caller holds the run lock, so none of them is alive: each died without recording its end). Their
    ``ended_at`` stays null: when they died is not known."""
    if not attempts:
        return
    from delta.tables import DeltaTable

    spark, cfg, spec = run.spark, run.cfg, catalog.PIPELINE_RUNS
    location = spec.location(cfg)
    stale = (
        (F.col(S.JOB) == run.job) & (F.col(S.RUN_DATE) == F.lit(run.run_date))
        & (F.col(S.STATUS) == S.STATUS_RUNNING) & F.col(S.ATTEMPT).isin(list(attempts))
    )
    note = (
        f"ended without recording its end (killed, timed out or its driver lost); found still running by "
        f"attempt {run.attempt} at {_utc_now().isoformat(timespec='seconds')}"
    )
    log.warning("%s %s: attempts %s %s", run.job, run.run_date, list(attempts), note)

    def update() -> None:
        DeltaTable.forPath(spark, location).update(
            stale, {S.STATUS: F.lit(S.STATUS_ABANDONED), S.ERROR: F.lit(note)}
        )

    _commit(run, spec, cfg, update, record=False)


def mark_rewound(since: dt.date, note: str) -> None:
    """Marks the succeeded runs of every other job for ``since`` or later as ``rewound`` (their
    tables were rewound by the current run, a backfill); records nothing outside a run."""
    from delta.tables import DeltaTable

    run = _current
    if run is None:
        raise RuntimeError("mark_rewound outside a run: only a backfill's run rewinds")
    spark, cfg, spec = run.spark, run.cfg, catalog.PIPELINE_RUNS
    location = spec.location(cfg)
    undone = (F.col(S.RUN_DATE) >= F.lit(since)) & (F.col(S.STATUS) == S.STATUS_SUCCEEDED) & (F.col(S.JOB) != run.job)
    text = f"{note} (run {run.job} {run.run_date} attempt {run.attempt}, {_utc_now().isoformat(timespec='seconds')})"

    def update() -> None:
        DeltaTable.forPath(spark, location).update(undone, {S.STATUS: F.lit(S.STATUS_REWOUND), S.ERROR: F.lit(text)})

    _commit(run, spec, cfg, update, record=False)


def _refuse_out_of_order(run: RunContext, later: Sequence[dt.date]) -> None:
    """Fails the run, recorded, when the job already succeeded for a later date (see OutOfOrderRun)."""
    if not later:
        return
    shown = ", ".join(d.isoformat() for d in later[:5]) + (f" and {len(later) - 5} more" if len(later) > 5 else "")
    err = OutOfOrderRun(
        f"{run.job} already succeeded for later run dates ({shown}): a run for {run.run_date} now would leave "
        f"them computed without it (sessions continue night after night, vocabularies and indices grow, "
        f"profiles roll up). Re-process from {run.run_date} on, in date order, with "
        f"`python -m shoplens.backfill --dates {run.run_date}`: it rewinds every table to the end of "
        f"{run.run_date - dt.timedelta(days=1)} and runs {run.run_date} through {later[-1]} again (docs/RUNS.md). "
        f"A run for an imported history's date belongs in a warehouse of its own, or before the nightly runs"
    )
    _write_record(run, S.STATUS_FAILED, _error_text(err))
    raise err


def _add_cost(run: RunContext) -> None:
    """Puts what the run cost beyond its rows into its metrics: Spark jobs and tasks so far, and
    Delta commits with the final record counted (it is always exactly one more)."""
    jobs, tasks = spark_job_counts(run.spark, run.job_group)
    run.metrics.update({"spark_jobs": float(jobs), "spark_tasks": float(tasks), "commits": float(len(run.commits) + 1)})


def _utc_now() -> dt.datetime:
    # Time-zone aware: PySpark would read a naive datetime in the machine's local time zone.
    return dt.datetime.now(dt.UTC)


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:ERROR_MAX_CHARS]


@contextmanager
def job_run(
    spark: SparkSession,
    cfg: Config,
    job: str,
    run_date: dt.date,
    attempt: int | None = None,
    dataset: str | None = None,
    arguments: Sequence[str] | None = None,
) -> Iterator[RunContext]:
    """One run of ``job`` for ``run_date``: run lock, pipeline_runs row, current run for the commits.

    ``attempt`` None numbers it one more than recorded, under the run lock. Yields the run; an exception in the body
    records ``failed`` (class and message) and propagates. A run record that cannot be written
    fails the job with RunRecordError (on a failed run, the original error propagates instead).
    """
    global _current, _last
    if _current is not None:
        raise RuntimeError(f"job_run({job}) inside the run of {_current.job}: one run per process at a time")
    faults = parse_faults(os.environ.get(FAULT_ENV_VAR))
    if attempt is not None and attempt < 1:
        raise ValueError(f"--attempt must be at least 1, got {attempt}")
    run = RunContext(
        spark=spark, cfg=cfg, job=job, run_date=run_date,
        attempt=attempt or 0, dataset=dataset, arguments=None if arguments is None else " ".join(arguments),
        started_at=_utc_now(), lock=None, faults=faults,
    )
    run.lock = _lock(run, run_lock_path(cfg, job, run_date), cfg.runs.lock_wait_s, "run")
    run.lock.acquire()
    sc = spark.sparkContext
    outer = {key: sc.getLocalProperty(key) for key in ("spark.jobGroup.id", "spark.job.description")}
    sc.setJobGroup(run.job_group, f"{job} {run_date}", interruptOnCancel=False)
    try:
        if faults:
            log.warning("fault hook armed: %s", ", ".join(f"{f.job}:{f.point}:{f.table}" for f in faults))
        try:
            # Read under the run lock: a run that waited for another now sees its row.
            recorded = recorded_runs(spark, cfg, job, run_date, dataset)
            run.attempt = attempt or recorded.next_attempt
            _write_start(run, recorded)
            _abandon_earlier(run, recorded.stale(run.attempt))
        except Exception as err:
            raise RunRecordError(
                f"could not record the start of {job} {run_date} attempt {run.attempt or 'next'} in "
                f"gold.pipeline_runs: {err}"
            ) from err
        log.info("run of %s for %s, attempt %d", job, run_date, run.attempt)
        if job not in ORDER_FREE_JOBS:
            _refuse_out_of_order(run, recorded.later_dates)
        _current = run
        try:
            yield run
        except BaseException as err:
            _current = None
            _add_cost(run)
            try:
                _write_record(run, S.STATUS_FAILED, _error_text(err))
            except Exception:  # noqa: BLE001 - the job's own error is the one to raise
                log.exception("could not record the failure of %s %s attempt %d", job, run_date, run.attempt)
            raise
        _current = None
        status = S.STATUS_FAILED if run.exit_error else S.STATUS_SUCCEEDED
        _add_cost(run)
        try:
            _write_record(run, status, run.exit_error)
        except Exception as err:
            log.exception("%s %s attempt %d ended %s, but its record failed", job, run_date, run.attempt, status)
            raise RunRecordError(
                f"{job} {run_date} attempt {run.attempt} ended {status} (its tables are committed: "
                f"{run.table_versions}) but gold.pipeline_runs could not be written: {err}"
            ) from err
        log.info("run of %s for %s attempt %d %s: wrote %s", job, run_date, run.attempt, status, run.rows_written)
    finally:
        _current = None
        _last = run
        run.lock.release()
        for key, value in outer.items():
            sc.setLocalProperty(key, value)  # None removes it

