"""GRU4Rec on sequence examples (issue 8, first slice): metrics by hand, the Parquet reader, an empty
shard, a GRU that learns a deterministic next item, sampled softmax, and resuming from a checkpoint.

Training runs in this process as one Horovod process of size 1 (``init_worker``), through the same
``train`` function the Horovod processes run.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoplens import distributed
from shoplens import schemas as S
from shoplens.config import ConfigError, Gru4RecConfig, load_config
from shoplens.models import data
from shoplens.models import metrics as M

N_ITEMS = 200  # real items are indices 2 .. 201
VOCAB_SIZE = N_ITEMS + M.FIRST_ITEM
MAX_LEN = 10
NUM_NEGATIVES = 99

_INT_LIST = pa.list_(pa.int32())
_SCHEMA = pa.schema([(S.INPUT_ITEMS, _INT_LIST), (S.TARGET_ITEM, pa.int32()), (S.NEGATIVES, _INT_LIST)])


def _write(path, rows) -> str:
    """rows: (input_items, target_item, negatives or None)."""
    columns = list(zip(*rows, strict=True)) if rows else ([], [], [])
    table = pa.Table.from_arrays([pa.array(list(c), type=t) for c, t in zip(columns, _SCHEMA.types, strict=True)],
                                 schema=_SCHEMA)
    pq.write_table(table, path)
    return str(path)


def test_seqrec_configuration_is_validated(root):
    conf = root / "conf"
    cfg = load_config("local", conf, ["seqrec.num_sampled=50", "seqrec.gru4rec.hidden_units=[32, 16]"])

    assert cfg.seqrec.num_sampled == 50 and cfg.seqrec.gru4rec.hidden_units == (32, 16)
    with pytest.raises(ConfigError, match="seqrec.model must be one of gru4rec, sasrec or best, got 'bert4rec'"):
        load_config("local", conf, ["seqrec.model=bert4rec"])
    with pytest.raises(ConfigError, match=r"seqrec.candidates must list distinct models of gru4rec, sasrec, got \['sasrec', 'sasrec'\]"):
        load_config("local", conf, ["seqrec.candidates=[sasrec, sasrec]"])
    with pytest.raises(ConfigError, match="seqrec.select_metric must be one of"):
        load_config("local", conf, ["seqrec.select_metric=loss"])
    assert load_config("local", conf, ["seqrec.model=best"]).seqrec.models_to_train == ("sasrec", "gru4rec")
    assert load_config("local", conf, ["seqrec.model=gru4rec"]).seqrec.models_to_train == ("gru4rec",)
    with pytest.raises(ConfigError, match=r"seqrec.gru4rec.dropout must be in \[0, 1\)"):
        load_config("local", conf, ["seqrec.gru4rec.dropout=1"])
    with pytest.raises(ConfigError, match="seqrec.batch_size must be at least 1"):
        load_config("local", conf, ["seqrec.batch_size=0"])


# --- metrics --------------------------------------------------------------------------------------


def test_ranking_metrics_by_hand():
    ranks = np.array([0, 1, 9, 10, 25])

    figures = M.ranking_metrics(ranks, "sampled")

    assert figures == pytest.approx({
        "hr@10_sampled": 3 / 5,
        "ndcg@10_sampled": (1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5,
        "hr@20_sampled": 4 / 5,
        "ndcg@20_sampled": (1 + 1 / math.log2(3) + 1 / math.log2(11) + 1 / math.log2(12)) / 5,
        "mrr@20_sampled": (1 + 1 / 2 + 1 / 10 + 1 / 11) / 5,
        "p@20_sampled": 4 / 5 / 20,
    })
    with pytest.raises(ValueError, match="empty"):
        M.ranking_metrics(np.array([], dtype=np.int64), "full")


def test_sampled_ranks_count_ties_against_the_target_and_ignore_padding():
    target = np.array([0.5, 2.0])
    negatives = np.array([[0.9, 0.5, 0.1, 0.7], [1.0, 3.0, 0.0, 0.0]])
    real = np.array([[True, True, True, False], [True, True, False, False]])

    # Row 0: 0.9 above, 0.5 tied, the padded 0.7 ignored. Row 1: only 3.0 above.
    assert M.sampled_ranks(target, negatives, real).tolist() == [2, 1]


def test_full_ranks_skip_padding_and_out_of_vocabulary_columns():
    # Columns: padding, OOV (scored highest, never compete), items 2..5.
    scores = np.array([[9.0, 9.0, 0.3, 0.9, 0.3, 0.1], [9.0, 9.0, 0.3, 0.9, 0.3, 0.1]])

    # Target 2: 0.9 above and item 4 tied. Target 3: first.
    assert M.full_ranks(scores, np.array([2, 3])).tolist() == [2, 0]


def test_popularity_scores_count_targets_per_item_index():
    assert M.popularity_scores(np.array([2, 3, 3, 5]), 6).tolist() == [0, 0, 1, 2, 0, 1]


def test_evaluate_scores_a_constant_model_under_both_protocols():
    from shoplens.models.evaluate import evaluate_scores

    examples = data.Examples(
        inputs=np.array([[0, 2], [0, 3]], dtype=np.int32),
        targets=np.array([4, 5], dtype=np.int32),
        negatives=np.array([[2, 3], [2, 0]], dtype=np.int32),
    )
    scores = np.array([0.0, 0.0, 0.1, 0.4, 0.3, 0.2])  # items 2..5: 3 is the most popular

    figures = evaluate_scores(scores, examples, batch_size=1)

    # Full: target 4 is behind item 3 (rank 1); target 5 behind 3 and 4 (rank 2).
    assert figures["hr@10_full"] == 1.0
    assert figures["mrr@20_full"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # Sampled: target 4 vs {2, 3}: rank 1; target 5 vs {2} (the 0 is padding): rank 0.
    assert figures["mrr@20_sampled"] == pytest.approx((1 / 2 + 1) / 2)


# --- data -----------------------------------------------------------------------------------------


def test_read_examples_pads_inputs_left_keeps_the_most_recent_and_drops_empty_inputs(tmp_path):
    first = _write(tmp_path / "a.parquet", [([5, 6, 7, 8], 9, [2, 3]), ([], 4, [2, 3])])
    second = _write(tmp_path / "b.parquet", [([3], 2, [4, 5, 6])])

    examples = data.read_examples([first, second], max_len=3, num_negatives=4)

    assert examples.inputs.tolist() == [[6, 7, 8], [0, 0, 3]]
    assert examples.targets.tolist() == [9, 2]
    assert examples.negatives.tolist() == [[2, 3, 0, 0], [4, 5, 6, 0]]
    assert data.read_examples([second], max_len=3).negatives is None
    with pytest.raises(ValueError, match="more than the 2 expected"):
        data.read_examples([second], max_len=3, num_negatives=2)


def test_all_prefixes_turn_every_eligible_position_into_an_example():
    examples = data.Examples(
        inputs=np.array([[0, 1, 4, 5], [0, 0, 0, 7]], dtype=np.int32), targets=np.array([6, 8], dtype=np.int32)
    )

    prefixes = data.all_prefixes(examples)

    # Row 0: 1 is out of vocabulary (never a target) and has nothing before it; 4, 5, 6 are targets.
    assert prefixes.inputs.tolist() == [[0, 0, 0, 1], [0, 0, 1, 4], [0, 1, 4, 5], [0, 0, 0, 7]]
    assert prefixes.targets.tolist() == [4, 5, 6, 8]


def test_to_dataset_batches_inputs_targets_and_negatives(tmp_path):
    examples = data.read_examples([_write(tmp_path / "v.parquet", [([2], 3, [4]), ([3], 4, [5])])], 2, 1)

    batches = list(data.to_dataset(examples, batch_size=2, with_negatives=True).as_numpy_iterator())

    assert len(batches) == 1
    inputs, targets, negatives = batches[0]
    assert inputs.tolist() == [[0, 2], [0, 3]] and targets.tolist() == [3, 4] and negatives.tolist() == [[4], [5]]


def test_an_empty_shard_is_a_clear_error(tmp_path):
    empty_file = _write(tmp_path / "empty.parquet", [])

    with pytest.raises(data.EmptyShardError, match="lists no Parquet file"):
        data.read_examples([], MAX_LEN)
    with pytest.raises(data.EmptyShardError, match="no example with input items in 1 file"):
        data.read_examples([empty_file], MAX_LEN)


# --- training -------------------------------------------------------------------------------------


def _successor(item: int) -> int:
    # A permutation of the items (7 is coprime with 200): the next item follows from the last alone.
    return M.FIRST_ITEM + (7 * (item - M.FIRST_ITEM) + 3) % N_ITEMS


def _synthetic_shard(tmp_path, n_actors: int, seed: int) -> tuple[list[str], list[str]]:
    """Leave-last-out examples of actors whose every next item is _successor(previous): per actor, a
    train example (the sequence up to its third-last item) and a validation example (up to the
    second-last, with 99 untouched negatives), in two train files and one validation file."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for _ in range(n_actors):
        sequence = [int(rng.integers(M.FIRST_ITEM, VOCAB_SIZE))]
        for _ in range(int(rng.integers(6, 12)) - 1):
            sequence.append(_successor(sequence[-1]))
        untouched = sorted(set(range(M.FIRST_ITEM, VOCAB_SIZE)) - set(sequence))
        negatives = sorted(int(i) for i in rng.choice(untouched, NUM_NEGATIVES, replace=False))
        train.append((sequence[:-3], sequence[-3], None))
        val.append((sequence[:-2], sequence[-2], negatives))
    half = len(train) // 2
    train_files = [_write(tmp_path / "train-0.parquet", train[:half]), _write(tmp_path / "train-1.parquet", train[half:])]
    return train_files, [_write(tmp_path / "val-0.parquet", val)]


