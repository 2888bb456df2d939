"""Top-K by factor dot products, block by block, with built-in array functions (no Python UDF).

Items are grouped into ``n_blocks`` rows, each holding its items' factors as one array; every query
row (a user, or an item for similar items) meets each block row once (queries × blocks rows, never
queries × items), scores the block with ``aggregate(zip_with(...))``, keeps the block's best K with
``array_sort``/``slice``, and the blocks' bests are merged per query the same way. This is Spark's
own ``recommendForAll`` blockify idea, minus its memory-hungry default blocks, and with exclusions.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

Q = "_q"
ITEM = "_item"
FEATURES = "features"
RANK = "rank"
SCORE = "score"
EXCLUDED = "_excluded"

_DOT = (
    "aggregate(zip_with(features, it.features, (a, b) -> cast(a as double) * b), "
    "cast(0 as double), (acc, x) -> acc + x)"
)


def normalized(factors: DataFrame) -> DataFrame:
    """Scales each factor vector to unit length; all-zero vectors (no direction) are dropped.

    Returns: one row per input row with a non-zero vector; the same columns.
    """
    norm = F.sqrt(F.aggregate(FEATURES, F.lit(0.0).cast("double"), lambda acc, x: acc + x * x))
    return (
        factors.withColumn("_norm", norm)
        .where(F.col("_norm") > 0)
        .withColumn(FEATURES, F.transform(FEATURES, lambda x: x / F.col("_norm")))
        .drop("_norm")
    )


def top_k(
    queries: DataFrame,
    items: DataFrame,
    k: int,
    n_blocks: int,
    excluded: DataFrame | None = None,
    exclude_self: bool = False,
) -> DataFrame:
    """The ``k`` items with the highest dot product per query.

    ``queries``: _q (int), features; ``items``: _item (int), features; ``excluded``: (_q, _item)
    pairs never returned. Ties: the smaller item id first. Non-finite scores are dropped.

    Returns: one row per (_q, rank) with rank 1..k (fewer when fewer items remain): _q, rank, _item, score.
    """
    blocks = (
        items.withColumn("_block", F.pmod(F.col(ITEM), F.lit(n_blocks)))
        .groupBy("_block")
        .agg(F.collect_list(F.struct(F.col(ITEM).alias("item"), F.col(FEATURES).alias("features"))).alias("_items"))
    )
    q = queries.select(Q, FEATURES)
    if excluded is not None:
        lists = excluded.groupBy(Q).agg(F.collect_set(ITEM).alias(EXCLUDED))
        q = q.join(lists, [Q], "left")
    else:
        q = q.withColumn(EXCLUDED, F.lit(None).cast("array<int>"))
    keep = "NOT array_contains(coalesce(_excluded, array()), it.item)"
    if exclude_self:
        keep += " AND it.item <> _q"
    # Sorting struct(-score, item) ascending puts the best first and breaks ties by item id.
    scored = F.expr(
        f"slice(array_sort(filter(transform(filter(_items, it -> {keep}), "
        f"it -> named_struct('neg', -({_DOT}), 'item', it.item)), "
        f"s -> NOT isnan(s.neg) AND abs(s.neg) < 1e300)), 1, {k})"
    )
    per_block = q.join(F.broadcast(blocks), how="cross").select(Q, scored.alias("_best"))
    merged = per_block.groupBy(Q).agg(F.slice(F.array_sort(F.flatten(F.collect_list("_best"))), 1, k).alias("_best"))
    return merged.select(Q, F.posexplode("_best").alias("_pos", "_s")).select(
        Q,
        (F.col("_pos") + 1).cast("int").alias(RANK),
        F.col("_s.item").alias(ITEM),
        (-F.col("_s.neg")).alias(SCORE),
    )
