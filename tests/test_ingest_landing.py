"""ingest_landing: parsing, quarantine, reconciliation, quality gates and re-runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog
from shoplens import schemas as S
from shoplens.ingest.landing import bronze_events, rejected_lines, with_parse_result
from shoplens.io import LandingNotFound
from shoplens.jobs import ingest_landing
from shoplens.quality import QualityGateFailed

DAY = dt.date(2024, 1, 2)


def _lines(spark, *lines: str):
    return spark.createDataFrame([(line, "f1") for line in lines], f"{S.RAW_LINE} string, {S.SOURCE_FILE} string")


def test_parse_keeps_events_as_landed_and_rejects_non_events_with_a_reason(spark):
    good = '{"event_id":"e1","event_time":"2024-01-02T10:00:00Z","event_type":"cart","price":12.5,"quantity":2,"extra":{"a":1}}'
    no_id = '{"event_time":"2024-01-02T10:00:00Z","event_type":"view"}'
    lines = _lines(spark, good, no_id, "", "   ", "not json", "[1,2]", "42", '{"event_id":"e2",')
    parsed = with_parse_result(lines)

    expected_bronze = spark.createDataFrame(
        [
            ("e1", "2024-01-02T10:00:00Z", "cart", None, None, None, None, "12.5", "2", None, None, None, None, good, "f1", DAY),
            (None, "2024-01-02T10:00:00Z", "view", None, None, None, None, None, None, None, None, None, None, no_id, "f1", DAY),
        ],
        S.BRONZE_EVENTS,
    )
    assertDataFrameEqual(catalog.BRONZE_EVENTS.conform(bronze_events(parsed, DAY)), expected_bronze)

    expected_rejected = spark.createDataFrame(
        [
            (DAY, "landing", "f1", "blank_line", ""),
            (DAY, "landing", "f1", "blank_line", "   "),
            (DAY, "landing", "f1", "malformed_json", "not json"),
            (DAY, "landing", "f1", "malformed_json", "[1,2]"),
            (DAY, "landing", "f1", "malformed_json", "42"),
            (DAY, "landing", "f1", "malformed_json", '{"event_id":"e2",'),
        ],
        S.QUARANTINE,
    )
    assertDataFrameEqual(catalog.QUARANTINE.conform(rejected_lines(parsed, DAY)), expected_rejected)


def _landed_lines(landing: Path, day: dt.date) -> int:
    return sum(len(p.read_text().splitlines()) for p in (landing / "events" / day.isoformat()).glob("part-*"))


def _table(spark, cfg, spec):
    return spark.read.format("delta").load(spec.location(cfg))


def test_ingest_reconciles_and_a_rerun_gives_the_same_tables(spark, fresh_cfg, fixture_landing):
    summary = ingest_landing.run(spark, fresh_cfg, DAY)
    bronze = _table(spark, fresh_cfg, catalog.BRONZE_EVENTS)
    quarantine = _table(spark, fresh_cfg, catalog.QUARANTINE)
    first_bronze = bronze.where(F.col(S.RUN_DATE) == DAY).collect()
    first_quarantine = quarantine.where(F.col(S.RUN_DATE) == DAY).collect()

    # landed = accepted + quarantined, each term counted from its own place
    landed = _landed_lines(fixture_landing, DAY)
    assert landed == 37
    assert len(first_bronze) == 36
    assert [(r[S.REASON], r[S.STAGE]) for r in first_quarantine] == [("malformed_json", "landing")]
    assert (summary.landed, summary.accepted, summary.quarantined_by_reason) == (37, 36, {"malformed_json": 1})
    assert {Path(r[S.SOURCE_FILE]).name for r in first_bronze} == {"part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"}

    ingest_landing.run(spark, fresh_cfg, DAY)
    assertDataFrameEqual(bronze.where(F.col(S.RUN_DATE) == DAY), first_bronze)
    assertDataFrameEqual(quarantine.where(F.col(S.RUN_DATE) == DAY), first_quarantine)
    assert spark.table("bronze.events").where(F.col(S.RUN_DATE) == DAY).count() == 36


def test_ingesting_another_date_leaves_the_first_untouched(spark, fresh_cfg, fixture_landing):
    ingest_landing.run(spark, fresh_cfg, DAY)
    ingest_landing.run(spark, fresh_cfg, dt.date(2024, 1, 1))
    counts = {
        r[S.RUN_DATE]: r["count"]
        for r in _table(spark, fresh_cfg, catalog.BRONZE_EVENTS).groupBy(S.RUN_DATE).count().collect()
    }
    assert counts == {dt.date(2024, 1, 1): 24, DAY: 36}


def test_missing_landing_folder_names_the_path(spark, fresh_cfg):
    with pytest.raises(LandingNotFound, match=r"landing/events/2024-01-02/part-\*"):
        ingest_landing.run(spark, fresh_cfg, DAY)


def _write_landing(cfg, day: dt.date, lines: list[str]) -> None:
    folder = Path(cfg.paths.landing) / "events" / day.isoformat()
    folder.mkdir(parents=True)
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")


def _event(i: int, **fields) -> str:
    import json

    event = {"event_id": f"e{i}", "event_time": "2024-01-02T10:00:00Z", "event_type": "view", "user_id": "u1", "item_id": "i1"}
    event.update(fields)
    return json.dumps(event)


def test_too_many_malformed_lines_fail_the_run_and_commit_nothing(spark, fresh_cfg):
    _write_landing(fresh_cfg, DAY, [_event(i) for i in range(10)] + ["garbage"] * 2)
    with pytest.raises(ingest_landing.TooManyMalformedLines, match=r"2 of 12 .*16\.7%.*max_malformed_share"):
        ingest_landing.run(spark, fresh_cfg, DAY)
    assert not catalog.table_exists(spark, catalog.BRONZE_EVENTS.location(fresh_cfg))
    assert not catalog.table_exists(spark, catalog.QUARANTINE.location(fresh_cfg))


def test_a_failed_quality_gate_commits_nothing_but_stores_its_results(spark, fresh_cfg):
    lines = [_event(i) for i in range(6)] + [_event(i, event_id=None) for i in range(6, 10)]
    _write_landing(fresh_cfg, DAY, lines)
    with pytest.raises(QualityGateFailed, match=r"expect_column_values_to_not_be_null on bronze.events.event_id: 40\.00% of 10"):
        ingest_landing.run(spark, fresh_cfg, DAY)
    assert not catalog.table_exists(spark, catalog.BRONZE_EVENTS.location(fresh_cfg))
    results = _table(spark, fresh_cfg, catalog.QUALITY_RESULTS)
    failed = [(r[S.EXPECTATION], r[S.COLUMN], r[S.UNEXPECTED_COUNT]) for r in results.where(~F.col(S.SUCCESS)).collect()]
    assert failed == [("expect_column_values_to_not_be_null", "event_id", 4)]
    assert results.where(F.col(S.SUCCESS)).count() == 3


def test_quality_results_of_a_rerun_replace_the_earlier_ones(spark, fresh_cfg, fixture_landing):
    looser = dataclasses.replace(fresh_cfg, quality=dataclasses.replace(fresh_cfg.quality, min_valid_share=0.5))
    ingest_landing.run(spark, fresh_cfg, DAY)
    ingest_landing.run(spark, looser, DAY)
    rows = _table(spark, fresh_cfg, catalog.QUALITY_RESULTS).collect()
    assert len(rows) == 4
    assert all(r[S.SUCCESS] for r in rows)
    assert {r[S.DETAILS].count('"mostly": 0.5') for r in rows if r[S.COLUMN]} == {1}
