"""ALS recommendations (issue 7): id maps, interactions, blockwise top-K, metrics, cold start,
coverage of every profiled user, bad input, the quality gate. Tiny synthetic silver, few iterations."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoplens import catalog
from shoplens import schemas as S
from shoplens.io import replace_slice
from shoplens.jobs import build_recommendations
from shoplens.quality import QualityGateFailed
from shoplens.recs import als, evaluate, idmaps, interactions, recommend, topk
from tests.synthetic_silver import ev, generate, write_all_silver

D = dt.date
RUN = D(2024, 1, 10)
K = 5


def _cfg(fresh_cfg, **als_overrides):
    settings = dataclasses.replace(
        fresh_cfg.als,
        k=K,
        max_iter=2,
        # One trial: each trial is an ALS fit plus a scoring (tens of seconds on 2 shared cores).
        grid=dataclasses.replace(fresh_cfg.als.grid, rank=(2,), reg_param=(0.1,), alpha=(4.0,)),
        gate_min_users=10_000,
        explicit_min_ratings=10_000,
        **als_overrides,
    )
    return dataclasses.replace(fresh_cfg, als=settings)


def _read(spark, spec, cfg):
    return spark.read.format("delta").load(spec.location(cfg))


def _no_nan(df) -> None:
    for f in df.schema.fields:
        if isinstance(f.dataType, T.DoubleType | T.FloatType):
            assert df.where(F.isnan(f.name) | F.col(f.name).isNull()).count() == 0, f"NaN or null in {f.name}"


def _planted_events():
    """The synthetic shop plus the bad inputs of the issue."""
    events = generate(D(2024, 1, 1), 10, seed=7, users=30, anonymous=5, items=40, late_share=0.0)
    # Ids that are strings, numbers or both: "42" and "042" are two users, "7" and "07" two items.
    events += [
        ev("n1", "2024-01-03T10:00:00", "42", "7"),
        ev("n2", "2024-01-03T10:05:00", "42", "07", "cart"),
        ev("n3", "2024-01-04T10:00:00", "042", "7"),
        ev("n4", "2024-01-04T10:01:00", "042", "item-001"),
        # A user with one interaction (seen twice: a duplicate pair).
        ev("s1", "2024-01-05T10:00:00", "solo", "item-002"),
        ev("s2", "2024-01-05T10:00:30", "solo", "item-002"),
    ]
    # The generator's bot-like actor, flagged as silver would.
    events = [dataclasses.replace(e, is_bot=True) if e.user_id == "user-bot" else e for e in events]
    # An item bought by every identified non-bot user but the one-interaction user.
    users = sorted({e.user_id for e in events if e.user_id and e.user_id not in ("user-bot", "solo")})
    events += [ev(f"hit-{n}", "2024-01-06T08:00:00", u, "everyone-buys", "purchase") for n, u in enumerate(users)]
    return events


def _write_profiles(spark, cfg, rows):
    """gold.user_profiles of snapshot RUN: the given (user, segment, top categories), other columns null."""
    given = spark.createDataFrame(rows, "user_id string, rfm_segment string, top_categories array<string>")
    columns = [
        F.col(f.name)
        if f.name in given.columns
        else F.lit(RUN).alias(f.name)
        if f.name == S.SNAPSHOT_DATE
        else F.lit(S.DATASET_LANDING).alias(f.name)
        if f.name == S.DATASET
        else F.lit(None).cast(f.dataType).alias(f.name)
        for f in S.USER_PROFILES.fields
    ]
    replace_slice(given.select(columns), catalog.USER_PROFILES, cfg, {S.SNAPSHOT_DATE: RUN})


def _write_sequences(spark, cfg, events):
    """gold.item_vocab and the user-grain leave-last-out targets of gold.sequence_examples, the way
    build_sequences labels them (last event test, the one before validation, 3 events or more)."""
    kept = sorted(
        (
            e
            for e in events
            if e.user_id and not e.is_bot and e.user_id != "user-bot" and e.event_type in cfg.sequences.event_types
        ),
        key=lambda e: (e.time, e.event_id),
    )
    vocab = {item: n + 2 for n, item in enumerate(sorted({e.item_id for e in kept}))}
    replace_slice(
        spark.createDataFrame([(S.DATASET_LANDING, i, n, RUN, 1) for i, n in vocab.items()], S.ITEM_VOCAB),
        catalog.ITEM_VOCAB,
        cfg,
        {S.DATASET: S.DATASET_LANDING},
    )
    rows = []
    for user in sorted({e.user_id for e in kept}):
        timeline = [e for e in kept if e.user_id == user]
        if len(timeline) < 3:
            continue
        for split, e in (("validation", timeline[-2]), ("test", timeline[-1])):
            rows.append(
                (
                    S.DATASET_LANDING,
                    S.GRAIN_USER,
                    split,
                    0,
                    f"{split}-{user}",
                    user,
                    None,
                    None,
                    e.time,
                    [],
                    vocab[e.item_id],
                    None,
                    0,
                )
            )
    replace_slice(
        spark.createDataFrame(rows, S.SEQUENCE_EXAMPLES), catalog.SEQUENCE_EXAMPLES, cfg, {S.DATASET: S.DATASET_LANDING}
    )


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory, cfg):
    paths = dataclasses.replace(cfg.paths, warehouse=str(tmp_path_factory.mktemp("recs") / "warehouse"))
    c = _cfg(dataclasses.replace(cfg, paths=paths))
    events = _planted_events()
    write_all_silver(spark, c, events)
    users = sorted({e.user_id for e in events if e.user_id})
    segments = ["Champions", "Lost", None]
    profiles = [(u, segments[n % 3] or "Prospect", ["c1"] if n % 2 else []) for n, u in enumerate(users)]
    # A profiled user without a single event in the training window (profiles look back further).
    profiles.append(("ghost", "Lost", ["c2"]))
    _write_profiles(spark, c, profiles)
    _write_sequences(spark, c, events)
    summary = build_recommendations.run(spark, c, RUN)
    return c, events, summary


def test_every_profiled_user_gets_k_recommendations_none_bought(spark, built):
    cfg, events, _ = built
    recs = _read(spark, catalog.RECOMMENDATIONS, cfg).where(F.col(S.RUN_DATE) == RUN)
    _no_nan(recs)
    profiled = _read(spark, catalog.USER_PROFILES, cfg).where(F.col(S.SNAPSHOT_DATE) == RUN).select(S.USER_ID)
    per_user = {
        r[S.USER_ID]: r
        for r in recs.groupBy(S.USER_ID)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.countDistinct(S.ITEM_ID).alias("items"),
            F.sort_array(F.collect_list(S.RANK)).alias("ranks"),
        )
        .collect()
    }
    users = {r[S.USER_ID] for r in profiled.collect()}
    assert "ghost" in users and users <= set(per_user)
    for user in users:
        assert per_user[user]["n"] == K and per_user[user]["items"] == K
        assert per_user[user]["ranks"] == list(range(1, K + 1))
    bought = {(e.user_id, e.item_id) for e in events if e.event_type == "purchase" and e.user_id}
    assert not [r for r in recs.collect() if (r[S.USER_ID], r[S.ITEM_ID]) in bought]
    # The item everybody bought is recommended only to the few who did not buy it.
    got_it = {r[S.USER_ID] for r in recs.where(F.col(S.ITEM_ID) == "everyone-buys").collect()}
    assert got_it <= {"ghost", "user-bot", "solo"}
    assert {r[S.SOURCE] for r in recs.select(S.SOURCE).distinct().collect()} <= set(
        [S.SOURCE_ALS, S.SOURCE_SEGMENT, S.SOURCE_CATEGORY, S.SOURCE_GLOBAL]
    )


def test_one_interaction_users_get_cold_start_and_bots_none(spark, built):
    cfg, _, _ = built
    recs = _read(spark, catalog.RECOMMENDATIONS, cfg)
    solo = {r[S.SOURCE] for r in recs.where(F.col(S.USER_ID) == "solo").collect()}
    assert solo and S.SOURCE_ALS not in solo
    assert recs.where((F.col(S.USER_ID).startswith("user-")) & (F.col(S.SOURCE) == S.SOURCE_ALS)).count() > 0
    # The bot's events never train: it is in no id map.
    assert _read(spark, catalog.USER_INDEX, cfg).where(F.col(S.USER_ID) == "user-bot").count() == 0


def test_id_maps_keep_string_ids_apart_and_are_stable(spark, built):
    cfg, _, _ = built
    users = {r[S.USER_ID]: r[S.USER_INDEX] for r in _read(spark, catalog.USER_INDEX, cfg).collect()}
    items = {r[S.ITEM_ID]: r[S.ITEM_INDEX] for r in _read(spark, catalog.ITEM_INDEX, cfg).collect()}
    assert {"42", "042"} <= set(users) and users["42"] != users["042"]
    assert {"7", "07"} <= set(items) and items["7"] != items["07"]
    assert sorted(users.values()) == list(range(len(users)))
    assert sorted(items.values()) == list(range(len(items)))


def test_new_ids_are_appended_known_ids_keep_their_index(spark, fresh_cfg):
    cfg = fresh_cfg
    first = spark.createDataFrame([("d", "b"), ("d", "a"), ("d", "a"), ("e", "a")], [S.DATASET, S.USER_ID])
    idmaps.merge_index(spark, cfg, catalog.USER_INDEX, first, S.USER_ID, D(2024, 1, 1))
    second = spark.createDataFrame([("d", "0"), ("d", "b"), ("d", "c")], [S.DATASET, S.USER_ID])
    idmaps.merge_index(spark, cfg, catalog.USER_INDEX, second, S.USER_ID, D(2024, 1, 2))
    rows = sorted(
        (r[S.DATASET], r[S.USER_ID], r[S.USER_INDEX], r[S.FIRST_RUN_DATE])
        for r in _read(spark, catalog.USER_INDEX, cfg).collect()
    )
    assert rows == [
        ("d", "0", 2, D(2024, 1, 2)),
        ("d", "a", 0, D(2024, 1, 1)),
        ("d", "b", 1, D(2024, 1, 1)),
        ("d", "c", 3, D(2024, 1, 2)),
        ("e", "a", 0, D(2024, 1, 1)),
    ]
    # Only known ids: no commit at all, and the map still holds them.
    version = catalog.table_version(spark, catalog.USER_INDEX.location(cfg))
    known = spark.createDataFrame([("d", "c"), ("d", "a")], [S.DATASET, S.USER_ID])
    mapped = idmaps.merge_index(spark, cfg, catalog.USER_INDEX, known, S.USER_ID, D(2024, 1, 3))
    assert catalog.table_version(spark, catalog.USER_INDEX.location(cfg)) == version
    assert {(r[S.USER_ID], r[S.USER_INDEX]) for r in mapped.collect()} == {("0", 2), ("a", 0), ("b", 1), ("c", 3)}


def test_trials_metrics_and_similar_items(spark, built):
    cfg, _, summary = built
    trials = _read(spark, catalog.ALS_TRIALS, cfg).where(F.col(S.RUN_DATE) == RUN).collect()
    assert trials and all(math.isfinite(r[S.VALUE]) for r in trials)
    assert {(r[S.TRIAL], r[S.ALS_RANK], r[S.ALPHA], r[S.IS_BEST]) for r in trials} == {(0, 2, 4.0, True)}
    assert {r[S.METRIC] for r in trials} == {f"{m}@{K}" for m in evaluate.METRICS}
    metrics = [
        r
        for r in _read(spark, catalog.MODEL_METRICS, cfg).where(F.col(S.RUN_DATE) == RUN).collect()
        if r[S.JOB] == build_recommendations.JOB
    ]
    assert all(r[S.VALUE] is None or math.isfinite(r[S.VALUE]) for r in metrics)
    test = {(r[S.MODEL], r[S.METRIC]) for r in metrics if r[S.SPLIT] == "test"}
    for model in ("als", "popularity", "cooccurrence"):
        for metric in (f"precision@{K}", f"recall@{K}", f"ndcg@{K}", f"map@{K}", f"hit_rate@{K}", f"coverage@{K}"):
            assert (model, metric) in test
    assert [r[S.VALUE] for r in metrics if r[S.SPLIT] == "validation" and r[S.METRIC] == "param_rank"] == [2.0]
    similar = _read(spark, catalog.SIMILAR_ITEMS, cfg).collect()
    assert similar and all(math.isfinite(r[S.SCORE]) for r in similar)
    assert not [r for r in similar if r[S.ITEM_ID] == r[S.SIMILAR_ITEM_ID]]
    per_item: dict[str, int] = {}
    for r in similar:
        per_item[r[S.ITEM_ID]] = per_item.get(r[S.ITEM_ID], 0) + 1
    assert max(per_item.values()) <= K
    assert "_checkpoints/als" in spark.sparkContext.getCheckpointDir()


def test_als_retunes_only_when_the_data_calls_for_it(spark, built):
    """The first night tunes; the next reuses its best without writing trials, validation or test
    figures (one more job run on the built warehouse, which the tests above filter out by run date); a night
    retune_every_days (7, conf/base.yaml) later, or any night with 0, decides from the same table to
    tune again (the tuning itself is the first night's; test_retune_policy has every reason)."""
    cfg, _, first = built
    assert cfg.als.retune_every_days == 7
    assert first[S.DATASET_LANDING]["is_retuned"]
    assert first[S.DATASET_LANDING]["tuning"] == "retuned: no earlier tuning"

    def nights(spec, **where):
        rows = _read(spark, spec, cfg).where(F.col(S.DATASET) == S.DATASET_LANDING)
        for column, value in where.items():
            rows = rows.where(F.col(column) == value)
        return sorted({r[S.RUN_DATE] for r in rows.select(S.RUN_DATE).distinct().collect()})

    assert nights(catalog.ALS_TRIALS) == [RUN]
    next_night = RUN + dt.timedelta(days=1)
    reused = build_recommendations.run(spark, cfg, next_night)[S.DATASET_LANDING]
    assert not reused["is_retuned"] and reused["tuning"].startswith(f"reused {RUN}: 1 d old")
    # The reused parameters were evaluated and gated on the tuning night: no test evaluation tonight.
    assert reused["best"] == first[S.DATASET_LANDING]["best"] and reused["test"] == {}
    assert nights(catalog.ALS_TRIALS) == [RUN]
    metric_nights = {
        split: nights(catalog.MODEL_METRICS, job=build_recommendations.JOB, split=split)
        for split in ("validation", "test")
    }
    assert metric_nights == {"validation": [RUN], "test": [RUN]}
    written = _read(spark, catalog.RECOMMENDATIONS, cfg).where(F.col(S.RUN_DATE) == next_night).count()
    assert written == reused["recommendations"] > 0

    # The decision of later nights, from the table as it is now: only the nights before the run date count,
    # and a date's own trials (from an earlier run of it) are seen, to be removed by a reusing re-run.
    assert build_recommendations._last_tuning(spark, cfg, S.DATASET_LANDING, RUN) == (None, True)
    week_on = RUN + dt.timedelta(days=7)
    last, has_tonight = build_recommendations._last_tuning(spark, cfg, S.DATASET_LANDING, week_on)
    assert (last.run_date, last.best, has_tonight) == (RUN, als.Params(2, 0.1, 4.0), False)
    assert build_recommendations._choose(cfg, week_on, last, last.n_examples) == build_recommendations._Choice(
        None, f"retuned: the tuning of {RUN} is 7 d old (als.retune_every_days 7)"
    )
    every_night = dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, retune_every_days=0))
    assert build_recommendations._choose(every_night, next_night, last, last.n_examples).params is None


