"""gold.item_vocab and gold.sequence_examples: the example rule on typed rows, leakage, negatives,
stability across runs and inputs, and reading shards from a pinned version without Spark."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shoplens import catalog, sequences, shards
from shoplens import schemas as S
from shoplens.config import ConfigError, load_config
from shoplens.jobs import build_sequences, build_sessions
from shoplens.sessions import ACTOR

from .conftest import CONF_DIR
from .synthetic_silver import ev, generate, silver_frame, write_all_silver

EXAMPLE_COLUMNS = [S.GRAIN, S.SPLIT, S.USER_ID, S.SESSION_KEY, S.SESSION_ID, S.INPUT_ITEMS, S.TARGET_ITEM, S.N_ITEMS]


def _seq_cfg(cfg, **changes):
    return dataclasses.replace(cfg.sequences, **changes)


def test_examples_leave_last_out_per_user_and_per_session(spark, cfg):
    events = [
        # u1: a b x(out of vocabulary) c d e; a bot's view and a remove_from_cart do not count.
        ev("u1-1", "2024-01-01T10:00:00", "u1", "a"), ev("u1-2", "2024-01-01T10:01:00", "u1", "b"),
        ev("u1-3", "2024-01-01T10:02:00", "u1", "x"),
        ev("u1-r", "2024-01-01T10:02:30", "u1", "zz", event_type="remove_from_cart"),
        ev("u1-4", "2024-01-02T09:00:00", "u1", "c", event_type="cart"),
        ev("u1-5", "2024-01-02T09:01:00", "u1", "d", event_type="purchase"),
        ev("u1-6", "2024-01-02T09:02:00", "u1", "e"),
        ev("u1-b", "2024-01-02T09:03:00", "u1", "a", is_bot=True),
        # u2: two items only: all train.
        ev("u2-1", "2024-01-01T10:00:00", "u2", "a"), ev("u2-2", "2024-01-01T10:00:00", "u2", "b"),
        # Anonymous k1: no user example; its session has one.
        ev("k1-1", "2024-01-01T12:00:00", None, "a", session_key="k1"),
        ev("k1-2", "2024-01-01T12:01:00", None, "b", session_key="k1"),
        ev("k1-3", "2024-01-01T12:02:00", None, "c", session_key="k1"),
        # u3: the train target a has no input (dropped); y after the test target is out of vocabulary.
        ev("u3-1", "2024-01-01T10:00:00", "u3", "a"), ev("u3-2", "2024-01-01T10:01:00", "u3", "b"),
        ev("u3-3", "2024-01-01T10:02:00", "u3", "c"), ev("u3-4", "2024-01-01T10:03:00", "u3", "y"),
    ]
    random.Random(5).shuffle(events)
    vocab = spark.createDataFrame(
        [("landing", item, index, dt.date(2024, 1, 1), 1) for item, index in zip("abcde", range(2, 7), strict=True)], S.ITEM_VOCAB
    )
    seq = _seq_cfg(cfg, max_len=3)
    counted = sequences.counted_events(silver_frame(spark, events, "UTC"), seq.event_types)
    labelled = sequences.with_split(sequences.with_item_index(counted, vocab), seq)
    session_of = {"u1-1": "s1", "u1-2": "s1", "u1-3": "s1", "u1-4": "s2", "u1-5": "s2", "u1-6": "s2",
                  "u2-1": "s3", "u2-2": "s3", "k1-1": "s4", "k1-2": "s4", "k1-3": "s4",
                  "u3-1": "s5", "u3-2": "s5", "u3-3": "s5", "u3-4": "s5"}
    mapping = spark.createDataFrame([("landing", e, s) for e, s in session_of.items()], "dataset string, event_id string, session_id string")
    in_sessions = labelled.join(mapping, [S.DATASET, S.EVENT_ID], "inner")

    got = sequences.examples(labelled, S.GRAIN_USER, seq.max_len).unionByName(
        sequences.examples(in_sessions, S.GRAIN_SESSION, seq.max_len)
    )

    u, s = S.GRAIN_USER, S.GRAIN_SESSION
    expected = spark.createDataFrame(
        [
            (u, "train", "u1", None, None, [2, 3, 1], 4, 3),
            (u, "validation", "u1", None, None, [3, 1, 4], 5, 3),
            (u, "test", "u1", None, None, [1, 4, 5], 6, 3),
            (u, "train", "u2", None, None, [2], 3, 1),
            (u, "validation", "u3", None, None, [2], 3, 1),
            (u, "test", "u3", None, None, [2, 3], 4, 2),
            (s, "train", "u1", None, "s1", [2], 3, 1),
            (s, "validation", "u1", None, "s2", [4], 5, 1),
            (s, "test", "u1", None, "s2", [4, 5], 6, 2),
            (s, "train", "u2", None, "s3", [2], 3, 1),
            (s, "validation", None, "k1", "s4", [2], 3, 1),
            (s, "test", None, "k1", "s4", [2, 3], 4, 2),
            (s, "validation", "u3", None, "s5", [2], 3, 1),
            (s, "test", "u3", None, "s5", [2, 3], 4, 2),
        ],
        "grain string, split string, user_id string, session_key string, session_id string, "
        "input_items array<int>, target_item int, n_items int",
    )
    assertDataFrameEqual(got.select(*EXAMPLE_COLUMNS), expected)
    assert got.select(S.EXAMPLE_ID).distinct().count() == got.count()


def test_time_cutoff_split_makes_every_evaluation_event_a_target(spark, cfg):
    events = [ev("1", "2024-01-01T10:00:00", "u1", "a"), ev("2", "2024-01-05T10:00:00", "u1", "b"),
              ev("3", "2024-01-10T10:00:00", "u1", "c"), ev("4", "2024-01-10T11:00:00", "u1", "d"),
              ev("5", "2024-01-20T10:00:00", "u1", "e")]
    vocab = spark.createDataFrame(
        [("landing", item, index, dt.date(2024, 1, 1), 1) for item, index in zip("abcde", range(2, 7), strict=True)], S.ITEM_VOCAB
    )
    seq = _seq_cfg(cfg, split="time_cutoff", validation_start="2024-01-08", test_start="2024-01-15T00:00:00+00:00")
    counted = sequences.counted_events(silver_frame(spark, events, "UTC"), seq.event_types)
    got = sequences.examples(sequences.with_split(sequences.with_item_index(counted, vocab), seq), S.GRAIN_USER, 50)
    expected = spark.createDataFrame(
        [("train", [2], 3), ("validation", [2, 3], 4), ("validation", [2, 3, 4], 5), ("test", [2, 3, 4, 5], 6)],
        "split string, input_items array<int>, target_item int",
    )
    assertDataFrameEqual(got.select(S.SPLIT, S.INPUT_ITEMS, S.TARGET_ITEM), expected)


def test_bad_sequence_settings_are_rejected():
    with pytest.raises(ConfigError, match="sequences.split"):
        load_config("local", CONF_DIR, ["sequences.split=random"])
    with pytest.raises(ConfigError, match="validation_start must be before"):
        load_config("local", CONF_DIR, ["sequences.split=time_cutoff", "sequences.validation_start='2024-02-01'",
                                        "sequences.test_start='2024-01-01T00:00:00Z'"])


def test_negatives_are_distinct_untouched_uniform_and_the_same_on_every_run(spark):
    max_index = 110  # 109 candidate items, 2..110
    rows = []
    touched = []
    for n, count in enumerate([100, 20, 5, 0]):  # 9, 89, 104 and 109 untouched items
        rows.append((f"x{n}", f"u:{n}"))
        touched += [(f"u:{n}", 2 + i) for i in range(count)]
    # Many untouched examples over a larger catalogue, for uniformity.
    rows += [(f"y{n}", "u:fresh") for n in range(600)]
    need = spark.createDataFrame(rows, f"{S.EXAMPLE_ID} string, {ACTOR} string")
    touched_df = spark.createDataFrame(touched, f"{ACTOR} string, {S.ITEM_INDEX} int")

    small = {r[S.EXAMPLE_ID]: r[S.NEGATIVES] for r in sequences.sample_negatives(need.where(F.col(S.EXAMPLE_ID).startswith("x")), touched_df, max_index, 99, 42).collect()}
    assert {k: len(v) for k, v in small.items()} == {"x0": 9, "x1": 89, "x2": 99, "x3": 99}
    touched_by = collections.defaultdict(set)
    for actor, index in touched:
        touched_by[actor].add(index)
    for n in range(4):
        negatives = small[f"x{n}"]
        assert len(set(negatives)) == len(negatives) and negatives == sorted(negatives)
        assert all(2 <= i <= max_index for i in negatives) and not set(negatives) & touched_by[f"u:{n}"]
    assert set(small["x0"]) == set(range(102, 111))  # all 9 untouched items

    def sampled(prefix, max_index, seed):
        chosen = need.where(F.col(S.EXAMPLE_ID).startswith(prefix))
        return {r[S.EXAMPLE_ID]: r[S.NEGATIVES] for r in sequences.sample_negatives(chosen, touched_df, max_index, 99, seed).collect()}

    assert sampled("x", max_index, 42) == small  # the same on every run
    assert sampled("x", max_index, 7)["x3"] != small["x3"]  # and another seed draws others
    big = sampled("y", 501, 42)
    assert all(len(set(v)) == 99 for v in big.values())
    counts = collections.Counter(i for v in big.values() for i in v)
    # 600 x 99 draws over 500 items: about 119 each (sd 10); a skewed sampler would show far outside.
    assert set(counts) == set(range(2, 502)) and 75 < min(counts.values()) and max(counts.values()) < 165


@pytest.fixture(scope="module")
def built(spark, cfg, tmp_path_factory):
    """Synthetic silver with sessions and sequences, once for the module's tests."""
    base = tmp_path_factory.mktemp("sequences")
    wh = dataclasses.replace(
        cfg,
        paths=dataclasses.replace(cfg.paths, warehouse=str(base / "warehouse")),
        sequences=dataclasses.replace(cfg.sequences, min_item_count=1, max_len=20, num_shards=4),
    )
    events = generate(dt.date(2024, 1, 1), 6, seed=3, items=400, late_share=0)
    write_all_silver(spark, wh, events)
    run_date = dt.date(2024, 1, 6)
    build_sessions.run(spark, wh, run_date, full_rebuild=True)
    summary = build_sequences.run(spark, wh, run_date)
    return wh, events, run_date, summary


