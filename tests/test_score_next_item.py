"""Batch scoring into gold.next_item_predictions: the input rule on typed rows, top-K by hand, and the
job end to end on synthetic silver with a real GRU4Rec version, against a plain-Python reference.

The model is a small, untrained GRU4Rec saved through ``models.registry`` (training is
test_seqrec's concern): its scores are arbitrary but fixed, which is all scoring needs to be checked.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog, scoring, sequences
from shoplens import schemas as S
from shoplens.config import load_config
from shoplens.io import replace_slice
from shoplens.jobs import build_sequences, score_next_item
from shoplens.models import registry

from .conftest import CONF_DIR
from .synthetic_silver import ev, generate, silver_frame, write_all_silver

RUN_DATE = dt.date(2024, 1, 5)
VERSION = RUN_DATE - dt.timedelta(days=1)
MAX_LEN = 5
TOP_K = 4
DATASET = S.DATASET_LANDING


def test_latest_inputs_keep_the_last_events_left_padded_most_recent_last(spark, cfg):
    events = [
        # u1: the last 3 of its 6 counted events are kept, ordered by (event_time, event_id): u1-4 before
        # u1-5 at the same instant. d (index 5) is beyond the model's vocabulary (vocab_size 5) and x is
        # not in gold.item_vocab: both are out of vocabulary (1). A bot's event and a remove_from_cart
        # do not count.
        ev("u1-1", "2024-01-01T10:00:00", "u1", "a"), ev("u1-2", "2024-01-01T10:01:00", "u1", "b"),
        ev("u1-3", "2024-01-01T10:02:00", "u1", "x"),
        ev("u1-5", "2024-01-02T09:00:00", "u1", "d"),
        ev("u1-4", "2024-01-02T09:00:00", "u1", "c", event_type="purchase"),
        ev("u1-6", "2024-01-03T09:00:00", "u1", "b", event_type="cart"),
        ev("u1-b", "2024-01-03T10:00:00", "u1", "a", is_bot=True),
        ev("u1-r", "2024-01-03T11:00:00", "u1", "c", event_type="remove_from_cart"),
        # u2: one event, padded. u3: only items the model does not know: left out. k1: anonymous: left out.
        ev("u2-1", "2024-01-01T10:00:00", "u2", "c"),
        ev("u3-1", "2024-01-01T10:00:00", "u3", "x"), ev("u3-2", "2024-01-01T10:01:00", "u3", "d"),
        ev("k1-1", "2024-01-01T10:00:00", None, "a", session_key="k1"),
    ]
    vocab = spark.createDataFrame(
        [(DATASET, item, index, dt.date(2024, 1, 1), 1) for item, index in zip("abcd", range(2, 6), strict=True)],
        S.ITEM_VOCAB,
    )
    timeline = sequences.with_item_index(
        sequences.counted_events(silver_frame(spark, events, "UTC"), cfg.sequences.event_types), vocab
    )
    got = scoring.latest_inputs(timeline, max_len=3, vocab_size=5)
    expected = spark.createDataFrame(
        [(DATASET, "u1", [4, 1, 3]), (DATASET, "u2", [0, 0, 4])],
        "dataset string, user_id string, input_items array<int>",
    )
    assertDataFrameEqual(got, expected)


def test_top_k_items_skip_padding_oov_and_excluded_items_and_break_ties_by_index():
    scores = np.array(
        [
            [9.0, 8.0, 1.0, 5.0, 5.0, 3.0, 7.0],  # 0 and 1 never count; 3 and 4 tie
            [9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # 6 and 5 excluded
            [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # everything but 2 excluded: one item only
        ],
        dtype=np.float32,
    )
    indices, values = scoring.top_k_items(scores, 3, [np.array([], dtype=np.int32), [5, 6], [3, 4, 5, 6]])
    assert indices[0].tolist() == [6, 3, 4] and values[0].tolist() == [7.0, 5.0, 5.0]
    assert indices[1].tolist() == [4, 3, 2] and values[1].tolist() == [3.0, 2.0, 1.0]
    assert indices[2, 0] == 2 and values[2, 0] == 1.0 and np.isneginf(values[2, 1:]).all()
    # k above the number of real items: vocab_size - 2 columns.
    assert scoring.top_k_items(scores, 10, [None, None, None])[0].shape == (3, 5)


# --- the job end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Silver and gold.item_vocab of a small shop, a GRU4Rec version dated the day before the run date
    and an incomplete later one that must never be used; the job run once for the run date."""
    base = tmp_path_factory.mktemp("score_next_item")
    overrides = [
        f"paths.warehouse={base / 'warehouse'}",
        f"paths.landing={base / 'landing'}",
        "spark.conf.spark.sql.shuffle.partitions=2",
        "spark.conf.spark.default.parallelism=2",
        f"scoring.top_k={TOP_K}",
        # Smaller than the users, and no divisor of them: several model calls, the last one partial.
        "scoring.batch_size=7",
    ]
    cfg = load_config("local", CONF_DIR, overrides)
    events = generate(dt.date(2024, 1, 1), days=5, seed=11, users=24, anonymous=6, items=30)
    write_all_silver(spark, cfg, events)
    # gold.item_vocab as build_sequences writes it (its examples are not needed by the job: see
    # test_the_input_is_the_test_example_and_its_target).
    silver = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg))
    counted = sequences.counted_events(silver, cfg.sequences.event_types)
    for dataset in sorted({r[S.DATASET] for r in silver.select(S.DATASET).distinct().collect()}):
        build_sequences.update_vocab(spark, cfg, counted, dataset, RUN_DATE)
    vocab = {
        r[S.ITEM_ID]: r[S.ITEM_INDEX]
        for r in spark.read.format("delta").load(catalog.ITEM_VOCAB.location(cfg)).collect()  # a test's few items
    }
    # The three newest items joined the vocabulary after the model was trained.
    vocab_size = max(vocab.values()) - 2

    from shoplens.models.gru4rec import build_gru4rec

    model = build_gru4rec(vocab_size, MAX_LEN, embedding_dim=8, hidden_units=[8], dropout=0.0, seed=3)
    meta = {key: None for key in registry.META_KEYS} | {
        "model": "gru4rec", "dataset": DATASET, "run_date": VERSION.isoformat(), "vocab_size": vocab_size,
        "max_len": MAX_LEN, "metrics": {}, "config": {},
    }
    registry.write_version(cfg, DATASET, VERSION, model, meta)
    later = Path(registry.version_dir(cfg, DATASET, RUN_DATE + dt.timedelta(days=1)))
    (later / registry.MODEL_DIR).mkdir(parents=True)
    (later / registry.META_FILE).write_text(json.dumps(meta | {"vocab_size": 10**9}))
    world = {"cfg": cfg, "overrides": overrides, "events": events, "vocab": vocab, "vocab_size": vocab_size,
             "model": model}
    assert score_next_item.main(_argv(world, RUN_DATE)) == 0
    return world


