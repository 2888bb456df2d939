"""Synthetic silver events for the sessions and sequences tests: seeded, small, with late arrivals.

Writing silver rows directly (instead of landing → bronze → silver) keeps these tests to seconds per
run date while reproducing what the nightly silver job does to a window: run R replaces event dates
[R - late_days, R] with the events of those dates that have arrived by R.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
from collections.abc import Iterable
from decimal import Decimal
from zoneinfo import ZoneInfo

from shoplens import catalog
from shoplens import schemas as S
from shoplens.io import replace_slice

UTC = dt.UTC
TYPES = ("view", "view", "view", "view", "cart", "fav", "purchase", "remove_from_cart", "review")


@dataclasses.dataclass(frozen=True)
class Event:
    event_id: str
    time: dt.datetime
    event_type: str
    user_id: str | None
    session_key: str | None
    item_id: str
    arrival: dt.date
    dataset: str = S.DATASET_LANDING
    category_id: str | None = None
    price: Decimal | None = None
    quantity: int | None = None
    is_bot: bool = False

    def event_date(self, timezone: str) -> dt.date:
        return self.time.astimezone(ZoneInfo(timezone)).date()


def ev(event_id: str, time: str, user: str | None = "u1", item: str = "i1", event_type: str = "view", **kw) -> Event:
    """A hand-written event; ``time`` is ISO UTC; it arrives on its own date unless told."""
    t = dt.datetime.fromisoformat(time).replace(tzinfo=UTC)
    kw.setdefault("arrival", t.date())
    kw.setdefault("session_key", None if user else f"k-{event_id}")
    return Event(event_id, t, event_type, user, item_id=item, **kw)


def generate(
    start: dt.date,
    days: int,
    seed: int,
    users: int = 30,
    anonymous: int = 15,
    items: int = 60,
    empty_days: Iterable[int] = (),
    late_share: float = 0.1,
    late_days: int = 3,
    bot_start: dt.timedelta = dt.timedelta(days=1, hours=18),
) -> list[Event]:
    """Bursts of activity per actor, plus one bot-like actor active every 20 minutes for 40 hours
    from ``start + bot_start``.

    Returns: the events in a shuffled order, each with the date it arrives (its own date, or up to
    ``late_days`` later for ``late_share`` of them, but by the last day); no events on ``empty_days``
    (offsets).
    """
    rng = random.Random(seed)
    empty = set(empty_days)
    events: list[Event] = []
    base = dt.datetime.combine(start, dt.time(), UTC)
    last_day = start + dt.timedelta(days=days - 1)
    item_ids = [f"item-{n:03d}" for n in range(items)]
    weights = [1 / (n + 1) for n in range(items)]

    def add(actor: tuple[str | None, str | None], t: dt.datetime, kind: str | None = None) -> None:
        if (t.date() - start).days in empty or not 0 <= (t.date() - start).days < days:
            return
        kind = kind or rng.choice(TYPES)
        late = rng.randint(1, late_days) if rng.random() < late_share else 0
        n = len(events)
        events.append(
            Event(
                event_id=hashlib.sha256(f"{seed}-{n}".encode()).hexdigest()[:16],
                time=t,
                event_type=kind,
                user_id=actor[0],
                session_key=actor[1],
                item_id=rng.choices(item_ids, weights)[0],
                arrival=min(t.date() + dt.timedelta(days=late), last_day),
                category_id=rng.choice([None, "c1", "c2", "c3"]),
                price=Decimal(rng.randint(100, 9999)) / 100 if kind in ("purchase", "cart") else None,
                quantity=rng.choice([None, 1, 2]) if kind == "purchase" else None,
            )
        )

    actors = [(f"user-{n}", f"key-u{n}") for n in range(users)] + [(None, f"anon-{n}") for n in range(anonymous)]
    for actor in actors:
        t = base + dt.timedelta(minutes=rng.randint(0, 24 * 60))
        while t < base + dt.timedelta(days=days):
            for _ in range(rng.randint(1, 8)):
                add(actor, t)
                # Mostly short steps; sometimes exactly the same time (ties), sometimes near the gap.
                t += dt.timedelta(seconds=rng.choice([0, 5, 40, 300, 600, 1799, 1800, 1801, 2400]))
            t += dt.timedelta(hours=rng.choice([1, 3, 9, 20, 30]))
            if actor[0] is None:
                break  # an anonymous key lives for one visit
    bot = ("user-bot", None)
    t = base + bot_start
    for _ in range(40 * 3):
        add(bot, t, "view")
        t += dt.timedelta(minutes=20)
    rng.shuffle(events)
    return events


def silver_frame(spark, events: Iterable[Event], timezone: str):
    """Returns the events as silver.events rows (every column of its schema)."""
    rows = [
        (
            e.event_id, e.time, e.event_date(timezone), e.event_type, e.event_type, e.user_id, e.session_key,
            e.item_id, e.category_id, e.price, e.quantity, None, None, "synthetic", e.is_bot, e.dataset,
            e.arrival, "synthetic",
        )
        for e in events
    ]
    return spark.createDataFrame(rows, S.SILVER_EVENTS)


def write_nightly_silver(spark, cfg, events: list[Event], run_date: dt.date) -> None:
    """What silver looks like after run ``run_date``: its window replaced with what has arrived."""
    window_start = run_date - dt.timedelta(days=cfg.silver.late_days)
    tz = cfg.shop.timezone
    arrived = [
        e for e in events
        if e.dataset == S.DATASET_LANDING and window_start <= e.event_date(tz) <= run_date and e.arrival <= run_date
    ]
    replace_slice(
        silver_frame(spark, arrived, tz),
        catalog.SILVER_EVENTS,
        cfg,
        {S.EVENT_DATE: (window_start, run_date), S.DATASET: S.DATASET_LANDING},
    )


def write_all_silver(spark, cfg, events: list[Event], dataset: str = S.DATASET_LANDING) -> None:
    """Replaces all of ``dataset``'s silver rows with ``events`` (as a bulk load does)."""
    replace_slice(silver_frame(spark, events, cfg.shop.timezone), catalog.SILVER_EVENTS, cfg, {S.DATASET: dataset})


def reference_sessions(events: Iterable[Event], gap: dt.timedelta, max_length: dt.timedelta) -> set[frozenset[str]]:
    """The session rule in plain Python: per actor, cut at gaps > ``gap``, then chunks of
    ``max_length`` from each activity's first event. Returns: each session as its set of event ids."""
    by_actor: dict[tuple[str, str], dict[str, Event]] = {}
    for e in events:
        actor = ("u:" + e.user_id) if e.user_id is not None else ("s:" + str(e.session_key))
        by_actor.setdefault((e.dataset, actor), {})[e.event_id] = e
    result: set[frozenset[str]] = set()
    for actor_events in by_actor.values():
        ordered = sorted(actor_events.values(), key=lambda e: (e.time, e.event_id))
        current: list[str] = []
        key = None
        previous = activity_start = None
        for e in ordered:
            if previous is None or e.time - previous > gap:
                activity_start = e.time
            chunk = (e.time - activity_start) // max_length
            if (activity_start, chunk) != key and current:
                result.add(frozenset(current))
                current = []
            key = (activity_start, chunk)
            current.append(e.event_id)
            previous = e.time
        result.add(frozenset(current))
    return result
