"""Silver's row rules: typing of bronze fields, canonical event types, and why a row is rejected.

Each rule is a Spark predicate over the typed columns with a reason code; a row's reason is the
first rule it breaks, in :data:`ROW_RULES` order. The same rules generate the Great Expectations
suite that validates the staged rows (:func:`silver_expectations`), so the quarantine and the gate
cannot disagree about what a valid row is. Bad values are caught with ``try_*`` functions: Spark
4's ANSI mode would raise on a bad cast.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S

# Canonical event types of silver.
VIEW, CART, REMOVE_FROM_CART, FAV, PURCHASE, RETURN, REVIEW = (
    "view", "cart", "remove_from_cart", "fav", "purchase", "return", "review",
)
CANONICAL_EVENT_TYPES = (VIEW, CART, REMOVE_FROM_CART, FAV, PURCHASE, RETURN, REVIEW)

# Source kind (lower-cased, trimmed) → canonical type, for events landed through the landing
# contract. Adapters for other formats map their own kinds (see docs/SILVER.md for the full table).
EVENT_TYPE_MAP: Mapping[str, str] = {
    "view": VIEW, "page_view": VIEW, "pv": VIEW, "click": VIEW,
    "cart": CART, "add_to_cart": CART, "addtocart": CART,
    "remove_from_cart": REMOVE_FROM_CART, "removefromcart": REMOVE_FROM_CART,
    "fav": FAV, "wishlist": FAV, "favourite": FAV, "favorite": FAV,
    "purchase": PURCHASE, "buy": PURCHASE, "order": PURCHASE, "transaction": PURCHASE,
    "return": RETURN, "refund": RETURN,
    "review": REVIEW, "rating": REVIEW,
}
PRICED_TYPES = (PURCHASE, RETURN)

# Typed columns added next to the landed strings.
TYPED_EVENT_TIME = "typed_event_time"
TYPED_PRICE = "typed_price"
TYPED_QUANTITY = "typed_quantity"
TYPED_RATING = "typed_rating"
CANONICAL_TYPE = "canonical_type"
PRICE_TYPE = "decimal(18,2)"


@dataclass(frozen=True)
class RowContext:
    """What the rules need besides the row: the shop's time zone, the accepted lateness, and
    whether purchases and returns must carry a price (false for sources that record none, such as
    Taobao's ``buy``: there a missing price is the source's shape, not a broken row)."""

    timezone: str
    late_days: int
    future_tolerance_minutes: int
    prices_required: bool = True


@dataclass(frozen=True)
class RowRule:
    """A reason code and the predicate that is true when a row breaks the rule."""

    reason: str
    broken: Callable[[RowContext], Column]


def _blank(name: str) -> Column:
    return F.col(name).isNull() | (F.trim(F.col(name)) == "")


def _present_but_invalid(raw: str, typed: str) -> Column:
    return ~_blank(raw) & F.col(typed).isNull()


def event_date_of(event_time: Column, timezone: str) -> Column:
    """The calendar day of a UTC timestamp in the shop's time zone."""
    return F.to_date(F.from_utc_timestamp(event_time, timezone))


def _too_late(ctx: RowContext) -> Column:
    earliest = F.date_sub(F.col(S.RUN_DATE), ctx.late_days)
    return event_date_of(F.col(TYPED_EVENT_TIME), ctx.timezone) < earliest


def _in_future(ctx: RowContext) -> Column:
    # The run date ends at midnight after it, in the shop's time zone.
    end_of_run_date = F.to_utc_timestamp(F.date_add(F.col(S.RUN_DATE), 1).cast("timestamp"), ctx.timezone)
    limit = end_of_run_date + F.make_interval(mins=F.lit(ctx.future_tolerance_minutes))
    return F.col(TYPED_EVENT_TIME) > limit


