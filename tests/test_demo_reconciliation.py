"""The demo shop through ingest and silver: every planted defect found, every line accounted for."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac

import pytest
from pyspark.sql import functions as F

from shoplens import catalog
from shoplens import schemas as S
from shoplens.demo import generate
from shoplens.ingest.pseudonymise import DEMO_KEY
from shoplens.ingest.rules import REASONS
from shoplens.jobs import build_silver_events, ingest_landing


def _counts(df, *keys):
    return {tuple(r[k] for k in keys): r["count"] for r in df.groupBy(*keys).count().collect()}


@pytest.fixture(scope="module")
def demo_run(spark, cfg, tmp_path_factory):


    base = tmp_path_factory.mktemp("demo")
    paths = dataclasses.replace(cfg.paths, warehouse=str(base / "warehouse"), landing=str(base / "landing"))
    demo_cfg = dataclasses.replace(cfg, paths=paths)
    manifest = generate(paths.landing, "2024-01-01", 7, 10_000, seed=7)
    for day in manifest["landing_dates"]:
        run_date = dt.date.fromisoformat(day)
        ingest_landing.run(spark, demo_cfg, run_date)
        build_silver_events.run(spark, demo_cfg, run_date, demo=True)
    tables = {
        spec.name: spark.read.format("delta").load(spec.location(demo_cfg))
        for spec in (catalog.BRONZE_EVENTS, catalog.SILVER_EVENTS, catalog.QUARANTINE, catalog.DUPLICATES)
    }
    return manifest, tables


def test_every_landed_line_is_accepted_quarantined_or_a_duplicate(demo_run):
    manifest, t = demo_run
    bronze = _counts(t["bronze.events"], S.RUN_DATE)
    accepted = _counts(t["silver.events"], S.RUN_DATE)
    quarantined = _counts(t["silver.quarantine"], S.RUN_DATE)
    duplicates = _counts(t["silver.duplicates"], S.RUN_DATE)
    for day, truth in manifest["per_date"].items():
        key = (dt.date.fromisoformat(day),)
        assert accepted.get(key, 0) + quarantined.get(key, 0) + duplicates.get(key, 0) == truth["lines"], day
        assert accepted.get(key, 0) == truth["clean_events"] + truth["late_within_window"], day
        assert bronze[key] == truth["lines"] - truth["malformed_json"], day


def test_quarantine_reasons_and_duplicates_match_what_was_planted(demo_run):
    manifest, t = demo_run
    found = _counts(t["silver.quarantine"], S.RUN_DATE, S.REASON)
    dups = _counts(t["silver.duplicates"], S.RUN_DATE)
    planted_kinds = [k for k in manifest["dirty_kinds"] if k != "duplicate"] + ["too_late"]
    assert set(planted_kinds) - {"malformed_json"} <= set(REASONS)
    for day, truth in manifest["per_date"].items():
        date = dt.date.fromisoformat(day)
        got = {reason: n for (d, reason), n in found.items() if d == date}
        assert got == {k: truth[k] for k in planted_kinds if truth[k]}, day
        assert dups.get((date,), 0) == truth["duplicate"], day


def test_planted_bots_are_flagged_and_people_are_not(demo_run):
    manifest, t = demo_run
    bots = {hmac.new(DEMO_KEY, u.encode(), hashlib.sha256).hexdigest() for u in manifest["bots"]["user_ids"]}
    flagged = {r[S.USER_ID] for r in t["silver.events"].where(F.col(S.IS_BOT)).select(S.USER_ID).distinct().collect()}
    assert flagged == bots