def _seqrec_cfg(cfg, **seqrec):
    settings = dict(
        model="gru4rec", batch_size=64, eval_batch_size=256, epochs=6, learning_rate=0.01, warmup_epochs=0, patience=2,
        min_delta=0.0, num_sampled=0, train_all_prefixes=True, seed=7,
        gru4rec=Gru4RecConfig(embedding_dim=32, hidden_units=(64,), dropout=0.1),
    )
    settings.update(seqrec)
    return dataclasses.replace(
        cfg,
        sequences=dataclasses.replace(cfg.sequences, max_len=MAX_LEN, num_negatives=NUM_NEGATIVES),
        seqrec=dataclasses.replace(cfg.seqrec, **settings),
    )


@pytest.fixture(scope="module")
def one_process():
    """This process as Horovod of size 1, as a training process is initialised."""
    distributed.init_worker(use_gpu=False, threads=0)
    assert (distributed.rank(), distributed.size()) == (0, 1)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    return _synthetic_shard(tmp_path_factory.mktemp("seqrec_shard"), n_actors=400, seed=11)


def test_warmup_rises_linearly_from_the_single_process_rate_to_size_times_it():
    from shoplens.models.callbacks import warmup_learning_rate

    assert warmup_learning_rate(0, 0.01, 4, 10) == pytest.approx(0.01)
    assert warmup_learning_rate(5, 0.01, 4, 10) == pytest.approx(0.025)
    assert warmup_learning_rate(10, 0.01, 4, 10) == pytest.approx(0.04)
    assert warmup_learning_rate(99, 0.01, 4, 10) == pytest.approx(0.04)
    assert warmup_learning_rate(0, 0.01, 1, 10) == pytest.approx(0.01)