def test_retune_policy(fresh_cfg):
    """Each reason to re-tune, and reuse otherwise (pure: no table read)."""
    cfg = _cfg(fresh_cfg, retune_every_days=7, retune_growth=0.5)
    cfg = dataclasses.replace(
        cfg, als=dataclasses.replace(cfg.als, grid=dataclasses.replace(cfg.als.grid, rank=(2, 4)))
    )
    points = (als.Params(2, 0.1, 4.0), als.Params(4, 0.1, 4.0))
    last = build_recommendations._LastTuning(
        D(2024, 1, 3), points, points[1], 100, frozenset(f"{m}@{K}" for m in evaluate.METRICS)
    )

    def choose(run_date=None, tuning=last, n=100, c=cfg):
        return build_recommendations._choose(c, run_date or D(2024, 1, 9), tuning, n)

    reuse = build_recommendations._Choice(
        points[1], "reused 2024-01-03: 6 d old, 150 validation users against 100", reused=True
    )
    assert choose(n=150) == reuse
    assert choose(n=50).params == points[1]
    assert choose(n=0) == build_recommendations._Choice(
        points[1], "reused 2024-01-03: no validation rows tonight", reused=True
    )
    retunes = {
        "retuned: no earlier tuning": choose(tuning=None),
        "retuned: als.grid changed since the tuning of 2024-01-03": choose(
            tuning=dataclasses.replace(last, grid=points[:1])
        ),
        "retuned: als.k changed since the tuning of 2024-01-03": choose(
            c=dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, k=K + 1))
        ),
        "retuned: the tuning of 2024-01-03 is 7 d old (als.retune_every_days 7)": choose(run_date=D(2024, 1, 10)),
        "retuned: the tuning of 2024-01-03 is 1 d old (als.retune_every_days 0)": choose(
            run_date=D(2024, 1, 4), c=dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, retune_every_days=0))
        ),
        "retuned: 151 validation users against 100 at the tuning of 2024-01-03 (more than als.retune_growth 0.5 "
        "apart)": choose(n=151),
        "retuned: 49 validation users against 100 at the tuning of 2024-01-03 (more than als.retune_growth 0.5 "
        "apart)": choose(n=49),
    }
    assert {note: (c.params, c.note) for note, c in retunes.items()} == {note: (None, note) for note in retunes}
    untuned = choose(tuning=None, n=0)
    assert untuned.params == points[0] and untuned.note.startswith("untuned: no validation rows and no earlier")
    # The test evaluation and its gate: on every night that chooses the parameters, or every night.
    nightly = dataclasses.replace(cfg, als=dataclasses.replace(cfg.als, evaluate_nightly=True))
    for choice in (*retunes.values(), untuned):
        assert build_recommendations._evaluates(cfg, choice) and build_recommendations._evaluates(nightly, choice)
    assert not build_recommendations._evaluates(cfg, reuse) and build_recommendations._evaluates(nightly, reuse)


