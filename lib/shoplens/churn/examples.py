"""Churn examples: profile snapshots with features, and labels from the days after each snapshot.

A user churns at snapshot t when they make no purchase in the ``horizon`` days (t, t + horizon].
The population of a snapshot is its non-bot buyers: profiled users with a purchase up to t
(``last_purchase`` not null), so recency is always defined. Features come from the snapshot's
profile row only (events up to t); the label only from daily activity in (t, t + horizon].
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S

KEYS = (S.SNAPSHOT_DATE, S.DATASET, S.USER_ID)
_COUNTS = (S.ACTIVE_DAYS, S.FREQUENCY, S.EVENTS, S.VIEWS, S.CARTS, S.PURCHASES, S.RETURNS,
           S.SESSIONS_COUNT, S.DISTINCT_CATEGORIES)


def feature_names(windows_days: Sequence[int]) -> list[str]:
    """The model's features, in the order the vector is assembled."""
    by_window = [f"{kind}_{d}d" for d in windows_days for kind in ("log_orders", "log_spend")]
    return [
        S.RECENCY_DAYS, S.TENURE_DAYS,
        *[f"log_{c}" for c in _COUNTS],
        "log_monetary", "log_avg_order_value", "log_avg_session_s",
        *by_window,
        S.VIEW_TO_CART, S.CART_TO_PURCHASE, S.PRICE_SENSITIVITY,
    ]


def _log1p(column: F.Column) -> F.Column:
    return F.log1p(F.greatest(F.coalesce(column.cast("double"), F.lit(0.0)), F.lit(0.0)))


def with_features(profiles: DataFrame, windows_days: Sequence[int]) -> DataFrame:
    """gold.user_profiles rows → the snapshot's non-bot buyers with numeric features.

    Counts and money are log1p'd (trees do not care; the logistic regression does); an undefined
    ratio (no views, no carts, no priced purchase, no session) becomes its neutral value: 0 for
    conversion and session length, 1 for price sensitivity. No feature is null or NaN.
    Returns: one row per (snapshot_date, dataset, user_id): the keys and feature_names(windows_days).
    """
    buyers = profiles.where(F.col(S.LAST_PURCHASE).isNotNull() & ~F.col(S.IS_BOT))
    by_window = []
    for d in windows_days:
        key = f"{d}d"
        by_window += [
            _log1p(F.col(S.ORDERS_BY_WINDOW)[key]).alias(f"log_orders_{key}"),
            _log1p(F.col(S.SPEND_BY_WINDOW)[key]).alias(f"log_spend_{key}"),
        ]
    return buyers.select(
        *KEYS,
        F.col(S.RECENCY_DAYS).cast("double").alias(S.RECENCY_DAYS),
        F.col(S.TENURE_DAYS).cast("double").alias(S.TENURE_DAYS),
        *[_log1p(F.col(c)).alias(f"log_{c}") for c in _COUNTS],
        _log1p(F.col(S.MONETARY)).alias("log_monetary"),
        _log1p(F.col(S.AVG_ORDER_VALUE)).alias("log_avg_order_value"),
        _log1p(F.col(S.AVG_SESSION_S)).alias("log_avg_session_s"),
        *by_window,
        F.coalesce(F.col(S.VIEW_TO_CART), F.lit(0.0)).alias(S.VIEW_TO_CART),
        F.coalesce(F.col(S.CART_TO_PURCHASE), F.lit(0.0)).alias(S.CART_TO_PURCHASE),
        F.coalesce(F.col(S.PRICE_SENSITIVITY), F.lit(1.0)).alias(S.PRICE_SENSITIVITY),
    )


def labels(activity: DataFrame, snapshots: Sequence[dt.date], horizon_days: int) -> DataFrame:
    """Who bought in (t, t + horizon] for each snapshot t.

    Returns: one row per (snapshot_date, dataset, user_id) with an order in the snapshot's horizon.
    """
    rows = None
    for t in snapshots:
        window = (F.col(S.EVENT_DATE) > F.lit(t)) & (F.col(S.EVENT_DATE) <= F.lit(t + dt.timedelta(days=horizon_days)))
        bought = (
            activity.where(window & (F.col(S.ORDERS) > 0))
            .select(F.lit(t).alias(S.SNAPSHOT_DATE), S.DATASET, S.USER_ID)
            .distinct()
        )
        rows = bought if rows is None else rows.unionByName(bought)
    assert rows is not None, "labels need at least one snapshot"
    return rows


def labelled(features: DataFrame, activity: DataFrame, snapshots: Sequence[dt.date], horizon_days: int) -> DataFrame:
    """Feature rows of ``snapshots`` with ``label`` 1.0 (churned: no purchase in the horizon) or 0.0.

    The caller guarantees every t + horizon is covered by ``activity`` (docs/CHURN.md: t + N <= E).
    Returns: one row per (snapshot_date, dataset, user_id): the features and ``label``.
    """
    bought = labels(activity, snapshots, horizon_days).withColumn("_bought", F.lit(True))
    of_snapshots = features.where(F.col(S.SNAPSHOT_DATE).isin(list(snapshots)))
    return of_snapshots.join(bought, list(KEYS), "left").select(
        *features.columns, F.when(F.col("_bought"), 0.0).otherwise(1.0).alias(S.LABEL)
    )
