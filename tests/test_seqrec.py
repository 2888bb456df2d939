"""Next-item models (issue 8): configuration, ranking metrics by hand, the Parquet reader, an empty shard."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoplens import schemas as S
from shoplens.config import ConfigError, load_config
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
    with pytest.raises(ConfigError, match="seqrec.model must be one of gru4rec, got 'sasrec'"):
        load_config("local", conf, ["seqrec.model=sasrec"])
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