def _table(spark, spec, cfg):
    return spark.read.format("delta").load(spec.location(cfg))


def _reference_user_examples(events, vocab: dict[str, int], types, max_len: int) -> set:
    """Leave-last-out per identified user in plain Python."""
    by_user = collections.defaultdict(list)
    for e in events:
        if e.user_id is not None and not e.is_bot and e.event_type in types:
            by_user[e.user_id].append(e)
    result = set()
    for user, evs in by_user.items():
        evs.sort(key=lambda e: (e.time, e.event_id))
        idx = [vocab.get(e.item_id, 1) for e in evs]
        eligible = [i for i, v in enumerate(idx) if v >= 2]
        if len(eligible) >= 3:
            test, validation = eligible[-1], eligible[-2]
            targets = [(validation, "validation"), (test, "test")]
            train = [i for i in eligible if i < validation]
        else:
            targets, train = [], eligible
        if train:
            targets.append((train[-1], "train"))
        for position, split in targets:
            inputs = tuple(idx[max(0, position - max_len):position])
            if inputs:
                result.add((user, split, inputs, idx[position], evs[position].time.replace(tzinfo=None)))
    return result


def test_user_examples_follow_the_rule_and_never_leak(spark, built):
    wh, events, _, summary = built
    table = _table(spark, catalog.SEQUENCE_EXAMPLES, wh)
    vocab = {r[S.ITEM_ID]: r[S.ITEM_INDEX] for r in _table(spark, catalog.ITEM_VOCAB, wh).collect()}
    assert set(vocab.values()) == set(range(2, len(vocab) + 2))
    got = {
        (r[S.USER_ID], r[S.SPLIT], tuple(r[S.INPUT_ITEMS]), r[S.TARGET_ITEM], r[S.TARGET_TIME])
        for r in table.where(F.col(S.GRAIN) == S.GRAIN_USER).collect()
    }
    assert got == _reference_user_examples(events, vocab, wh.sequences.event_types, wh.sequences.max_len)
    assert summary["landing"]["user/test"] > 20 and summary["landing"]["session/train"] > 20
    # The summary counts the examples written, without reading them back: the table agrees.
    written = table.where(F.col(S.DATASET) == "landing").groupBy(S.GRAIN, S.SPLIT).count().collect()
    assert summary["landing"] == {f"{r[S.GRAIN]}/{r[S.SPLIT]}": r["count"] for r in written}

    # No training input, at either grain, holds a validation/test target or anything after one:
    # each train target comes before its actor's validation target (or at the same instant: ties
    # are ordered by event id).
    rows = table.collect()
    first_evaluation = {}
    for r in rows:
        if r[S.SPLIT] != S.TRAIN:
            actor = (r[S.USER_ID], r[S.SESSION_KEY])
            first_evaluation[actor] = min(first_evaluation.get(actor, r[S.TARGET_TIME]), r[S.TARGET_TIME])
    for r in rows:
        if r[S.SPLIT] == S.TRAIN and (r[S.USER_ID], r[S.SESSION_KEY]) in first_evaluation:
            assert r[S.TARGET_TIME] <= first_evaluation[(r[S.USER_ID], r[S.SESSION_KEY])]
    # The session grain scores the same targets as the user grain for identified users.
    user_targets = {(r[S.USER_ID], r[S.SPLIT], r[S.TARGET_TIME]) for r in rows if r[S.GRAIN] == S.GRAIN_USER and r[S.SPLIT] != S.TRAIN}
    session_targets = {(r[S.USER_ID], r[S.SPLIT], r[S.TARGET_TIME]) for r in rows if r[S.GRAIN] == S.GRAIN_SESSION and r[S.SPLIT] != S.TRAIN and r[S.USER_ID]}
    assert session_targets <= user_targets
    assert all(len(r[S.INPUT_ITEMS]) <= wh.sequences.max_len for r in rows)
    # Shards: every example of an actor in one shard.
    shard_of = collections.defaultdict(set)
    for r in rows:
        shard_of[(r[S.USER_ID], r[S.SESSION_KEY])].add(r[S.SHARD])
    assert all(len(s) == 1 for s in shard_of.values()) and len({s for v in shard_of.values() for s in v}) == 4


