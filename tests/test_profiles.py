"""gold.user_daily_activity, gold.user_profiles, RFM segments, clusters and the segment summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoplens import catalog
from shoplens import schemas as S
from shoplens.jobs import build_user_activity, build_user_profiles
from shoplens.profiles.activity import daily_activity
from shoplens.profiles.features import profile_rows
from tests.synthetic_silver import ev, generate, write_all_silver, write_nightly_silver

D = dt.date


def _read(spark, spec, cfg, where=None):
    df = spark.read.format("delta").load(spec.location(cfg))
    return df.where(where) if where is not None else df


def _rows(df, order):
    return [r.asDict(recursive=True) for r in df.orderBy(*order).collect()]


def _no_nan(df) -> None:
    doubles = [f.name for f in df.schema.fields if isinstance(f.dataType, T.DoubleType)]
    for name in doubles:
        assert df.where(F.isnan(name)).count() == 0, f"NaN in {name}"


def _cfg(fresh_cfg, **clusters):
    settings = dataclasses.replace(fresh_cfg.profiles.clusters, **clusters) if clusters else fresh_cfg.profiles.clusters
    return dataclasses.replace(fresh_cfg, profiles=dataclasses.replace(fresh_cfg.profiles, clusters=settings))


EDGE_EVENTS = [
    # Alice: two orders on two days (one of two lines), views and a cart: a regular buyer.
    ev("a1", "2024-01-02T10:00:00", "alice", "i1", "view", category_id="c1"),
    ev("a2", "2024-01-02T10:01:00", "alice", "i1", "cart", category_id="c1"),
    ev("a3", "2024-01-02T10:02:00", "alice", "i1", "purchase", category_id="c1", price=Decimal("10.00"), quantity=2),
    ev("a4", "2024-01-05T09:00:00", "alice", "i2", "purchase", category_id="c2", price=Decimal("30.00"), quantity=1),
    # Bob: views only. Carol: only a return. Dave: one zero-price purchase.
    ev("b1", "2024-01-03T12:00:00", "bob", "i1", "view", category_id="c1"),
    ev("c1", "2024-01-04T12:00:00", "carol", "i2", "return", category_id="c2", price=Decimal("30.00"), quantity=1),
    ev("d1", "2024-01-04T13:00:00", "dave", "i3", "purchase", price=Decimal("0.00"), quantity=1),
    # A guest purchase: no user id, only an anonymous session key.
    ev("g1", "2024-01-04T14:00:00", None, "i1", "purchase", category_id="c1", price=Decimal("20.00"), quantity=1),
]


FIRST_DAY = D(2024, 1, 1)


def _build(spark, cfg, events, snapshots, since=FIRST_DAY):
    write_all_silver(spark, cfg, events)
    build_user_activity.run(spark, cfg, max(snapshots), since=since)
    for snapshot in snapshots:
        build_user_profiles.run(spark, cfg, snapshot)


def test_edge_cases_get_defined_values(spark, fresh_cfg):
    cfg = _cfg(fresh_cfg)
    _build(spark, cfg, EDGE_EVENTS, [D(2024, 1, 6)])
    profiles = _read(spark, catalog.USER_PROFILES, cfg)
    _no_nan(profiles)
    got = {r[S.USER_ID]: r for r in profiles.collect()}
    assert set(got) == {"alice", "bob", "carol", "dave"}  # the guest has no profile
    alice, bob, carol, dave = got["alice"], got["bob"], got["carol"], got["dave"]
    assert (alice[S.FREQUENCY], alice[S.MONETARY], alice[S.RECENCY_DAYS], alice[S.TENURE_DAYS]) == (
        2, Decimal("50.00"), 1, 4
    )
    assert alice[S.AVG_ORDER_VALUE] == Decimal("25.00")
    assert (alice[S.VIEW_TO_CART], alice[S.CART_TO_PURCHASE]) == (1.0, 2.0)
    assert alice[S.TOP_CATEGORIES] == ["c1", "c2"]  # c1: view+cart+purchase outweighs c2's purchase
    assert alice[S.ORDERS_BY_WINDOW] == {"30d": 2, "90d": 2, "365d": 2}
    # Bob never bought: no recency, no scores, no ratio where nothing was viewed... but a defined segment.
    assert (bob[S.RECENCY_DAYS], bob[S.R_SCORE], bob[S.AVG_ORDER_VALUE], bob[S.CART_TO_PURCHASE]) == (None,) * 4
    assert bob[S.RFM_SEGMENT] == cfg.profiles.no_purchase_segment and bob[S.VALUE_TIER] == "low"
    # Carol only returned: refunds never make monetary negative.
    assert (carol[S.FREQUENCY], carol[S.MONETARY], carol[S.RETURNS]) == (0, Decimal("0.00"), 1)
    # Dave's zero-price purchase: an order worth nothing; no category → price compared with the item.
    assert (dave[S.FREQUENCY], dave[S.MONETARY], dave[S.PRICE_SENSITIVITY]) == (1, Decimal("0.00"), None)
    assert dave[S.R_SCORE] is not None and dave[S.RFM_SEGMENT]
    # Too few users to cluster: clusters stay null, the summary still describes the segments.
    assert {r[S.CLUSTER] for r in got.values()} == {None}
    summary = _read(spark, catalog.SEGMENT_SUMMARY, cfg).collect()
    assert sum(r[S.USERS] for r in summary if r[S.KIND] == "rfm_segment") == 4
    assert all(r[S.DESCRIPTION] for r in summary)


def test_snapshot_before_any_data_is_empty_not_an_error(spark, fresh_cfg):
    cfg = _cfg(fresh_cfg)
    _build(spark, cfg, EDGE_EVENTS, [D(2023, 12, 1)], since=D(2023, 11, 1))
    assert _read(spark, catalog.USER_PROFILES, cfg).count() == 0
    assert _read(spark, catalog.SEGMENT_SUMMARY, cfg).count() == 0


def test_later_events_do_not_change_a_snapshot(spark, fresh_cfg):
    cfg = _cfg(fresh_cfg, min_users=10, k_min=2, k_max=3)
    events = generate(D(2024, 1, 1), 10, seed=5)
    snapshot = D(2024, 1, 6)
    early = [e for e in events if e.time.date() <= snapshot]
    _build(spark, cfg, early, [snapshot])
    before = _rows(_read(spark, catalog.USER_PROFILES, cfg), [S.DATASET, S.USER_ID])
    _build(spark, cfg, events, [snapshot])  # the same snapshot, with four more days of events
    after = _rows(_read(spark, catalog.USER_PROFILES, cfg), [S.DATASET, S.USER_ID])
    diffs = [(k, b[k], a[k]) for b, a in zip(before, after, strict=True) for k in b if b[k] != a[k]]
    assert before and not diffs


def test_nightly_rollup_equals_computing_from_silver_directly(spark, fresh_cfg, tmp_path):
    cfg = _cfg(fresh_cfg, min_users=10, k_min=2, k_max=3, refit_every_days=4)
    # The generator's bot-like actor, flagged as silver's bot rule would.
    events = [dataclasses.replace(e, is_bot=e.user_id == "user-bot") for e in generate(D(2024, 1, 1), 6, seed=11, empty_days=[3])]
    days = [D(2024, 1, 1) + dt.timedelta(days=n) for n in range(6)]
    for day in days:  # the nightly way: silver's window, then the activity window, then the snapshot
        write_nightly_silver(spark, cfg, events, day)
        build_user_activity.run(spark, cfg, day)
        build_user_profiles.run(spark, cfg, day)
    silver = _read(spark, catalog.SILVER_EVENTS, cfg)
    direct = daily_activity(silver, None, cfg.profiles.affinity_weights)
    stored = _read(spark, catalog.USER_DAILY_ACTIVITY, cfg)
    keys = [S.DATASET, S.USER_ID, S.EVENT_DATE]
    assert _rows(catalog.USER_DAILY_ACTIVITY.conform(direct), keys) == _rows(stored, keys)
    last = days[-1]
    from_silver = profile_rows(direct, last, cfg.profiles)
    stored_profiles = _read(spark, catalog.USER_PROFILES, cfg, F.col(S.SNAPSHOT_DATE) == last)
    columns = from_silver.columns
    assert _rows(from_silver, [S.USER_ID]) == _rows(stored_profiles.select(*columns), [S.USER_ID])
    _no_nan(stored_profiles)
    # One profile slice per snapshot; bots visible but out of the segment statistics.
    assert {r[0] for r in stored_profiles.select(S.SNAPSHOT_DATE).distinct().collect()} == {last}
    assert stored_profiles.where(F.col(S.IS_BOT)).count() >= 1
    summary = _read(spark, catalog.SEGMENT_SUMMARY, cfg, F.col(S.SNAPSHOT_DATE) == last).collect()
    people = stored_profiles.where(~F.col(S.IS_BOT)).count()
    for kind in ("rfm_segment", "cluster"):
        assert sum(r[S.USERS] for r in summary if r[S.KIND] == kind) == people
        assert sum(r[S.REVENUE_SHARE] for r in summary if r[S.KIND] == kind) == pytest.approx(1.0)
    assert [r[S.USERS] for r in summary if r[S.KIND] == "bots"] == [stored_profiles.count() - people]
    # Clusters: k in range, a fit reused for refit_every_days (4), then refitted.
    models = _read(spark, catalog.CLUSTER_MODELS, cfg).collect()
    assert sorted(m[S.FIT_DATE] for m in models) == [D(2024, 1, 1), D(2024, 1, 5)]
    assert all(2 <= m[S.K] <= 3 for m in models)
    clustered = stored_profiles.where(F.col(S.CLUSTER).isNotNull()).count()
    assert clustered == stored_profiles.count()


def test_the_nearest_recorded_centre_is_the_pipelines_own_prediction(spark, fresh_cfg):
    """clusters.assign (column expressions over the registry's numbers) gives every row the cluster
    the saved pipeline's transform gives it, a feature without spread included, and the numbers
    survive the registry row's JSON."""
    import json
    import random

    from shoplens.profiles import clusters

    names = ["_f_a", "_f_b", "_f_flat"]
    rng = random.Random(7)
    centres = [(0.0, 0.0), (5.0, 1.0), (1.0, 6.0)]
    rows = [
        (i, cx + rng.gauss(0, 1.2), cy + rng.gauss(0, 1.2), 3.0)
        for i, (cx, cy) in enumerate(centres[j % 3] for j in range(300))
    ]
    df = spark.createDataFrame(rows, ["id", *names])
    settings = dataclasses.replace(fresh_cfg.profiles.clusters, k_min=3, k_max=3)
    fitted = clusters.fit(df, names, settings)
    row = clusters.model_row("landing", D(2024, 3, 1), fitted, "/nowhere", names)
    recorded = clusters.Centres.from_details(row[S.DETAILS])
    assert recorded == fitted.centres and len(recorded.centres) == 3
    assert json.loads(row[S.DETAILS])["features"] == names
    by_numbers = clusters.assign(recorded, df, names).select("id", F.col(S.CLUSTER).alias("mine"))
    by_pipeline = clusters.assign_by_pipeline(fitted.model, df).select("id", F.col(S.CLUSTER).alias("theirs"))
    both = by_numbers.join(by_pipeline, "id")
    assert both.count() == 300
    assert both.where(F.col("mine") != F.col("theirs")).count() == 0
    assert both.select("mine").distinct().count() == 3
    assert clusters.Centres.from_details(json.dumps({"features": names})) is None  # an older row: load the pipeline
