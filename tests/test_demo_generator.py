"""The demo shop generator: same bytes for the same arguments, and the statistics it claims.

Every check re-reads the written files and classifies each line on its own (no generator code
involved), then compares with the ground truth in ``_truth/manifest.json``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from shoplens import schemas as S
from shoplens.demo import generate
from shoplens.demo.words import NEGATIVE_WORDS, POSITIVE_WORDS

KNOWN_TYPES = {"view", "cart", "purchase", "return", "review"}
BROWSING = {"view", "cart", "purchase"}
START = "2024-01-01"


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def parse_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None


def classify(root: Path, manifest: dict) -> tuple[dict[str, Counter], dict[str, dict]]:
    """Reads every landing line; returns (kind counts per landing date, valid events by event id)."""
    window = manifest["arguments"]["late_window_days"]
    per_date: dict[str, Counter] = {}
    valid: dict[str, dict] = {}
    for date in manifest["landing_dates"]:
        landing = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
        counts: Counter = Counter()
        for path in sorted((root / "events" / date).glob("part-*")):
            for line in path.read_text(encoding="utf-8").splitlines():
                counts["lines"] += 1
                try:
                    event = json.loads(line)
                except ValueError:
                    counts["malformed_json"] += 1
                    continue
                assert isinstance(event, dict)
                assert set(event) <= set(S.LANDING_EVENT_FIELDS), line
                when = parse_time(event.get("event_time"))
                if event.get("event_id") is None:
                    kind = "missing_event_id"
                elif event.get("event_time") is None:
                    kind = "missing_event_time"
                elif event.get("event_type") is None:
                    kind = "missing_event_type"
                elif when is None:
                    kind = "malformed_event_time"
                elif event["event_type"] not in KNOWN_TYPES:
                    kind = "unknown_event_type"
                elif when >= landing + dt.timedelta(days=2):
                    kind = "future_event_time"
                elif event.get("item_id") is None:
                    kind = "missing_item_id"
                elif event.get("price") is not None and event["price"] < 0:
                    kind = "negative_price"
                elif event["event_id"] in valid:
                    assert valid[event["event_id"]]["line"] == line, "a re-delivery must repeat the line exactly"
                    kind = "duplicate"
                    if valid[event["event_id"]]["landing"] != date:
                        counts["duplicate_of_earlier_landing"] += 1
                else:
                    lag = (landing.date() - when.date()).days
                    assert lag >= 0, line
                    kind = "clean_events" if lag == 0 else "late_within_window" if lag <= window else "too_late"
                    valid[event["event_id"]] = {**event, "time": when, "landing": date, "line": line}
                counts[kind] += 1
        per_date[date] = counts
    return per_date, valid


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_shop")
    manifest = generate(root, START, 28, 50_000, 7)
    per_date, valid = classify(root, manifest)
    users = list(csv.DictReader((root / "_truth" / "users.csv").open()))
    return root, manifest, per_date, valid, users


def test_same_arguments_give_the_same_bytes_whatever_the_block_size(tmp_path):
    generate(tmp_path / "a", START, 14, 20_000, 42)
    generate(tmp_path / "b", START, 14, 20_000, 42)
    # One cohort per write block instead of everything in one block: the files must not change.
    generate(tmp_path / "c", START, 14, 20_000, 42, block_users=1)
    generate(tmp_path / "d", START, 14, 20_000, 43)
    a = tree_hashes(tmp_path / "a")
    assert len([p for p in a if p.startswith("events/")]) == 14 * (4 + 1)
    assert a == tree_hashes(tmp_path / "b") == tree_hashes(tmp_path / "c")
    d = tree_hashes(tmp_path / "d")
    assert a.keys() == d.keys()
    assert all(a[p] != d[p] for p in a if p.endswith(".jsonl") and "items" not in p)


def assert_counts_match(manifest: dict, per_date: dict[str, Counter]) -> None:
    kinds = ["lines", "clean_events", *manifest["late_kinds"], *manifest["dirty_kinds"], "duplicate_of_earlier_landing"]
    for date in manifest["landing_dates"]:
        expected = {k: manifest["per_date"][date][k] for k in kinds}
        assert {k: per_date[date][k] for k in kinds} == expected, date


def test_every_planted_kind_found_by_parsing_equals_the_manifest(shop):
    _, manifest, per_date, _, _ = shop
    assert_counts_match(manifest, per_date)
    totals = manifest["totals"]
    assert all(totals[k] > 0 for k in (*manifest["late_kinds"], *manifest["dirty_kinds"])), totals
    dirty = sum(totals[k] for k in (*manifest["dirty_kinds"], *manifest["late_kinds"]))
    assert 0.01 < dirty / totals["lines"] < 0.03


def test_dirt_and_lateness_follow_their_parameters(tmp_path):
    manifest = generate(tmp_path, START, 10, 20_000, 3, dirty_rate=0.05, late_rate=0.05, late_window_days=1)
    per_date, _ = classify(tmp_path, manifest)
    assert_counts_match(manifest, per_date)
    totals = manifest["totals"]
    assert 0.015 < totals["duplicate"] / totals["lines"] < 0.025  # 0.4 of the 5% dirty rate
    # With a 1-day window, "late within window" means exactly one day late (classify() checked it).
    assert totals["too_late"] > 0 and 0.03 < totals["late_within_window"] / totals["lines"] < 0.05
    clean = generate(tmp_path / "clean", START, 5, 5_000, 3, dirty_rate=0, late_rate=0)
    assert clean["totals"]["lines"] == clean["totals"]["clean_events"] == clean["totals"]["valid_events"]


def test_valid_lines_follow_the_landing_contract(shop):
    root, manifest, _, valid, _ = shop
    assert sum(per["events_with_event_date"] for per in manifest["per_date"].values()) == len(valid)
    for date in manifest["landing_dates"]:
        folder = root / "events" / date
        assert (folder / "_SUCCESS").exists()
        assert len(list(folder.glob("part-*.jsonl"))) == manifest["scale"]["parts_per_day"]
    items = {}
    for line in (root / "items" / START / "part-00000.jsonl").read_text().splitlines():
        item = json.loads(line)
        assert set(item) == {"item_id", "category_id", "brand", "price", "title", "listed_date"}
        items[item["item_id"]] = item
    assert len(items) == manifest["scale"]["items"]
    for event in valid.values():
        assert event["event_time"].endswith("Z") and len(event["event_time"]) == 20
        assert event["item_id"] in items and event["category_id"] == items[event["item_id"]]["category_id"]
        assert event["session_key"] and event["source"] in ("web", "app")
        assert event["user_id"] is None or event["user_id"].startswith("u")
        if event["event_type"] in ("cart", "purchase", "return"):
            assert event["quantity"] >= 1 and event["price"] > 0
        if event["event_type"] in ("purchase", "return"):
            assert event["order_id"].startswith("o")
        if event["event_type"] == "review":
            assert 1 <= event["rating"] <= 5 and event["review_text"]
    anonymous = [e for e in valid.values() if e["user_id"] is None]
    assert 0.05 < len(anonymous) / len(valid) < 0.2
    # Returns repeat a purchase's order and item, days later, with no more units than bought.
    purchases = {(e["order_id"], e["item_id"]): e for e in valid.values() if e["event_type"] == "purchase"}
    returns = [e for e in valid.values() if e["event_type"] == "return"]
    assert returns
    for r in returns:
        bought = purchases[(r["order_id"], r["item_id"])]
        assert r["time"] - bought["time"] >= dt.timedelta(days=2) and r["quantity"] <= bought["quantity"]


def test_item_popularity_is_zipf_like(shop):
    _, manifest, _, valid, _ = shop
    bots = set(manifest["bots"]["user_ids"])
    views = Counter(e["item_id"] for e in valid.values() if e["event_type"] == "view" and e["user_id"] not in bots)
    counts = np.array(sorted(views.values(), reverse=True), dtype=float)
    top = counts[counts >= 5]
    slope = np.polyfit(np.log(np.arange(1, top.size + 1)), np.log(top), 1)[0]
    assert top.size > 100
    assert -1.4 < slope < -0.6, slope


def test_funnel_rates_match_the_configuration_and_the_manifest(shop):
    _, manifest, _, valid, _ = shop
    bots = set(manifest["bots"]["user_ids"])
    human = Counter(e["event_type"] for e in valid.values() if e["user_id"] not in bots or e["user_id"] is None)
    funnel = manifest["funnel"]
    assert {t: human[t] for t in ("view", "cart", "purchase", "return", "review")} == {
        "view": funnel["views"], "cart": funnel["carts"], "purchase": funnel["purchases"],
        "return": funnel["returns"], "review": funnel["reviews"],
    }
    assert abs(human["cart"] / human["view"] - funnel["configured"]["view_to_cart"]) < 0.01
    assert abs(human["purchase"] / human["cart"] - funnel["configured"]["cart_to_purchase"]) < 0.05
    orders = {e["order_id"] for e in valid.values() if e["event_type"] == "purchase"}
    assert len(orders) == funnel["orders"]


def test_a_30_minute_rule_recovers_the_planted_sessions(shop):
    _, manifest, _, valid, _ = shop
    times = defaultdict(list)
    for e in valid.values():
        if e["user_id"] is not None and e["event_type"] in BROWSING:
            times[e["user_id"]].append(e["time"].timestamp())
    gaps = np.concatenate([np.diff(sorted(t)) for t in times.values()])
    sessions = len(times) + int((gaps > 30 * 60).sum())
    planted = manifest["sessions"]["logged_in"] + manifest["sessions"]["bot"]
    assert abs(sessions - planted) <= 0.01 * planted, (sessions, planted)
    # Bimodal: gaps inside sessions are at most 20 minutes, gaps between them at least 40.
    assert not ((gaps > 20 * 60) & (gaps < 40 * 60)).any()
    assert np.median(gaps[gaps <= 20 * 60]) < 120 and np.median(gaps[gaps >= 40 * 60]) > 3 * 3600


def test_bots_are_far_faster_than_any_person(shop):
    _, manifest, _, valid, users = shop
    bots = set(manifest["bots"]["user_ids"])
    assert bots == {u["user_id"] for u in users if u["is_bot"] == "true"} and len(bots) >= 2
    per_hour = Counter((e["user_id"], e["time"].replace(minute=0, second=0)) for e in valid.values() if e["user_id"])
    busiest = defaultdict(int)
    for (user, _), n in per_hour.items():
        busiest[user] = max(busiest[user], n)
    slowest_bot = min(busiest[b] for b in bots)
    fastest_person = max(n for u, n in busiest.items() if u not in bots)
    assert slowest_bot > 300 and slowest_bot > 5 * fastest_person, (slowest_bot, fastest_person)
    bot_events = [e for e in valid.values() if e["user_id"] in bots]
    assert {e["event_type"] for e in bot_events} == {"view"}
    assert len({e["item_id"] for e in bot_events}) > 0.3 * manifest["scale"]["items"]


def test_review_words_follow_the_rating(shop):
    _, _, _, valid, _ = shop
    ratings, positive = [], []
    for e in valid.values():
        if e["event_type"] == "review":
            words = e["review_text"].lower().replace(".", " ").split()
            pos = sum(w in POSITIVE_WORDS for w in words)
            neg = sum(w in NEGATIVE_WORDS for w in words)
            ratings.append(e["rating"])
            positive.append(pos / (pos + neg))
    assert len(ratings) > 50
    assert np.corrcoef(ratings, positive)[0, 1] > 0.5
    assert 3.4 < np.mean(ratings) < 4.4


def test_planted_pairs_follow_each_other(shop):
    _, manifest, _, valid, _ = shop
    partner = {p["item_id"]: p["next_item_id"] for p in manifest["sequential_pairs"]}
    by_session = defaultdict(list)
    for e in valid.values():
        if e["event_type"] == "view":
            by_session[e["session_key"]].append((e["time"], e["event_id"], e["item_id"]))
    after, hits = 0, 0
    for views in by_session.values():
        items = [item for _, _, item in sorted(views)]
        for a, b in zip(items, items[1:], strict=False):
            if a in partner:
                after += 1
                hits += b == partner[a]
    assert after > 200 and hits / after > 0.25, (after, hits)


def test_life_cycles_bound_each_users_activity(shop):
    _, _, _, valid, users = shop
    first, last = {}, {}
    for e in valid.values():
        if e["user_id"] and e["event_type"] in BROWSING:
            first[e["user_id"]] = min(first.get(e["user_id"], e["time"]), e["time"])
            last[e["user_id"]] = max(last.get(e["user_id"], e["time"]), e["time"])
    labels = Counter(u["lifecycle"] for u in users)
    assert set(labels) == {"active", "new", "fading", "churned", "bot"}
    for u in users:
        uid = u["user_id"]
        if uid not in first:
            continue
        if u["lifecycle"] == "new":
            assert first[uid] >= parse_time(u["joined_at"])
        if u["lifecycle"] == "churned":
            # A session started before churning may run on for a few minutes.
            assert last[uid] < parse_time(u["churned_at"]) + dt.timedelta(hours=6)
    active = [first[u["user_id"]] for u in users if u["lifecycle"] == "fading" and u["user_id"] in first]
    late_share = np.mean([t.day > 14 for t in active])
    assert late_share < 0.2  # fading users are seen first early in the month


def test_existing_output_is_not_overwritten_unless_asked(tmp_path):
    generate(tmp_path, START, 2, 2_000, 1)
    with pytest.raises(FileExistsError):
        generate(tmp_path, START, 2, 2_000, 1)
    generate(tmp_path, START, 2, 2_000, 2, overwrite=True)
    assert json.loads((tmp_path / "_truth" / "manifest.json").read_text())["arguments"]["seed"] == 2
    assert not (tmp_path / "_demo_generator_staging").exists()
