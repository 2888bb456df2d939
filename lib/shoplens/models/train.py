"""The next-item training function: one process's part of a (Horovod) training run.

:func:`train` (or :func:`train_model`, which also hands back the trained model) is what every Horovod
process runs (``shoplens.distributed.run_distributed`` calls
``init_worker`` first), and what pytest runs in a single process after ``init_worker`` (Horovod of
size 1). It reads this process's shard of gold.sequence_examples from Parquet (``models.data``),
builds the model (``models.build_model``: ``seqrec.model``) and trains it with Horovod's pieces, all from
``shoplens.distributed``:

- the learning rate scaled by the number of processes (``distributed_optimizer``), reached linearly
  from the single-process rate over ``seqrec.warmup_epochs`` (nothing to do on one process);
- rank 0's initial weights broadcast, epoch figures averaged across processes (``callbacks``);
- checkpoints and the run's state written by rank 0 only (``chief_only``; ``models.checkpoints``).

After every epoch each process scores its validation shard (HR, NDCG, MRR, P against the sampled
candidates and the full catalogue). The figures are combined across processes exactly, weighted by
each shard's example count (``distributed.weighted_mean``: an allreduce of sums and counts), so every
process takes the same early-stopping decision on validation NDCG@10 (sampled) at the same epoch: a
process that stopped alone would leave the others waiting in a gradient exchange. Popularity is
counted over every process's train targets (an allreduce of the counts).

TensorFlow is imported inside :func:`train`: the Spark driver pickles it by reference cheaply.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoplens import distributed
from shoplens.config import Config
from shoplens.models import build_model, checkpoints, data
from shoplens.models import metrics as M
from shoplens.models.evaluate import evaluate, evaluate_scores

log = logging.getLogger(__name__)

# The job whose ``after_epoch`` faults (``shoplens.faults``) the training processes obey.
FAULT_JOB = "train_next_item"


@dataclass
class Trained:
    """What :func:`train_model` hands back in the process."""

    # The model with the best epoch's weights (compiled with the distributed optimizer).
    model: Any
    # The popularity baseline's scores (vocab_size,): train-target counts summed over every process.
    popularity: Any
    # What :func:`train` returns.
    result: dict[str, Any]


def exact_mean(name: str):
    """Returns ``combine(figures, count)`` for :class:`callbacks.ValidationFigures`: the count-weighted
    mean across processes (an allreduce named ``name``)."""

    def combine(figures: dict[str, float], count: int) -> dict[str, float]:
        return distributed.weighted_mean(figures, count, name)[0]

    return combine


def common_steps_per_epoch(train_examples: int, batch_size: int) -> int:
    """Returns the steps per epoch every process uses: the mean process's train examples / batch size,
    rounded up (an allreduce of the counts; every process must call it). So an epoch is about one
    pass over all train examples; a process with more examples than the mean sees the rest in the
    next epoch (its dataset repeats, reshuffled), one with fewer sees some twice."""
    total = int(round(distributed.allreduce_sum([train_examples], "train_examples")[0]))
    return max(1, math.ceil(total / (distributed.size() * batch_size)))


def train_layout(cfg: Config, examples: data.Examples) -> data.Examples:
    """The train examples as ``cfg.seqrec.model`` learns from them: SASRec with
    ``seqrec.sasrec.sequence_targets`` trains every position of each sequence in one pass
    (``data.sequence_targets``); otherwise one example per prefix with ``seqrec.train_all_prefixes``
    (``data.all_prefixes``), else the examples as read.

    Returns: the examples, targets (n,) or (n, max_len).
    """
    s = cfg.seqrec
    if s.model == "sasrec" and s.sasrec.sequence_targets:
        return data.sequence_targets(examples)
    if s.train_all_prefixes:
        return data.all_prefixes(examples)
    return examples


def train(
    cfg: Config,
    shard_files: Sequence[str],
    val_files: Sequence[str],
    out_dir: str,
    vocab_size: int,
    *,
    steps_per_epoch: int | None = None,
    filesystem: Any = None,
) -> dict[str, Any]:
    """Trains ``cfg.seqrec.model`` on this process's shard, resuming the run in ``out_dir`` if any.

    ``shard_files`` / ``val_files``: this process's train and validation Parquet files of
    gold.sequence_examples at one pinned version (``shoplens.shards.shard_files``). ``vocab_size``:
    the dataset's highest item index + 1 in gold.item_vocab at that version. ``steps_per_epoch``
    must be the same on every process (each step is a gradient exchange); None lets the processes
    agree on it (:func:`common_steps_per_epoch`: from the mean process's train examples, counted
    after ``train_all_prefixes``). ``filesystem``: a pyarrow file system for
    the Parquet paths, when they carry no scheme.

    Returns: one dict for this process: rank, size, this process's example counts, steps per epoch,
    epochs (done before this call, done now), whether it stopped early, the best epoch, the history
    (one dict per epoch), the validation figures of the best weights (``val``) and of popularity over
    every process's train targets (``popularity_val``), both over every process's validation
    examples (``val_examples_total``), metric names ending in ``_sampled`` / ``_full``, the learning
    rate reached, the optimizer's step count, the seconds spent in all and in ``model.fit``
    (``fit_s``: training steps plus each epoch's validation scoring and checkpoint).

    Raises: ``data.EmptyShardError`` (no train or validation example in this shard), ``ValueError``
    (an item index outside the vocabulary), ``checkpoints.CheckpointError`` (a run in ``out_dir``
    that this one cannot resume).
    """
    return train_model(
        cfg, shard_files, val_files, out_dir, vocab_size, steps_per_epoch=steps_per_epoch, filesystem=filesystem
    ).result


def train_model(
    cfg: Config,
    shard_files: Sequence[str],
    val_files: Sequence[str],
    out_dir: str,
    vocab_size: int,
    *,
    steps_per_epoch: int | None = None,
    filesystem: Any = None,
) -> Trained:
    """:func:`train`, handing back the trained model and the popularity scores too (for a test
    evaluation or an export in the same process). Every process must call it.

    Returns: :class:`Trained`; its ``result`` is :func:`train`'s dict.
    """
    import tensorflow as tf

    from shoplens.models import callbacks as C

    started = time.monotonic()
    s = cfg.seqrec
    max_len = cfg.sequences.max_len
    rank, size = distributed.rank(), distributed.size()

    # Both reads fail on an empty shard before any collective operation (docs/SEQREC.md).
    train_examples = train_layout(cfg, data.read_examples(shard_files, max_len, filesystem=filesystem))
    val_examples = data.read_examples(
        val_files, max_len, num_negatives=cfg.sequences.num_negatives, filesystem=filesystem
    )
    highest = data.max_item(train_examples, val_examples)
    if highest >= vocab_size:
        raise ValueError(
            f"item index {highest} is outside a vocabulary of {vocab_size} indices: the examples and "
            "the vocabulary come from different snapshots"
        )

    tf.keras.utils.set_random_seed(s.seed)
    model = build_model(cfg, vocab_size)
    optimizer = distributed.distributed_optimizer(tf.keras.optimizers.Adam(learning_rate=s.learning_rate))
    model.compile(optimizer=optimizer)
    # Slot variables must exist before a restore fills them.
    optimizer.build(model.trainable_variables)
    steps = steps_per_epoch or common_steps_per_epoch(len(train_examples), s.batch_size)

    state = checkpoints.restore(out_dir, model, optimizer, vocab_size, max_len)
    initial_epoch = state.epoch
    early_stopping = C.EarlyStopping(state, s.patience, s.min_delta)
    fit_s = 0.0
    if state.stopped_early or initial_epoch >= s.epochs:
        log.info("rank %d: the run in %s is finished (epoch %d): evaluating its best weights",
                 rank, out_dir, state.epoch)
    else:
        log.info(
            "rank %d of %d: %d train examples, %d validation, %d steps per epoch, epochs %d..%d",
            rank, size, len(train_examples), len(val_examples), steps, initial_epoch + 1, s.epochs,
        )
        callbacks = [
            # Before distributed.callbacks(): the metric averaging must see the validation figures.
            C.ValidationFigures(val_examples, s.eval_batch_size, combine=exact_mean("val_figures")),
            *distributed.callbacks(),
            C.LearningRateWarmup(s.learning_rate, size, round(s.warmup_epochs * steps)),
            early_stopping,
            *distributed.chief_only([C.Checkpoint(out_dir, state, early_stopping)]),
            # Last: a rank killed here has finished the epoch, and rank 0 has checkpointed it.
            C.FaultHook(FAULT_JOB, rank, initial_epoch),
        ]
        if s.model == "sasrec" and s.sasrec.batch_by_length:
            dataset = data.to_length_batches(train_examples, s.batch_size, repeat=True, seed=s.seed + rank)
        else:
            dataset = data.to_dataset(train_examples, s.batch_size, shuffle=True, repeat=True, seed=s.seed + rank)
        fit_started = time.monotonic()
        model.fit(
            dataset,
            epochs=s.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=0,
        )
        fit_s = time.monotonic() - fit_started
    if early_stopping.best_weights is not None:
        model.set_weights(early_stopping.best_weights)
    elif state.best_epoch:
        # Resumed, and no epoch of this call beat the best of an earlier one.
        checkpoints.restore_best(out_dir, model)

    # Every process's train targets: the same baseline on every process.
    popularity = distributed.allreduce_sum(M.popularity_scores(train_examples.target_items(), vocab_size), "popularity")
    val, val_total = distributed.weighted_mean(
        evaluate(model, val_examples, s.eval_batch_size), len(val_examples), "val_best"
    )
    popularity_val, _ = distributed.weighted_mean(
        evaluate_scores(popularity, val_examples, s.eval_batch_size), len(val_examples), "val_popularity"
    )
    result = {
        "rank": rank,
        "size": size,
        "train_examples": len(train_examples),
        "val_examples": len(val_examples),
        "steps_per_epoch": steps,
        "initial_epoch": initial_epoch,
        "epochs_done": state.epoch,
        "stopped_early": state.stopped_early,
        "best_epoch": state.best_epoch,
        "history": list(state.history),
        "val_examples_total": val_total,
        "val": val,
        "popularity_val": popularity_val,
        "learning_rate": float(tf.keras.backend.get_value(optimizer.learning_rate)),
        "iterations": int(optimizer.iterations.numpy()),
        "fit_s": round(fit_s, 3),
        "train_s": round(time.monotonic() - started, 3),
    }
    return Trained(model=model, popularity=popularity, result=result)
