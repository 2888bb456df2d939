"""publish: the night's last job. Records a consistent cut of every table for run date R in
``gold.published_runs``, once the night is complete.

Readers who must not see a half-finished night (dashboards, exports) read the newest published run
date, at the Delta versions its row names. R is published only when

1. no job recorded for R in gold.pipeline_runs ended ``failed``, ``abandoned`` or is still
   ``running`` in its latest attempt, and
2. every table of ``runs.publish_required_tables`` holds rows for R (its date partition column:
   ``run_date``, ``snapshot_date``, ``event_date`` or ``start_date``).

Otherwise it raises :class:`PublishError` naming what is missing, and writes nothing. The row holds
every existing table's current Delta version (from its log, no Spark job), the rows for R of every
table with a date partition column but gold.pipeline_runs (summed from the ``numRecords`` statistic
of the partition's files in the Delta log, read by delta-rs: no Spark job; a partition-pruned count where a file has
no statistic) and each job's succeeded attempt.
Publishing R again (a re-run after a late fix) replaces R's row.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from shoplens import catalog, cli, deltars, runs, shards
from shoplens import schemas as S
from shoplens.catalog import TableSpec
from shoplens.config import Config
from shoplens.io import read_table, replace_rows

log = logging.getLogger(__name__)

JOB = "publish"
# A table's rows for a run date are those of its first partition column among these.
DATE_COLUMNS = (S.RUN_DATE, S.SNAPSHOT_DATE, S.EVENT_DATE, S.START_DATE)


class PublishError(RuntimeError):
    """The night is not complete: a job did not succeed, or a required table has no rows for it."""


def date_column(spec: TableSpec) -> str | None:
    """Returns the date partition column that says which run date a row of ``spec`` belongs to."""
    return next((c for c in spec.partition_by if c in DATE_COLUMNS), None)


def job_outcomes(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict[str, tuple[int, str]]:
    """Returns each job's latest attempt for ``run_date`` in gold.pipeline_runs: job → (attempt,
    status); this job's own rows are left out."""
    location = catalog.PIPELINE_RUNS.location(cfg)
    if not catalog.table_exists(spark, location):
        return {}
    latest = Window.partitionBy(S.JOB).orderBy(F.col(S.ATTEMPT).desc())
    rows = (
        read_table(spark, location)
        .where((F.col(S.RUN_DATE) == F.lit(run_date)) & (F.col(S.JOB) != JOB))
        .withColumn("_n", F.row_number().over(latest))
        .where(F.col("_n") == 1)
        .select(S.JOB, S.ATTEMPT, S.STATUS)
        .collect()
    )
    return {r[S.JOB]: (r[S.ATTEMPT], r[S.STATUS]) for r in rows}


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict[str, Any]:
    """Publishes ``run_date`` (module doc). Returns the published row as a dict.

    Raises: :class:`PublishError` when a job did not succeed or a required table lacks rows.
    """
    outcomes = job_outcomes(spark, cfg, run_date)
    unfinished = {job: f"attempt {a} {status}" for job, (a, status) in outcomes.items() if status != S.STATUS_SUCCEEDED}
    if unfinished:
        raise PublishError(
            f"{run_date} is not published: the latest attempt of {len(unfinished)} job(s) did not succeed: "
            + "; ".join(f"{job} {what}" for job, what in sorted(unfinished.items()))
        )
    versions, rows = {}, {}
    for spec in catalog.TABLES:
        location = spec.location(cfg)
        if spec is catalog.PUBLISHED_RUNS or not catalog.table_exists(spark, location):
            continue
        version = shards.latest_version(location)
        versions[spec.name] = version
        column = date_column(spec)
        # The run record is partitioned by run date too, but it is the night's log, not its data.
        if column is not None and spec is not catalog.PIPELINE_RUNS:
            counted = _rows_from_log(cfg, location, version, column, run_date)
            rows[spec.name] = counted if counted is not None else (
                spark.read.format("delta").option("versionAsOf", version).load(location)
                .where(F.col(column) == F.lit(run_date)).count()
            )
    missing = [name for name in cfg.runs.publish_required_tables if not rows.get(name)]
    if missing:
        raise PublishError(
            f"{run_date} is not published: no rows for it in {', '.join(missing)} "
            "(runs.publish_required_tables); run the jobs that write them first"
        )
    published = {
        S.RUN_DATE: run_date,
        S.PUBLISHED_AT: dt.datetime.now(dt.UTC),
        S.TABLE_VERSIONS: versions,
        S.RUN_DATE_ROWS: rows,
        S.JOB_ATTEMPTS: {job: attempt for job, (attempt, _) in outcomes.items()},
    }
    # One row per run date: replacing the date's slice is the upsert (no MERGE).
    replace_rows(spark, [published], catalog.PUBLISHED_RUNS, cfg, {S.RUN_DATE: run_date})
    log.info("published %s: %d tables, rows for the date %s", run_date, len(versions), rows)
    return published


def _rows_from_log(cfg: Config, location: str, version: int, column: str, run_date: dt.date) -> int | None:
    """The rows of ``column`` = ``run_date`` at ``version`` from the log's statistics (delta-rs), or
    None where they cannot be had so (``runs.record_writer``, no statistic, deletion vectors, a
    store delta-rs does not reach): Spark counts them then."""
    if not runs.uses_deltalake(cfg, location):
        return None
    try:
        return deltars.partition_rows(location, version, column, run_date.isoformat())
    except Exception as err:  # noqa: BLE001 - the Spark count is the answer then
        log.warning("rows of %s for %s not read from its log (%s): counted with Spark", location, run_date, err)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])

    def work(spark, cfg, args) -> None:
        run(spark, cfg, args.run_date)

    return cli.run_job(JOB, parser, argv, work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
