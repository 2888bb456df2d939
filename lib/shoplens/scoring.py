"""Batch scoring of the next-item models: each user's latest sequence → the model's top-K items.

Spark side, pure transforms (DataFrames in, DataFrame out):

- :func:`latest_inputs`: each identified user's last ``max_len`` counted events up to the run date
  (the sequences' timeline, docs/SEQUENCES.md: the test target included), as item indices, left-padded
  with 0, most recent last; indices the model was not trained on count as out of vocabulary (1);
- :func:`purchased_items` / :func:`with_excluded_items`: the items never to predict for a user;
- :func:`top_items`: ``mapInPandas`` over :func:`score_batches`, the executor side;
- :func:`with_item_ids`: item indices back to item ids (a join with gold.item_vocab).

Executor side, :func:`score_batches` loads the SavedModel once per Python worker (:func:`cached_model`,
a module-level cache keyed by path; Spark reuses its Python workers across tasks), with TensorFlow's
intra/inter-op threads set to the task's cores (``spark.task.cpus``), GPUs hidden unless
``horovod.use_gpu`` (the same switch and semantics as training, ``shoplens.distributed``), scores
``scoring.batch_size`` users per model call and keeps each row's top K with ``numpy.argpartition``.
Padding (0), out of vocabulary (1) and excluded items are never predicted. TensorFlow is imported
inside the executor functions only: the driver never loads it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.ingest.rules import PURCHASE

log = logging.getLogger(__name__)

EXCLUDED_ITEMS = "excluded_items"
_RECENCY = "_recency"
# What top_items returns: one row per (dataset, user_id, rank).
SCORED_SCHEMA = "dataset string, user_id string, rank int, item_index int, score double"

# Per Python worker: SavedModel path → loaded model. Never cleared: a worker scores with one or a few
# model versions and dies with its executor.
_MODELS: dict[str, Any] = {}
_TF_CONFIGURED = False


# --- Spark side -------------------------------------------------------------------------------------


def _known(vocab_size: int) -> F.Column:
    """The item index as the model sees it: indices from vocab_size on joined the vocabulary after
    the model was trained, and are out of vocabulary to it."""
    index = F.col(S.ITEM_INDEX)
    return F.when(index < F.lit(vocab_size), index).otherwise(F.lit(S.OOV_INDEX)).cast("int")


def latest_inputs(timeline: DataFrame, max_len: int, vocab_size: int) -> DataFrame:
    """Each identified user's model input: the last ``max_len`` events of its timeline.

    ``timeline``: counted events with their item index (``sequences.counted_events`` then
    ``sequences.with_item_index``), already limited to the run date. Events are ordered by
    (event_time, event_id) as in gold.sequence_examples, so under ``leave_last_out`` the input is the
    test example's input followed by its target (and any out-of-vocabulary events after it). Users
    whose input holds no item the model knows (index 2 .. vocab_size - 1) are left out: the model
    would only guess.

    Returns: one row per (dataset, user_id): dataset, user_id, input_items (array<int> of exactly
    ``max_len`` indices in [0, vocab_size), left-padded with 0, most recent last).
    """
    latest_first = (
        Window.partitionBy(S.DATASET, S.USER_ID)
        .orderBy(F.col(S.EVENT_TIME).desc(), F.col(S.EVENT_ID).desc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    recency = F.row_number().over(latest_first)
    recent = (
        timeline.where(F.col(S.USER_ID).isNotNull())
        .select(S.DATASET, S.USER_ID, _known(vocab_size).alias(S.ITEM_INDEX), recency.alias(_RECENCY))
        .where(F.col(_RECENCY) <= F.lit(max_len))
    )
    # Descending recency puts the oldest kept event first and the most recent last.
    ordered = F.sort_array(F.collect_list(F.struct(_RECENCY, S.ITEM_INDEX)), asc=False)
    grouped = recent.groupBy(S.DATASET, S.USER_ID).agg(
        F.transform(ordered, lambda event: event[S.ITEM_INDEX]).alias("_items"),
        F.max(F.col(S.ITEM_INDEX) > F.lit(S.OOV_INDEX)).alias("_has_known_item"),
    )
    items = F.col("_items")
    padded = F.concat(F.array_repeat(F.lit(S.PADDING_INDEX), F.lit(max_len) - F.size(items)), items)
    return grouped.where(F.col("_has_known_item")).select(S.DATASET, S.USER_ID, padded.alias(S.INPUT_ITEMS))


def purchased_items(events: DataFrame, vocab: DataFrame, vocab_size: int) -> DataFrame:
    """The items each identified user bought (non-bot purchase events, as ALS excludes them) that the
    model can score. ``events``: silver.events rows, already limited to the run date.

    Returns: one row per (dataset, user_id) with such a purchase: dataset, user_id, excluded_items
    (array<int>, ascending, distinct).
    """
    is_purchase = (F.col(S.EVENT_TYPE) == F.lit(PURCHASE)) & ~F.col(S.IS_BOT) & F.col(S.USER_ID).isNotNull()
    bought = events.where(is_purchase).select(S.DATASET, S.USER_ID, S.ITEM_ID)
    indexed = bought.join(vocab.select(S.DATASET, S.ITEM_ID, S.ITEM_INDEX), [S.DATASET, S.ITEM_ID], "inner")
    return (
        indexed.where(F.col(S.ITEM_INDEX) < F.lit(vocab_size))
        .groupBy(S.DATASET, S.USER_ID)
        .agg(F.array_sort(F.collect_set(F.col(S.ITEM_INDEX).cast("int"))).alias(EXCLUDED_ITEMS))
    )


def with_excluded_items(inputs: DataFrame, excluded: DataFrame | None) -> DataFrame:
    """Adds ``excluded_items`` (empty when the user has none, or ``excluded`` is None).

    Returns: one row per input row.
    """
    empty = F.array().cast("array<int>")
    if excluded is None:
        return inputs.withColumn(EXCLUDED_ITEMS, empty)
    joined = inputs.join(excluded, [S.DATASET, S.USER_ID], "left")
    return joined.withColumn(EXCLUDED_ITEMS, F.coalesce(F.col(EXCLUDED_ITEMS), empty))


def top_items(
    inputs: DataFrame, model_path: str, vocab_size: int, top_k: int, batch_size: int, use_gpu: bool
) -> DataFrame:
    """Scores every row of ``inputs`` (input_items, excluded_items) with the SavedModel at ``model_path``.

    Returns: one row per (dataset, user_id, rank): dataset, user_id, rank (1 = best), item_index,
    score; ``top_k`` rows per user, fewer only when the model scores fewer allowed items.
    """
    columns = inputs.select(S.DATASET, S.USER_ID, S.INPUT_ITEMS, EXCLUDED_ITEMS)
    score = functools.partial(
        score_batches, model_path=model_path, vocab_size=vocab_size, top_k=top_k, batch_size=batch_size, use_gpu=use_gpu
    )
    return columns.mapInPandas(score, SCORED_SCHEMA)


def with_item_ids(scored: DataFrame, vocab: DataFrame) -> DataFrame:
    """Replaces ``item_index`` by the item's id (an inner join: every index < vocab_size is in the
    vocabulary, whose indices are contiguous and never reassigned).

    Returns: one row per input row: its columns with item_id in place of item_index.
    """
    ids = vocab.select(S.DATASET, S.ITEM_INDEX, S.ITEM_ID)
    return scored.join(ids, [S.DATASET, S.ITEM_INDEX], "inner").drop(S.ITEM_INDEX)


# --- executor side ----------------------------------------------------------------------------------


def configure_tensorflow(use_gpu: bool, threads: int, assigned_gpus: Sequence[str] = ()) -> None:
    """Sets TensorFlow's threads and devices in this Python worker, once, before it loads a model.

    ``use_gpu`` false hides every GPU (before CUDA initialises, and from TensorFlow's device list);
    true keeps one GPU, with memory growth on: the one Spark assigned to the task
    (``spark.task.resource.gpu.amount``), else the first; it fails if TensorFlow sees none rather
    than scoring on the CPU unnoticed. The same rule as training's ``distributed.init_worker``.
    """
    global _TF_CONFIGURED
    if _TF_CONFIGURED:
        return
    threads = max(1, threads)
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not use_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf

    from shoplens.distributed import gpu_index

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow's runtime already started in this worker: its pools keep the earlier sizes.
        log.warning("TensorFlow already initialised in this Python worker: thread settings unchanged")
    gpus = tf.config.list_physical_devices("GPU")
    if not use_gpu:
        tf.config.set_visible_devices([], "GPU")
    elif not gpus:
        raise RuntimeError(
            "horovod.use_gpu is true but TensorFlow sees no GPU in this Python worker: check the executors' "
            "GPU resources and that the environment has tensorflow[and-cuda] (docs/GPU.md)"
        )
    else:
        gpu = gpus[gpu_index(list(assigned_gpus), 0, len(gpus))]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    _TF_CONFIGURED = True


def cached_model(model_path: str, use_gpu: bool) -> Any:
    """Returns the SavedModel at ``model_path``, loaded at most once per Python worker.

    The first load configures TensorFlow for the task's cores (``spark.task.cpus``) and GPU.
    """
    model = _MODELS.get(model_path)
    if model is None:
        from pyspark import TaskContext

        context = TaskContext.get()
        threads = context.cpus() if context is not None else 1
        resources = context.resources() if context is not None else {}
        assigned = list(resources["gpu"].addresses) if "gpu" in resources else []
        configure_tensorflow(use_gpu, threads, assigned)
        import tensorflow as tf

        model = tf.keras.models.load_model(model_path, compile=False)
        _MODELS[model_path] = model
        log.info("loaded %s (%d thread(s), use_gpu=%s)", model_path, threads, use_gpu)
    return model


def top_k_items(
    scores: np.ndarray, k: int, excluded: Sequence[np.ndarray | Sequence[int] | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best item indices, never padding (0), out of vocabulary (1) or the row's
    ``excluded`` indices. ``scores``: (rows, vocab_size).

    Returns: ``(indices, values)``, both (rows, min(k, vocab_size - 2)), best first, ties broken by the
    smaller index; a row with fewer allowed items than that ends in values of ``-inf`` (not items).
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    rows, vocab_size = scores.shape
    scores[:, : S.OOV_INDEX + 1] = -np.inf
    for row, items in enumerate(excluded):
        if items is not None and len(items):
            scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    k = min(k, vocab_size - (S.OOV_INDEX + 1))
    if k <= 0 or rows == 0:
        return np.empty((rows, 0), dtype=np.int64), np.empty((rows, 0), dtype=np.float32)
    # argpartition finds the k best in O(vocab_size) per row; only those k are then sorted.
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -values), axis=1)
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(values, order, axis=1)


def score_batches(
    batches: Iterator[pd.DataFrame],
    *,
    model_path: str,
    vocab_size: int,
    top_k: int,
    batch_size: int,
    use_gpu: bool,
) -> Iterator[pd.DataFrame]:
    """The ``mapInPandas`` function: each Arrow batch of users, ``batch_size`` rows per model call.

    Returns: per batch, one row per (dataset, user_id, rank) of :data:`SCORED_SCHEMA`.
    Raises: ValueError when the model's output does not have ``vocab_size`` scores per row.
    """
    model = None
    for frame in batches:
        if frame.empty:
            continue
        if model is None:
            model = cached_model(model_path, use_gpu)
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start : start + batch_size]
            items = np.stack(chunk[S.INPUT_ITEMS].to_numpy()).astype(np.int32)
            scores = np.asarray(model(items, training=False))
            if scores.shape != (len(chunk), vocab_size):
                raise ValueError(
                    f"the model at {model_path} returned scores of shape {scores.shape} for {len(chunk)} rows; "
                    f"its meta.json says vocab_size {vocab_size}"
                )
            indices, values = top_k_items(scores, top_k, chunk[EXCLUDED_ITEMS].to_numpy())
            yield _rows(chunk, indices, values)


def _rows(chunk: pd.DataFrame, indices: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    width = indices.shape[1]
    is_item = np.isfinite(values).ravel()
    ranks = np.tile(np.arange(1, width + 1, dtype=np.int32), len(chunk))
    return pd.DataFrame(
        {
            S.DATASET: np.repeat(chunk[S.DATASET].to_numpy(), width)[is_item],
            S.USER_ID: np.repeat(chunk[S.USER_ID].to_numpy(), width)[is_item],
            S.RANK: ranks[is_item],
            S.ITEM_INDEX: indices.ravel()[is_item].astype(np.int32),
            S.SCORE: values.ravel()[is_item].astype(np.float64),
        }
    )
