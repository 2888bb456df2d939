"""From silver events to ALS's (user, item, confidence) rows. Pure transforms.

Confidence of a (user, item) pair = sum over its non-bot events of weight(event type) times
0.5^(age_days / half_life_days), age counted from the run date (docs/ALS.md). Duplicate events of a
pair add up into one row; event types without a weight do not count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S

WEIGHT = "_weight"
N_EVENTS = "n_events"
LAST_TIME = "last_time"
CUTOFF = "_cutoff"


def scored_events(
    events: DataFrame,
    weights: Mapping[str, float],
    half_life_days: float,
    run_date: dt.date,
    window_days: int,
) -> DataFrame:
    """Keeps the non-bot events of identified users with event date in (R - window_days, R] and adds
    ``confidence`` (weight × decay; 0 for an event type without a weight).

    Returns: one row per input event kept; dataset, user_id, item_id, category_id, event_type,
    event_time, confidence.
    """
    pairs = [x for key, value in sorted(weights.items()) for x in (F.lit(key), F.lit(float(value)))]
    weight = F.coalesce(F.try_element_at(F.create_map(*pairs), F.col(S.EVENT_TYPE)), F.lit(0.0))
    age = F.datediff(F.lit(run_date), F.col(S.EVENT_DATE)).cast("double")
    decay = F.pow(F.lit(0.5), age / F.lit(float(half_life_days)))
    in_window = (F.col(S.EVENT_DATE) <= F.lit(run_date)) & (
        F.col(S.EVENT_DATE) > F.lit(run_date - dt.timedelta(days=window_days))
    )
    is_kept = in_window & ~F.col(S.IS_BOT) & F.col(S.USER_ID).isNotNull()
    return events.where(is_kept).select(
        S.DATASET,
        S.USER_ID,
        S.ITEM_ID,
        S.CATEGORY_ID,
        S.EVENT_TYPE,
        S.EVENT_TIME,
        (weight * decay).alias(S.CONFIDENCE),
    )


def before_cutoffs(scored: DataFrame, cutoffs: DataFrame | None) -> DataFrame:
    """Drops each user's events at or after their cutoff (``cutoffs``: user_id, _cutoff), so that a
    model scored on a held-out event never trained on it or on anything after it.

    Returns: one row per kept input row; the input's columns.
    """
    if cutoffs is None:
        return scored
    joined = scored.join(cutoffs.select(S.USER_ID, CUTOFF), [S.USER_ID], "left")
    is_before = F.col(CUTOFF).isNull() | (F.col(S.EVENT_TIME) < F.col(CUTOFF))
    return joined.where(is_before).drop(CUTOFF)


def interactions(scored: DataFrame) -> DataFrame:
    """Sums the confidence of each (user, item) pair over its counted events.

    Returns: one row per (user_id, item_id) with a positive confidence: confidence, n_events, last_time.
    """
    return (
        scored.where(F.col(S.CONFIDENCE) > 0)
        .groupBy(S.USER_ID, S.ITEM_ID)
        .agg(
            F.sum(S.CONFIDENCE).alias(S.CONFIDENCE),
            F.count(F.lit(1)).alias(N_EVENTS),
            F.max(S.EVENT_TIME).alias(LAST_TIME),
        )
        .where(F.col(S.CONFIDENCE) > 0)  # a decay that underflows to 0 is no signal
    )


def exclusions(scored: DataFrame, event_types: Sequence[str]) -> DataFrame:
    """The items never to recommend to a user: those with an event of ``event_types`` (purchases).

    Returns: one row per (user_id, item_id).
    """
    return scored.where(F.col(S.EVENT_TYPE).isin(list(event_types))).select(S.USER_ID, S.ITEM_ID).distinct()


def item_categories(scored: DataFrame) -> DataFrame:
    """Each item's most frequent non-null category (ties: the greatest category id).

    Returns: one row per item_id with a category: item_id, category_id.
    """
    counted = scored.where(F.col(S.CATEGORY_ID).isNotNull()).groupBy(S.ITEM_ID, S.CATEGORY_ID).count()
    return counted.groupBy(S.ITEM_ID).agg(
        F.max_by(S.CATEGORY_ID, F.struct(F.col("count"), F.col(S.CATEGORY_ID))).alias(S.CATEGORY_ID)
    )


def preferred_categories(inter: DataFrame, categories: DataFrame) -> DataFrame:
    """Each user's category with the most confidence (ties: the smallest category id).

    Returns: one row per user_id with a categorised interaction: user_id, category_id.
    """
    summed = (
        inter.join(categories, [S.ITEM_ID], "inner")
        .groupBy(S.USER_ID, S.CATEGORY_ID)
        .agg(F.sum(S.CONFIDENCE).alias("_c"))
    )
    return summed.groupBy(S.USER_ID).agg(
        F.min_by(S.CATEGORY_ID, F.struct(-F.col("_c"), F.col(S.CATEGORY_ID))).alias(S.CATEGORY_ID)
    )
