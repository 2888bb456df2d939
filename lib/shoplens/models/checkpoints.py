"""A training run's state in ``out_dir``, and resuming from it.

``out_dir`` holds ``state.json`` (:class:`RunState`: epochs done, early-stopping state, history, the
vocabulary size and input length the model was built for), ``checkpoints/`` (model and optimizer
after each epoch, the last two kept) and ``best/`` (the weights of the best epoch so far). Only
Horovod's rank 0 writes them; every process reads them to resume (so on several machines
``out_dir`` must be storage they all reach: HDFS, S3, a shared volume). Paths go through
``tf.io.gfile``, so ``out_dir`` may be a URI TensorFlow supports.

TensorFlow is imported inside the functions: the Spark driver imports this module cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"
BEST_WEIGHTS = "best/weights"
KEEP_CHECKPOINTS = 2


class CheckpointError(RuntimeError):
    """The run in ``out_dir`` cannot be resumed by this one."""


@dataclass
class RunState:
    """What a resumed run continues from."""

    vocab_size: int
    max_len: int
    # Epochs completed; Keras's next initial_epoch (it counts epochs from 0).
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    # Epochs since the best one.
    wait: int = 0
    stopped_early: bool = False
    # The last checkpoint's prefix, relative to out_dir.
    checkpoint: str | None = None
    # One dict per completed epoch: "epoch" (1-based), the loss and the validation figures.
    history: list[dict[str, float]] = field(default_factory=list)


def read_state(out_dir: str) -> RunState | None:
    """Returns the run state in ``out_dir``, None when there is none."""
    import tensorflow as tf

    path = f"{out_dir}/{STATE_FILE}"
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            return RunState(**json.load(f))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}): move {out_dir} aside to train from scratch") from err


def write_state(out_dir: str, state: RunState) -> None:
    """Writes ``state.json`` through a temporary file renamed into place."""
    import tensorflow as tf

    # Written after the checkpoint it names: a crash in between leaves the previous state, which
    # names a checkpoint that still exists (the manager keeps two).
    tmp = f"{out_dir}/{STATE_FILE}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(dataclasses.asdict(state), f, indent=1)
    tf.io.gfile.rename(tmp, f"{out_dir}/{STATE_FILE}", overwrite=True)


def save_checkpoint(out_dir: str, model: Any, optimizer: Any, epoch: int) -> str:
    """Saves model and optimizer as ``checkpoints/ckpt-<epoch>``, keeping the last two.

    Returns: the checkpoint's prefix, relative to ``out_dir``.
    """
    import tensorflow as tf

    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=optimizer), f"{out_dir}/{CHECKPOINT_DIR}",
        max_to_keep=KEEP_CHECKPOINTS,
    )
    path = manager.save(checkpoint_number=epoch)
    return path[len(out_dir):].lstrip("/")


def save_best(out_dir: str, model: Any) -> None:
    """Saves the model's weights as the best so far (overwriting the previous best)."""
    import tensorflow as tf

    tf.train.Checkpoint(model=model).write(f"{out_dir}/{BEST_WEIGHTS}")


def restore(out_dir: str, model: Any, optimizer: Any, vocab_size: int, max_len: int) -> RunState:
    """Restores the model and optimizer from the last checkpoint in ``out_dir``, if any. Both must
    be built (their variables exist).

    Returns: the run's state; a fresh one when ``out_dir`` holds no run.

    Raises: :class:`CheckpointError` when the run was built for another vocabulary size or input
    length, or its checkpoint cannot be read.
    """
    import tensorflow as tf

    state = read_state(out_dir)
    if state is None:
        return RunState(vocab_size=vocab_size, max_len=max_len)
    if (state.vocab_size, state.max_len) != (vocab_size, max_len):
        raise CheckpointError(
            f"the run in {out_dir} was built for {state.vocab_size} item indices and inputs of "
            f"{state.max_len} items; this one has {vocab_size} and {max_len} (the vocabulary changed "
            "since?): train into a new out_dir"
        )
    if state.checkpoint:
        path = f"{out_dir}/{state.checkpoint}"
        try:
            tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as err:
            raise CheckpointError(f"cannot restore checkpoint {path}: {err}") from err
    log.info(
        "resuming the run in %s after epoch %d (best %s at epoch %d)",
        out_dir, state.epoch, state.best, state.best_epoch,
    )
    return state


def restore_best(out_dir: str, model: Any) -> None:
    """Loads the best weights saved in ``out_dir`` into ``model``."""
    import tensorflow as tf

    path = f"{out_dir}/{BEST_WEIGHTS}"
    try:
        tf.train.Checkpoint(model=model).read(path).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as err:
        raise CheckpointError(f"cannot restore the best weights {path}: {err}") from err
