"""Plain Keras callbacks of a next-item training run (no Horovod here: ``models.train`` orders them
around ``shoplens.distributed.callbacks()``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from shoplens import faults
from shoplens.models import checkpoints
from shoplens.models.data import Examples
from shoplens.models.evaluate import evaluate

MONITOR = "val_ndcg@10_sampled"


def warmup_learning_rate(step: int, base_lr: float, size: int, warmup_steps: int) -> float:
    """The learning rate at training step ``step`` (0-based): ``base_lr`` at step 0, rising linearly
    to ``base_lr * size`` at ``warmup_steps``, then constant (Goyal et al. 2017's gradual warm-up)."""
    target = base_lr * size
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    return base_lr + (target - base_lr) * step / warmup_steps


class ValidationFigures(tf.keras.callbacks.Callback):
    """Adds the validation figures to the epoch's logs as ``val_<metric>_<protocol>``.

    ``combine(figures, count)`` turns this process's means over its ``count`` examples into the
    figures to log (``models.train`` passes the exact count-weighted mean across processes); None
    logs this process's own figures.
    """

    def __init__(
        self,
        examples: Examples,
        batch_size: int,
        combine: Callable[[dict[str, float], int], dict[str, float]] | None = None,
    ) -> None:
        super().__init__()
        self.examples = examples
        self.batch_size = batch_size
        self.combine = combine

    def on_epoch_end(self, epoch, logs=None):
        # Called on every process even without logs: combine may be a collective operation.
        figures = evaluate(self.model, self.examples, self.batch_size)
        if self.combine is not None:
            figures = self.combine(figures, len(self.examples))
        if logs is not None:
            for name, value in figures.items():
                logs[f"val_{name}"] = value


class LearningRateWarmup(tf.keras.callbacks.Callback):
    """Sets the optimizer's learning rate from :func:`warmup_learning_rate` before each step of the
    warm-up; does nothing on one process (the rate is already the target)."""

    def __init__(self, base_lr: float, size: int, warmup_steps: int) -> None:
        super().__init__()
        self.base_lr = base_lr
        self.size = size
        self.warmup_steps = warmup_steps

    def on_train_batch_begin(self, batch, logs=None):
        if self.size == 1:
            return
        # The optimizer's own step count: right after a resume too.
        step = int(self.model.optimizer.iterations.numpy())
        if step <= self.warmup_steps:
            self.model.optimizer.learning_rate = warmup_learning_rate(step, self.base_lr, self.size, self.warmup_steps)


class EarlyStopping(tf.keras.callbacks.Callback):
    """Early stopping on :data:`MONITOR` whose state lives in a ``checkpoints.RunState``, so it
    survives a resume. It keeps the best epoch's weights in memory (``best_weights``).

    Runs on every process: with the figures averaged across processes first, all take the same
    decision at the same epoch.
    """

    def __init__(self, state: checkpoints.RunState, patience: int, min_delta: float) -> None:
        super().__init__()
        self.state = state
        self.patience = patience
        self.min_delta = min_delta
        self.best_weights: list | None = None
        self.improved = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = float(logs[MONITOR])
        state = self.state
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in sorted(logs.items())}})
        if math.isnan(value):
            self.improved = False
        else:
            self.improved = state.best is None or value > state.best + self.min_delta
        if self.improved:
            state.best, state.best_epoch, state.wait = value, epoch + 1, 0
            self.best_weights = self.model.get_weights()
        else:
            state.wait += 1
            if state.wait >= self.patience:
                state.stopped_early = True
                self.model.stop_training = True


class Checkpoint(tf.keras.callbacks.Callback):
    """After each epoch: the best weights (when the epoch improved), the checkpoint, then the state
    naming it. For the chief only (``shoplens.distributed.chief_only``); after :class:`EarlyStopping`."""

    def __init__(self, out_dir: str, state: checkpoints.RunState, early_stopping: EarlyStopping) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.state = state
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch, logs=None):
        if self.early_stopping.improved:
            checkpoints.save_best(self.out_dir, self.model)
        self.state.checkpoint = checkpoints.save_checkpoint(self.out_dir, self.model, self.model.optimizer, epoch + 1)
        checkpoints.write_state(self.out_dir, self.state)


class FaultHook(tf.keras.callbacks.Callback):
    """The ``after_epoch`` fault hook (``shoplens.faults``): this process kills itself at the end of
    the epoch its fault names (default: the run's first epoch), after every other callback of that
    epoch. Does nothing when ``SHOPLENS_FAULT`` arms no fault for ``job`` and this rank."""

    def __init__(self, job: str, rank: int, initial_epoch: int) -> None:
        super().__init__()
        self.rank = rank
        self.initial_epoch = initial_epoch
        self.faults = [
            f for f in faults.armed() if (f.job, f.point, f.table) == (job, faults.AFTER_EPOCH, f"rank{rank}")
        ]

    def on_epoch_end(self, epoch, logs=None):
        for fault in self.faults:
            if (fault.attempt or self.initial_epoch + 1) == epoch + 1:
                faults.kill_self(f"{faults.AFTER_EPOCH} {epoch + 1} of rank {self.rank}")
