"""SASRec (issue 9): shapes, causality, padding, the every-position targets and length batches, and
learning the synthetic permutation of tests/test_seqrec.py through the same ``train`` in one process.

Kept cheap (CI is over budget): a tiny model, one short training run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shoplens import distributed
from shoplens.config import ConfigError, SasrecConfig, load_config
from shoplens.models import data
from tests.test_seqrec import MAX_LEN, VOCAB_SIZE, _seqrec_cfg, _synthetic_shard

TINY = SasrecConfig(embedding_dim=16, num_blocks=1, num_heads=2, dropout=0.0, sequence_targets=True,
                    loss_positions=0, batch_by_length=True)


@pytest.fixture(scope="module")
def one_process():
    """This process as Horovod of size 1, as a training process is initialised."""
    distributed.init_worker(use_gpu=False, threads=0)


@pytest.fixture(scope="module")
def model():
    from shoplens.models.sasrec import build_sasrec

    return build_sasrec(VOCAB_SIZE, MAX_LEN, embedding_dim=16, num_blocks=2, num_heads=2, dropout=0.0, seed=3)


def test_sasrec_configuration_is_validated(root):
    conf = root / "conf"
    cfg = load_config("local", conf, ["seqrec.model=sasrec", "seqrec.sasrec.num_heads=2"])

    assert cfg.seqrec.model == "sasrec" and cfg.seqrec.sasrec.num_heads == 2
    with pytest.raises(ConfigError, match="embedding_dim a multiple of num_heads"):
        load_config("local", conf, ["seqrec.sasrec.num_heads=3"])
    with pytest.raises(ConfigError, match=r"seqrec.sasrec.dropout must be in \[0, 1\)"):
        load_config("local", conf, ["seqrec.sasrec.dropout=1"])


def test_scores_cover_the_vocabulary_at_the_last_position(model):
    items = np.array([[0, 0, 0, 0, 0, 0, 5, 9, 4, 7], [0] * 9 + [3]], dtype=np.int32)

    scores = model(items).numpy()

    assert scores.shape == (2, VOCAB_SIZE)
    # The last position's state, scored against the (tied) item embedding.
    last = model.encode(items)[:, -1, :].numpy()
    np.testing.assert_allclose(scores, last @ model.item_vectors.numpy().T, rtol=1e-5, atol=1e-5)


def test_a_position_sees_only_the_items_before_it(model):
    items = np.array([[0, 0, 0, 5, 9, 4, 7, 8, 6, 2]], dtype=np.int32)
    changed = items.copy()
    changed[0, 7] = 100

    before, after = model.encode(items).numpy(), model.encode(changed).numpy()

    np.testing.assert_allclose(before[0, :7], after[0, :7], atol=1e-6)
    assert np.abs(before[0, 7:] - after[0, 7:]).max() > 1e-3
    assert not before[0, :3].any()  # padding positions are zero


def test_left_padding_does_not_change_the_scores(model):
    sequence = [5, 9, 4, 7]
    padded = np.array([[0] * (MAX_LEN - 4) + sequence], dtype=np.int32)

    np.testing.assert_allclose(model(padded).numpy(), model(np.array([sequence], dtype=np.int32)).numpy(), atol=1e-5)
    np.testing.assert_allclose(model(padded).numpy(), model(padded[:, 3:]).numpy(), atol=1e-5)


def test_sequence_targets_are_the_prefix_examples_in_one_row_per_sequence():
    examples = data.Examples(
        inputs=np.array([[0, 1, 4, 5], [0, 0, 0, 7], [0, 0, 0, 0]], dtype=np.int32),
        targets=np.array([6, 8, 9], dtype=np.int32),
    )

    sequence = data.sequence_targets(examples)

    # Row 0: 1 is out of vocabulary (never a target); row 2 has no input, so no target.
    assert sequence.inputs.tolist() == [[0, 1, 4, 5], [0, 0, 0, 7]]
    assert sequence.targets.tolist() == [[0, 4, 5, 6], [0, 0, 0, 8]]
    assert sorted(sequence.target_items().tolist()) == sorted(data.all_prefixes(examples).targets.tolist())


def test_the_loss_over_every_position_is_the_mean_of_the_prefix_losses(model):
    examples = data.Examples(np.array([[0, 0, 0, 0, 0, 0, 5, 9, 4, 7]], dtype=np.int32), np.array([8], dtype=np.int32))
    prefixes = data.all_prefixes(examples)

    sequence = data.sequence_targets(examples)
    one_pass = model.next_item_loss(sequence.inputs, sequence.targets).numpy()
    per_prefix = [model.next_item_loss(prefixes.inputs[i:i + 1], prefixes.targets[i:i + 1]).numpy()
                  for i in range(len(prefixes))]

    assert one_pass == pytest.approx(np.mean(per_prefix), rel=1e-5)


def test_length_batches_hold_every_example_once_cut_to_their_longest_input():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, MAX_LEN + 1, size=100)
    inputs = np.zeros((100, MAX_LEN), dtype=np.int32)
    for i, n in enumerate(lengths):
        inputs[i, MAX_LEN - n:] = i + 2
    examples = data.sequence_targets(data.Examples(inputs, np.arange(2, 102, dtype=np.int32)))

    batches = list(data.to_length_batches(examples, batch_size=8, seed=1).as_numpy_iterator())

    seen = sorted(int(row[-1]) for inputs_, _ in batches for row in inputs_)
    assert seen == list(range(2, 102))
    for inputs_, targets_ in batches:
        assert inputs_.shape == targets_.shape and inputs_.shape[1] == int((inputs_ != 0).sum(axis=1).max())
    # Sorted within windows: batches are far narrower than max_len on average.
    assert np.mean([b[0].shape[1] for b in batches]) < 0.8 * MAX_LEN


def test_sasrec_learns_a_deterministic_next_item_far_above_popularity(tmp_path, cfg, one_process):
    from shoplens.models.train import train

    train_files, val_files = _synthetic_shard(tmp_path, n_actors=400, seed=11)
    base = _seqrec_cfg(cfg, epochs=8, learning_rate=0.01)
    run_cfg = dataclasses.replace(base, seqrec=dataclasses.replace(base.seqrec, model="sasrec", sasrec=TINY))

    result = train(run_cfg, train_files, val_files, str(tmp_path / "run"), VOCAB_SIZE)

    val, popularity = result["val"], result["popularity_val"]
    # One row per sequence: every position trains in one pass.
    assert result["train_examples"] == 400 and result["steps_per_epoch"] == 7
    assert val["hr@10_full"] > 0.9 and val["hr@10_sampled"] > 0.9
    assert val["hr@10_full"] > 4 * popularity["hr@10_full"]
