"""Turning simulated events into landing lines: formatting, planted dirt, lateness, part files.

Valid events are laid out as bytes by :mod:`shoplens.demo.jsonl` (every string value comes from a
controlled alphabet that needs no JSON escaping, see :mod:`shoplens.demo.words`), with the fields
of their type in the order of ``schemas.LANDING_EVENT_FIELDS``; fields that do not apply to a type
are left out, and ``user_id`` is ``null`` for anonymous events. Dirty lines are few and go through
``json``.

Each valid event lands on its event date, except a planted share of *late* events, which land
1..window days later (``late_within_window``) or window+1..window+7 days later (``too_late``), never
after the last landing date. Dirty lines are *extra* lines derived from on-time valid events, one
defect each, on the source event's landing date (see :data:`DIRTY_KINDS`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shoplens.demo import jsonl
from shoplens.demo.behaviour import CART, DAY, EVENT_TYPES, PURCHASE, RETURN, REVIEW, Simulated
from shoplens.demo.catalogue import Catalogue
from shoplens.demo.ids import event_key, mix32, mix64

# Dirty kinds, in the order of their variant number (1 + index) in the id space. The names of the
# field-level defects are silver's reason codes (shoplens.ingest.rules) where one exists.
DUPLICATE = "duplicate"
MALFORMED_JSON = "malformed_json"
MISSING_EVENT_ID = "missing_event_id"
MISSING_EVENT_TIME = "missing_event_time"
MISSING_EVENT_TYPE = "missing_event_type"
MISSING_ITEM_ID = "missing_item_id"
MALFORMED_EVENT_TIME = "malformed_event_time"
FUTURE_EVENT_TIME = "future_event_time"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
NEGATIVE_PRICE = "negative_price"
DIRTY_KINDS = (
    DUPLICATE,
    MALFORMED_JSON,
    MISSING_EVENT_ID,
    MISSING_EVENT_TIME,
    MISSING_EVENT_TYPE,
    MISSING_ITEM_ID,
    MALFORMED_EVENT_TIME,
    FUTURE_EVENT_TIME,
    UNKNOWN_EVENT_TYPE,
    NEGATIVE_PRICE,
)
# Relative frequency of each dirty kind; dirty_rate * weight is the kind's rate per valid event.
DIRTY_MIX = {
    DUPLICATE: 0.40,
    MALFORMED_JSON: 0.08,
    MISSING_EVENT_ID: 0.06,
    MISSING_EVENT_TIME: 0.06,
    MISSING_EVENT_TYPE: 0.06,
    MISSING_ITEM_ID: 0.06,
    MALFORMED_EVENT_TIME: 0.08,
    FUTURE_EVENT_TIME: 0.06,
    UNKNOWN_EVENT_TYPE: 0.08,
    NEGATIVE_PRICE: 0.06,
}
LATE_WITHIN_WINDOW = "late_within_window"
TOO_LATE = "too_late"
LATE_KINDS = (LATE_WITHIN_WINDOW, TOO_LATE)
DUPLICATE_OF_EARLIER_LANDING = "duplicate_of_earlier_landing"
UNKNOWN_TYPES = ("teleport", "levitate", "x_debug_ping")
TOO_LATE_EXTRA_DAYS = 7
FUTURE_DAYS = (2, 60)


@dataclass(frozen=True)
class Dirt:
    """How much dirt to plant: rates per valid event."""

    dirty_rate: float = 0.01
    late_rate: float = 0.008
    late_window_days: int = 3
    too_late_share: float = 0.15
    duplicate_next_day_share: float = 0.2


@dataclass
class Landed:
    """Where a batch's valid events land, and the dirty lines planted beside them."""

    day: np.ndarray  # landing day of each valid event
    part: np.ndarray
    order: np.ndarray  # uint64 order key within the part file
    dirty_lines: list[str]
    dirty_day: np.ndarray
    dirty_part: np.ndarray
    dirty_order: np.ndarray
    # counts[kind] = lines of that kind per landing day; "clean" = valid on-time events.
    counts: dict[str, np.ndarray]
    events_by_event_day: np.ndarray


@dataclass(frozen=True)
class Encoded:
    """A batch's lines laid out in one buffer, sorted by (landing day, part, order key)."""

    buffer: np.ndarray
    ends: np.ndarray  # end offset of each line
    file_key: np.ndarray  # day * parts + part of each line


