"""Adapters: real public data formats → rows shaped like ``bronze.events``, for bulk history loads.

Each adapter is a pure transform from the raw file's lines (``raw_line``, ``source_file``: every line
read as text, so nothing is lost) to one row per record with every landing field as a string, plus
``raw_line``, ``source_file``, ``run_date`` and ``reason``: null for a record silver's row rules
judge next, ``header_line`` for a header (skipped and counted, not an event), ``blank_line`` or
``malformed_record`` for a line that cannot be split into the format's fields (quarantined).

These sources carry no event id. Each record gets a deterministic one (:func:`derived_event_id`):
``sha2("<format>\\n<occurrence>\\n<position>\\n<raw_line>", 256)``, where ``occurrence`` numbers the
identical copies of a line within its source file (1, 2, ...) and ``position`` is the record's
place within its line (0, except in sequence files). Identical lines are indistinguishable, so
numbering them in any order gives the same set of ids: a re-run gives the same ids, and two genuine
identical actions stay two events. See docs/SILVER.md for each format's fields and kinds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.ingest import rules
from shoplens.ingest.landing import REASON_BLANK_LINE

REASON_MALFORMED_RECORD = "malformed_record"
# Not a rejection: header lines are skipped, and counted in the load's summary.
HEADER_LINE = "header_line"

OCCURRENCE = "occurrence"
POSITION = "position"

# Unix seconds that give a timestamp in years 1..9999; outside, the time is malformed (not an overflow).
_MIN_EPOCH_S, _MAX_EPOCH_S = -62_135_596_800, 253_402_300_799
# Sequence files have no times: record k (0-based) of a line happens SEQUENCE_BASE_TIME + k seconds.
SEQUENCE_BASE_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# UCI Online Retail's InvoiceDate is the UK shop's wall-clock time.
ONLINE_RETAIL_TIMEZONE = "Europe/London"
_ONLINE_RETAIL_TIME_FORMATS = (
    "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd HH:mm", "yyyy-MM-dd'T'HH:mm:ss", "M/d/yyyy H:mm", "M/d/yyyy H:mm:ss",
)


@dataclass(frozen=True)
class Adapter:
    """One public format: how its lines become bronze-shaped rows, and what its kinds mean.

    ``kinds`` maps each kind of record in the source to the landing ``event_type`` the adapter
    writes (the rules then map that to a canonical type, :data:`shoplens.ingest.rules.EVENT_TYPE_MAP`).
    ``from_table`` turns a columnar file (Parquet) into lines, for formats published that way;
    ``one_record_per_line`` is false where a line holds several records (sequence files);
    ``has_prices`` is false where purchases carry no price (Taobao), so the price rule is off.
    """

    name: str
    from_lines: Callable[[DataFrame, dt.date], DataFrame]
    kinds: Mapping[str, str]
    from_table: Callable[[DataFrame], DataFrame] | None = None
    one_record_per_line: bool = True
    has_prices: bool = True


# --- shared pieces ------------------------------------------------------------------------------------


def with_occurrence(lines: DataFrame) -> DataFrame:
    """Adds ``occurrence``: 1, 2, ... over the identical copies of a line within one source file.

    Returns: one row per input line; input columns plus ``occurrence``.
    """
    # Identical lines are interchangeable, so any order among them gives the same set of numbers.
    same_line = Window.partitionBy(S.SOURCE_FILE, S.RAW_LINE).orderBy(S.RAW_LINE)
    return lines.withColumn(OCCURRENCE, F.row_number().over(same_line))


def derived_event_id(dataset: str, position: Column) -> Column:
    """The deterministic event id of a record: sha2 over format, occurrence, position and the line.

    The line comes last and holds no newline, so the hashed text is unambiguous."""
    text = F.concat_ws(
        "\n", F.lit(dataset), F.col(OCCURRENCE).cast("string"), position.cast("string"), F.col(S.RAW_LINE)
    )
    return F.sha2(text, 256)


def _iso_utc(ts: Column) -> Column:
    # XXX prints the session zone's offset, so the text names the same instant in any session zone.
    return F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss.SSSXXX")


def _time_or_raw(ts: Column, raw: Column) -> Column:
    """The parsed time as ISO-8601 text; else the raw text, so the rules report it as malformed
    (or as missing when blank) instead of the adapter hiding it."""
    return F.when(ts.isNotNull(), _iso_utc(ts)).otherwise(_none_if_blank(raw))


def _none_if_blank(value: Column) -> Column:
    return F.nullif(F.trim(value), F.lit(""))


def _epoch_seconds(raw: Column) -> Column:
    seconds = F.trim(raw).try_cast("long")
    return F.when(seconds.between(_MIN_EPOCH_S, _MAX_EPOCH_S), F.timestamp_seconds(seconds))


def _fields(parts: Column, names: tuple[str, ...]) -> dict[str, Column]:
    # get(), not [i]: under ANSI mode an index past a short line's fields raises instead of null.
    return {name: F.get(parts, i) for i, name in enumerate(names)}


def _split_reason(raw: Column, parts: Column, n_fields: int, is_header: Column | None = None) -> Column:
    """``header_line`` / ``blank_line`` / ``malformed_record`` (wrong number of fields) or null."""
    reason = F.when(F.trim(raw) == "", F.lit(REASON_BLANK_LINE))
    if is_header is not None:
        reason = reason.when(is_header, F.lit(HEADER_LINE))
    return reason.when(F.size(parts) != n_fields, F.lit(REASON_MALFORMED_RECORD)).otherwise(F.lit(None))


def _bronze_shaped(
    df: DataFrame,
    dataset: str,
    run_date: dt.date,
    fields: Mapping[str, Column],
    reason: Column,
    position: Column | None = None,
) -> DataFrame:
    """Projects an adapter's fields onto the bronze columns (+ ``reason``); absent fields are null."""
    position = F.lit(0) if position is None else position
    columns = {name: F.lit(None).cast("string") for name in S.LANDING_EVENT_FIELDS}
    columns.update(fields)
    columns[S.EVENT_ID] = derived_event_id(dataset, position)
    return df.select(
        *[columns[name].cast("string").alias(name) for name in S.LANDING_EVENT_FIELDS],
        S.RAW_LINE,
        S.SOURCE_FILE,
        F.lit(run_date).alias(S.RUN_DATE),
        reason.alias(S.REASON),
    )


