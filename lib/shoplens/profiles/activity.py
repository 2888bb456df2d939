"""``gold.user_daily_activity``: one row per (dataset, user, event date), the roll-up profiles read.

A nightly run recomputes only the event dates whose silver or sessions can still change, so a
profile snapshot reads compact daily rows instead of a year of events. Guests and anonymous
sessions (no user id) have no profile and no daily row.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.ingest.rules import CART, FAV, PURCHASE, RETURN, REVIEW, VIEW

_LINE_AMOUNT = "_line_amount"
_RATIO = "_price_ratio"
_GROUP = "_price_group"


def _count_of(event_type: str) -> F.Column:
    return F.count(F.when(F.col(S.EVENT_TYPE) == event_type, True))


def _amount_of(event_type: str) -> F.Column:
    amount = F.when(F.col(S.EVENT_TYPE) == event_type, F.col(_LINE_AMOUNT))
    return F.coalesce(F.sum(amount), F.lit(0)).cast(S.MONEY)


def with_price_ratio(events: DataFrame) -> DataFrame:
    """Adds ``_price_ratio``: a purchase's price over the median purchase price, on the same event
    date, of its category (of the item itself when it has no category); null for other events, for
    purchases without a price and where the median is 0. Uses nothing after the event's date."""
    group = F.coalesce(F.concat(F.lit("c:"), S.CATEGORY_ID), F.concat(F.lit("i:"), S.ITEM_ID))
    priced = (F.col(S.EVENT_TYPE) == PURCHASE) & F.col(S.PRICE).isNotNull()
    tagged = events.withColumn(_GROUP, F.when(priced, group))
    medians = (
        tagged.where(F.col(_GROUP).isNotNull())
        .groupBy(S.DATASET, S.EVENT_DATE, _GROUP)
        .agg(F.median(F.col(S.PRICE).cast("double")).alias("_median"))
    )
    return (
        tagged.join(medians, [S.DATASET, S.EVENT_DATE, _GROUP], "left")
        .withColumn(
            _RATIO, F.round(F.try_divide(F.col(S.PRICE).cast("double"), F.col("_median")), 6).cast("decimal(18,6)")
        )
        .drop(_GROUP, "_median")
    )


def daily_activity(events: DataFrame, sessions: DataFrame | None, weights: Mapping[str, float]) -> DataFrame:
    """Silver events (and gold.sessions rows starting on the same dates) → daily activity rows.

    Returns: one row per (dataset, user_id, event_date) with at least one event of a known user;
    gold.user_daily_activity's columns.
    """
    weight_map = F.create_map(*[F.lit(x) for x in chain.from_iterable(weights.items())])
    known = events.where(F.col(S.USER_ID).isNotNull())
    lines = with_price_ratio(known).withColumn(
        _LINE_AMOUNT, F.col(S.PRICE) * F.coalesce(F.col(S.QUANTITY), F.lit(1))
    )
    keys = [S.DATASET, S.USER_ID, S.EVENT_DATE]
    counts = lines.groupBy(*keys).agg(
        F.count(F.lit(1)).alias(S.EVENTS),
        _count_of(VIEW).alias(S.VIEWS),
        _count_of(CART).alias(S.CARTS),
        _count_of(FAV).alias(S.FAVS),
        _count_of(PURCHASE).alias(S.PURCHASES),
        F.count_distinct(
            F.when(F.col(S.EVENT_TYPE) == PURCHASE, F.coalesce(F.col(S.ORDER_ID), F.col(S.EVENT_ID)))
        ).alias(S.ORDERS),
        _count_of(RETURN).alias(S.RETURNS),
        _count_of(REVIEW).alias(S.REVIEWS),
        F.coalesce(
            F.sum(F.when(F.col(S.EVENT_TYPE) == PURCHASE, F.coalesce(F.col(S.QUANTITY), F.lit(1)))), F.lit(0)
        ).alias(S.UNITS),
        _amount_of(PURCHASE).alias(S.SPEND),
        _amount_of(RETURN).alias(S.REFUNDS),
        F.count_distinct(S.ITEM_ID).alias(S.N_DISTINCT_ITEMS),
        F.count(_RATIO).alias(S.PRICED_PURCHASES),
        F.coalesce(F.sum(_RATIO), F.lit(0)).cast("decimal(28,6)").alias(S.PRICE_RATIO_SUM),
        F.count(F.when(F.col(S.IS_BOT), True)).alias(S.BOT_EVENTS),
    )
    category_scores = (
        lines.where(F.col(S.CATEGORY_ID).isNotNull())
        .groupBy(*keys, S.CATEGORY_ID)
        .agg(F.sum(F.coalesce(F.try_element_at(weight_map, F.col(S.EVENT_TYPE)), F.lit(0.0))).alias("_score"))
        .groupBy(*keys)
        .agg(F.map_from_entries(F.collect_list(F.struct(S.CATEGORY_ID, "_score"))).alias(S.CATEGORY_SCORES))
    )
    daily = counts.join(category_scores, keys, "left")
    if sessions is not None:
        per_day = (
            sessions.where(F.col(S.USER_ID).isNotNull())
            .groupBy(S.DATASET, S.USER_ID, F.col(S.START_DATE).alias(S.EVENT_DATE))
            .agg(F.count(F.lit(1)).alias(S.SESSIONS_COUNT), F.sum(S.DURATION_S).alias(S.SESSION_SECONDS))
        )
        daily = daily.join(per_day, keys, "left")
    else:
        daily = daily.withColumn(S.SESSIONS_COUNT, F.lit(None)).withColumn(S.SESSION_SECONDS, F.lit(None))
    return daily.select(
        *keys,
        S.EVENTS, S.VIEWS, S.CARTS, S.FAVS, S.PURCHASES, S.ORDERS, S.RETURNS, S.REVIEWS,
        F.col(S.UNITS).cast("long").alias(S.UNITS),
        S.SPEND, S.REFUNDS, S.N_DISTINCT_ITEMS,
        F.coalesce(F.col(S.CATEGORY_SCORES), F.create_map().cast("map<string,double>")).alias(S.CATEGORY_SCORES),
        S.PRICED_PURCHASES, S.PRICE_RATIO_SUM,
        F.coalesce(F.col(S.SESSIONS_COUNT), F.lit(0)).cast("long").alias(S.SESSIONS_COUNT),
        F.coalesce(F.col(S.SESSION_SECONDS), F.lit(0)).cast("long").alias(S.SESSION_SECONDS),
        S.BOT_EVENTS,
        (F.col(S.BOT_EVENTS) > 0).alias(S.IS_BOT),
    )
