"""Catalogue lines (``items/<date>/part-*``) → rows of ``silver.items``, and why a line is rejected.

Pure transforms; ``shoplens.jobs.build_silver_items`` reads, calls them and MERGEs.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoplens import schemas as S
from shoplens.ingest.rules import PRICE_TYPE

STAGE_ITEMS = "items"
_CORRUPT = "_corrupt_record"
_ITEM_JSON = T.StructType(
    [T.StructField(name, T.StringType()) for name in S.LANDING_ITEM_FIELDS] + [T.StructField(_CORRUPT, T.StringType())]
)


def with_item_fields(lines: DataFrame, run_date: dt.date | None) -> DataFrame:
    """Parses catalogue lines, types them and adds ``reason`` (null for a usable line). The lines are
    of ``run_date``, or (None) of their own ``run_date`` column: several landing dates at once.

    A line repeating an item already listed earlier in the same landing (by file, then line) is
    rejected as ``duplicate_item``: one landing date gives each item one set of attributes.

    Returns: one row per input line; silver.items' columns, ``raw_line`` and ``reason``.
    """
    parsed = F.from_json(S.RAW_LINE, _ITEM_JSON, {"columnNameOfCorruptRecord": _CORRUPT})
    item_id = F.nullif(F.trim(F.col(f"_p.{S.ITEM_ID}")), F.lit(""))
    raw_price = F.trim(F.col(f"_p.{S.PRICE}"))
    price = raw_price.try_cast(PRICE_TYPE)
    first_listing = Window.partitionBy(S.ITEM_ID, S.UPDATED_ON).orderBy(S.SOURCE_FILE, S.RAW_LINE)
    landed_on = F.col(S.RUN_DATE) if run_date is None else F.lit(run_date)
    typed = lines.withColumn("_p", parsed).select(
        item_id.alias(S.ITEM_ID),
        F.nullif(F.trim(F.col(f"_p.{S.CATEGORY_ID}")), F.lit("")).alias(S.CATEGORY_ID),
        F.col(f"_p.{S.BRAND}").alias(S.BRAND),
        F.col(f"_p.{S.TITLE}").alias(S.TITLE),
        price.alias(S.PRICE),
        F.to_date(F.try_to_timestamp(F.trim(F.col(f"_p.{S.LISTED_DATE}")))).alias(S.LISTED_DATE),
        landed_on.alias(S.UPDATED_ON),
        S.SOURCE_FILE,
        S.RAW_LINE,
        F.when(F.trim(F.col(S.RAW_LINE)) == "", "blank_line")
        .when(F.col(f"_p.{_CORRUPT}").isNotNull(), "malformed_json")
        .when(item_id.isNull(), "missing_item_id")
        .when(raw_price.isNotNull() & price.isNull(), "malformed_price")
        .when(price < 0, "negative_price")
        .alias(S.REASON),
    )
    listing_rank = F.when(F.col(S.REASON).isNull(), F.row_number().over(first_listing))
    return typed.withColumn(
        S.REASON, F.when(listing_rank > 1, F.lit("duplicate_item")).otherwise(F.col(S.REASON))
    )