# --- Taobao UserBehavior: user_id,item_id,category_id,behavior_type,unix_ts (no header) ---------------

TAOBAO = "taobao"
TAOBAO_FIELDS = ("user", "item", "category", "behavior", "ts")
# The source's behaviours are landing kinds already (rules.EVENT_TYPE_MAP: pv→view, buy→purchase).
TAOBAO_KINDS = {"pv": "pv", "cart": "cart", "fav": "fav", "buy": "buy"}


def taobao_rows(lines: DataFrame, run_date: dt.date) -> DataFrame:
    """Taobao UserBehavior CSV lines → bronze-shaped rows; the behaviour is kept as the event type.

    Returns: one row per input line (bronze.events' columns plus ``reason``).
    """
    parts = F.split(F.col(S.RAW_LINE), ",")
    f = _fields(parts, TAOBAO_FIELDS)
    fields = {
        S.USER_ID: f["user"],
        S.ITEM_ID: f["item"],
        S.CATEGORY_ID: f["category"],
        S.EVENT_TYPE: f["behavior"],
        S.EVENT_TIME: _time_or_raw(_epoch_seconds(f["ts"]), f["ts"]),
    }
    reason = _split_reason(F.col(S.RAW_LINE), parts, len(TAOBAO_FIELDS))
    return _bronze_shaped(with_occurrence(lines), TAOBAO, run_date, fields, reason)


# --- MovieLens u.data: user<TAB>item<TAB>rating<TAB>unix_ts (no header) -------------------------------

MOVIELENS = "movielens"
MOVIELENS_FIELDS = ("user", "item", "rating", "ts")
MOVIELENS_KINDS = {"rating": "rating"}  # rules: rating → review (with a rating, no text)


def movielens_rows(lines: DataFrame, run_date: dt.date) -> DataFrame:
    """MovieLens ``u.data`` lines → bronze-shaped review rows (rating, no text).

    Returns: one row per input line (bronze.events' columns plus ``reason``).
    """
    parts = F.split(F.col(S.RAW_LINE), "\t")
    f = _fields(parts, MOVIELENS_FIELDS)
    fields = {
        S.USER_ID: f["user"],
        S.ITEM_ID: f["item"],
        S.RATING: f["rating"],
        S.EVENT_TYPE: F.lit("rating"),
        S.EVENT_TIME: _time_or_raw(_epoch_seconds(f["ts"]), f["ts"]),
    }
    reason = _split_reason(F.col(S.RAW_LINE), parts, len(MOVIELENS_FIELDS))
    return _bronze_shaped(with_occurrence(lines), MOVIELENS, run_date, fields, reason)


# --- Diginetica item views: session_id;user_id;item_id;timeframe;eventdate (header) -------------------

DIGINETICA = "diginetica"
DIGINETICA_FIELDS = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
DIGINETICA_KINDS = {"item_view": "view"}
_DIGINETICA_ANONYMOUS = ("", "NA")
_MAX_TIMEFRAME_MS = 366 * 24 * 3600 * 1000


