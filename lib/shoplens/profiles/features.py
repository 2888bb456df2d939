"""``gold.user_profiles``: one row per (snapshot date, dataset, user), rolled up from daily activity.

Every feature of snapshot S uses only daily rows with ``event_date <= S`` (so only events up to S):
adding later events never changes a snapshot. Ratios with a zero denominator are null, never NaN.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.config import ProfilesConfig


def _window_label(days: int) -> str:
    return f"{days}d"


def _within(days: int, snapshot: dt.date) -> F.Column:
    return F.col(S.EVENT_DATE) > F.lit(snapshot - dt.timedelta(days=days))


COUNTS = (S.EVENTS, S.VIEWS, S.CARTS, S.FAVS, S.PURCHASES, S.RETURNS, S.REVIEWS)


def profile_rows(activity: DataFrame, snapshot: dt.date, cfg: ProfilesConfig) -> DataFrame:
    """Daily activity up to ``snapshot`` → profile rows (RFM scores, segment, tier, cluster unset).

    ``activity`` may hold any dates; rows after the snapshot are ignored. A user appears if active
    within the longest window (``profiles.windows_days``).
    Returns: one row per (dataset, user_id); gold.user_profiles' columns except the scores.
    """
    keys = [S.DATASET, S.USER_ID]
    upto = activity.where(F.col(S.EVENT_DATE) <= F.lit(snapshot))
    longest = cfg.longest_window_days
    # One aggregation over the whole history: first seen and last purchase over every row, the
    # rest over the longest window (rows outside it count as null; every window is within it).
    is_recent = _within(longest, snapshot)

    def recent(column: str | F.Column) -> F.Column:
        return F.when(is_recent, column if isinstance(column, F.Column) else F.col(column))

    net = F.col(S.SPEND) - F.col(S.REFUNDS)

    def orders_in(days: int) -> F.Column:
        return F.sum(F.when(_within(days, snapshot), F.col(S.ORDERS)).otherwise(0))

    def net_spend_in(days: int) -> F.Column:
        return F.greatest(F.sum(F.when(_within(days, snapshot), net).otherwise(0)), F.lit(0)).cast(S.MONEY)

    orders_by_window = F.create_map(*chain_pairs((_window_label(d), orders_in(d)) for d in cfg.windows_days))
    spend_by_window = F.create_map(*chain_pairs((_window_label(d), net_spend_in(d)) for d in cfg.windows_days))
    totals = (
        upto.groupBy(*keys)
        .agg(
            F.min(S.EVENT_DATE).alias(S.FIRST_SEEN),
            F.max(F.when(F.col(S.ORDERS) > 0, F.col(S.EVENT_DATE))).alias(S.LAST_PURCHASE),
            F.max(S.EVENT_DATE).alias(S.LAST_SEEN),
            F.count(recent(F.lit(1))).alias(S.ACTIVE_DAYS),
            orders_in(cfg.rfm_window_days).alias(S.FREQUENCY),
            net_spend_in(cfg.rfm_window_days).alias(S.MONETARY),
            orders_by_window.alias(S.ORDERS_BY_WINDOW),
            spend_by_window.alias(S.SPEND_BY_WINDOW),
            *[F.sum(recent(c)).alias(c) for c in COUNTS],
            F.sum(recent(S.ORDERS)).alias("_orders"),
            F.sum(recent(S.SPEND)).alias("_spend"),
            F.sum(recent(S.SESSIONS_COUNT)).alias(S.SESSIONS_COUNT),
            F.sum(recent(S.SESSION_SECONDS)).alias("_session_seconds"),
            F.sum(recent(S.PRICED_PURCHASES)).alias("_priced"),
            F.sum(recent(S.PRICE_RATIO_SUM)).alias("_ratio_sum"),
            F.max(recent(S.IS_BOT)).alias(S.IS_BOT),
        )
        .where(F.col(S.ACTIVE_DAYS) > 0)
    )
    affinities = _category_affinities(upto.where(is_recent), snapshot, cfg)
    profiles = totals.join(affinities, keys, "left")
    return profiles.select(
        F.lit(snapshot).alias(S.SNAPSHOT_DATE),
        *keys,
        S.FIRST_SEEN,
        S.LAST_SEEN,
        S.LAST_PURCHASE,
        F.datediff(F.lit(snapshot), F.col(S.FIRST_SEEN)).alias(S.TENURE_DAYS),
        S.ACTIVE_DAYS,
        F.datediff(F.lit(snapshot), F.col(S.LAST_PURCHASE)).alias(S.RECENCY_DAYS),
        S.FREQUENCY,
        S.MONETARY,
        S.ORDERS_BY_WINDOW,
        S.SPEND_BY_WINDOW,
        *COUNTS,
        F.try_divide(F.col(S.CARTS), F.col(S.VIEWS)).cast("double").alias(S.VIEW_TO_CART),
        F.try_divide(F.col(S.PURCHASES), F.col(S.CARTS)).cast("double").alias(S.CART_TO_PURCHASE),
        S.SESSIONS_COUNT,
        F.try_divide(F.col("_session_seconds"), F.col(S.SESSIONS_COUNT)).cast("double").alias(S.AVG_SESSION_S),
        F.coalesce(F.col(S.DISTINCT_CATEGORIES), F.lit(0)).alias(S.DISTINCT_CATEGORIES),
        F.coalesce(F.col(S.TOP_CATEGORIES), F.array().cast("array<string>")).alias(S.TOP_CATEGORIES),
        F.try_divide(F.col("_spend"), F.col("_orders")).cast(S.MONEY).alias(S.AVG_ORDER_VALUE),
        F.try_divide(F.col("_ratio_sum"), F.col("_priced")).cast("double").alias(S.PRICE_SENSITIVITY),
        S.IS_BOT,
    )


def chain_pairs(pairs) -> list:
    """``[(k1, v1), (k2, v2)]`` → ``[lit(k1), v1, lit(k2), v2]`` for ``create_map``."""
    out = []
    for key, value in pairs:
        out.extend([F.lit(key), value])
    return out


def _category_affinities(recent: DataFrame, snapshot: dt.date, cfg: ProfilesConfig) -> DataFrame:
    """Per user: distinct categories in the window and the top ones by type-weighted, recency-decayed
    score (ties broken by category id)."""
    keys = [S.DATASET, S.USER_ID]
    age_days = F.datediff(F.lit(snapshot), F.col(S.EVENT_DATE))
    decay = F.pow(F.lit(0.5), age_days / F.lit(cfg.affinity_half_life_days))
    scores = (
        recent.select(*keys, S.EVENT_DATE, F.explode(S.CATEGORY_SCORES).alias(S.CATEGORY_ID, "_score"))
        .groupBy(*keys, S.CATEGORY_ID)
        .agg(F.sum(F.col("_score") * decay).alias("_affinity"))
    )
    ranked = scores.withColumn(
        "_rank",
        F.row_number().over(Window.partitionBy(*keys).orderBy(F.desc("_affinity"), F.asc(S.CATEGORY_ID))),
    )
    return ranked.groupBy(*keys).agg(
        F.count(F.lit(1)).cast("int").alias(S.DISTINCT_CATEGORIES),
        F.transform(
            F.array_sort(
                F.collect_list(F.when(F.col("_rank") <= cfg.top_categories, F.struct("_rank", S.CATEGORY_ID)))
            ),
            lambda x: x[S.CATEGORY_ID],
        ).alias(S.TOP_CATEGORIES),
    )