def test_negatives_of_the_built_table(spark, built):
    wh, events, _, _ = built
    table = _table(spark, catalog.SEQUENCE_EXAMPLES, wh)
    vocab = {r[S.ITEM_ID]: r[S.ITEM_INDEX] for r in _table(spark, catalog.ITEM_VOCAB, wh).collect()}
    touched = collections.defaultdict(set)
    for e in events:
        touched[(e.user_id, None if e.user_id else e.session_key)].add(vocab.get(e.item_id))
    for r in table.collect():
        if r[S.SPLIT] == S.TRAIN:
            assert r[S.NEGATIVES] is None
            continue
        negatives = r[S.NEGATIVES]
        assert len(negatives) == len(set(negatives)) == 99
        assert not set(negatives) & touched[(r[S.USER_ID], r[S.SESSION_KEY])]
        assert r[S.TARGET_ITEM] not in negatives and all(2 <= i <= max(vocab.values()) for i in negatives)


def test_rerun_and_messy_input_give_the_same_tables(spark, built, tmp_path):
    wh, events, run_date, _ = built
    before = (_table(spark, catalog.SEQUENCE_EXAMPLES, wh).collect(), _table(spark, catalog.ITEM_VOCAB, wh).collect())
    build_sequences.run(spark, wh, run_date)
    assertDataFrameEqual(_table(spark, catalog.SEQUENCE_EXAMPLES, wh), before[0])
    assertDataFrameEqual(_table(spark, catalog.ITEM_VOCAB, wh), before[1])

    other = dataclasses.replace(wh, paths=dataclasses.replace(wh.paths, warehouse=str(tmp_path / "messy")))
    rng = random.Random(1)
    messy = events + rng.sample(events, len(events) // 10)
    rng.shuffle(messy)
    write_all_silver(spark, other, messy)
    build_sessions.run(spark, other, run_date, full_rebuild=True)
    build_sequences.run(spark, other, run_date)
    assertDataFrameEqual(_table(spark, catalog.SEQUENCE_EXAMPLES, other), before[0])
    assertDataFrameEqual(_table(spark, catalog.ITEM_VOCAB, other), before[1])


def test_shard_files_of_a_pinned_version_are_read_without_spark(spark, built):
    wh, _, run_date, _ = built
    location = catalog.SEQUENCE_EXAMPLES.location(wh)
    # Checkpoints every 2 commits, so the log replay goes through a checkpoint too.
    version = shards.latest_version(location)
    spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2')")
    pinned = spark.read.format("delta").option("versionAsOf", version).load(location)
    wanted = pinned.where((F.col(S.GRAIN) == S.GRAIN_USER) & (F.col(S.SPLIT) == S.TRAIN) & F.col(S.SHARD).isin(1, 3))
    expected_files = sorted({r[0].removeprefix("file:") for r in wanted.select("_metadata.file_path").collect()})

    files = shards.shard_files(location, version, "landing", S.TRAIN, [1, 3])
    assert files == expected_files
    read = pq.read_table(files, columns=[S.EXAMPLE_ID, S.INPUT_ITEMS, S.TARGET_ITEM]).to_pylist()
    assert sorted((r[S.EXAMPLE_ID], r[S.INPUT_ITEMS], r[S.TARGET_ITEM]) for r in read) == sorted(
        (r[S.EXAMPLE_ID], r[S.INPUT_ITEMS], r[S.TARGET_ITEM]) for r in wanted.collect()
    )

    # A later rewrite (two commits with the property change: a checkpoint) does not change what the
    # pinned version lists.
    build_sequences.run(spark, wh, run_date)
    assert shards.latest_version(location) > version
    assert any(p.name.endswith(".checkpoint.parquet") for p in (Path(location) / "_delta_log").iterdir())
    assert shards.shard_files(location, version, "landing", S.TRAIN, [1, 3]) == files
    latest = shards.latest_version(location)
    now = spark.read.format("delta").load(location).where(
        (F.col(S.GRAIN) == S.GRAIN_USER) & (F.col(S.SPLIT) == S.TRAIN) & F.col(S.SHARD).isin(1, 3)
    )
    assert shards.shard_files(location, latest, "landing", S.TRAIN, [1, 3]) == sorted(
        {r[0].removeprefix("file:") for r in now.select("_metadata.file_path").collect()}
    )


def test_vocabulary_indices_never_change_and_new_items_follow_count_then_id(spark, fresh_cfg):
    """Known items keep their index, new ones are numbered after the highest by count then id, and a
    known item no longer counted stays."""
    d1, d2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)

    def views(prefix, day, user, item, n, **kw):
        return [ev(f"{prefix}{i}", f"{day}T10:{i:02d}:00", user, item, **kw) for i in range(n)]

    first = (views("a", d1, "u1", "a", 3) + views("b", d1, "u2", "b", 2) + views("c", d1, "u3", "c", 1)
             + views("z", d1, "u4", "z", 5, is_bot=True))
    write_all_silver(spark, fresh_cfg, first)
    build_sequences.run(spark, fresh_cfg, d1)
    second = first + views("c2", d2, "u3", "c", 2) + views("d", d2, "u5", "d", 5) + views("e", d2, "u6", "e", 3)
    write_all_silver(spark, fresh_cfg, second)
    build_sequences.run(spark, fresh_cfg, d2)

    expected = spark.createDataFrame(
        [("landing", "a", 2, d1, 3), ("landing", "b", 3, d1, 2),
         # c reached min_item_count (2) on d2: after d (5 events); e and c tie on 3: by item id.
         ("landing", "d", 4, d2, 5), ("landing", "c", 5, d2, 3), ("landing", "e", 6, d2, 3)],
        S.ITEM_VOCAB,
    )
    assertDataFrameEqual(_table(spark, catalog.ITEM_VOCAB, fresh_cfg), expected)
    # A known item whose events are gone from silver keeps its row (the slice is replaced whole).
    d3 = dt.date(2024, 1, 3)
    write_all_silver(spark, fresh_cfg, [e for e in second if e.item_id != "a"] + views("f", d3, "u7", "f", 2))
    build_sequences.run(spark, fresh_cfg, d3)
    assertDataFrameEqual(
        _table(spark, catalog.ITEM_VOCAB, fresh_cfg),
        expected.unionByName(spark.createDataFrame([("landing", "f", 7, d3, 2)], S.ITEM_VOCAB)),
    )