def test_retune_keys_reject_negative_values(cfg):
    from shoplens.config import ConfigError

    for key in ({"retune_every_days": -1}, {"retune_growth": -0.1}):
        with pytest.raises(ConfigError, match="retune_every_days and als.retune_growth must be non-negative"):
            dataclasses.replace(cfg.als, **key)


def test_empty_training_window_writes_empty_slices(spark, fresh_cfg):
    cfg = _cfg(fresh_cfg)
    write_all_silver(spark, cfg, [ev("x1", "2023-01-01T10:00:00", "u1", "i1")])  # outside the window
    summary = build_recommendations.run(spark, cfg, RUN)
    assert summary == {"landing": {"users": 0, "recommendations": 0}}
    assert _read(spark, catalog.RECOMMENDATIONS, cfg).count() == 0


def test_interactions_sum_duplicates_decay_and_drop_bots(spark):
    events = [
        ev("e1", "2024-01-10T10:00:00", "u", "i", "view"),
        ev("e2", "2024-01-10T10:00:00", "u", "i", "view"),  # same pair again
        ev("e3", "2023-12-11T10:00:00", "u", "i", "purchase"),  # 30 days old: half weight
        ev("e4", "2024-01-10T10:00:00", "u", "j", "remove_from_cart"),  # no weight: no row
        ev("e5", "2024-01-10T10:00:00", "bot", "i", "view", is_bot=True),
    ]
    from tests.synthetic_silver import silver_frame

    scored = interactions.scored_events(silver_frame(spark, events, "UTC"), {"view": 1, "purchase": 4}, 30, RUN, 365)
    rows = [
        (r[S.USER_ID], r[S.ITEM_ID], r[S.CONFIDENCE], r["n_events"])
        for r in interactions.interactions(scored).collect()
    ]
    assert rows == [("u", "i", pytest.approx(1 + 1 + 2), 3)]


