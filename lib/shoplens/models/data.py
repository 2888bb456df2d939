"""Sequence examples from Parquet files into numpy arrays and ``tf.data``, without Spark.

A training process gets the file list of its shards of gold.sequence_examples at a pinned Delta
version (``shoplens.shards.shard_files``) and reads it here with pyarrow: no SparkSession, no
Petastorm. Inputs become fixed-width rows, left-padded with 0 (the padding index the model masks),
most recent item last, so a recurrent model's last step is the most recent item.

An empty shard (no files, or files without a usable example) raises :class:`EmptyShardError`
before any training step: a rank that trained on nothing would either hang its peers at the first
gradient exchange or average zeros into their gradients. The driver that splits shards across
ranks (next slice of issue 8) should check every rank's file list first, so this error is a
last line of defence with a clear message, not the expected path.

TensorFlow is imported only by :func:`to_dataset`: reading and padding need numpy and pyarrow only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoplens import schemas as S
from shoplens.models.metrics import FIRST_ITEM

log = logging.getLogger(__name__)


class EmptyShardError(ValueError):
    """A training process's shard holds no usable example."""


@dataclass(frozen=True)
class Examples:
    """Sequence examples as arrays, one row per example.

    ``inputs`` (n, max_len) int32, left-padded with 0, most recent item last; ``targets`` (n,) int32,
    or (n, max_len) for :func:`sequence_targets` (the next item after every position, 0 where none);
    ``negatives`` (n, num_negatives) int32 right-padded with 0 where an example has fewer, or None
    for train examples.
    """

    inputs: np.ndarray
    targets: np.ndarray
    negatives: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def target_items(self) -> np.ndarray:
        """Returns every target as one flat array: ``targets`` itself, or the non-zero entries of
        sequence targets (one per position that has a next item)."""
        if self.targets.ndim == 1:
            return self.targets
        return self.targets[self.targets != S.PADDING_INDEX]


def read_examples(
    files: Sequence[str],
    max_len: int,
    num_negatives: int = 0,
    filesystem: Any = None,
) -> Examples:
    """Reads sequence examples from Parquet files with pyarrow.

    ``num_negatives`` > 0 also reads each example's negatives (validation and test rows) into that
    many columns; an example with more negatives than that is an error. Inputs longer than
    ``max_len`` keep their most recent ``max_len`` items. Examples without any input item cannot be
    scored and are dropped (gold.sequence_examples has none; a hand-written file might).
    ``filesystem`` is a pyarrow file system for paths without a scheme (e.g. S3 keys).

    Returns: one row per example with at least one input item, in file order.

    Raises: :class:`EmptyShardError` when ``files`` is empty or holds no usable example.
    """
    if not files:
        raise EmptyShardError("this process's shard lists no Parquet file: nothing to train or evaluate on")
    columns = [S.INPUT_ITEMS, S.TARGET_ITEM] + ([S.NEGATIVES] if num_negatives else [])
    table = pq.read_table(list(files), columns=columns, filesystem=filesystem)
    lengths = pc.fill_null(pc.list_value_length(table.column(S.INPUT_ITEMS)), 0).to_numpy(zero_copy_only=False)
    keep = lengths > 0
    if not keep.all():
        log.warning("dropping %d example(s) without input items", int((~keep).sum()))
        table = table.filter(pa.array(keep))
    if table.num_rows == 0:
        raise EmptyShardError(f"no example with input items in {len(files)} file(s), first {files[0]}")
    inputs = pad_left(table.column(S.INPUT_ITEMS), max_len)
    targets = table.column(S.TARGET_ITEM).to_numpy().astype(np.int32)
    negatives = pad_right(table.column(S.NEGATIVES), num_negatives) if num_negatives else None
    return Examples(inputs=inputs, targets=targets, negatives=negatives)


