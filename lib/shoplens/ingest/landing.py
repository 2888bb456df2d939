"""Landing lines → bronze events: parse each line leniently, keep it as landed, set aside the rest.

Bronze keeps every well-formed line with its fields as the strings they landed as (typing and
validation are silver's job). A line that is blank or not a JSON object is not an event: it goes to
quarantine with a reason, never dropped and never a crash.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoplens import schemas as S

STAGE_LANDING = "landing"
REASON_BLANK_LINE = "blank_line"
REASON_MALFORMED_JSON = "malformed_json"

_PARSED = "_parsed"
_CORRUPT = "_corrupt_record"
_PARSE_SCHEMA = T.StructType(S.LANDING_EVENT_JSON.fields + [T.StructField(_CORRUPT, T.StringType())])


def with_parse_result(lines: DataFrame) -> DataFrame:
    """Adds every landing field (as a string) and ``reason``: null for an event, else why not.

    Returns: one row per input line; the input columns, the landing fields and ``reason``.
    """
    parsed = F.from_json(S.RAW_LINE, _PARSE_SCHEMA, {"columnNameOfCorruptRecord": _CORRUPT})
    is_blank = F.trim(F.col(S.RAW_LINE)) == ""
    # from_json reports anything that is not a JSON object (text, arrays, scalars) as corrupt.
    is_malformed = F.col(f"{_PARSED}.{_CORRUPT}").isNotNull()
    reason = (
        F.when(is_blank, F.lit(REASON_BLANK_LINE))
        .when(is_malformed, F.lit(REASON_MALFORMED_JSON))
        .otherwise(F.lit(None).cast(T.StringType()))
    )
    return (
        lines.withColumn(_PARSED, parsed)
        .select(
            *lines.columns,
            *[F.col(f"{_PARSED}.{name}").alias(name) for name in S.LANDING_EVENT_FIELDS],
            reason.alias(S.REASON),
        )
    )


def bronze_events(parsed: DataFrame, run_date: dt.date | None) -> DataFrame:
    """Returns the well-formed lines of ``with_parse_result`` as bronze rows of ``run_date`` (None:
    of each line's own ``run_date`` column, a bulk ingest of several dates).

    Returns: one row per well-formed landing line; the bronze.events columns.
    """
    return parsed.where(F.col(S.REASON).isNull()).select(
        *S.LANDING_EVENT_FIELDS,
        S.RAW_LINE,
        S.SOURCE_FILE,
        _run_date(run_date),
    )


def rejected_lines(parsed: DataFrame, run_date: dt.date | None) -> DataFrame:
    """Returns the lines of ``with_parse_result`` that are not events, with their reason (run date as
    in :func:`bronze_events`).

    Returns: one row per rejected landing line; the silver.quarantine columns.
    """
    return parsed.where(F.col(S.REASON).isNotNull()).select(
        _run_date(run_date),
        F.lit(STAGE_LANDING).alias(S.STAGE),
        S.SOURCE_FILE,
        S.REASON,
        S.RAW_LINE,
    )


def _run_date(run_date: dt.date | None):
    return F.col(S.RUN_DATE) if run_date is None else F.lit(run_date).alias(S.RUN_DATE)