def diginetica_rows(lines: DataFrame, run_date: dt.date) -> DataFrame:
    """Diginetica ``train-item-views`` lines → bronze-shaped view rows.

    The event time is ``eventdate`` (midnight UTC) plus ``timeframe`` milliseconds. A user id of
    ``NA`` or empty is an anonymous view: user null, identified by its session (``session_key`` is
    always the session id).

    Returns: one row per input line (bronze.events' columns plus ``reason``).
    """
    parts = F.split(F.col(S.RAW_LINE), ";")
    f = _fields(parts, DIGINETICA_FIELDS)
    day = F.try_to_timestamp(F.trim(f["eventdate"]), F.lit("yyyy-MM-dd"))
    offset_ms = F.trim(f["timeframe"]).try_cast("long")
    time = F.when(
        offset_ms.between(0, _MAX_TIMEFRAME_MS), F.timestamp_millis(F.unix_millis(day) + offset_ms)
    )
    raw_time = F.when(
        ~(F.trim(f["eventdate"]) == "") | ~(F.trim(f["timeframe"]) == ""),
        F.concat_ws(" + ", f["eventdate"], F.concat(f["timeframe"], F.lit(" ms"))),
    )
    user = F.when(~F.trim(f["user_id"]).isin(*_DIGINETICA_ANONYMOUS), F.trim(f["user_id"]))
    fields = {
        S.USER_ID: user,
        S.SESSION_KEY: f["session_id"],
        S.ITEM_ID: f["item_id"],
        S.EVENT_TYPE: F.lit("view"),
        S.EVENT_TIME: _time_or_raw(time, raw_time),
    }
    is_header = F.lower(F.trim(F.col(S.RAW_LINE))) == ";".join(DIGINETICA_FIELDS)
    reason = _split_reason(F.col(S.RAW_LINE), parts, len(DIGINETICA_FIELDS), is_header)
    return _bronze_shaped(with_occurrence(lines), DIGINETICA, run_date, fields, reason)


# --- sequences: "user item1 item2 ..." one user a line, items in time order, no times -----------------

SEQUENCES = "sequences"
SEQUENCES_KINDS = {"sequence_item": "view"}


def sequence_rows(lines: DataFrame, run_date: dt.date) -> DataFrame:
    """Sequence-file lines → one bronze-shaped view row per item, in the line's order.

    The files carry no times, only order: item k (0-based) of a line gets the time
    ``SEQUENCE_BASE_TIME + k seconds``, so time order is sequence order; the dates mean nothing.
    A line with a user and no item is malformed (one quarantine row for the line).

    Returns: one row per item (one per malformed line); bronze.events' columns plus ``reason``.
    """
    tokens = F.split(F.trim(F.col(S.RAW_LINE)), r"\s+")
    n = F.size(tokens)
    # A malformed line keeps one row (a null item) so that it reaches quarantine.
    items = F.when(n >= 2, F.slice(tokens, 2, n - 1)).otherwise(F.array(F.lit(None).cast("string")))
    exploded = with_occurrence(lines).select(
        "*", F.get(tokens, 0).alias("_user"), n.alias("_n"), F.posexplode(items).alias(POSITION, "_item")
    )
    base = int(SEQUENCE_BASE_TIME.timestamp())
    fields = {
        S.USER_ID: F.col("_user"),
        S.ITEM_ID: F.col("_item"),
        S.EVENT_TYPE: F.lit("view"),
        S.EVENT_TIME: _iso_utc(F.timestamp_seconds(F.lit(base) + F.col(POSITION))),
    }
    reason = (
        F.when(F.trim(F.col(S.RAW_LINE)) == "", F.lit(REASON_BLANK_LINE))
        .when(F.col("_n") < 2, F.lit(REASON_MALFORMED_RECORD))
        .otherwise(F.lit(None))
    )
    return _bronze_shaped(exploded, SEQUENCES, run_date, fields, reason, F.col(POSITION))


# --- UCI Online Retail (I and II): invoice lines; CSV text or Parquet -------------------------------

ONLINE_RETAIL = "online_retail"
# Canonical field order of both releases' CSV files; each entry lists (Online Retail, Online Retail II).
ONLINE_RETAIL_COLUMNS = (
    ("InvoiceNo", "Invoice"),
    ("StockCode",),
    ("Description",),
    ("Quantity",),
    ("InvoiceDate",),
    ("UnitPrice", "Price"),
    ("CustomerID", "Customer ID"),
    ("Country",),
)
_RETAIL_FIELDS = ("invoice", "stock_code", "description", "quantity", "invoice_date", "price", "customer", "country")
_RETAIL_CSV_SCHEMA = ", ".join(f"{name} STRING" for name in _RETAIL_FIELDS) + ", _corrupt STRING"
ONLINE_RETAIL_KINDS = {"invoice_line": "purchase", "cancellation_line": "return"}


