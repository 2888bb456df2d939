"""Recommendations for every target user: ALS first, then the cold-start chain.

Candidates, in order of priority: ALS's top K (users with at least ``min_user_items`` distinct items
and factors), popularity within the user's RFM segment, popularity within their preferred category,
the global trend (decayed confidence over everyone). Each user gets the first K distinct candidates
not excluded for them; ``source`` names the list each came from. Every list is long enough
(K + the largest exclusion count) that a user gets K items whenever the catalogue has K items they
have not bought.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.recs import topk

PRIORITY = "_priority"
POS = "_pos"
SEGMENT_KEY = "_segment"
# The priority of an exclusion marker in :func:`top_k_of`: before every candidate list's.
_EXCLUDED = -1

SOURCES = (S.SOURCE_ALS, S.SOURCE_SEGMENT, S.SOURCE_CATEGORY, S.SOURCE_GLOBAL)


def popularity(inter: DataFrame, group_cols: list[str], length: int) -> DataFrame:
    """The ``length`` items with the most confidence per group; score = the item's share of the
    group's confidence. Ties: the smaller item id.

    Returns: one row per (group, _pos): group_cols, item_id, score, _pos (1, 2, ...).
    """
    summed = inter.groupBy(*group_cols, S.ITEM_ID).agg(F.sum(S.CONFIDENCE).alias("_c"))
    if not group_cols:
        return _global_popularity(summed, length)
    whole = Window.partitionBy(*group_cols)
    order = whole.orderBy(F.col("_c").desc(), F.col(S.ITEM_ID))
    total = F.sum("_c").over(whole.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))
    return (
        summed.select(
            *group_cols,
            S.ITEM_ID,
            F.try_divide(F.col("_c"), total).alias(S.SCORE),
            F.row_number().over(order).alias(POS),
        )
        .where(F.col(POS) <= length)
        .withColumn(S.SCORE, F.coalesce(F.col(S.SCORE), F.lit(0.0)))
    )


def _global_popularity(summed: DataFrame, length: int) -> DataFrame:
    """:func:`popularity` over the whole catalogue. A window over every item would move the catalogue
    to one partition; a sort with a limit keeps each partition's top ``length`` and merges those
    (TakeOrderedAndProject), and only those ``length`` rows are numbered."""
    top = summed.orderBy(F.col("_c").desc(), F.col(S.ITEM_ID)).limit(length)
    total = summed.agg(F.sum("_c").alias("_t"))  # one row
    numbered = Window.orderBy(F.col("_c").desc(), F.col(S.ITEM_ID))  # over `length` rows
    return top.crossJoin(total).select(
        S.ITEM_ID,
        F.coalesce(F.try_divide(F.col("_c"), F.col("_t")), F.lit(0.0)).alias(S.SCORE),
        F.row_number().over(numbered).alias(POS),
    )


def als_candidates(
    user_factors: DataFrame,
    item_factors: DataFrame,
    user_map: DataFrame,
    item_map: DataFrame,
    excluded: DataFrame,
    k: int,
    n_blocks: int,
    user_blocks: int,
) -> DataFrame:
    """ALS's top ``k`` per user with factors, excluded items left out (``n_blocks`` item blocks,
    ``user_blocks`` user blocks: :func:`shoplens.recs.topk.top_k`).

    ``user_factors``/``item_factors``: user_index/item_index, features; maps: id, index.
    Returns: one row per (user_id, rank): user_id, item_id, score, _priority 0, _pos.
    """
    excluded_idx = (
        excluded.join(user_map, [S.USER_ID], "inner")
        .join(item_map, [S.ITEM_ID], "inner")
        .select(F.col(S.USER_INDEX).alias(topk.Q), F.col(S.ITEM_INDEX).alias(topk.ITEM))
    )
    best = topk.top_k(
        user_factors.select(F.col(S.USER_INDEX).alias(topk.Q), topk.FEATURES),
        item_factors.select(F.col(S.ITEM_INDEX).alias(topk.ITEM), topk.FEATURES),
        k,
        n_blocks,
        excluded_idx,
        query_blocks=user_blocks,
    )
    return (
        best.join(user_map.withColumnRenamed(S.USER_INDEX, topk.Q), [topk.Q], "inner")
        .join(item_map.withColumnRenamed(S.ITEM_INDEX, topk.ITEM), [topk.ITEM], "inner")
        .select(
            S.USER_ID,
            S.ITEM_ID,
            F.col(topk.SCORE).alias(S.SCORE),
            F.lit(0).alias(PRIORITY),
            F.col(topk.RANK).alias(POS),
        )
    )


def fallback_candidates(
    targets: DataFrame,
    inter: DataFrame,
    categories: DataFrame,
    length: int,
    sources: tuple[str, ...] = (S.SOURCE_SEGMENT, S.SOURCE_CATEGORY, S.SOURCE_GLOBAL),
) -> DataFrame:
    """Cold-start candidates of each target user (``targets``: user_id, _segment, category_id,
    either may be null): the popular items of their segment, of their category, and globally.

    Returns: one row per (user_id, source, _pos): user_id, item_id, score, _priority, _pos.
    """
    parts = []
    if S.SOURCE_SEGMENT in sources:
        with_segment = inter.join(targets.select(S.USER_ID, SEGMENT_KEY), [S.USER_ID], "inner").where(
            F.col(SEGMENT_KEY).isNotNull()
        )
        seg = popularity(with_segment, [SEGMENT_KEY], length)
        parts.append(
            targets.join(seg, [SEGMENT_KEY], "inner").select(
                S.USER_ID, S.ITEM_ID, S.SCORE, F.lit(1).alias(PRIORITY), POS
            )
        )
    if S.SOURCE_CATEGORY in sources:
        cat = popularity(inter.join(categories, [S.ITEM_ID], "inner"), [S.CATEGORY_ID], length)
        parts.append(
            targets.where(F.col(S.CATEGORY_ID).isNotNull())
            .join(cat, [S.CATEGORY_ID], "inner")
            .select(S.USER_ID, S.ITEM_ID, S.SCORE, F.lit(2).alias(PRIORITY), POS)
        )
    if S.SOURCE_GLOBAL in sources:
        glob = popularity(inter, [], length)
        parts.append(
            targets.select(S.USER_ID)
            .join(F.broadcast(glob), how="cross")
            .select(S.USER_ID, S.ITEM_ID, S.SCORE, F.lit(3).alias(PRIORITY), POS)
        )
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def top_k_of(candidates: DataFrame, excluded: DataFrame, k: int) -> DataFrame:
    """Each user's first ``k`` distinct, non-excluded candidates by (priority, position, item).

    One shuffle: the exclusions join the candidates as markers that sort before every candidate
    of their (user, item), everything is partitioned by user, and both windows (an item's first
    candidate, then the user's ranking) run inside those partitions. An anti-join and a window
    over (user, item) would each shuffle again.

    Returns: one row per (user_id, rank): user_id, rank, item_id, score, source.
    """
    marks = excluded.select(
        S.USER_ID, S.ITEM_ID, F.lit(None).cast("double").alias(S.SCORE), F.lit(_EXCLUDED).alias(PRIORITY),
        F.lit(0).alias(POS),
    )
    rows = (
        candidates.select(S.USER_ID, S.ITEM_ID, F.col(S.SCORE).cast("double").alias(S.SCORE), PRIORITY, POS)
        .unionByName(marks)
        .repartition(S.USER_ID)
    )
    first = Window.partitionBy(S.USER_ID, S.ITEM_ID).orderBy(PRIORITY, POS)
    order = Window.partitionBy(S.USER_ID).orderBy(PRIORITY, POS, S.ITEM_ID)
    source = F.element_at(F.array(*[F.lit(s) for s in SOURCES]), F.col(PRIORITY) + 1)
    return (
        rows.withColumn("_first", F.row_number().over(first))
        # An excluded item's marker is its first row: none of its candidates is first.
        .where((F.col("_first") == 1) & (F.col(PRIORITY) != _EXCLUDED))
        .withColumn(S.RANK, F.row_number().over(order))
        .where(F.col(S.RANK) <= k)
        .select(
            S.USER_ID,
            F.col(S.RANK).cast("int").alias(S.RANK),
            S.ITEM_ID,
            S.SCORE,
            source.alias(S.SOURCE),
        )
    )


def candidate_length(excluded: DataFrame, k: int) -> int:
    """K plus the largest number of items excluded for one user (one number collected)."""
    row = excluded.groupBy(S.USER_ID).count().agg(F.max("count").alias("m")).first()
    return k + int(row["m"] or 0) if row is not None else k
