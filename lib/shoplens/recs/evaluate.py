"""Ranking metrics at K over top-K lists and held-out relevant items (docs/ALS.md defines them),
and the co-occurrence baseline. Pure Spark, no Python per row.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")
MODEL = "_model"


def ranking_metrics(
    recs: DataFrame, relevant: DataFrame, k: int, catalogue_size: int | None = None
) -> dict[str, float | int]:
    """Mean precision@k, recall@k, nDCG@k, MAP@k and hit rate over the users of ``relevant``, and
    with ``catalogue_size`` the coverage of the lists of those users (in the same Spark job).

    ``recs``: user_id, rank, item_id; ``relevant``: user_id, item_id (the held-out items). A user
    without recommendations scores 0. Returns: {"precision@k", ..., "users"}; values are 0 when
    ``relevant`` is empty (users 0).
    """
    return ranking_metrics_of({"_": recs}, relevant, k, catalogue_size)["_"]


def ranking_metrics_of(
    lists: Mapping[str, DataFrame], relevant: DataFrame, k: int, catalogue_size: int | None = None
) -> dict[str, dict[str, float | int]]:
    """:func:`ranking_metrics` of several models' lists against the same held-out items, in one
    Spark action: the lists are stacked with their model's name and every aggregate is grouped by it.

    ``lists``: model name → its recs (user_id, rank, item_id). Returns: model name → its figures.
    """
    names = list(lists)
    stacked = None
    for name, recs in lists.items():
        one = recs.where(F.col(S.RANK) <= k).select(F.lit(name).alias(MODEL), S.USER_ID, S.RANK, S.ITEM_ID)
        stacked = one if stacked is None else stacked.unionByName(one)
    assert stacked is not None, "no lists to score"
    # Read twice below (the metrics and the coverage): computed once, so both see the same lists.
    stacked = stacked.persist()
    rel = relevant.select(S.USER_ID, S.ITEM_ID).distinct().withColumn("_rel", F.lit(1))
    flagged = stacked.join(rel, [S.USER_ID, S.ITEM_ID], "left").withColumn("_hit", F.coalesce("_rel", F.lit(0)))
    running = (
        Window.partitionBy(MODEL, S.USER_ID).orderBy(S.RANK).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    flagged = flagged.withColumn("_cum", F.sum("_hit").over(running))
    per_user_recs = flagged.groupBy(MODEL, S.USER_ID).agg(
        F.sum("_hit").alias("_hits"),
        F.sum(F.col("_hit") / F.log2(F.col(S.RANK) + 1)).alias("_dcg"),
        F.sum(F.col("_hit") * F.col("_cum") / F.col(S.RANK)).alias("_ap"),
    )
    n_rel = rel.groupBy(S.USER_ID).agg(F.count(F.lit(1)).alias("_n"))
    # Every held-out user once per model (a user without a list scores 0 for that model).
    scored_users = n_rel.withColumn(MODEL, F.explode(F.array(*[F.lit(n) for n in names])))
    ideal = F.aggregate(
        F.transform(F.sequence(F.lit(1), F.least(F.col("_n"), F.lit(k))), lambda i: 1.0 / F.log2(i + 1)),
        F.lit(0.0),
        lambda acc, x: acc + x,
    )
    per_user = scored_users.join(per_user_recs, [MODEL, S.USER_ID], "left").select(
        MODEL,
        (F.coalesce("_hits", F.lit(0)) / F.lit(k)).alias("precision"),
        (F.coalesce("_hits", F.lit(0)) / F.col("_n")).alias("recall"),
        (F.coalesce("_dcg", F.lit(0.0)) / ideal).alias("ndcg"),
        (F.coalesce("_ap", F.lit(0.0)) / F.least(F.col("_n"), F.lit(k))).alias("map"),
        (F.coalesce("_hits", F.lit(0)) > 0).cast("double").alias("hit_rate"),
    )
    summary = per_user.groupBy(MODEL).agg(*[F.avg(m).alias(m) for m in METRICS], F.count(F.lit(1)).alias("users"))
    if catalogue_size is not None:
        listed = (
            stacked.join(n_rel, [S.USER_ID], "left_semi")
            .groupBy(MODEL)
            .agg(F.countDistinct(S.ITEM_ID).alias("_listed"))
        )
        summary = summary.join(listed, [MODEL], "left")
    try:
        rows = {row[MODEL]: row for row in summary.collect()}  # one row per model
    finally:
        stacked.unpersist()
    result: dict[str, dict[str, float | int]] = {}
    for name in names:
        row = rows.get(name)  # no row: relevant is empty
        figures: dict[str, float | int] = {f"{m}@{k}": float((row[m] if row else None) or 0.0) for m in METRICS}
        figures["users"] = int(row["users"]) if row else 0
        if catalogue_size is not None:
            listed_items = (row["_listed"] if row else None) or 0
            figures[f"coverage@{k}"] = listed_items / catalogue_size if catalogue_size > 0 else 0.0
        result[name] = figures
    return result


def cooccurrence_candidates(inter: DataFrame, users: DataFrame, max_items: int, length: int) -> DataFrame:
    """Item-item co-occurrence baseline: candidate j of user u scores the number of (other) users
    who have both j and an item of u's recent history, summed over that history. Each user's
    history is cut to their ``max_items`` most recent items, and each item keeps its ``length``
    most co-occurring neighbours, so the self-join stays bounded.

    ``inter``: user_id, item_id, confidence, last_time; ``users``: the user_ids to score.
    Returns: one row per (user_id, _pos) up to ``length``: user_id, item_id, score, _priority 0, _pos.
    """
    recent = Window.partitionBy(S.USER_ID).orderBy(F.col("last_time").desc(), F.col(S.ITEM_ID))
    history = (
        inter.withColumn("_r", F.row_number().over(recent)).where(F.col("_r") <= max_items).select(S.USER_ID, S.ITEM_ID)
    )
    pairs = (
        history.alias("a")
        .join(history.alias("b"), F.col("a.user_id") == F.col("b.user_id"), "inner")
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .groupBy(F.col("a.item_id").alias("_src"), F.col("b.item_id").alias(S.ITEM_ID))
        .agg(F.count(F.lit(1)).alias("_n"))
    )
    near = Window.partitionBy("_src").orderBy(F.col("_n").desc(), F.col(S.ITEM_ID))
    neighbours = pairs.withColumn("_r", F.row_number().over(near)).where(F.col("_r") <= length)
    scored = (
        history.join(users.select(S.USER_ID), [S.USER_ID], "left_semi")
        .withColumnRenamed(S.ITEM_ID, "_src")
        .join(neighbours, ["_src"], "inner")
        .groupBy(S.USER_ID, S.ITEM_ID)
        .agg(F.sum("_n").cast("double").alias(S.SCORE))
    )
    order = Window.partitionBy(S.USER_ID).orderBy(F.col(S.SCORE).desc(), F.col(S.ITEM_ID))
    return (
        scored.withColumn("_pos", F.row_number().over(order))
        .where(F.col("_pos") <= length)
        .select(S.USER_ID, S.ITEM_ID, S.SCORE, F.lit(0).alias("_priority"), "_pos")
    )