def online_retail_lines(table: DataFrame) -> DataFrame:
    """A columnar Online Retail table (either release's column names) → CSV lines in the canonical
    field order, no header, the way the CSV release would hold them.

    Returns: one row per table row; ``raw_line`` and ``source_file``.
    """
    chosen = []
    for variants in ONLINE_RETAIL_COLUMNS:
        present = [name for name in variants if name in table.columns]
        if not present:
            raise ValueError(f"not an Online Retail table: none of {variants} in columns {table.columns}")
        chosen.append(F.col(f"`{present[0]}`").cast("string").alias(present[0]))
    return table.select(F.to_csv(F.struct(*chosen)).alias(S.RAW_LINE), F.col(S.SOURCE_FILE))


def online_retail_rows(lines: DataFrame, run_date: dt.date) -> DataFrame:
    """Online Retail CSV lines → bronze-shaped purchase and return rows.

    An invoice starting with ``C`` is a cancellation: a ``return`` whose quantity is the line's
    quantity negated (so the usual negative quantity becomes positive, and a positive one becomes
    negative and is rejected by the quantity rule). Other lines are ``purchase``s; a negative
    quantity there (stock adjustments) is rejected too. The invoice is the order id. A line without
    a customer id is a guest purchase: user null, ``session_key`` = the invoice. ``InvoiceDate`` is
    UK wall-clock time (:data:`ONLINE_RETAIL_TIMEZONE`).

    Returns: one row per input line (bronze.events' columns plus ``reason``).
    """
    parsed = F.from_csv(
        F.col(S.RAW_LINE), _RETAIL_CSV_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
    )
    with_parsed = with_occurrence(lines).withColumn("_csv", parsed)
    f = {name: F.col(f"_csv.{name}") for name in _RETAIL_FIELDS}
    invoice = F.trim(f["invoice"])
    is_cancellation = F.upper(invoice).startswith("C")
    quantity = F.trim(f["quantity"])
    negated = F.when(quantity.startswith("-"), F.regexp_replace(quantity, "^-", "")).otherwise(
        F.concat(F.lit("-"), quantity)
    )
    # Online Retail's parquet has CustomerID as a float (17850.0): the id is the whole number.
    customer = F.regexp_replace(F.trim(f["customer"]), r"\.0+$", "")
    user = F.when(~F.lower(customer).isin("", "nan", "none", "null"), customer)
    local_time = F.coalesce(
        *[F.try_to_timestamp(F.trim(f["invoice_date"]), F.lit(fmt)) for fmt in _ONLINE_RETAIL_TIME_FORMATS]
    )
    fields = {
        S.USER_ID: user,
        S.SESSION_KEY: F.when(user.isNull(), invoice),
        S.ITEM_ID: f["stock_code"],
        S.ORDER_ID: invoice,
        S.PRICE: f["price"],
        S.QUANTITY: F.when(is_cancellation & (quantity != ""), negated).otherwise(quantity),
        S.EVENT_TYPE: F.when(is_cancellation, F.lit(rules.RETURN)).otherwise(F.lit(rules.PURCHASE)),
        S.EVENT_TIME: _time_or_raw(F.to_utc_timestamp(local_time, ONLINE_RETAIL_TIMEZONE), f["invoice_date"]),
    }
    first = F.regexp_replace(invoice, "^\ufeff", "")
    is_header = first.isin(*ONLINE_RETAIL_COLUMNS[0]) & (F.trim(f["stock_code"]) == ONLINE_RETAIL_COLUMNS[1][0])
    reason = (
        F.when(F.trim(F.col(S.RAW_LINE)) == "", F.lit(REASON_BLANK_LINE))
        .when(is_header, F.lit(HEADER_LINE))
        .when(F.col("_csv._corrupt").isNotNull(), F.lit(REASON_MALFORMED_RECORD))
        .otherwise(F.lit(None))
    )
    return _bronze_shaped(with_parsed, ONLINE_RETAIL, run_date, fields, reason)


ADAPTERS: Mapping[str, Adapter] = {
    TAOBAO: Adapter(TAOBAO, taobao_rows, TAOBAO_KINDS, has_prices=False),
    ONLINE_RETAIL: Adapter(ONLINE_RETAIL, online_retail_rows, ONLINE_RETAIL_KINDS, online_retail_lines),
    MOVIELENS: Adapter(MOVIELENS, movielens_rows, MOVIELENS_KINDS),
    SEQUENCES: Adapter(SEQUENCES, sequence_rows, SEQUENCES_KINDS, one_record_per_line=False),
    DIGINETICA: Adapter(DIGINETICA, diginetica_rows, DIGINETICA_KINDS),
}
