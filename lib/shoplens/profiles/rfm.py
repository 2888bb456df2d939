"""RFM quintile scores, named segments from the rule table in config, and value tiers.

Scores are computed among the non-bot users of a dataset who bought in the RFM window: quintile
cut points come from ``percentile_approx`` per dataset (four numbers each, no global sort), and a
user's score is 1 + the number of cut points its value exceeds (recency: the fewer days, the higher).
Ties therefore share a score, and a measure where most users tie (one order) uses fewer than five
scores: the segment rules work on the scores whatever their spread. Bots are scored against the
same cut points but never move them.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.config import ProfilesConfig

QUINTILES = [0.2, 0.4, 0.6, 0.8]
ACCURACY = 100_000


def _score(value: Column, cuts: Column, higher_is_better: bool) -> Column:
    above = sum((value > cuts[i]).cast("int") for i in range(len(QUINTILES)))
    return (F.lit(1) + above) if higher_is_better else (F.lit(5) - above)


def is_buyer() -> Column:
    return F.col(S.FREQUENCY) > 0


def with_rfm(profiles: DataFrame, cfg: ProfilesConfig) -> DataFrame:
    """Adds the R, F and M scores (null for users without a purchase in the RFM window), the named
    segment and the value tier."""
    cuts = (
        profiles.where(is_buyer() & ~F.col(S.IS_BOT))
        .groupBy(S.DATASET)
        .agg(
            F.percentile_approx(S.RECENCY_DAYS, QUINTILES, ACCURACY).alias("_r_cuts"),
            F.percentile_approx(S.FREQUENCY, QUINTILES, ACCURACY).alias("_f_cuts"),
            F.percentile_approx(F.col(S.MONETARY).cast("double"), QUINTILES, ACCURACY).alias("_m_cuts"),
        )
    )
    scored = profiles.join(F.broadcast(cuts), S.DATASET, "left")
    buyer = is_buyer() & F.col("_r_cuts").isNotNull()
    scored = scored.select(
        *profiles.columns,
        F.when(buyer, _score(F.col(S.RECENCY_DAYS), F.col("_r_cuts"), higher_is_better=False)).alias(S.R_SCORE),
        F.when(buyer, _score(F.col(S.FREQUENCY), F.col("_f_cuts"), higher_is_better=True)).alias(S.F_SCORE),
        F.when(buyer, _score(F.col(S.MONETARY).cast("double"), F.col("_m_cuts"), True)).alias(S.M_SCORE),
    )
    return scored.withColumn(S.RFM_SEGMENT, segment(cfg)).withColumn(S.VALUE_TIER, value_tier(cfg))


def segment(cfg: ProfilesConfig) -> Column:
    """The first rule of ``profiles.segments`` whose R range and (F+M)/2 range hold the user."""
    fm = (F.col(S.F_SCORE) + F.col(S.M_SCORE)) / 2
    named = F.when(F.col(S.R_SCORE).isNull(), F.lit(cfg.no_purchase_segment))
    for rule in cfg.segments:
        named = named.when(
            F.col(S.R_SCORE).between(rule.r_min, rule.r_max) & fm.between(rule.fm_min, rule.fm_max),
            F.lit(rule.name),
        )
    return named.otherwise(F.lit(cfg.default_segment))


def value_tier(cfg: ProfilesConfig) -> Column:
    return (
        F.when(F.col(S.M_SCORE) >= cfg.high_tier_min_m, F.lit("high"))
        .when(F.col(S.M_SCORE) >= cfg.mid_tier_min_m, F.lit("mid"))
        .otherwise(F.lit("low"))
    )
