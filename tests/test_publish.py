"""publish: a night's consistent cut of every table in gold.published_runs, refused while a job of
the night did not succeed or a required table has no rows for it."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from pyspark.sql import functions as F

from shoplens import catalog, deltars, shards
from shoplens import schemas as S
from shoplens.jobs import publish

from .conftest import CONF_DIR
from .synthetic_silver import ev, write_all_silver

DAY = dt.date(2024, 1, 2)
EVENTS = [
    ev("e1", "2024-01-01T10:00:00"), ev("e2", "2024-01-02T09:00:00"), ev("e3", "2024-01-02T11:00:00", user="u2"),
]


def _required(cfg, *tables: str):
    return dataclasses.replace(cfg, runs=dataclasses.replace(cfg.runs, publish_required_tables=tables))


def _record(spark, cfg, *attempts: tuple[str, int, str]) -> None:
    """Appends gold.pipeline_runs rows (job, attempt, status) for DAY, as jobs' mains write them."""
    started = dt.datetime(2024, 1, 3, 1, tzinfo=dt.UTC)
    rows = [
        (job, DAY, attempt, None, status, started, None, None, None, None, None, None, None, None, None, None, None,
         None, None)
        for job, attempt, status in attempts
    ]
    spark.createDataFrame(rows, S.PIPELINE_RUNS).write.format("delta").mode("append").partitionBy(*catalog.PIPELINE_RUNS.partition_by).save(
        catalog.PIPELINE_RUNS.location(cfg)
    )


def _published(spark, cfg):
    return spark.read.format("delta").load(catalog.PUBLISHED_RUNS.location(cfg)).collect()


def test_a_complete_night_is_published_with_every_tables_version_and_its_rows(spark, fresh_cfg):
    cfg = _required(fresh_cfg, "silver.events")
    write_all_silver(spark, cfg, EVENTS)
    # A job that needed a retry counts by its succeeded attempt.
    _record(spark, cfg, ("ingest_landing", 1, "succeeded"), ("build_sessions", 1, "abandoned"),
            ("build_sessions", 2, "succeeded"))

    published = publish.run(spark, cfg, DAY)

    (row,) = _published(spark, cfg)
    assert row[S.RUN_DATE] == DAY and row[S.JOB_ATTEMPTS] == {"ingest_landing": 1, "build_sessions": 2}
    existing = {spec.name: spec.location(cfg) for spec in catalog.TABLES if catalog.table_exists(spark, spec.location(cfg))}
    assert set(existing) == {"silver.events", "gold.pipeline_runs", "gold.published_runs"}
    assert row[S.TABLE_VERSIONS] == {name: shards.latest_version(loc) for name, loc in existing.items()
                                     if name != "gold.published_runs"}
    # Rows for the date: silver by event date; pipeline_runs, the night's record, is not counted.
    assert row[S.RUN_DATE_ROWS] == {"silver.events": 2}
    assert published[S.TABLE_VERSIONS] == row[S.TABLE_VERSIONS]

    # Publishing the date again (after a late fix) replaces its row; the versions move on.
    write_all_silver(spark, cfg, [*EVENTS, ev("e4", "2024-01-02T12:00:00", user="u3")])
    publish.run(spark, cfg, DAY)
    (again,) = _published(spark, cfg)
    assert again[S.RUN_DATE_ROWS] == {"silver.events": 3}
    assert again[S.TABLE_VERSIONS]["silver.events"] == row[S.TABLE_VERSIONS]["silver.events"] + 1


@pytest.mark.parametrize("status", ["failed", "abandoned", "running"])
def test_a_night_whose_job_did_not_succeed_is_refused_naming_it(spark, fresh_cfg, status):
    cfg = _required(fresh_cfg, "silver.events")
    write_all_silver(spark, cfg, EVENTS)
    # The latest attempt decides: an earlier success does not count.
    _record(spark, cfg, ("ingest_landing", 1, "succeeded"), ("build_sessions", 1, "succeeded"),
            ("build_sessions", 2, status))

    with pytest.raises(publish.PublishError, match=f"did not succeed: build_sessions attempt 2 {status}"):
        publish.run(spark, cfg, DAY)
    assert not catalog.table_exists(spark, catalog.PUBLISHED_RUNS.location(cfg))


def test_a_required_table_without_rows_for_the_date_is_refused(spark, fresh_cfg):
    cfg = _required(fresh_cfg, "silver.events", "gold.recommendations")
    write_all_silver(spark, cfg, EVENTS)

    with pytest.raises(publish.PublishError, match=r"no rows for it in gold.recommendations \(runs.publish"):
        publish.run(spark, cfg, DAY)
    with pytest.raises(publish.PublishError, match="no rows for it in silver.events, gold.recommendations"):
        publish.run(spark, cfg, DAY + dt.timedelta(days=5))


def test_the_job_records_its_own_run_and_leaves_itself_out_of_the_nights_jobs(spark, fresh_cfg):
    write_all_silver(spark, fresh_cfg, EVENTS)
    _record(spark, fresh_cfg, ("ingest_landing", 1, "succeeded"))
    argv = ["--run-date", DAY.isoformat(), "--conf-dir", str(CONF_DIR), "--set",
            f"paths.warehouse={fresh_cfg.paths.warehouse}", "--set", "runs.publish_required_tables=[silver.events]"]

    assert publish.main(argv) == 0
    assert publish.main(argv) == 0  # attempt 2: the job's own rows never block it

    (row,) = _published(spark, fresh_cfg)
    assert row[S.JOB_ATTEMPTS] == {"ingest_landing": 1}
    runs = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(fresh_cfg)).where(F.col(S.JOB) == "publish")
    assert sorted((r[S.ATTEMPT], r[S.STATUS]) for r in runs.collect()) == [(1, "succeeded"), (2, "succeeded")]


def test_partition_rows_from_the_log_equal_spark_counts_across_checkpoints_and_rewrites(spark, tmp_path):
    location = str(tmp_path / "t")
    day = F.col("d")

    def write(n: int, mode: str, only: str | None = None, **options) -> None:
        frame = spark.range(n).withColumn("d", F.when(F.col("id") % 3 == 0, "2024-01-01").otherwise("2024-01-02"))
        frame = frame.where(day == only) if only else frame
        frame.withColumn("d", day.cast("date")).write.format("delta").mode(mode).options(**options) \
            .partitionBy("d").save(location)

    write(10, "overwrite")
    for n in range(1, 12):  # past Delta's checkpoint interval (10): the replay starts from a checkpoint
        write(n, "append")
    write(4, "overwrite", only="2024-01-02", replaceWhere="d = DATE'2024-01-02'")
    spark.sql(f"DELETE FROM delta.`{location}` WHERE d = DATE'2024-01-01' AND id > 5")
    version = shards.latest_version(location)
    assert any(p.name.endswith(".checkpoint.parquet") for p in (tmp_path / "t" / "_delta_log").iterdir())

    frame = spark.read.format("delta").load(location)
    for value in ("2024-01-01", "2024-01-02", "2024-01-03"):
        expected = frame.where(day == F.lit(value).cast("date")).count()
        assert deltars.partition_rows(location, version, "d", value) == expected
    # An earlier version is replayed as it was.
    assert deltars.partition_rows(location, 0, "d", "2024-01-02") == 6