def test_train_fails_on_an_empty_shard_before_creating_anything(tmp_path, cfg, shard, one_process):
    from shoplens.models.train import train

    train_files, val_files = shard
    empty_file = _write(tmp_path / "empty.parquet", [])

    with pytest.raises(data.EmptyShardError, match="lists no Parquet file"):
        train(_seqrec_cfg(cfg), [], val_files, str(tmp_path / "run"), VOCAB_SIZE)
    with pytest.raises(data.EmptyShardError, match="no example with input items"):
        train(_seqrec_cfg(cfg), train_files, [empty_file], str(tmp_path / "run"), VOCAB_SIZE)
    assert not (tmp_path / "run").exists()


def test_gru4rec_learns_a_deterministic_next_item_far_above_popularity(tmp_path, cfg, shard, one_process):
    from shoplens.models.train import train

    train_files, val_files = shard

    result = train(_seqrec_cfg(cfg), train_files, val_files, str(tmp_path / "run"), VOCAB_SIZE)

    val, popularity = result["val"], result["popularity_val"]
    assert result["val_examples"] == 400 and result["train_examples"] > 400  # every prefix counts
    assert val["hr@10_full"] > 0.9 and val["hr@10_sampled"] > 0.9
    assert val["ndcg@10_sampled"] > 0.7
    # Near-uniform items: popularity is close to chance (10 of 200 items, 10 of 100 candidates).
    assert popularity["hr@10_full"] < 0.2 and popularity["hr@10_sampled"] < 0.3
    assert val["hr@10_full"] > 4 * popularity["hr@10_full"]
    assert len(result["history"]) == result["epochs_done"] and result["best_epoch"] >= 1
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == result["epochs_done"] and state["vocab_size"] == VOCAB_SIZE
    assert (tmp_path / "run" / "checkpoints").is_dir() and (tmp_path / "run" / "best").is_dir()


