"""``python -m shoplens.demo.generator``: the demo shop, generated, with the ground truth it planted.

Writes, under ``--out``:

- ``events/<YYYY-MM-DD>/part-NNNNN.jsonl`` (+ ``_SUCCESS``): the landing files of each day, in the
  landing contract (docs/LANDING.md); a user's lines always go to the same part number.
- ``items/<YYYY-MM-DD>/part-00000.jsonl``: the catalogue on the start date, then only the items
  whose price changed on each price-change day (every 7th day).
- ``_truth/``: ``manifest.json`` (arguments, counts per landing date, funnel, sessions, bots,
  planted pairs, popularity), ``users.csv`` (one row per user), ``items.csv``, ``categories.csv``.

Same arguments, same bytes: every random draw comes from a numpy PCG64 stream addressed by
(seed, purpose, cohort), where a cohort is a fixed run of :data:`COHORT_USERS` users, and ids are
keyed hashes of (user, position). ``--block-users`` only sets how many users (or 40 times as many
lines) are buffered before one append per part file, so memory is bounded by it and by the capped
catalogue, not by ``--events``, and the output does not depend on it. Users are generated cohort
after cohort until the valid events reach the target. See README.md beside this module.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from shoplens.demo import catalogue as catalogue_mod
from shoplens.demo.behaviour import LIFECYCLES, Behaviour, IdKeys, Simulated, bot_plan, simulate_bot, simulate_humans
from shoplens.demo.ids import MAX_USERS, mix32, user_id_strings
from shoplens.demo.landing import (
    DIRTY_KINDS,
    DIRTY_MIX,
    DUPLICATE_OF_EARLIER_LANDING,
    FUTURE_DAYS,
    LATE_KINDS,
    TOO_LATE_EXTRA_DAYS,
    UNKNOWN_TYPES,
    Dirt,
    Encoded,
    Formatter,
    Landed,
    PartWriter,
    plant,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
COHORT_USERS = 128
DEFAULT_BLOCK_USERS = 4096
# A write block ends after block_users users or block_users * LINES_PER_USER lines, whichever first.
LINES_PER_USER = 40
ZIPF_EXPONENT = 1.0
FOLLOW_PROBABILITY = 0.35
INACTIVITY_RULE_MINUTES = 30
STAGING = "_demo_generator_staging"
TRUTH = "_truth"

# Random streams: SeedSequence(seed, spawn_key=(stream, n)).
_CATALOGUE, _HUMANS, _BOTS, _HUMAN_DIRT, _BOT_DIRT, _KEYS = range(6)

SCALE_RULES = {
    "items": "clip(round(events / 25), 200, 2_000_000)",
    "categories": "clip(round(sqrt(items) / 2), 8, 400)",
    "sequential_pairs": "clip(items // 20, 10, 1000), antecedents among the top 30% by popularity",
    "bots": (
        "max(2, round(events * bot_share / 5000)); each bot crawls max(1, round(events * bot_share / bots / 1050)) "
        "times, 700-1400 views a crawl (so at small scales bots are more than bot_share of the events)"
    ),
    "users": f"cohorts of {COHORT_USERS} users until the human valid events reach max(events - bot events, events / 2)",
    "parts_per_day": "max(4, ceil(events / days / 500_000)) unless given",
}

CALIBRATION = {
    "view_to_cart": "0.06 per view; Taobao UserBehavior prefix (../shared/data): 4,497 cart / 75,873 pv = 5.9%",
    "cart_to_purchase": (
        "0.35 per cart line; Taobao prefix: 1,750 buy / 4,497 cart = 38.9%; the commonly cited ~70% cart "
        "abandonment (Baymard Institute) implies ~30%: we take 35%"
    ),
    "within_session_gap": (
        "log-normal, median 54 s, sigma 1.3, capped at 20 min; Taobao prefix gaps <= 30 min: median 54 s, "
        "IQR 21-138 s"
    ),
    "events_per_session": (
        "1 + NegBin(r=0.9, mean 4) views (capped at 60) plus carts and purchases; Taobao prefix with a "
        "30-minute rule: mean 6.0, median 3"
    ),
    "popularity": (
        "Zipf, exponent 1.0 on rank (the usual e-commerce long tail); the 815-user Taobao prefix is too "
        "sparse to fit one"
    ),
    "returns_reviews_ratings": (
        "assumptions: ~8% of purchase lines returned, ~10% reviewed (25% if returned), J-shaped ratings "
        "(mean ~4); both are cut by the end of the period (they come days after the purchase)"
    ),
}


@dataclass(frozen=True)
class Scale:
    items: int
    categories: int
    sequential_pairs: int
    bots: int
    bot_crawls: int
    parts: int


def scale_for(events: int, days: int, bot_share: float, parts: int | None = None) -> Scale:
    """Returns the catalogue size, bots and part files for a target number of events (SCALE_RULES)."""
    items = int(np.clip(round(events / 25), 200, 2_000_000))
    bots = max(2, round(events * bot_share / 5000))
    mean_crawl = sum(Behaviour().bot_crawl_views) / 2
    return Scale(
        items=items,
        categories=int(np.clip(round(math.sqrt(items) / 2), 8, 400)),
        sequential_pairs=int(np.clip(items // 20, 10, 1000)),
        bots=bots,
        bot_crawls=max(1, round(events * bot_share / bots / mean_crawl)),
        parts=parts or max(4, math.ceil(events / days / 500_000)),
    )


def _rng(seed: int, stream: int, n: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, n))))


class _Totals:
    """Counts accumulated over all batches, per landing day."""

    def __init__(self, days: int):
        self.days = days
        self.kinds = {k: np.zeros(days, dtype=np.int64) for k in ("clean", *LATE_KINDS, *DIRTY_KINDS)}
        self.kinds[DUPLICATE_OF_EARLIER_LANDING] = np.zeros(days, dtype=np.int64)
        self.by_event_day = np.zeros(days, dtype=np.int64)
        self.stats: dict[str, int] = {}

    def add(self, landed: Landed, stats: dict[str, int]) -> None:
        for kind, counts in landed.counts.items():
            self.kinds[kind] += counts
        self.by_event_day += landed.events_by_event_day
        for key, value in stats.items():
            self.stats[key] = self.stats.get(key, 0) + value


class _UsersCsv:
    """Streams ``_truth/users.csv``: one row per user, in user-index order."""

    HEADER = (
        "user_id,lifecycle,is_bot,joined_at,churned_at,fade_efold_days,sessions_per_day,taste,"
        "sessions,anonymous_sessions,events,purchases\n"
    )

    def __init__(self, file: TextIO, start: dt.date, user_key: int):
        self.file = file
        self.file.write(self.HEADER)
        self.origin = dt.datetime.combine(start, dt.time())
        self.user_key = user_key
        self.lifecycles = dict.fromkeys(LIFECYCLES, 0)

    def _when(self, seconds: float | None) -> str:
        if seconds is None:
            return ""
        return (self.origin + dt.timedelta(seconds=int(seconds))).strftime("%Y-%m-%dT%H:%M:%SZ")

    def write(self, first_user: int, users: list[dict]) -> None:
        ids = user_id_strings(np.arange(first_user, first_user + len(users)), self.user_key)
        rows = []
        for uid, u in zip(ids, users, strict=True):
            self.lifecycles[u["lifecycle"]] += 1
            taste = "|".join(f"c{c}:{w:.3f}" for c, w in u["taste"])
            fade = "" if u["fade_efold_days"] is None else f"{u['fade_efold_days']:.2f}"
            rows.append(
                f"{uid},{u['lifecycle']},{str(u['lifecycle'] == 'bot').lower()},{self._when(u['joined_at'])},"
                f"{self._when(u['churned_at'])},{fade},{u['sessions_per_day']:.4f},{taste},{u['sessions']},"
                f"{u['anonymous_sessions']},{u['events']},{u['purchases']}\n"
            )
        self.file.writelines(rows)


class _Sink:
    """Lands simulated batches (lateness, dirt, formatting) and writes them a block of users at a time."""

    def __init__(
        self, writer: PartWriter, users: _UsersCsv, formatter: Formatter, dirt: Dirt, start: dt.date, days: int,
        part_key: int, event_id_key: int, block_users: int,
    ):
        self.writer, self.users, self.formatter, self.dirt = writer, users, formatter, dirt
        self.start, self.days, self.part_key, self.event_id_key = start, days, part_key, event_id_key
        self.block_users = block_users
        self.totals = _Totals(days)
        self._buffer: list[Encoded] = []
        self._buffered_users = 0
        self._buffered_lines = 0

    def add(self, sim: Simulated, dirt_rng: np.random.Generator, first_user: int, n_users: int) -> None:
        parts = self.writer.parts
        part_of = (mix32(sim.user, self.part_key) % np.uint32(parts)).astype(np.int64)
        landed = plant(dirt_rng, sim, self.formatter, self.dirt, self.start, self.days, parts, part_of,
                       self.event_id_key)
        self.totals.add(landed, sim.stats)
        self._buffer.append(self.formatter.encode(sim, landed, parts))
        self.users.write(first_user, sim.users)
        self._buffered_users += n_users
        self._buffered_lines += sim.size
        # Bots have thousands of events each: a block is also cut by lines, so memory stays bounded.
        if self._buffered_users >= self.block_users or self._buffered_lines >= self.block_users * LINES_PER_USER:
            self.flush()

    def flush(self) -> None:
        self.writer.write(self._buffer)
        self._buffer, self._buffered_users, self._buffered_lines = [], 0, 0


def generate(
    out_dir: str | Path,
    start: str | dt.date,
    days: int,
    events: int,
    seed: int,
    *,
    block_users: int = DEFAULT_BLOCK_USERS,
    parts: int | None = None,
    dirty_rate: float = Dirt.dirty_rate,
    late_rate: float = Dirt.late_rate,
    late_window_days: int = Dirt.late_window_days,
    too_late_share: float = Dirt.too_late_share,
    bot_share: float = 0.02,
    overwrite: bool = False,
) -> dict:
    """Generates the demo shop under ``out_dir`` (see the module docstring for the layout).

    The folders are written under ``<out_dir>/_demo_generator_staging`` and moved into place at the
    end, so a reader never sees a half-written day. Existing targets are an error unless
    ``overwrite``.

    Returns: the ground-truth manifest (also written to ``_truth/manifest.json``).
    """
    start = dt.date.fromisoformat(start) if isinstance(start, str) else start
    if days < 1 or events < 1000 or seed < 0 or block_users < 1:
        raise ValueError("need days >= 1, events >= 1000, seed >= 0 and block_users >= 1")
    if not (0 <= dirty_rate <= 0.2 and 0 <= late_rate <= 0.2 and late_window_days >= 0 and 0 <= too_late_share <= 1):
        raise ValueError("dirty_rate and late_rate in [0, 0.2], late_window_days >= 0, too_late_share in [0, 1]")
    scale = scale_for(events, days, bot_share, parts)
    dirt = Dirt(
        dirty_rate=dirty_rate, late_rate=late_rate, late_window_days=late_window_days, too_late_share=too_late_share
    )
    beh = Behaviour()
    dates = [(start + dt.timedelta(days=d)).isoformat() for d in range(days)]
    every = catalogue_mod.PRICE_CHANGE_EVERY_DAYS
    item_dates = [dates[d] for d in (0, *range(every, days, every))]
    out = Path(out_dir)
    targets = [Path("events", d) for d in dates] + [Path("items", d) for d in item_dates] + [Path(TRUTH)]
    existing = [str(out / t) for t in targets if (out / t).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"demo shop output already exists (pass overwrite): {existing[:3]}")
    stage = out / STAGING
    if stage.exists():
        shutil.rmtree(stage)
    (stage / TRUTH).mkdir(parents=True)

    words = np.random.SeedSequence(seed, spawn_key=(_KEYS, 0)).generate_state(8, dtype=np.uint64).tolist()
    keys = IdKeys(event=words[0], session=words[1], order=words[2], user=words[3] & 0xFFFFFFFF)
    part_key, brand_key, title_key = (w & 0xFFFFFFFF for w in words[4:7])

    cat = catalogue_mod.build_catalogue(
        _rng(seed, _CATALOGUE), scale.items, scale.categories, days, ZIPF_EXPONENT, scale.sequential_pairs,
        FOLLOW_PROBABILITY, brand_key,
    )
    items_written = catalogue_mod.write_items(cat, stage / "items", start, title_key)
    catalogue_mod.write_truth(cat, stage / TRUTH)
    log.info("catalogue: %d items in %d categories", cat.n_items, cat.n_categories)

    # Bots are planned first (their volume sets the humans' target) and generated last.
    bot_events = sum(
        int(bot_plan(_rng(seed, _BOTS, b), beh, scale.bot_crawls, days)[1].sum()) for b in range(scale.bots)
    )
    human_target = max(events - bot_events, events // 2)
    human_stats: dict[str, int] = {}
    with open(stage / TRUTH / "users.csv", "w", encoding="utf-8", newline="\n") as users_file:
        users = _UsersCsv(users_file, start, keys.user)
        writer = PartWriter(stage, start, days, scale.parts)
        sink = _Sink(writer, users, Formatter(cat, start, days, keys.user), dirt, start, days, part_key, keys.event,
                     block_users)
        produced = 0
        cohort = 0
        while produced < human_target:
            if (cohort + 2) * COHORT_USERS + scale.bots > MAX_USERS:
                raise ValueError("too many users for the id layout")
            first = cohort * COHORT_USERS
            sim = simulate_humans(_rng(seed, _HUMANS, cohort), cat, beh, keys, first, COHORT_USERS, days)
            produced += sim.size
            for key, value in sim.stats.items():
                human_stats[key] = human_stats.get(key, 0) + value
            sink.add(sim, _rng(seed, _HUMAN_DIRT, cohort), first, COHORT_USERS)
            cohort += 1
        n_humans = cohort * COHORT_USERS
        log.info("humans: %d users, %d valid events", n_humans, produced)
        bot_users = list(range(n_humans, n_humans + scale.bots))
        for b, user in enumerate(bot_users):
            sim = simulate_bot(_rng(seed, _BOTS, b), cat, beh, keys, user, scale.bot_crawls, days)
            sink.add(sim, _rng(seed, _BOT_DIRT, b), user, 1)
        sink.flush()
        writer.finish()

    manifest = _manifest(
        start=start, days=days, events=events, seed=seed, scale=scale, dirt=dirt, beh=beh, cat=cat,
        dates=dates, writer=writer, totals=sink.totals, human_stats=human_stats, n_humans=n_humans,
        bot_ids=user_id_strings(np.array(bot_users), keys.user), lifecycles=users.lifecycles,
        items_written=items_written, bot_share=bot_share,
    )
    (stage / TRUTH / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _publish(stage, out, targets)
    log.info("demo shop written under %s: %d lines", out, manifest["totals"]["lines"])
    return manifest


def _publish(stage: Path, out: Path, targets: list[Path]) -> None:
    """Moves each staged folder to its place under ``out`` (replacing an older one), then drops the stage."""
    for target in targets:
        final = out / target
        if final.exists():
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        (stage / target).replace(final)
    shutil.rmtree(stage)


def _manifest(
    *, start, days, events, seed, scale, dirt, beh, cat, dates, writer, totals, human_stats, n_humans, bot_ids,
    lifecycles, items_written, bot_share,
) -> dict:
    kinds = totals.kinds
    lines = writer.lines_written
    per_date = {}
    for d, date in enumerate(dates):
        row = {"lines": int(lines[d]), "clean_events": int(kinds["clean"][d])}
        row.update({k: int(kinds[k][d]) for k in (*LATE_KINDS, *DIRTY_KINDS, DUPLICATE_OF_EARLIER_LANDING)})
        row["events_with_event_date"] = int(totals.by_event_day[d])
        if row["lines"] != row["clean_events"] + sum(row[k] for k in (*LATE_KINDS, *DIRTY_KINDS)):
            raise AssertionError(f"line count of {date} does not reconcile: {row}")
        per_date[date] = row
    summed = {key: sum(r[key] for r in per_date.values()) for key in next(iter(per_date.values()))}
    summed["valid_events"] = int(totals.by_event_day.sum())
    st = totals.stats
    hs = human_stats
    ratings = {str(k): hs.get(f"rating_{k}", 0) for k in range(1, 6)}
    n_ratings = sum(ratings.values())
    top = np.argsort(cat.rank)[:20]
    return {
        "generator": "shoplens.demo.generator",
        "format_version": FORMAT_VERSION,
        "arguments": {
            "start": start.isoformat(), "days": days, "events": events, "seed": seed, "parts": scale.parts,
            "dirty_rate": dirt.dirty_rate, "late_rate": dirt.late_rate, "late_window_days": dirt.late_window_days,
            "too_late_share": dirt.too_late_share, "bot_share": bot_share,
        },
        "scale": {
            "users": n_humans + len(bot_ids), "human_users": n_humans, "bots": len(bot_ids), "items": cat.n_items,
            "categories": cat.n_categories, "brands": len(cat.brand_names),
            "sequential_pairs": int((cat.partner >= 0).sum()), "parts_per_day": scale.parts,
            "cohort_users": COHORT_USERS, "rules": SCALE_RULES,
        },
        "landing_dates": dates,
        "per_date": per_date,
        "totals": summed,
        "dirty_kinds": list(DIRTY_KINDS),
        "late_kinds": list(LATE_KINDS),
        "dirt": {
            "dirty_rate": dirt.dirty_rate, "mix": DIRTY_MIX, "late_rate": dirt.late_rate,
            "late_window_days": dirt.late_window_days, "too_late_share": dirt.too_late_share,
            "too_late_lag_days": [dirt.late_window_days + 1, dirt.late_window_days + TOO_LATE_EXTRA_DAYS],
            "duplicate_next_day_share": dirt.duplicate_next_day_share, "unknown_event_types": list(UNKNOWN_TYPES),
            "future_event_time_days_after_landing": list(FUTURE_DAYS),
        },
        "funnel": {
            "scope": "valid events of human users (bots excluded), late ones included, dirty lines excluded",
            "views": hs["views"], "carts": hs["carts"], "purchases": hs["purchases"], "orders": hs["orders"],
            "returns": hs["returns"], "reviews": hs["reviews"], "discounted_purchases": hs["discounted_purchases"],
            "anonymous_events": hs["anonymous_events"],
            "view_to_cart": hs["carts"] / max(hs["views"], 1),
            "cart_to_purchase": hs["purchases"] / max(hs["carts"], 1),
            "return_rate": hs["returns"] / max(hs["purchases"], 1),
            "review_rate": hs["reviews"] / max(hs["purchases"], 1),
            "configured": {"view_to_cart": beh.view_to_cart, "cart_to_purchase": beh.cart_to_purchase,
                           "return_rate": beh.return_rate, "review_rate": beh.review_rate},
        },
        "reviews": {"rating_counts": ratings,
                    "mean_rating": sum(int(k) * v for k, v in ratings.items()) / max(n_ratings, 1)},
        "sessions": {
            "logged_in": hs["sessions_logged_in"], "anonymous": hs["sessions_anonymous"],
            "bot": st.get("bot_sessions", 0), "dropped_too_close": hs["sessions_dropped_too_close"],
            "inactivity_rule_minutes": INACTIVITY_RULE_MINUTES, "max_gap_within_s": beh.max_gap_s,
            "min_gap_between_s": beh.min_session_gap_s,
            "note": "browsing sessions (view, cart, purchase); returns and reviews are one-event visits outside them",
        },
        "bots": {
            "user_ids": bot_ids, "events": st.get("bot_views", 0), "sessions": st.get("bot_sessions", 0),
            "gap_s": list(beh.bot_gap_s), "crawl_views": list(beh.bot_crawl_views),
            "behaviour": "logged-in views only, random items, a regular gap with 10% +-1 s jitter",
        },
        "lifecycle": lifecycles,
        "sequential_pairs": cat.pairs(),
        "popularity": {
            "law": "zipf", "exponent": cat.zipf_exponent, "items": cat.n_items,
            "weight": "rank ** -exponent, normalised; rank per item in _truth/items.csv",
            "top_items": [f"i{i}" for i in top.tolist()],
            "follow_probability": cat.follow_probability,
        },
        "items": {"rows_per_date": items_written, "price_change_every_days": catalogue_mod.PRICE_CHANGE_EVERY_DAYS,
                  "price_change_share": catalogue_mod.PRICE_CHANGE_SHARE,
                  "note": "the first date holds the whole catalogue; later dates only the items whose price changed"},
        "behaviour": beh.as_dict(),
        "calibration": CALIBRATION,
        "files": {"users": "users.csv", "items": "items.csv", "categories": "categories.csv"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="root folder (the landing root)")
    parser.add_argument("--start", required=True, type=dt.date.fromisoformat, help="first landing date, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--events", type=int, default=20_000, help="approximate number of valid events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--block-users", type=int, default=DEFAULT_BLOCK_USERS, help="users buffered per write")
    parser.add_argument("--parts", type=int, default=None, help="part files per day (default: by --events)")
    parser.add_argument("--dirty-rate", type=float, default=Dirt.dirty_rate)
    parser.add_argument("--late-rate", type=float, default=Dirt.late_rate)
    parser.add_argument("--late-window-days", type=int, default=Dirt.late_window_days)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    manifest = generate(
        args.out, args.start, args.days, args.events, args.seed, block_users=args.block_users, parts=args.parts,
        dirty_rate=args.dirty_rate, late_rate=args.late_rate, late_window_days=args.late_window_days,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - began
    totals = manifest["totals"]
    summary = {
        "out": str(args.out), "lines": totals["lines"], "valid_events": totals["valid_events"],
        "users": manifest["scale"]["users"], "items": manifest["scale"]["items"], "seconds": round(seconds, 2),
        "events_per_s": round(totals["valid_events"] / seconds),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