class Formatter:
    """Formats events of a :class:`Simulated` batch as landing lines (see :mod:`shoplens.demo.jsonl`)."""

    def __init__(self, cat: Catalogue, start: dt.date, days: int, user_key: int):
        self.category = cat.category
        self.user_key = user_key
        self.dates = jsonl.text_matrix([(start + dt.timedelta(days=d)).isoformat() for d in range(days)])[0]
        self.types, self.type_lengths = jsonl.text_matrix([f'{name}","user_id":' for name in EVENT_TYPES])
        self.sources = np.stack([jsonl.const(',"source":"web"}'), jsonl.const(',"source":"app"}')])

    def _lines(self, sim: Simulated, select: np.ndarray, literal: list[str]) -> jsonl.Lines:
        n = select.size
        lines = jsonl.Lines(n + len(literal))
        clean = slice(0, n)
        c = jsonl.const
        t = sim.time[select]
        sod = t % DAY
        lines.add(
            jsonl.columns(
                n, c('{"event_id":"'), jsonl.hex_matrix(sim.event_id[select]), c('","event_time":"'),
                self.dates[t // DAY], c("T"), jsonl.two_digits(sod // 3600), c(":"),
                jsonl.two_digits(sod // 60 % 60), c(":"), jsonl.two_digits(sod % 60), c('Z","event_type":"'),
            ),
            clean,
        )
        etype = sim.etype[select]
        lines.add(self.types[etype], clean, self.type_lengths[etype])
        anonymous = sim.anonymous[select]
        user = jsonl.columns(n, c('"u'), jsonl.hex_matrix(mix32(sim.user[select], self.user_key))[:, 8:], c('"'))
        user[anonymous, :4] = c("null")
        lines.add(user, clean, np.where(anonymous, 4, user.shape[1]))
        lines.add(
            jsonl.columns(n, c(',"session_key":"s'), jsonl.hex_matrix(sim.session_key[select]), c('","item_id":"i')),
            clean,
        )
        item = sim.item[select]
        _add_number(lines, item, clean)
        lines.add(c('","category_id":"c'), clean)
        _add_number(lines, self.category[item], clean)
        lines.add(c('"'), clean)
        priced = np.flatnonzero(etype != REVIEW)
        if priced.size:
            cents = sim.price_cents[select[priced]]
            lines.add(c(',"price":'), priced)
            _add_number(lines, cents // 100, priced)
            lines.add(jsonl.columns(priced.size, c("."), jsonl.two_digits(cents % 100)), priced)
        counted = np.flatnonzero((etype == CART) | (etype == PURCHASE) | (etype == RETURN))
        if counted.size:
            lines.add(c(',"quantity":'), counted)
            _add_number(lines, sim.quantity[select[counted]], counted)
        ordered = np.flatnonzero((etype == PURCHASE) | (etype == RETURN))
        if ordered.size:
            lines.add(
                jsonl.columns(ordered.size, c(',"order_id":"o'), jsonl.hex_matrix(sim.order[select[ordered]]), c('"')),
                ordered,
            )
        reviews = np.flatnonzero(etype == REVIEW)
        if reviews.size:
            stars = (sim.rating[select[reviews]] + ord("0")).astype(np.uint8)[:, None]
            lines.add(jsonl.columns(reviews.size, c(',"rating":'), stars, c(',"review_text":"')), reviews)
            texts, lengths = jsonl.text_matrix([sim.texts[k] for k in sim.text[select[reviews]].tolist()])
            lines.add(texts, reviews, lengths)
            lines.add(c('"'), reviews)
        lines.add(self.sources[sim.app[select].astype(np.intp)], clean)
        if literal:
            texts, lengths = jsonl.text_matrix(literal)
            lines.add(texts, slice(n, n + len(literal)), lengths)
        return lines

    def text(self, sim: Simulated, select: np.ndarray) -> list[str]:
        """Returns the lines (without newline) of the selected events, in the given order."""
        if select.size == 0:
            return []
        buffer, _ = self._lines(sim, select, []).build(np.arange(select.size))
        return buffer.tobytes().decode("ascii").split("\n")[:-1]

    def encode(self, sim: Simulated, landed: Landed, parts: int) -> Encoded:
        """Returns every line of a batch (valid events, then its dirty lines) sorted for writing."""
        file_key = np.concatenate([landed.day * parts + landed.part, landed.dirty_day * parts + landed.dirty_part])
        order = np.lexsort((np.concatenate([landed.order, landed.dirty_order]), file_key))
        buffer, ends = self._lines(sim, np.arange(sim.size), landed.dirty_lines).build(order)
        return Encoded(buffer=buffer, ends=ends, file_key=file_key[order])


def _add_number(lines: jsonl.Lines, values: np.ndarray, rows: np.ndarray | slice) -> None:
    matrix, lengths = jsonl.decimal_matrix(values)
    lines.add(matrix, rows, lengths, right=True)


def plant(
    rng: np.random.Generator,
    sim: Simulated,
    formatter: Formatter,
    dirt: Dirt,
    start: dt.date,
    days: int,
    parts: int,
    part_of: np.ndarray,
    event_id_key: int,
) -> Landed:
    """Returns where a batch's valid events land (some late) and the dirty lines planted from them.

    ``part_of`` gives each event's part file (by its user).
    """
    n = sim.size
    day = sim.time // DAY
    # Late events: land lag days after their event date, if that is still a landing date.
    window = dirt.late_window_days
    late = rng.random(n) < dirt.late_rate
    too = (rng.random(n) < dirt.too_late_share) | (window < 1)
    within_weights = 0.5 ** np.arange(max(window, 1))
    lag_within = 1 + np.searchsorted(np.cumsum(within_weights) / within_weights.sum(), rng.random(n), side="right")
    lag_within = np.minimum(lag_within, max(window, 1))
    lag_too = rng.integers(window + 1, window + 1 + TOO_LATE_EXTRA_DAYS, n)
    lag = np.where(too, lag_too, lag_within)
    late &= day + lag < days
    landing = np.where(late, day + lag, day)
    on_time = ~late

    counts = {
        "clean": np.bincount(day[on_time], minlength=days),
        LATE_WITHIN_WINDOW: np.bincount(landing[late & ~too], minlength=days),
        TOO_LATE: np.bincount(landing[late & too], minlength=days),
    }
    # One draw per event picks at most one dirty kind: kind k where the draw falls in its slice of [0, 1).
    bounds = np.cumsum([dirt.dirty_rate * DIRTY_MIX[kind] for kind in DIRTY_KINDS])
    which = np.where(on_time, np.searchsorted(bounds, rng.random(n), side="right"), len(DIRTY_KINDS))
    which[(which == DIRTY_KINDS.index(NEGATIVE_PRICE)) & (sim.etype == REVIEW)] = len(DIRTY_KINDS)
    order = np.argsort(which, kind="stable")
    cut = np.searchsorted(which[order], np.arange(len(DIRTY_KINDS) + 1))
    chosen_by_kind = [order[cut[k] : cut[k + 1]] for k in range(len(DIRTY_KINDS))]
    # The source lines of all dirty lines, formatted by the same code as the valid lines.
    sources = iter(formatter.text(sim, np.concatenate(chosen_by_kind)))

    lines: list[str] = []
    out_day, out_part, out_order = [], [], []
    for variant, (kind, chosen) in enumerate(zip(DIRTY_KINDS, chosen_by_kind, strict=True), start=1):
        k = chosen.size
        src_day = day[chosen]
        part = part_of[chosen]
        made = [next(sources) for _ in range(k)]
        if kind == DUPLICATE:
            next_day = (rng.random(k) < dirt.duplicate_next_day_share) & (src_day + 1 < days)
            land = src_day + next_day
            part = rng.integers(0, parts, k)
            counts[DUPLICATE_OF_EARLIER_LANDING] = np.bincount(land[next_day], minlength=days)
        else:
            land = src_day
            fresh = mix64(event_key(sim.user[chosen], sim.seq[chosen], variant), event_id_key)
            made = _dirty_lines(rng, kind, made, fresh, src_day, start)
        counts[kind] = np.bincount(land, minlength=days)
        lines.extend(made)
        out_day.append(land)
        out_part.append(part)
        out_order.append(event_key(sim.user[chosen], sim.seq[chosen], variant))
    return Landed(
        day=landing,
        part=part_of,
        order=event_key(sim.user, sim.seq),
        dirty_lines=lines,
        dirty_day=np.concatenate(out_day),
        dirty_part=np.concatenate(out_part),
        dirty_order=np.concatenate(out_order),
        counts=counts,
        events_by_event_day=np.bincount(day, minlength=days),
    )


def _dirty_lines(
    rng: np.random.Generator, kind: str, sources: list[str], fresh: np.ndarray, days: np.ndarray, start: dt.date
) -> list[str]:
    """Returns one line with exactly one defect of ``kind`` per source line (given a fresh event id)."""
    k = len(sources)
    as_null = (rng.random(k) < 0.5).tolist()
    pick = rng.random(k).tolist()
    offset_days = rng.integers(FUTURE_DAYS[0], FUTURE_DAYS[1] + 1, k).tolist()
    offset_s = rng.integers(0, DAY, k).tolist()
    made = []
    for j, (line, new_id, d) in enumerate(zip(sources, fresh.tolist(), days.tolist(), strict=True)):
        event = json.loads(line)
        event["event_id"] = f"{new_id:016x}"
        field = {MISSING_EVENT_ID: "event_id", MISSING_EVENT_TIME: "event_time",
                 MISSING_EVENT_TYPE: "event_type", MISSING_ITEM_ID: "item_id"}.get(kind)
        if field is not None:
            if as_null[j]:
                event[field] = None
            else:
                del event[field]
        elif kind == MALFORMED_EVENT_TIME:
            date = (start + dt.timedelta(days=d)).isoformat()
            bad = (f"{date[:4]}-13-{date[8:]}T10:15:00Z", f"{date}T25:61:00Z", "not-a-timestamp", "N/A",
                   "0000-00-00T00:00:00Z")
            event["event_time"] = bad[int(pick[j] * len(bad))]
        elif kind == FUTURE_EVENT_TIME:
            when = dt.datetime.combine(start, dt.time()) + dt.timedelta(days=d + offset_days[j], seconds=offset_s[j])
            event["event_time"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind == UNKNOWN_EVENT_TYPE:
            event["event_type"] = UNKNOWN_TYPES[int(pick[j] * len(UNKNOWN_TYPES))]
        elif kind == NEGATIVE_PRICE:
            event["price"] = -abs(event["price"])
        text = json.dumps(event, separators=(",", ":"))
        if kind == MALFORMED_JSON:
            # A truncated line: at least the opening brace, never the closing one.
            text = text[: 1 + int(pick[j] * (len(text) - 2))]
        made.append(text)
    return made


class PartWriter:
    """Appends sorted lines to ``<root>/events/<date>/part-NNNNN.jsonl``; every file exists from the start."""

    def __init__(self, root: Path, start: dt.date, days: int, parts: int):
        self.parts = parts
        self.folders = [root / "events" / (start + dt.timedelta(days=d)).isoformat() for d in range(days)]
        self.lines_written = np.zeros(days, dtype=np.int64)
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
            for p in range(parts):
                self.path(folder, p).touch()

    @staticmethod
    def path(folder: Path, part: int) -> Path:
        return folder / f"part-{part:05d}.jsonl"

    def write(self, batches: list[Encoded]) -> None:
        """Appends a block of batches: each file gets its lines batch by batch, in one open."""
        pieces: dict[int, list[memoryview]] = {}
        for batch in batches:
            keys = batch.file_key
            if keys.size == 0:
                continue
            first = np.concatenate([[0], np.flatnonzero(np.diff(keys)) + 1])
            last = np.concatenate([first[1:], [keys.size]]) - 1
            starts = np.concatenate([[0], batch.ends[:-1]])
            view = memoryview(batch.buffer)
            for key, a, b in zip(keys[first].tolist(), first.tolist(), last.tolist(), strict=True):
                pieces.setdefault(key, []).append(view[int(starts[a]) : int(batch.ends[b])])
                self.lines_written[key // self.parts] += b - a + 1
        for key in sorted(pieces):
            day, part = divmod(key, self.parts)
            with open(self.path(self.folders[day], part), "ab") as f:
                for piece in pieces[key]:
                    f.write(piece)

    def finish(self) -> None:
        for folder in self.folders:
            (folder / "_SUCCESS").touch()