def test_popularity_ranks_by_confidence_share_within_groups_and_over_the_catalogue(spark):
    inter = spark.createDataFrame(
        [("u1", "a", "x", 3.0), ("u2", "a", "x", 1.0), ("u1", "b", "x", 4.0), ("u2", "c", "y", 2.0),
         ("u3", "d", "y", 2.0)],
        [S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.CONFIDENCE],
    )
    overall = recommend.popularity(inter, [], 3).orderBy(recommend.POS).collect()
    # a and b tie on 4: the smaller id first; c and d tie on 2, and only three are kept.
    assert [(r[S.ITEM_ID], r[S.SCORE], r[recommend.POS]) for r in overall] == [
        ("a", pytest.approx(4 / 12), 1), ("b", pytest.approx(4 / 12), 2), ("c", pytest.approx(2 / 12), 3),
    ]
    per_category = recommend.popularity(inter, [S.CATEGORY_ID], 1).orderBy(S.CATEGORY_ID).collect()
    assert [(r[S.CATEGORY_ID], r[S.ITEM_ID], r[S.SCORE], r[recommend.POS]) for r in per_category] == [
        ("x", "a", pytest.approx(4 / 8), 1), ("y", "c", pytest.approx(2 / 4), 1),
    ]
    assert recommend.popularity(inter.limit(0), [], 3).count() == 0