def _list_parts(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Returns a list column's flattened values and per-row lengths (null lists as empty)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.fill_null(array.flatten(), 0).to_numpy(zero_copy_only=False).astype(np.int32)
    return values, lengths


def pad_left(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """Returns a list<int> column as (rows, width) int32, each row's last ``width`` values
    right-aligned after zeros."""
    values, lengths = _list_parts(column)
    kept = np.minimum(lengths, width)
    out = np.zeros((len(lengths), width), dtype=np.int32)
    row = np.repeat(np.arange(len(lengths)), kept)
    offset_in_kept = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
    starts = np.cumsum(lengths) - lengths
    source = np.repeat(starts + lengths - kept, kept) + offset_in_kept
    out[row, np.repeat(width - kept, kept) + offset_in_kept] = values[source]
    return out


def pad_right(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """Returns a list<int> column as (rows, width) int32, each row's values first, then zeros.

    Raises: ValueError when a row holds more than ``width`` values.
    """
    values, lengths = _list_parts(column)
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"a row holds {lengths.max()} values, more than the {width} expected")
    out = np.zeros((len(lengths), width), dtype=np.int32)
    row = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row, position] = values
    return out


def all_prefixes(examples: Examples) -> Examples:
    """Every position of each example's sequence (inputs then target) whose item is a real item
    (index >= FIRST_ITEM) and has at least one item before it, as an example of its own: the
    items before it (most recent ``max_len``) → it. The original examples are among them.

    Applied to train examples only: their inputs hold nothing after the train cut, so the prefixes
    do not either.

    Returns: one row per such position, ordered by prefix length then by original row; negatives
    are dropped.
    """
    n, width = examples.inputs.shape
    sequence = np.concatenate([examples.inputs, examples.targets[:, None]], axis=1)
    inputs, targets = [], []
    for t in range(1, width + 1):
        rows = (sequence[:, t] >= FIRST_ITEM) & (sequence[:, t - 1] != S.PADDING_INDEX)
        if not rows.any():
            continue
        shifted = np.zeros((int(rows.sum()), width), dtype=np.int32)
        shifted[:, width - t:] = sequence[rows, :t]
        inputs.append(shifted)
        targets.append(sequence[rows, t])
    if not inputs:
        return Examples(np.zeros((0, width), dtype=np.int32), np.zeros(0, dtype=np.int32))
    return Examples(np.concatenate(inputs), np.concatenate(targets).astype(np.int32))


def sequence_targets(examples: Examples) -> Examples:
    """The same sequences with the next item at every position: the targets of a model that predicts
    at every position in one pass (SASRec's causal attention), instead of one example per prefix.

    Row i's targets are its inputs shifted left by one with its target appended, kept where the
    position holds an item and its next item is a real item (index >= FIRST_ITEM), else 0: exactly
    the (prefix, next item) pairs of :func:`all_prefixes`, in ``len(examples)`` rows. Train examples
    only (their inputs hold nothing after the train cut).

    Returns: one row per example with at least one target; inputs unchanged, targets (n, max_len),
    negatives dropped.
    """
    inputs = examples.inputs
    following = np.concatenate([inputs[:, 1:], examples.targets[:, None]], axis=1)
    has_target = (inputs != S.PADDING_INDEX) & (following >= FIRST_ITEM)
    targets = np.where(has_target, following, S.PADDING_INDEX).astype(np.int32)
    rows = has_target.any(axis=1)
    return Examples(inputs[rows], targets[rows])


def max_item(*examples: Examples) -> int:
    """Returns the highest item index in the examples' inputs, targets and negatives."""
    highest = 0
    for ex in examples:
        for array in (ex.inputs, ex.targets, ex.negatives):
            if array is not None and array.size:
                highest = max(highest, int(array.max()))
    return highest


def to_dataset(
    examples: Examples,
    batch_size: int,
    *,
    shuffle: bool = False,
    repeat: bool = False,
    seed: int | None = None,
    with_negatives: bool = False,
) -> Any:
    """Returns a ``tf.data.Dataset`` of batches: ``(inputs, targets)``, or ``(inputs, targets,
    negatives)`` with ``with_negatives``.

    With ``repeat`` the examples cycle forever (reshuffled each pass) and every batch is full: the
    caller bounds an epoch with ``steps_per_epoch``, the same on every Horovod process, since each
    training step is a collective gradient exchange.
    """
    import tensorflow as tf

    tensors: tuple[np.ndarray, ...] = (examples.inputs, examples.targets)
    if with_negatives:
        if examples.negatives is None:
            raise ValueError("these examples carry no negatives (read them with num_negatives)")
        tensors += (examples.negatives,)
    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        dataset = dataset.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# Examples sorted by length within windows of this many batches: batches of similar lengths, still
# drawn from across the shard (a global sort would give every step the same batches in a new order).
_LENGTH_WINDOW_BATCHES = 32


def length_batch_indices(examples: Examples, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One pass over the examples in batches of similar input length: the examples shuffled, sorted
    by length within windows of ``_LENGTH_WINDOW_BATCHES`` batches, cut into batches, and the batches
    shuffled. Every example is in exactly one batch; only a window's last batch can be short.

    Returns: one array of example rows per batch.
    """
    lengths = (examples.inputs != S.PADDING_INDEX).sum(axis=1)
    order = rng.permutation(len(examples))
    window = batch_size * _LENGTH_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        rows = order[start:start + window]
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        batches.extend(rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def to_length_batches(examples: Examples, batch_size: int, *, repeat: bool = False, seed: int | None = None) -> Any:
    """Returns a ``tf.data.Dataset`` of training batches ``(inputs, targets)`` of similar input length
    (:func:`length_batch_indices`, reshuffled each pass), each cut to its longest input: the leading
    columns that are padding in every row are dropped, and so are those of sequence targets.

    For a model whose output does not depend on the amount of left padding (SASRec counts positions
    from the most recent item; a masked GRU skips padding): the same training signal as
    :func:`to_dataset` at a fraction of the cost when most sequences are much shorter than
    ``max_len`` (Amazon Beauty: median 3 input items of 50). The width varies from batch to batch.
    With ``repeat`` the passes never end and the caller bounds an epoch with ``steps_per_epoch``.
    """
    import tensorflow as tf

    inputs, targets = examples.inputs, examples.targets
    lengths = (inputs != S.PADDING_INDEX).sum(axis=1)

    def batches():
        rng = np.random.default_rng(seed)
        while True:
            for rows in length_batch_indices(examples, batch_size, rng):
                width = max(int(lengths[rows].max()), 1)
                yield inputs[rows, -width:], targets[rows, -width:] if targets.ndim == 2 else targets[rows]
            if not repeat:
                return

    target_shape = (None, None) if targets.ndim == 2 else (None,)
    dataset = tf.data.Dataset.from_generator(
        batches,
        output_signature=(tf.TensorSpec((None, None), tf.int32), tf.TensorSpec(target_shape, tf.int32)),
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
