"""The demo shop's catalogue: categories, brands, long-tailed prices, Zipf popularity, planted pairs.

Built once per run from its own random stream and held in memory as numpy arrays (its size is
capped, see :func:`shoplens.demo.generator.scale_for`). Users draw items through
:meth:`Catalogue.sample_items`, which makes the marginal item frequency exactly the Zipf weight
when category tastes average to :attr:`Catalogue.category_share`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shoplens.demo import words
from shoplens.demo.ids import mix32

PRICE_CHANGE_EVERY_DAYS = 7
PRICE_CHANGE_SHARE = 0.03
PRICE_CHANGE_SIGMA = 0.15
# Planted "next item" pairs start from the most popular items, so they are frequent enough to see.
PAIR_ANTECEDENT_TOP_SHARE = 0.3
_WRITE_CHUNK = 100_000


@dataclass(frozen=True)
class PriceChange:
    day: int  # day index from the start date; the new price holds from that day on
    items: np.ndarray  # sorted item indices
    cents: np.ndarray  # new price of each, in cents


@dataclass(frozen=True)
class Catalogue:
    zipf_exponent: float
    category: np.ndarray  # per item: category index
    brand: np.ndarray  # per item: brand index
    brand_names: list[str]
    base_cents: np.ndarray  # per item: price on the start date, in cents
    quality: np.ndarray  # per item: latent quality, standard normal (drives ratings and returns)
    rank: np.ndarray  # per item: popularity rank, 1 = most popular
    weight: np.ndarray  # per item: popularity weight rank**-s, sums to 1
    partner: np.ndarray  # per item: planted next item, -1 if none
    follow_probability: float
    listed_days_before: np.ndarray  # per item: days listed before the start date
    category_median_cents: np.ndarray  # per category
    category_share: np.ndarray  # per category: share of popularity weight (its traffic share)
    price_changes: tuple[PriceChange, ...]
    # Sampling structures: items ordered by category with their cumulative weight.
    by_category: np.ndarray
    cumulative: np.ndarray
    category_first: np.ndarray
    category_last: np.ndarray
    category_cdf: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.category.size)

    @property
    def n_categories(self) -> int:
        return int(self.category_share.size)

    def sample_categories(self, uniforms: np.ndarray) -> np.ndarray:
        """Returns categories drawn by traffic share, one per uniform in [0, 1)."""
        return np.minimum(np.searchsorted(self.category_cdf, uniforms, side="right"), self.n_categories - 1)

    def sample_items(self, categories: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Returns one item per (category, uniform), drawn by popularity weight within the category."""
        first = self.category_first[categories]
        last = self.category_last[categories]
        low = np.where(first > 0, self.cumulative[np.maximum(first - 1, 0)], 0.0)
        high = self.cumulative[last]
        pos = np.searchsorted(self.cumulative, low + uniforms * (high - low), side="right")
        return self.by_category[np.clip(pos, first, last)]

    def price_cents(self, items: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Returns each item's price in cents on the given day index (price changes applied)."""
        cents = self.base_cents[items]
        for change in self.price_changes:
            after = np.flatnonzero(days >= change.day)
            if after.size == 0 or change.items.size == 0:
                continue
            pos = np.minimum(np.searchsorted(change.items, items[after]), change.items.size - 1)
            hit = change.items[pos] == items[after]
            cents[after[hit]] = change.cents[pos[hit]]
        return cents

    def pairs(self) -> list[dict]:
        """Returns the planted sequential pairs, one dict per antecedent item, by item index."""
        antecedents = np.flatnonzero(self.partner >= 0)
        return [
            {"item_id": f"i{a}", "next_item_id": f"i{b}", "follow_probability": self.follow_probability}
            for a, b in zip(antecedents.tolist(), self.partner[antecedents].tolist(), strict=True)
        ]


def charm_cents(prices: np.ndarray) -> np.ndarray:
    """Returns prices rounded the way shops price: 24.99, 149.99, 4.49; never below 0.99."""
    prices = np.asarray(prices, dtype=np.float64)
    whole = np.round(prices) * 100 - 1
    tenths = np.round(prices * 10) * 10 - 1
    return np.maximum(np.where(prices >= 10, whole, tenths), 99).astype(np.int64)


def build_catalogue(
    rng: np.random.Generator,
    n_items: int,
    n_categories: int,
    days: int,
    zipf_exponent: float,
    n_pairs: int,
    follow_probability: float,
    brand_key: int,
) -> Catalogue:
    """Returns a catalogue of ``n_items`` items in ``n_categories`` categories."""
    # Category sizes vary (Dirichlet); every category has at least one item.
    size_share = rng.dirichlet(np.full(n_categories, 2.0))
    category = rng.choice(n_categories, size=n_items, p=size_share).astype(np.int64)
    category[rng.permutation(n_items)[:n_categories]] = np.arange(n_categories)
    counts = np.bincount(category, minlength=n_categories)

    # Long-tailed prices: log-normal around a category median.
    median = np.exp(rng.uniform(np.log(4.0), np.log(250.0), n_categories))
    sigma = rng.uniform(0.35, 0.8, n_categories)
    base_cents = charm_cents(median[category] * np.exp(sigma[category] * rng.standard_normal(n_items)))
    quality = rng.standard_normal(n_items)
    listed_days_before = rng.integers(1, 731, n_items)

    # Brands: a few per category, the first ones of each category more common.
    per_category = np.clip(np.round(counts / 25 * np.exp(rng.normal(0, 0.4, n_categories))), 2, 200).astype(np.int64)
    brand_first = np.concatenate([[0], np.cumsum(per_category)[:-1]])
    brand = brand_first[category] + np.floor(per_category[category] * rng.random(n_items) ** 2).astype(np.int64)
    brand_names = _brand_names(int(per_category.sum()), brand_key)

    # Zipf popularity: a random rank per item, weight rank**-s.
    rank = rng.permutation(n_items).astype(np.int64) + 1
    weight = rank.astype(np.float64) ** -zipf_exponent
    weight /= weight.sum()
    by_category = np.argsort(category, kind="stable")
    cumulative = np.cumsum(weight[by_category])
    category_last = np.cumsum(counts) - 1
    category_first = category_last - counts + 1
    category_share = np.bincount(category, weights=weight, minlength=n_categories)
    category_cdf = np.cumsum(category_share)
    category_cdf /= category_cdf[-1]

    partner = _plant_pairs(rng, rank, category, by_category, category_first, counts, n_pairs)
    cat = Catalogue(
        zipf_exponent=zipf_exponent,
        category=category,
        brand=brand,
        brand_names=brand_names,
        base_cents=base_cents,
        quality=quality,
        rank=rank,
        weight=weight,
        partner=partner,
        follow_probability=follow_probability,
        listed_days_before=listed_days_before,
        category_median_cents=charm_cents(median),
        category_share=category_share,
        price_changes=(),
        by_category=by_category,
        cumulative=cumulative,
        category_first=category_first,
        category_last=category_last,
        category_cdf=category_cdf,
    )
    changes: list[PriceChange] = []
    for day in range(PRICE_CHANGE_EVERY_DAYS, days, PRICE_CHANGE_EVERY_DAYS):
        chosen = np.sort(rng.choice(n_items, size=max(1, round(PRICE_CHANGE_SHARE * n_items)), replace=False))
        current = cat.price_cents(chosen, np.full(chosen.size, day - 1))
        new = charm_cents(current / 100 * np.exp(rng.normal(0, PRICE_CHANGE_SIGMA, chosen.size)))
        changes.append(PriceChange(day=day, items=chosen, cents=new))
        cat = dataclasses.replace(cat, price_changes=tuple(changes))
    return cat


def _plant_pairs(
    rng: np.random.Generator,
    rank: np.ndarray,
    category: np.ndarray,
    by_category: np.ndarray,
    category_first: np.ndarray,
    counts: np.ndarray,
    n_pairs: int,
) -> np.ndarray:
    """Returns per item its planted next item (another item of its category), or -1."""
    n_items = rank.size
    partner = np.full(n_items, -1, dtype=np.int64)
    candidates = np.flatnonzero(rank <= max(n_pairs, int(PAIR_ANTECEDENT_TOP_SHARE * n_items)))
    n_pairs = min(n_pairs, candidates.size)
    if n_pairs == 0:
        return partner
    antecedents = np.sort(rng.choice(candidates, size=n_pairs, replace=False))
    cats = category[antecedents]
    size = counts[cats]
    pick = category_first[cats] + np.floor(rng.random(n_pairs) * size).astype(np.int64)
    follower = by_category[pick]
    # Never the item itself: take the next item of the category instead (wrapping round).
    same = follower == antecedents
    first = category_first[cats[same]]
    follower[same] = by_category[first + (pick[same] - first + 1) % size[same]]
    # A category with a single item pairs with any other item.
    lone = follower == antecedents
    follower[lone] = (antecedents[lone] + 1 + rng.integers(0, n_items - 1, lone.sum())) % n_items
    partner[antecedents] = follower
    return partner


def _brand_names(n_brands: int, key: int) -> list[str]:
    syl = words.BRAND_SYLLABLES
    n = len(syl)
    names = []
    for h in mix32(np.arange(n_brands), key).tolist():
        parts = [syl[h % n], syl[(h // n) % n]]
        if (h // (n * n)) % 3:
            parts.append(syl[(h // (n * n * 3)) % n])
        names.append("".join(parts).capitalize())
    return names


def category_name(c: int) -> str:
    nouns = words.CATEGORY_NOUNS
    series = c // len(nouns)
    return nouns[c % len(nouns)] + (f" {series + 1}" if series else "")


def item_lines(cat: Catalogue, items: np.ndarray, cents: np.ndarray, start: dt.date, title_key: int) -> Iterator[str]:
    """Yields one catalogue JSON line per item (item_id, category_id, brand, price, title, listed_date)."""
    adjectives = words.TITLE_ADJECTIVES
    nouns = words.CATEGORY_NOUNS
    for lo in range(0, items.size, _WRITE_CHUNK):
        chunk = items[lo : lo + _WRITE_CHUNK]
        hashes = mix32(chunk, title_key).tolist()
        listed = [
            (start - dt.timedelta(days=d)).isoformat() for d in cat.listed_days_before[chunk].tolist()
        ]
        rows = zip(
            chunk.tolist(),
            cat.category[chunk].tolist(),
            cat.brand[chunk].tolist(),
            (cents[lo : lo + _WRITE_CHUNK] / 100).tolist(),
            hashes,
            listed,
            strict=True,
        )
        for i, c, b, price, h, day in rows:
            brand = cat.brand_names[b]
            title = f"{brand} {adjectives[h % len(adjectives)]} {nouns[c % len(nouns)]} {100 + (h >> 8) % 900}"
            yield (
                f'{{"item_id":"i{i}","category_id":"c{c}","brand":"{brand}","price":{price:.2f},'
                f'"title":"{title}","listed_date":"{day}"}}\n'
            )


def write_items(cat: Catalogue, folder: Path, start: dt.date, title_key: int) -> dict[str, int]:
    """Writes the catalogue snapshot (start date) and one delta per price-change day.

    Returns: the number of item rows written per items date folder.
    """
    written = {}
    snapshots = [(0, np.arange(cat.n_items), cat.base_cents)]
    snapshots += [(ch.day, ch.items, ch.cents) for ch in cat.price_changes]
    for day, items, cents in snapshots:
        date = (start + dt.timedelta(days=day)).isoformat()
        target = folder / date
        target.mkdir(parents=True, exist_ok=True)
        with open(target / "part-00000.jsonl", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(item_lines(cat, items, cents, start, title_key))
        (target / "_SUCCESS").touch()
        written[date] = int(items.size)
    return written


def write_truth(cat: Catalogue, folder: Path) -> None:
    """Writes ``items.csv`` (one row per item) and ``categories.csv`` (one row per category)."""
    with open(folder / "items.csv", "w", encoding="utf-8", newline="\n") as f:
        f.write("item_id,category_id,brand,base_price,popularity_rank,popularity_weight,quality,next_item_id\n")
        for lo in range(0, cat.n_items, _WRITE_CHUNK):
            idx = np.arange(lo, min(lo + _WRITE_CHUNK, cat.n_items))
            rows = zip(
                idx.tolist(),
                cat.category[idx].tolist(),
                cat.brand[idx].tolist(),
                (cat.base_cents[idx] / 100).tolist(),
                cat.rank[idx].tolist(),
                cat.weight[idx].tolist(),
                cat.quality[idx].tolist(),
                cat.partner[idx].tolist(),
                strict=True,
            )
            f.writelines(
                f"i{i},c{c},{cat.brand_names[b]},{p:.2f},{r},{w:.6e},{q:.4f},{'' if n < 0 else f'i{n}'}\n"
                for i, c, b, p, r, w, q, n in rows
            )
    counts = np.bincount(cat.category, minlength=cat.n_categories)
    with open(folder / "categories.csv", "w", encoding="utf-8", newline="\n") as f:
        f.write("category_id,name,items,traffic_share,median_price\n")
        for c in range(cat.n_categories):
            f.write(
                f"c{c},{category_name(c)},{counts[c]},{cat.category_share[c]:.6f},"
                f"{cat.category_median_cents[c] / 100:.2f}\n"
            )
