"""Per-user BG/NBD and Gamma-Gamma statistics from daily rows, and their grouped forms.

Paper conventions (Fader, Hardie and Lee 2005): a purchase day is a day with at least one order;
x = distinct purchase days - 1 (repeat purchases), t_x = last purchase day - first purchase day and
T = snapshot - first purchase day, in weeks (days / 7). Days are whole dates, so (x, t_x, T) takes
at most (days of history)^2 x (max x) distinct values however many users there are: the grouped
triples collected to the driver are bounded by the calendar, not by the user count.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S

T_X_DAYS = "t_x_days"
AGE_DAYS = "age_days"
CUSTOMERS = "customers"
LOG_SPEND_BIN = "log_spend_bin"
# Spend means are grouped on a grid of 0.1 % in log space (round(ln m, 3)) before the Gamma-Gamma
# fit: a relative error of at most 0.05 % in m, and a number of groups bounded by the spread of
# spend, not by the number of customers.
LOG_SPEND_DECIMALS = 3


def purchase_stats(activity: DataFrame, snapshot: dt.date) -> DataFrame:
    """Daily rows (dataset, user_id, event_date, orders, spend, refunds[, is_bot]) up to ``snapshot``
    → one row per (dataset, user_id) with the user's BG/NBD statistics.

    Users without an order up to the snapshot get ``has_purchased`` false and null statistics.
    Returns: one row per (dataset, user_id): has_purchased, repeat_purchases (x), t_x_days,
    age_days (T in days), recency_weeks, age_weeks, avg_repeat_value (mean net spend of the repeat
    purchase days, floored at 0; null when x = 0), is_bot.
    """
    upto = activity.where(F.col(S.EVENT_DATE) <= F.lit(snapshot))
    if S.IS_BOT not in upto.columns:
        upto = upto.withColumn(S.IS_BOT, F.lit(False))
    is_purchase_day = F.col(S.ORDERS) > 0
    purchase_date = F.when(is_purchase_day, F.col(S.EVENT_DATE))
    net = F.when(is_purchase_day, F.col(S.SPEND) - F.col(S.REFUNDS))
    per_user = upto.groupBy(S.DATASET, S.USER_ID).agg(
        F.min(purchase_date).alias("_first"),
        F.max(purchase_date).alias("_last"),
        F.count(purchase_date).alias("_days"),
        F.sum(net).alias("_net_all"),
        F.min_by(net, purchase_date).alias("_net_first"),
        F.max(S.IS_BOT).alias(S.IS_BOT),
    )
    has_purchased = F.col("_first").isNotNull()
    x = (F.col("_days") - 1).cast("int")
    repeat_net = F.greatest(F.col("_net_all") - F.col("_net_first"), F.lit(0))
    t_x_days = F.datediff(F.col("_last"), F.col("_first"))
    age_days = F.datediff(F.lit(snapshot), F.col("_first"))
    return per_user.select(
        S.DATASET,
        S.USER_ID,
        has_purchased.alias(S.HAS_PURCHASED),
        F.when(has_purchased, x).alias(S.REPEAT_PURCHASES),
        t_x_days.alias(T_X_DAYS),
        age_days.alias(AGE_DAYS),
        (t_x_days / F.lit(7.0)).alias(S.RECENCY_WEEKS),
        (age_days / F.lit(7.0)).alias(S.AGE_WEEKS),
        F.when(x > 0, F.try_divide(repeat_net, x)).cast(S.MONEY).alias(S.AVG_REPEAT_VALUE),
        S.IS_BOT,
    )


def grouped_triples(stats: DataFrame) -> DataFrame:
    """Customers grouped by identical statistics.

    Returns: one row per (dataset, repeat_purchases, t_x_days, age_days) of any customer, with
    ``customers``, the number of non-bot customers sharing it (the fit's weight; 0 for a triple of
    bots only, which is scored but does not shape the fit)."""
    return (
        stats.where(F.col(S.HAS_PURCHASED))
        .groupBy(S.DATASET, S.REPEAT_PURCHASES, T_X_DAYS, AGE_DAYS)
        .agg(F.count(F.when(~F.col(S.IS_BOT), True)).alias(CUSTOMERS))
    )


def grouped_spend(stats: DataFrame) -> DataFrame:
    """Non-bot customers with repeat purchases and a positive mean spend, grouped by x and a 0.1 %
    log-spend grid. Returns: one row per (dataset, repeat_purchases, log_spend_bin) with
    ``customers`` and the group's mean ``avg_repeat_value`` (a double)."""
    m = F.col(S.AVG_REPEAT_VALUE).cast("double")
    return (
        stats.where(~F.col(S.IS_BOT) & (F.col(S.REPEAT_PURCHASES) > 0) & (F.col(S.AVG_REPEAT_VALUE) > 0))
        .groupBy(S.DATASET, S.REPEAT_PURCHASES, F.round(F.log(m), LOG_SPEND_DECIMALS).alias(LOG_SPEND_BIN))
        .agg(F.count(F.lit(1)).alias(CUSTOMERS), F.avg(S.AVG_REPEAT_VALUE).cast("double").alias(S.AVG_REPEAT_VALUE))
    )