PUBLIC_DATA = CONF_DIR.parent.parent / "shared" / "data"


def _prefix(tmp_path, source: Path, name: str, lines: int) -> str:
    with source.open(encoding="utf-8") as f:
        head = [next(f) for _ in range(lines)]
    target = tmp_path / name
    target.write_text("".join(head), encoding="utf-8")
    return str(target)


@pytest.mark.skipif(not PUBLIC_DATA.is_dir(), reason=f"public datasets not found at {PUBLIC_DATA}")
def test_real_files_taobao_and_diginetica_get_sessions_and_beauty_sequences_only(spark, fresh_cfg, tmp_path):
    from shoplens.jobs import load_history

    cfg = dataclasses.replace(fresh_cfg, sequences=dataclasses.replace(fresh_cfg.sequences, min_item_count=1))
    run_date = dt.date(2024, 1, 1)
    beauty_lines = 150
    inputs = {
        "taobao": _prefix(tmp_path, PUBLIC_DATA / "taobao_userbehavior" / "UserBehavior_prefix.csv", "taobao.csv", 1500),
        "diginetica": _prefix(
            tmp_path, PUBLIC_DATA / "diginetica_sample" / "sample_train-item-views.csv", "digi.csv", 1500
        ),
        "sequences": _prefix(tmp_path, PUBLIC_DATA / "amazon_beauty_seq" / "Beauty.txt", "beauty.txt", beauty_lines),
    }
    for fmt, path in inputs.items():
        assert load_history.run(spark, cfg, fmt, path, run_date, demo=True)["reconciled"]
    for fmt in ("taobao", "diginetica"):
        assert build_sessions.run(spark, cfg, run_date, fmt)["sessions"] > 0
    with pytest.raises(build_sessions.DatasetExcluded):
        build_sessions.run(spark, cfg, run_date, "sequences")
    summary = build_sequences.run(spark, cfg, run_date)

    assert summary["taobao"]["user/test"] > 5 and summary["taobao"]["session/train"] > 5
    # Diginetica is mostly anonymous: its sessions give the session-grain examples.
    assert summary["diginetica"]["session/test"] > 50
    assert not any(key.startswith("session/") for key in summary["sequences"])

    # Beauty: leave-one-out exactly as published: per line, the last item is the test target and
    # the items before it (at most 50) its input; one before, the validation target.
    vocab = {r[S.ITEM_ID]: r[S.ITEM_INDEX] for r in _table(spark, catalog.ITEM_VOCAB, cfg).where(F.col(S.DATASET) == "sequences").collect()}
    expected = set()
    for line in Path(inputs["sequences"]).read_text().splitlines():
        items = [vocab[i] for i in line.split()[1:]]
        expected.add((S.TEST, tuple(items[-51:-1]), items[-1]))
        expected.add((S.VALIDATION, tuple(items[-52:-2]), items[-2]))
    rows = _table(spark, catalog.SEQUENCE_EXAMPLES, cfg).where(
        (F.col(S.DATASET) == "sequences") & (F.col(S.SPLIT) != S.TRAIN)
    ).collect()
    assert {(r[S.SPLIT], tuple(r[S.INPUT_ITEMS]), r[S.TARGET_ITEM]) for r in rows} == expected
    assert len(rows) == 2 * beauty_lines and all(len(r[S.NEGATIVES]) == 99 for r in rows)