def _argv(world, run_date: dt.date) -> list[str]:
    argv = ["--run-date", run_date.isoformat(), "--conf-dir", str(CONF_DIR), "--dataset", DATASET]
    for item in world["overrides"]:
        argv += ["--set", item]
    return argv


def _slice(spark, cfg, run_date: dt.date):
    table = spark.read.format("delta").load(catalog.NEXT_ITEM_PREDICTIONS.location(cfg))
    return table.where(F.col(S.RUN_DATE) == F.lit(run_date))


def _reference(world, cfg) -> tuple[dict[str, list[int]], dict[str, set[str]]]:
    """Plain Python: each identified user's model input (the last MAX_LEN counted events up to the run
    date, indices the model does not know as 1, left-padded), and the items each user bought."""
    vocab, vocab_size = world["vocab"], world["vocab_size"]
    timelines: dict[str, list] = {}
    bought: dict[str, set[str]] = {}
    for e in world["events"]:
        if e.user_id is None or e.is_bot or e.event_date("UTC") > RUN_DATE:
            continue
        if e.event_type in cfg.sequences.event_types:
            timelines.setdefault(e.user_id, []).append(e)
        if e.event_type == "purchase":
            bought.setdefault(e.user_id, set()).add(e.item_id)
    inputs = {}
    for user, timeline in timelines.items():
        last = sorted(timeline, key=lambda e: (e.time, e.event_id))[-MAX_LEN:]
        items = [vocab.get(e.item_id, 1) for e in last]
        items = [i if i < vocab_size else 1 for i in items]
        inputs[user] = [0] * (MAX_LEN - len(items)) + items
    return inputs, bought