def test_sampled_softmax_learns_it_too(tmp_path, cfg, shard, one_process):
    from shoplens.models.train import train

    train_files, val_files = shard

    result = train(_seqrec_cfg(cfg, num_sampled=20, epochs=5), train_files, val_files, str(tmp_path / "run"),
                   VOCAB_SIZE)

    assert result["val"]["hr@10_full"] > 4 * result["popularity_val"]["hr@10_full"]
    assert result["val"]["hr@10_sampled"] > 0.5


def test_a_run_resumes_after_its_last_epoch_and_refuses_another_vocabulary(tmp_path, cfg, shard, one_process):
    from shoplens.models.checkpoints import CheckpointError
    from shoplens.models.train import train

    train_files, val_files = shard
    out_dir = str(tmp_path / "run")
    small = dict(patience=10, gru4rec=Gru4RecConfig(embedding_dim=8, hidden_units=(16,), dropout=0.0))

    # A run "interrupted" after 2 of 3 epochs, then started again with the same out_dir.
    first = train(_seqrec_cfg(cfg, epochs=2, **small), train_files, val_files, out_dir, VOCAB_SIZE)
    second = train(_seqrec_cfg(cfg, epochs=3, **small), train_files, val_files, out_dir, VOCAB_SIZE)
    again = train(_seqrec_cfg(cfg, epochs=3, **small), train_files, val_files, out_dir, VOCAB_SIZE)

    steps = first["steps_per_epoch"]
    assert (first["initial_epoch"], first["epochs_done"], first["iterations"]) == (0, 2, 2 * steps)
    # The epoch count and the optimizer's steps continue from the checkpoint.
    assert (second["initial_epoch"], second["epochs_done"], second["iterations"]) == (2, 3, 3 * steps)
    assert [h["epoch"] for h in second["history"]] == [1, 2, 3]
    assert second["history"][:2] == first["history"]
    # A finished run trains no more and restores its best weights: the same figures.
    assert (again["initial_epoch"], again["epochs_done"], again["iterations"]) == (3, 3, 3 * steps)
    assert again["val"] == second["val"]

    with pytest.raises(CheckpointError, match="vocabulary changed"):
        train(_seqrec_cfg(cfg, epochs=3, **small), train_files, val_files, out_dir, VOCAB_SIZE + 10)


def test_an_unreadable_state_or_items_outside_the_vocabulary_are_refused(tmp_path, cfg, shard, one_process):
    from shoplens.models.checkpoints import CheckpointError
    from shoplens.models.train import train

    train_files, val_files = shard
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text("{not json")

    with pytest.raises(CheckpointError, match="unreadable"):
        train(_seqrec_cfg(cfg), train_files, val_files, str(tmp_path / "run"), VOCAB_SIZE)
    with pytest.raises(ValueError, match="outside a vocabulary of 100 indices"):
        train(_seqrec_cfg(cfg), train_files, val_files, str(tmp_path / "other"), 100)