def test_top_k_matches_brute_force_with_exclusions(spark):
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(7, 3)), rng.normal(size=(23, 3))
    q = spark.createDataFrame([(i, [float(x) for x in v]) for i, v in enumerate(users)], [topk.Q, topk.FEATURES])
    it = spark.createDataFrame([(i, [float(x) for x in v]) for i, v in enumerate(items)], [topk.ITEM, topk.FEATURES])
    excluded = {(0, int(np.argmax(items @ users[0]))), (3, 5)}
    ex = spark.createDataFrame(sorted(excluded), [topk.Q, topk.ITEM])
    got = {}
    for r in topk.top_k(q, it, 4, 3, ex).collect():
        got.setdefault(r[topk.Q], []).append((r[topk.RANK], r[topk.ITEM], r[topk.SCORE]))
    for u in range(7):
        scores = items @ users[u]
        order = [i for i in np.argsort(-scores, kind="stable") if (u, int(i)) not in excluded][:4]
        ranked = sorted(got[u])
        assert [i for _, i, _ in ranked] == [int(i) for i in order]
        assert [s for _, _, s in ranked] == pytest.approx([float(scores[i]) for i in order], rel=1e-5)


def test_top_k_breaks_ties_by_item_leaves_out_self_and_non_finite_scores_across_blocks(spark):
    # Items 2, 5 and 9 tie with query 0; item 7 has an infinite factor; query 3 has every item excluded.
    items = {i: [1.0, 0.0] for i in (2, 5, 9)} | {i: [0.5, float(i)] for i in (1, 4, 6)} | {7: [float("inf"), 0.0]}
    it = spark.createDataFrame([(i, v) for i, v in items.items()], [topk.ITEM, topk.FEATURES])
    q = spark.createDataFrame([(0, [1.0, 0.0]), (5, [1.0, 0.0]), (3, [1.0, 1.0])], [topk.Q, topk.FEATURES])
    ex = spark.createDataFrame([(3, i) for i in items], [topk.Q, topk.ITEM])
    for query_blocks, item_blocks in ((1, 1), (2, 3), (3, 2)):
        got = {}
        for r in topk.top_k(q, it, 2, item_blocks, ex, exclude_self=True, query_blocks=query_blocks).collect():
            got.setdefault(r[topk.Q], []).append((r[topk.RANK], r[topk.ITEM], r[topk.SCORE]))
        assert sorted(got[0]) == [(1, 2, 1.0), (2, 5, 1.0)], (query_blocks, item_blocks)
        assert sorted(got[5]) == [(1, 2, 1.0), (2, 9, 1.0)], (query_blocks, item_blocks)  # itself left out
        assert 3 not in got