def test_every_user_gets_the_models_top_k_never_padding_oov_or_bought(spark, world):
    cfg = world["cfg"]
    got = _slice(spark, cfg, RUN_DATE)
    inputs, bought = _reference(world, cfg)
    # Users whose input holds no item the model knows are not scored.
    inputs = {user: items for user, items in inputs.items() if max(items) >= 2}
    assert len(inputs) >= 20

    # The expected table, scored in this process by the same model on the reference inputs.
    id_of = {index: item for item, index in world["vocab"].items()}
    users = sorted(inputs)
    scores = world["model"](np.array([inputs[u] for u in users], dtype=np.int32)).numpy()
    excluded = [[world["vocab"][i] for i in bought.get(u, ()) if world["vocab"].get(i, 0) < world["vocab_size"]]
                for u in users]
    indices, values = scoring.top_k_items(scores, TOP_K, excluded)
    expected = spark.createDataFrame(
        [
            (RUN_DATE, DATASET, user, rank + 1, id_of[int(indices[row, rank])], float(values[row, rank]),
             "gru4rec", VERSION)
            for row, user in enumerate(users)
            for rank in range(TOP_K)
        ],
        S.NEXT_ITEM_PREDICTIONS,
    )
    assertDataFrameEqual(got, expected, rtol=1e-4)

    # The same facts, stated without the model: K rows per user, ranks 1..K, scores descending.
    rows = got.collect()
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r[S.USER_ID], []).append(r)
    assert sorted(by_user) == users
    for user, user_rows in by_user.items():
        user_rows.sort(key=lambda r: r[S.RANK])
        assert [r[S.RANK] for r in user_rows] == list(range(1, TOP_K + 1))
        assert all(a[S.SCORE] >= b[S.SCORE] for a, b in zip(user_rows, user_rows[1:], strict=False))
        items = [r[S.ITEM_ID] for r in user_rows]
        assert len(set(items)) == TOP_K and not set(items) & bought.get(user, set())
        assert all(2 <= world["vocab"][i] < world["vocab_size"] for i in items)


def test_the_input_is_the_test_example_and_its_target(spark, world):
    cfg = world["cfg"]
    inputs, _ = _reference(world, cfg)
    # The user grain's test examples, as build_sequences computes them (before negatives and sharding).
    silver = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg))
    vocab = spark.read.format("delta").load(catalog.ITEM_VOCAB.location(cfg))
    counted = sequences.counted_events(silver, cfg.sequences.event_types)
    labelled = sequences.with_split(sequences.with_item_index(counted, vocab), cfg.sequences)
    examples = (
        sequences.examples(labelled, S.GRAIN_USER, cfg.sequences.max_len).where(F.col(S.SPLIT) == S.TEST).collect()
    )
    assert len(examples) >= 10
    for example in examples:
        known = [i if i < world["vocab_size"] else 1 for i in [*example[S.INPUT_ITEMS], example[S.TARGET_ITEM]]]
        scored = [i for i in inputs[example[S.USER_ID]] if i != 0]
        # Out-of-vocabulary events may follow the test target; the target itself may be beyond the model.
        for items in (known, scored):
            while items and items[-1] == 1:
                items.pop()
        assert scored == known[len(known) - len(scored):]


def test_a_rerun_replaces_its_own_date_only(spark, world):
    cfg = world["cfg"]
    before = _slice(spark, cfg, RUN_DATE).collect()
    assert len(before) >= 20 * TOP_K
    # Another date's slice (as a run of that date would leave it) must survive the re-run untouched.
    other = _slice(spark, cfg, RUN_DATE).withColumn(S.RUN_DATE, F.lit(VERSION))
    replace_slice(other, catalog.NEXT_ITEM_PREDICTIONS, cfg, {S.RUN_DATE: VERSION, S.DATASET: DATASET})
    assert score_next_item.main(_argv(world, RUN_DATE)) == 0
    assertDataFrameEqual(_slice(spark, cfg, RUN_DATE), before)
    assert _slice(spark, cfg, VERSION).count() == len(before)


def test_no_model_version_on_or_before_the_run_date_is_a_clear_error(spark, world):
    cfg = world["cfg"]
    early = VERSION - dt.timedelta(days=1)
    # run(), not main(): main refuses a date before one it already scored (runs.OutOfOrderRun).
    with pytest.raises(score_next_item.ModelVersionNotFound, match=r"on or before 2024-01-03 .*landing.*next_item"):
        score_next_item.run(spark, cfg, early, [DATASET])
    assert _slice(spark, cfg, early).count() == 0
