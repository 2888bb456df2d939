"""A history ingested in one pass (``--since``) equals the same dates run night by night."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog, demo
from shoplens.io import LandingNotFound
from shoplens.jobs import build_silver_events, build_silver_items, ingest_landing

START = dt.date(2024, 3, 1)
DAYS = 3
LAST = START + dt.timedelta(days=DAYS - 1)


def _rows(spark, cfg, spec):
    return spark.read.format("delta").load(spec.location(cfg))


def test_since_ingests_and_builds_silver_as_nights_in_order_do(spark, cfg, tmp_path):
    landing = tmp_path / "landing"
    # Late and redelivered lines across the nights: the dedupe and the late window are exercised.
    demo.generate(landing, START, DAYS, 2000, 11, late_rate=0.05, dirty_rate=0.05)
    nightly = dataclasses.replace(
        cfg, paths=dataclasses.replace(cfg.paths, landing=str(landing), warehouse=str(tmp_path / "nightly"))
    )
    bulk = dataclasses.replace(nightly, paths=dataclasses.replace(nightly.paths, warehouse=str(tmp_path / "bulk")))
    for n in range(DAYS):
        day = START + dt.timedelta(days=n)
        ingest_landing.run(spark, nightly, day)
        build_silver_events.run(spark, nightly, day, demo=True)
    summary = ingest_landing.run(spark, bulk, LAST, since=START)
    build_silver_events.run(spark, bulk, LAST, demo=True, since=START)

    landing_rejects = _rows(spark, nightly, catalog.QUARANTINE).where("stage = 'landing'").count()
    assert summary.landed == _rows(spark, nightly, catalog.BRONZE_EVENTS).count() + landing_rejects
    for spec in (catalog.BRONZE_EVENTS, catalog.SILVER_EVENTS, catalog.SILVER_REVIEWS, catalog.QUARANTINE,
                 catalog.DUPLICATES):
        expected, actual = _rows(spark, nightly, spec), _rows(spark, bulk, spec)
        assert actual.count() > 0 or spec is catalog.SILVER_REVIEWS, spec.name
        assertDataFrameEqual(actual, expected)
    # Every night's own rows keep their run date.
    dates = {r[0] for r in _rows(spark, bulk, catalog.SILVER_EVENTS).select("run_date").distinct().collect()}
    assert dates == {START + dt.timedelta(days=n) for n in range(DAYS)}


def test_since_names_the_dates_without_landing_files(spark, cfg, tmp_path):
    landing = tmp_path / "landing"
    demo.generate(landing, START, 2, 1000, 3)
    moved = dataclasses.replace(
        cfg, paths=dataclasses.replace(cfg.paths, landing=str(landing), warehouse=str(tmp_path / "wh"))
    )
    with pytest.raises(LandingNotFound, match="2024-03-03"):
        ingest_landing.run(spark, moved, START + dt.timedelta(days=2), since=START)


def test_since_merges_every_catalogue_as_dates_in_order_do(spark, cfg, tmp_path):
    landing = tmp_path / "landing"
    days = 9  # catalogues land on the first day and every 7th: two of them
    demo.generate(landing, START, days, 1000, 5)
    last = START + dt.timedelta(days=days - 1)
    nightly = dataclasses.replace(
        cfg, paths=dataclasses.replace(cfg.paths, landing=str(landing), warehouse=str(tmp_path / "nightly"))
    )
    bulk = dataclasses.replace(nightly, paths=dataclasses.replace(nightly.paths, warehouse=str(tmp_path / "bulk")))
    for n in range(days):
        build_silver_items.run(spark, nightly, START + dt.timedelta(days=n))
    build_silver_items.run(spark, bulk, last, since=START)
    for spec in (catalog.SILVER_ITEMS, catalog.QUARANTINE):
        assertDataFrameEqual(_rows(spark, bulk, spec), _rows(spark, nightly, spec))
    updated = {r[0] for r in _rows(spark, bulk, catalog.SILVER_ITEMS).select("updated_on").distinct().collect()}
    assert updated == {START, START + dt.timedelta(days=7)}