def test_block_best_reads_each_block_pair_of_a_batch_on_its_own():
    """Several (user block, item block) rows in one Arrow batch: each row's ids, factors and
    exclusions are its own (no Spark: the executor function itself)."""
    batch = pa.RecordBatch.from_pydict(
        {
            "q_ids": [[0, 1], [2]],
            "q_vectors": [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0]],
            "q_excluded": [[[10], []], [[11]]],
            "i_ids": [[10, 11, 12], [10, 11]],
            "i_vectors": [[1.0, 0.0, 0.5, 0.5, 0.0, 1.0], [2.0, 2.0, 1.0, 1.0]],
        }
    )
    out = pa.Table.from_batches(list(topk.block_best(iter([batch]), k=1, exclude_self=False))).to_pylist()
    best = {(r[topk.Q], r[topk.ITEM], r[topk.SCORE]) for r in out}
    assert best == {(0, 11, 0.5), (1, 12, 1.0), (2, 10, 4.0)}


def test_ranking_metrics_by_hand(spark):
    recs = spark.createDataFrame(
        [("a", 1, "x"), ("a", 2, "y"), ("a", 3, "z"), ("b", 1, "x"), ("b", 2, "w")], [S.USER_ID, S.RANK, S.ITEM_ID]
    )
    relevant = spark.createDataFrame([("a", "y"), ("a", "z"), ("b", "q"), ("c", "x")], [S.USER_ID, S.ITEM_ID])
    got = evaluate.ranking_metrics(recs, relevant, 3)
    idcg2 = 1 + 1 / math.log2(3)
    a_ndcg = (1 / math.log2(3) + 1 / math.log2(4)) / idcg2
    a_ap = (1 / 2 + 2 / 3) / 2
    assert got["users"] == 3
    assert got["precision@3"] == pytest.approx((2 / 3) / 3)
    assert got["recall@3"] == pytest.approx(1 / 3)
    assert got["ndcg@3"] == pytest.approx(a_ndcg / 3)
    assert got["map@3"] == pytest.approx(a_ap / 3)
    assert got["hit_rate@3"] == pytest.approx(1 / 3)

    # Several models in one action: each scores as alone; a model with no lists scores 0 for every user.
    other = spark.createDataFrame([("c", 1, "x"), ("c", 2, "v"), ("d", 1, "x")], [S.USER_ID, S.RANK, S.ITEM_ID])
    both = evaluate.ranking_metrics_of({"m": recs, "other": other, "none": recs.limit(0)}, relevant, 3, 10)
    assert both["m"] == evaluate.ranking_metrics(recs, relevant, 3, 10)
    assert both["m"]["coverage@3"] == pytest.approx(4 / 10)
    assert both["other"]["users"] == 3 and both["other"]["hit_rate@3"] == pytest.approx(1 / 3)
    assert both["other"]["ndcg@3"] == pytest.approx(1 / 3) and both["other"]["coverage@3"] == pytest.approx(2 / 10)
    assert both["none"] == {**{f"{m}@3": 0.0 for m in evaluate.METRICS}, "users": 3, "coverage@3": 0.0}


def test_quality_gate(fresh_cfg):
    cfg = dataclasses.replace(
        fresh_cfg, als=dataclasses.replace(fresh_cfg.als, k=10, gate_margin=0.02, gate_min_users=5)
    )
    figures = {"als": {"ndcg@10": 0.10, "users": 50}, "popularity": {"ndcg@10": 0.13, "users": 50}}
    with pytest.raises(QualityGateFailed, match="below popularity"):
        build_recommendations._gate(cfg, "landing", figures)
    build_recommendations._gate(cfg, "landing", {**figures, "als": {"ndcg@10": 0.115, "users": 50}})
    build_recommendations._gate(
        cfg, "landing", {"als": {"ndcg@10": 0.0, "users": 4}, "popularity": figures["popularity"]}
    )


def test_fit_refuses_without_checkpoint_dir_and_block_count():
    assert als.block_count(5, 20_000, 8) == 1
    assert als.block_count(100_001, 20_000, 8) == 6
    assert als.block_count(10**9, 20_000, 8) == 8
