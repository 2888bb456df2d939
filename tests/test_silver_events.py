"""build_silver_events: typing rules, pseudonyms, duplicates, late data, bots, reconciliation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog
from shoplens import schemas as S
from shoplens.ingest import rules
from shoplens.ingest.pseudonymise import DEMO_KEY, PseudonymKeyMissing, hmac_sha256_hex, load_key
from shoplens.jobs import build_silver_events, ingest_landing

D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)
CTX = rules.RowContext("UTC", late_days=1, future_tolerance_minutes=60)


def test_hmac_from_built_ins_matches_pythons_hmac(spark):
    values = ["u1", "ü-ß ✓", "", None, "x" * 200]
    key = b"k" * 100  # longer than a block: hashed first, as RFC 2104 says
    for k in (DEMO_KEY, key):
        got = [r[0] for r in spark.createDataFrame([(v,) for v in values], "v string").select(hmac_sha256_hex(F.col("v"), k)).collect()]
        assert got == [None if v is None else hmac.new(k, v.encode(), hashlib.sha256).hexdigest() for v in values]


def _bronze_row(run_date=D2, **fields):
    row = {name: None for name in S.LANDING_EVENT_FIELDS}
    row.update(event_id="e", event_time="2024-01-02T10:00:00Z", event_type="view", user_id="u1", item_id="i1")
    row.update(fields)
    return (*[row[n] for n in S.LANDING_EVENT_FIELDS], json.dumps(fields), "f", run_date)


def test_each_rule_rejects_its_rows_and_the_first_broken_rule_wins(spark):
    cases = {
        "ok": _bronze_row(),
        "ok_anonymous": _bronze_row(user_id=None, session_key="s1"),
        "ok_late_within_window": _bronze_row(event_time="2024-01-01T23:59:59Z"),
        "ok_source_kind_mapped": _bronze_row(event_type=" PV "),
        "ok_quantity_2.0": _bronze_row(event_type="buy", price="3.5", quantity="2.0"),
        "missing_event_id": _bronze_row(event_id=" "),
        "missing_event_time": _bronze_row(event_time=None, event_type=None),
        "missing_event_type": _bronze_row(event_type=""),
        "malformed_event_time": _bronze_row(event_time="yesterday"),
        "unknown_event_type": _bronze_row(event_type="teleport"),
        "future_event_time": _bronze_row(event_time="2024-01-03T01:00:01Z"),
        "ok_within_future_tolerance": _bronze_row(event_time="2024-01-03T00:59:59Z"),
        "too_late": _bronze_row(event_time="2023-12-31T23:59:59Z"),
        "missing_user": _bronze_row(user_id=None),
        "missing_item_id": _bronze_row(item_id=None),
        "malformed_price": _bronze_row(price="12,50"),
        "negative_price": _bronze_row(price="-1"),
        "missing_price": _bronze_row(event_type="purchase"),
        "invalid_quantity": _bronze_row(quantity="2.5"),
        "invalid_rating": _bronze_row(event_type="review", rating="6"),
    }
    df = spark.createDataFrame([(name, *row) for name, row in cases.items()], f"case string, {S.BRONZE_EVENTS.simpleString()[7:-1]}")
    got = df.transform(rules.with_typed_fields).transform(lambda d: rules.with_reject_reason(d, CTX)).select("case", S.REASON)
    expected = spark.createDataFrame(
        [(name, None if name.startswith("ok") else name) for name in cases], "case string, reason string"
    )
    assertDataFrameEqual(got, expected)


def test_jobs_refuse_to_run_without_a_key_unless_demo(monkeypatch, tmp_path):
    monkeypatch.delenv("SHOPLENS_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("SHOPLENS_PSEUDONYM_KEY_FILE", raising=False)
    with pytest.raises(PseudonymKeyMissing, match="SHOPLENS_PSEUDONYM_KEY.*--demo"):
        load_key(demo=False)
    assert load_key(demo=True) == DEMO_KEY
    (tmp_path / "key").write_text("secret\n")
    monkeypatch.setenv("SHOPLENS_PSEUDONYM_KEY_FILE", str(tmp_path / "key"))
    assert load_key(demo=True) == b"secret"


def _event(event_id, time, **fields):
    return json.dumps({"event_id": event_id, "event_time": time, "event_type": "view", "user_id": "u1", "item_id": "i1", **fields})


LANDINGS = {
    D1: [
        _event("a", "2024-01-01T10:00:00Z"),
        _event("b", "2024-01-01T11:00:00Z", event_type="purchase", price="9.99", quantity=2, order_id="o1"),
        _event("c", "2024-01-01T12:00:00Z", event_type="review", rating=4, review_text="nice"),
        _event("x", "2024-01-01T12:00:00Z", event_type="teleport"),
    ],
    D2: [
        _event("a", "2024-01-01T10:00:00Z"),  # re-delivery of a: duplicate
        _event("d", "2024-01-01T23:00:00Z"),  # late, within the window
        _event("e", "2024-01-02T09:00:00Z", user_id=None, session_key="anon1"),
        _event("e", "2024-01-02T09:00:00Z", user_id=None, session_key="anon1"),  # duplicate in the same file
    ],
    D3: [
        _event("f", "2024-01-01T08:00:00Z"),  # too late for D3 with late_days=1
        _event("g", "2024-01-03T08:00:00Z"),
        *[_event(f"bot{i}", f"2024-01-03T10:{i // 60:02d}:{i % 60:02d}Z", user_id="bot") for i in range(6)],
    ],
}


@pytest.fixture()
def silver_cfg(fresh_cfg):
    cfg = dataclasses.replace(
        fresh_cfg,
        silver=dataclasses.replace(fresh_cfg.silver, late_days=1, max_reject_share=0.5),
        bots=dataclasses.replace(fresh_cfg.bots, max_events_per_hour=5),
        ingest=dataclasses.replace(fresh_cfg.ingest, max_malformed_share=0.5),
    )
    for day, lines in LANDINGS.items():
        folder = Path(cfg.paths.landing) / "events" / day.isoformat()
        folder.mkdir(parents=True)
        (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    return cfg


def _silver(spark, cfg):
    return {
        spec.name: spark.read.format("delta").load(spec.location(cfg)).collect()
        for spec in (catalog.SILVER_EVENTS, catalog.SILVER_REVIEWS, catalog.QUARANTINE, catalog.DUPLICATES)
    }


def test_silver_dedupes_merges_late_events_and_reconciles(spark, silver_cfg):
    for day in LANDINGS:
        ingest_landing.run(spark, silver_cfg, day)
        build_silver_events.run(spark, silver_cfg, day, demo=True)
    events = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(silver_cfg))
    got = {r[S.EVENT_ID]: (r[S.EVENT_DATE], r[S.RUN_DATE], r[S.IS_BOT]) for r in events.collect()}
    assert got == {
        "a": (D1, D1, False), "b": (D1, D1, False), "c": (D1, D1, False), "d": (D1, D2, False),
        "e": (D2, D2, False), "g": (D3, D3, False), **{f"bot{i}": (D3, D3, True) for i in range(6)},
    }
    pseudonym = hmac.new(DEMO_KEY, b"u1", hashlib.sha256).hexdigest()
    a = events.where(F.col(S.EVENT_ID) == "a").first()
    assert a[S.USER_ID] == pseudonym and "u1" not in a.asDict().values()
    assert events.where(F.col(S.EVENT_ID) == "e").first()[S.USER_ID] is None
    b = events.where(F.col(S.EVENT_ID) == "b").first()
    assert (b[S.EVENT_TYPE], str(b[S.PRICE]), b[S.QUANTITY], b[S.ORDER_ID]) == ("purchase", "9.99", 2, "o1")
    reviews = spark.read.format("delta").load(catalog.SILVER_REVIEWS.location(silver_cfg)).collect()
    assert [(r[S.EVENT_ID], r[S.RATING], r[S.REVIEW_TEXT]) for r in reviews] == [("c", 4, "nice")]

    quarantine = spark.read.format("delta").load(catalog.QUARANTINE.location(silver_cfg))
    duplicates = spark.read.format("delta").load(catalog.DUPLICATES.location(silver_cfg))
    bronze = spark.read.format("delta").load(catalog.BRONZE_EVENTS.location(silver_cfg))
    for day, lines in LANDINGS.items():
        accepted = events.where(F.col(S.RUN_DATE) == day).count()
        rejected = quarantine.where((F.col(S.RUN_DATE) == day) & (F.col(S.STAGE) == "silver")).count()
        dups = duplicates.where(F.col(S.RUN_DATE) == day).count()
        assert bronze.where(F.col(S.RUN_DATE) == day).count() == len(lines) == accepted + rejected + dups
    assert sorted((r[S.RUN_DATE], r[S.REASON]) for r in quarantine.collect()) == [(D1, "unknown_event_type"), (D3, "too_late")]
    assert sorted((r[S.RUN_DATE], r[S.EVENT_ID]) for r in duplicates.collect()) == [(D2, "a"), (D2, "e")]


def test_rerun_and_out_of_order_runs_give_the_same_silver(spark, silver_cfg, tmp_path):
    for day in LANDINGS:
        ingest_landing.run(spark, silver_cfg, day)
    for day in LANDINGS:
        build_silver_events.run(spark, silver_cfg, day, demo=True)
    in_order = _silver(spark, silver_cfg)

    other = dataclasses.replace(silver_cfg, paths=dataclasses.replace(silver_cfg.paths, warehouse=str(tmp_path / "wh2")))
    for day in LANDINGS:
        ingest_landing.run(spark, other, day)
    # D2 before D1: D2 first accepts its re-delivery of D1's "a"; D1's run then takes "a" back and
    # rebuilds D2, where "a" becomes a duplicate. The last run repeats D1: a re-run changes nothing.
    for day in (D3, D2, D1, D1):
        build_silver_events.run(spark, other, day, demo=True)
    shuffled = _silver(spark, other)
    for name, rows in in_order.items():
        assert len(shuffled[name]) == len(rows), name
        assertDataFrameEqual(shuffled[name], rows)


def test_a_rule_above_its_share_fails_naming_it(spark, silver_cfg):
    strict = dataclasses.replace(silver_cfg, silver=dataclasses.replace(silver_cfg.silver, max_reject_share=0.2))
    ingest_landing.run(spark, strict, D1)
    with pytest.raises(build_silver_events.TooManyRejectedRows, match=r"rule unknown_event_type rejected 1 of 4 .*25\.0%"):
        build_silver_events.run(spark, strict, D1, demo=True)
    assert not catalog.table_exists(spark, catalog.SILVER_EVENTS.location(strict))