ROW_RULES: tuple[RowRule, ...] = (
    RowRule("missing_event_id", lambda ctx: _blank(S.EVENT_ID)),
    RowRule("missing_event_time", lambda ctx: _blank(S.EVENT_TIME)),
    RowRule("missing_event_type", lambda ctx: _blank(S.EVENT_TYPE)),
    RowRule("malformed_event_time", lambda ctx: F.col(TYPED_EVENT_TIME).isNull()),
    RowRule("unknown_event_type", lambda ctx: F.col(CANONICAL_TYPE).isNull()),
    RowRule("future_event_time", _in_future),
    RowRule("too_late", _too_late),
    RowRule("missing_user", lambda ctx: _blank(S.USER_ID) & _blank(S.SESSION_KEY)),
    RowRule("missing_item_id", lambda ctx: _blank(S.ITEM_ID)),
    RowRule("malformed_price", lambda ctx: _present_but_invalid(S.PRICE, TYPED_PRICE)),
    RowRule("negative_price", lambda ctx: F.col(TYPED_PRICE) < 0),
    RowRule(
        "missing_price",
        lambda ctx: F.lit(ctx.prices_required)
        & F.col(CANONICAL_TYPE).isin(*PRICED_TYPES)
        & F.col(TYPED_PRICE).isNull(),
    ),
    RowRule(
        "invalid_quantity",
        lambda ctx: _present_but_invalid(S.QUANTITY, TYPED_QUANTITY) | (F.col(TYPED_QUANTITY) <= 0),
    ),
    RowRule(
        "invalid_rating",
        lambda ctx: (F.col(CANONICAL_TYPE) == REVIEW)
        & (F.col(TYPED_RATING).isNull() | ~F.col(TYPED_RATING).between(1, 5)),
    ),
)
REASONS = tuple(rule.reason for rule in ROW_RULES)


def with_typed_fields(bronze: DataFrame) -> DataFrame:
    """Adds the typed event time, price, quantity, rating and the canonical event type.

    Returns: one row per input row; input columns plus the ``typed_*`` and ``canonical_type`` columns
    (null where the landed string is absent or not valid).
    """
    type_map = F.create_map(*[F.lit(x) for x in chain.from_iterable(EVENT_TYPE_MAP.items())])
    quantity = F.trim(F.col(S.QUANTITY)).try_cast("double")
    rating = F.trim(F.col(S.RATING)).try_cast("double")
    return bronze.select(
        "*",
        F.try_to_timestamp(F.trim(F.col(S.EVENT_TIME))).alias(TYPED_EVENT_TIME),
        F.trim(F.col(S.PRICE)).try_cast(PRICE_TYPE).alias(TYPED_PRICE),
        # "2" and "2.0" are both a quantity of 2; "2.5" is not a quantity.
        F.when(quantity == F.floor(quantity), quantity.cast("int")).alias(TYPED_QUANTITY),
        F.when(rating == F.floor(rating), rating.cast("int")).alias(TYPED_RATING),
        F.try_element_at(type_map, F.lower(F.trim(F.col(S.EVENT_TYPE)))).alias(CANONICAL_TYPE),
    )


def with_reject_reason(typed: DataFrame, ctx: RowContext) -> DataFrame:
    """Adds ``reason``: the first rule of :data:`ROW_RULES` the row breaks, or null.

    Returns: one row per input row; input columns plus ``reason``.
    """
    reason = F.lit(None).cast("string")
    for rule in reversed(ROW_RULES):
        # A rule whose inputs are null does not fire: null predicates count as "not broken".
        reason = F.when(F.coalesce(rule.broken(ctx), F.lit(False)), F.lit(rule.reason)).otherwise(reason)
    return typed.withColumn(S.REASON, reason)


def silver_expectations(window_start: dt.date, run_date: dt.date, min_valid_share: float) -> list:
    """The Great Expectations suite on staged ``silver.events``, generated from the same rules: every
    accepted row must satisfy them all, so any failure is a bug in this module, not bad input."""
    import great_expectations as gx

    from shoplens.catalog import SILVER_EVENTS
    from shoplens.quality import GATE

    gate = {GATE: True}
    required = [S.EVENT_ID, S.EVENT_TIME, S.EVENT_DATE, S.EVENT_TYPE, S.ITEM_ID, S.RUN_DATE]
    return [
        gx.expectations.ExpectTableColumnsToMatchOrderedList(column_list=SILVER_EVENTS.columns, meta=gate),
        *[gx.expectations.ExpectColumnValuesToNotBeNull(column=c, meta=gate) for c in required],
        gx.expectations.ExpectColumnValuesToBeUnique(column=S.EVENT_ID, meta=gate),
        gx.expectations.ExpectColumnValuesToBeInSet(
            column=S.EVENT_TYPE, value_set=list(CANONICAL_EVENT_TYPES), meta=gate
        ),
        gx.expectations.ExpectColumnValuesToBeBetween(
            column=S.EVENT_DATE, min_value=window_start.isoformat(), max_value=run_date.isoformat(), meta=gate
        ),
        gx.expectations.ExpectColumnValuesToBeBetween(column=S.PRICE, min_value=0, meta=gate),
        gx.expectations.ExpectColumnValuesToBeBetween(column=S.QUANTITY, min_value=1, meta=gate),
        gx.expectations.ExpectColumnValuesToBeBetween(column=S.RATING, min_value=1, max_value=5, meta=gate),
        # Anonymous events are allowed, but most events should belong to a known user.
        gx.expectations.ExpectColumnValuesToNotBeNull(column=S.USER_ID, mostly=0.5),
    ]
