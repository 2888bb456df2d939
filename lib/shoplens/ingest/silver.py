"""Bronze rows → silver events: deduplicated, typed, pseudonymised, with the bot flag.

Pure transforms; ``shoplens.jobs.build_silver_events`` reads, calls them and writes.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.config import BotsConfig
from shoplens.ingest.pseudonymise import hmac_sha256_hex
from shoplens.ingest.rules import (
    CANONICAL_TYPE,
    REVIEW,
    TYPED_EVENT_TIME,
    TYPED_PRICE,
    TYPED_QUANTITY,
    TYPED_RATING,
    event_date_of,
)

DELIVERY_RANK = "delivery_rank"
ACTOR = "actor"
TRIMMED_ID = "trimmed_id"
STAGE_SILVER = "silver"


def with_delivery_rank(valid: DataFrame) -> DataFrame:
    """Adds ``delivery_rank``: 1 for the first delivery of each ``event_id`` (earliest run date,
    then source file, then line), 2.. for re-deliveries, which are duplicates.

    Returns: one row per input row; input columns plus ``delivery_rank``.
    """
    first_delivery = Window.partitionBy(F.trim(F.col(S.EVENT_ID))).orderBy(S.RUN_DATE, S.SOURCE_FILE, S.RAW_LINE)
    return valid.withColumn(DELIVERY_RANK, F.row_number().over(first_delivery))


def silver_event_rows(kept: DataFrame, key: bytes, timezone: str, dataset: str) -> DataFrame:
    """Projects first deliveries of valid rows onto silver.events' columns (``is_bot`` not yet set)
    plus ``review_text``; the user id becomes its keyed pseudonym; ``dataset`` names the feed.

    Returns: one row per event_id.
    """
    return kept.select(
        F.trim(F.col(S.EVENT_ID)).alias(S.EVENT_ID),
        F.col(TYPED_EVENT_TIME).alias(S.EVENT_TIME),
        event_date_of(F.col(TYPED_EVENT_TIME), timezone).alias(S.EVENT_DATE),
        F.col(CANONICAL_TYPE).alias(S.EVENT_TYPE),
        F.col(S.EVENT_TYPE).alias(S.SOURCE_EVENT_TYPE),
        hmac_sha256_hex(F.nullif(F.trim(F.col(S.USER_ID)), F.lit("")), key).alias(S.USER_ID),
        F.nullif(F.trim(F.col(S.SESSION_KEY)), F.lit("")).alias(S.SESSION_KEY),
        F.trim(F.col(S.ITEM_ID)).alias(S.ITEM_ID),
        F.nullif(F.trim(F.col(S.CATEGORY_ID)), F.lit("")).alias(S.CATEGORY_ID),
        F.col(TYPED_PRICE).alias(S.PRICE),
        F.col(TYPED_QUANTITY).alias(S.QUANTITY),
        F.nullif(F.trim(F.col(S.ORDER_ID)), F.lit("")).alias(S.ORDER_ID),
        F.when(F.col(CANONICAL_TYPE) == REVIEW, F.col(TYPED_RATING)).alias(S.RATING),
        F.col(S.SOURCE),
        F.lit(dataset).alias(S.DATASET),
        S.RUN_DATE,
        S.SOURCE_FILE,
        F.when(F.col(CANONICAL_TYPE) == REVIEW, F.col(S.REVIEW_TEXT)).alias(S.REVIEW_TEXT),
    )


def actor_of() -> Column:
    """An event's actor: its user, else its anonymous session key (prefixed so they never clash)."""
    return F.coalesce(F.col(S.USER_ID), F.concat(F.lit("session:"), F.col(S.SESSION_KEY)))


def bot_flags(events: DataFrame, bots: BotsConfig) -> DataFrame:
    """``is_bot`` per (actor, event date): the actor exceeded ``bots.max_events_per_hour`` in some
    hour or ``bots.max_events_per_day`` on that date.

    ``events`` has ``actor``, ``event_date`` and ``event_time``: every accepted event of those
    actor-days, or the flags undercount. Returns: one row per (actor, event_date).
    """
    hourly = events.groupBy(ACTOR, S.EVENT_DATE, F.date_trunc("hour", S.EVENT_TIME).alias("_hour")).count()
    per_day = hourly.groupBy(ACTOR, S.EVENT_DATE).agg(
        F.max("count").alias("_max_per_hour"), F.sum("count").alias("_per_day")
    )
    is_bot = (F.col("_max_per_hour") > bots.max_events_per_hour) | (F.col("_per_day") > bots.max_events_per_day)
    return per_day.select(ACTOR, S.EVENT_DATE, is_bot.alias(S.IS_BOT))


def with_is_bot(events: DataFrame, bots: BotsConfig, others: DataFrame | None = None) -> DataFrame:
    """Adds ``is_bot`` (see :func:`bot_flags`) and ``actor``, counting ``events`` together with
    ``others``: the actor-days' events already accepted (``actor``, ``event_date``, ``event_time``).

    Returns: one row per input row; input columns plus ``actor`` and ``is_bot``.
    """
    with_actor = events.withColumn(ACTOR, actor_of())
    counted = with_actor.select(ACTOR, S.EVENT_DATE, S.EVENT_TIME)
    if others is not None:
        counted = counted.unionByName(others.select(ACTOR, S.EVENT_DATE, S.EVENT_TIME))
    return with_actor.join(bot_flags(counted, bots), on=[ACTOR, S.EVENT_DATE], how="left").withColumn(
        S.IS_BOT, F.coalesce(F.col(S.IS_BOT), F.lit(False))
    )


def review_rows(events: DataFrame) -> DataFrame:
    """Returns: one row per review event (silver.reviews' columns)."""
    return events.where(F.col(S.EVENT_TYPE) == REVIEW).select(
        S.EVENT_ID, S.EVENT_TIME, S.EVENT_DATE, S.USER_ID, S.ITEM_ID, S.RATING, S.REVIEW_TEXT, S.IS_BOT,
        S.DATASET, S.RUN_DATE,
    )


def quarantine_rows(rejected: DataFrame, stage: str = STAGE_SILVER) -> DataFrame:
    """Returns: one row per rejected bronze row (silver.quarantine's columns, the given stage)."""
    return rejected.select(S.RUN_DATE, F.lit(stage).alias(S.STAGE), S.SOURCE_FILE, S.REASON, S.RAW_LINE)


def duplicate_rows(redeliveries: DataFrame, dataset: str) -> DataFrame:
    """Returns: one row per dropped re-delivery (silver.duplicates' columns) of the feed ``dataset``."""
    return redeliveries.select(
        S.RUN_DATE, F.lit(dataset).alias(S.DATASET), F.trim(F.col(S.EVENT_ID)).alias(S.EVENT_ID), S.SOURCE_FILE,
        S.RAW_LINE,
    )
