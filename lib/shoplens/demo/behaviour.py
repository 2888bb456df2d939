"""How the demo shop's visitors behave: life cycles, sessions, the funnel, returns, reviews, bots.

One call simulates one *cohort* (a fixed number of consecutive users) from the cohort's own random
stream, vectorised with numpy over all of its users, sessions and events. Because a cohort's
stream depends only on (seed, cohort number), the events of a user never depend on how cohorts are
grouped into write blocks. The result is a :class:`Simulated`: the cohort's valid events as
columns, sorted by (user, time), plus the ground truth about its users.

Sessions are planted so that a 30-minute inactivity rule recovers them exactly: consecutive events
of a session are at most ``max_gap_s`` (20 minutes) apart, and a session starts at least
``min_session_gap_s`` (40 minutes) after everything of the same user before it (sessions that would
start sooner are not kept). Returns and reviews come days after a purchase, outside any session,
each with its own session key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from shoplens.demo import words
from shoplens.demo.catalogue import Catalogue
from shoplens.demo.ids import event_key, mix64

DAY = 86_400

VIEW, CART, PURCHASE, RETURN, REVIEW = range(5)
EVENT_TYPES = ("view", "cart", "purchase", "return", "review")

ACTIVE, NEW, FADING, CHURNED, BOT = range(5)
LIFECYCLES = ("active", "new", "fading", "churned", "bot")

# Share of users by life cycle, in LIFECYCLES order (bots are planted separately).
LIFECYCLE_SHARE = (0.45, 0.25, 0.18, 0.12)
# Sessions by hour of day (UTC; the demo shop's time zone is UTC): quiet nights, busy evenings.
HOURLY_WEIGHT = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 6, 7, 7, 6, 6, 6, 7, 8, 9, 10, 10, 8, 5], dtype=float)
HOURLY_CDF = np.cumsum(HOURLY_WEIGHT) / HOURLY_WEIGHT.sum()
DISCOUNTS_PERCENT = np.array([10, 15, 20, 25, 30])
# Low nibble of the id inputs: 0 browsing session, 1 order (post-purchase sessions use event_key(.., 15)).
_SESSION_VARIANT, _ORDER_VARIANT, _POST_SESSION_VARIANT = 0, 1, 15


@dataclass(frozen=True)
class Behaviour:
    """The behaviour model's parameters (recorded in the manifest). Rates are per event or per line."""

    sessions_per_day_median: float = 0.12
    sessions_per_day_sigma: float = 1.1
    fading_efold_days: tuple[float, float] = (2.0, 8.0)
    churn_between: tuple[float, float] = (0.05, 0.85)  # share of the period
    anonymous_session_share: float = 0.12
    app_share: float = 0.45
    favourite_categories: int = 4
    background_taste: float = 0.2  # share of a user's views drawn from the shop-wide category mix
    views_per_session_mean: float = 5.0
    views_dispersion: float = 0.9  # negative binomial r of (views - 1)
    max_views_per_session: int = 60
    gap_median_s: float = 54.0  # within a session (Taobao UserBehavior: median 54 s, IQR 21..138 s)
    gap_sigma: float = 1.3
    max_gap_s: int = 1200
    min_session_gap_s: int = 2400
    cart_gap_s: tuple[int, int] = (5, 90)
    checkout_gap_s: tuple[int, int] = (30, 600)
    view_to_cart: float = 0.06
    cart_to_purchase: float = 0.35
    buyer_sigma: float = 0.5  # per-user log-normal multiplier of view_to_cart, mean 1
    quantity_p: float = 0.78  # geometric: P(quantity = 1)
    max_quantity: int = 9
    discount_share: float = 0.05
    return_rate: float = 0.08
    return_quality_slope: float = 0.6
    return_lag_days: tuple[float, float] = (2.0, 14.0)
    partial_return_share: float = 0.3
    review_rate: float = 0.10
    review_rate_returned: float = 0.25
    review_lag_days: tuple[float, float] = (3.0, 21.0)
    rating_mean: float = 4.1
    rating_quality: float = 0.9
    rating_noise: float = 0.9
    rating_return_penalty: float = 1.3
    bot_crawl_views: tuple[int, int] = (700, 1400)
    bot_gap_s: tuple[int, int] = (2, 3)
    bot_jitter_share: float = 0.1

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IdKeys:
    """Keys of the id mixers, derived from the seed."""

    event: int
    session: int
    order: int
    user: int


@dataclass
class Simulated:
    """One cohort's (or bot's) valid events, sorted by (user, time), and its users' ground truth."""

    user: np.ndarray  # global user index
    seq: np.ndarray  # position in the user's history
    time: np.ndarray  # seconds since the start date, UTC
    etype: np.ndarray
    item: np.ndarray
    price_cents: np.ndarray  # -1: no price (reviews)
    quantity: np.ndarray  # 0: none
    order: np.ndarray  # uint64 order id, meaningful for purchases and returns
    rating: np.ndarray  # 0: none
    text: np.ndarray  # index into texts, -1: none
    texts: list[str]
    session_key: np.ndarray  # uint64
    anonymous: np.ndarray  # bool
    app: np.ndarray  # bool: source app, else web
    event_id: np.ndarray  # uint64
    users: list[dict]  # ground truth per user, in user order
    stats: dict[str, int]

    @property
    def size(self) -> int:
        return int(self.user.size)


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For segment lengths, returns (segment of each element, first element of it, position in it)."""
    owner = np.repeat(np.arange(counts.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, first, np.arange(owner.size) - first


def _keep_separated(owner: np.ndarray, start: np.ndarray, end: np.ndarray, min_gap: int) -> np.ndarray:
    """Sessions sorted by (owner, start): true for those starting min_gap after every earlier end."""
    big = np.int64(1) << np.int64(42)
    ends = np.maximum.accumulate(owner * big + end)
    previous = np.concatenate([[np.iinfo(np.int64).min // 2], ends[:-1]])
    return owner * big + start >= previous + min_gap


def simulate_humans(
    rng: np.random.Generator,
    cat: Catalogue,
    beh: Behaviour,
    keys: IdKeys,
    first_user: int,
    n_users: int,
    days: int,
) -> Simulated:
    """Returns the valid events of users ``first_user .. first_user + n_users - 1``."""
    horizon = days * DAY
    n = n_users
    life = rng.choice(4, size=n, p=LIFECYCLE_SHARE)
    join = np.where(life == NEW, rng.uniform(0, horizon, n), 0.0)
    lo, hi = beh.churn_between
    leave = np.where(life == CHURNED, rng.uniform(lo * horizon, hi * horizon, n), float(horizon))
    fading = life == FADING
    efold = np.where(fading, rng.uniform(*beh.fading_efold_days, n) * DAY, 1.0)
    rate = beh.sessions_per_day_median * np.exp(beh.sessions_per_day_sigma * rng.standard_normal(n))
    buyer = np.exp(beh.buyer_sigma * rng.standard_normal(n) - beh.buyer_sigma**2 / 2)
    m = beh.favourite_categories
    favourites = cat.sample_categories(rng.random((n, m)))
    taste = rng.dirichlet(np.ones(m), n)

    # Sessions: a Poisson process whose rate is constant or decays (fading), between join and leave.
    span = leave - join
    decayed = efold * -np.expm1(-span / efold)
    exposure_days = np.where(fading, decayed, span) / DAY
    per_user = rng.poisson(rate * exposure_days)
    su = np.repeat(np.arange(n), per_user)
    u = rng.random(su.size)
    steady = join[su] + u * span[su]
    decaying = join[su] - efold[su] * np.log1p(-u * -np.expm1(-span[su] / efold[su]))
    t = np.where(fading[su], decaying, steady)
    # Time of day from the hourly profile, keeping the day (unless that leaves the user's span).
    hour = np.searchsorted(HOURLY_CDF, rng.random(su.size), side="right")
    diurnal = np.floor(t / DAY) * DAY + (hour + rng.random(su.size)) * 3600
    t = np.where((diurnal >= join[su]) & (diurnal < leave[su]), diurnal, t)
    start = np.minimum(np.floor(t).astype(np.int64), horizon - 1)
    order = np.lexsort((start, su))
    su, start = su[order], start[order]
    n_sessions = su.size
    anonymous = rng.random(n_sessions) < beh.anonymous_session_share
    app = rng.random(n_sessions) < beh.app_share
    session_no = _segments(np.bincount(su, minlength=n))[2]

    # Views: how many, which categories (favourites or the shop-wide mix), which items.
    r = beh.views_dispersion
    extra_mean = beh.views_per_session_mean - 1
    n_views = np.minimum(1 + rng.negative_binomial(r, r / (r + extra_mean), n_sessions), beh.max_views_per_session)
    vs, vfirst, vpos = _segments(n_views)
    vu = su[vs]
    n_v = vs.size
    background = rng.random(n_v) < beh.background_taste
    shop_wide = cat.sample_categories(rng.random(n_v))
    which = np.minimum((rng.random(n_v)[:, None] > np.cumsum(taste, axis=1)[vu]).sum(axis=1), m - 1)
    vcat = np.where(background, shop_wide, favourites[vu, which])
    item = cat.sample_items(vcat, rng.random(n_v))
    # Planted sequences: after an item with a partner, the partner follows with its probability.
    previous = np.concatenate([[0], item[:-1]])
    follows = (vpos > 0) & (cat.partner[previous] >= 0) & (rng.random(n_v) < cat.follow_probability)
    item = np.where(follows, cat.partner[previous], item)

    # The funnel: some views put the item in the cart; some cart lines are bought at checkout.
    carted = rng.random(n_v) < np.minimum(beh.view_to_cart * buyer[vu], 0.9)
    gap = np.clip(np.round(beh.gap_median_s * np.exp(beh.gap_sigma * rng.standard_normal(n_v))), 1, beh.max_gap_s)
    cart_gap = rng.integers(beh.cart_gap_s[0], beh.cart_gap_s[1] + 1, n_v)
    advance = gap.astype(np.int64) + carted * cart_gap
    before = np.cumsum(advance) - advance
    vtime = start[vs] + before - before[vfirst]
    last = np.cumsum(n_views) - 1
    session_last = vtime[last] + carted[last] * cart_gap[last]

    cidx = np.flatnonzero(carted)
    n_c = cidx.size
    quantity = np.minimum(rng.geometric(beh.quantity_p, n_c), beh.max_quantity)
    bought = rng.random(n_c) < beh.cart_to_purchase
    checkout = rng.integers(beh.checkout_gap_s[0], beh.checkout_gap_s[1] + 1, n_sessions)
    has_order = np.bincount(vs[cidx[bought]], minlength=n_sessions) > 0
    purchase_time = session_last + checkout
    session_end = np.where(has_order, purchase_time, session_last)
    kept = _keep_separated(su, start, session_end, beh.min_session_gap_s)

    # Purchase lines: the item's price that day, rarely discounted; one order per session.
    pline = cidx[bought]
    ps = vs[pline]
    n_p = pline.size
    discounted = rng.random(n_p) < beh.discount_share
    percent = DISCOUNTS_PERCENT[rng.integers(0, DISCOUNTS_PERCENT.size, n_p)]
    ptime = purchase_time[ps]
    pprice = cat.price_cents(item[pline], ptime // DAY)
    pprice = np.where(discounted, np.round(pprice * (100 - percent) / 100).astype(np.int64), pprice)
    pquantity = quantity[bought]
    order_id = mix64(event_key(first_user + su, session_no, _ORDER_VARIANT), keys.order)

    # Returns (more likely for poor items) and reviews (ratings follow quality, worse after a return).
    quality = cat.quality[item[pline]]
    slope = beh.return_quality_slope
    p_return = np.minimum(beh.return_rate * np.exp(-slope * quality - slope**2 / 2), 0.6)
    returned = rng.random(n_p) < p_return
    rtime = ptime + np.floor(rng.uniform(*beh.return_lag_days, n_p) * DAY).astype(np.int64)
    partial = (pquantity > 1) & (rng.random(n_p) < beh.partial_return_share)
    rquantity = np.where(partial, 1 + np.floor(rng.random(n_p) * (pquantity - 1)).astype(np.int64), pquantity)
    rapp = rng.random(n_p) < beh.app_share
    p_review = np.where(returned, beh.review_rate_returned, beh.review_rate)
    reviewed = ~anonymous[ps] & (rng.random(n_p) < p_review)
    latent = beh.rating_mean + beh.rating_quality * quality + beh.rating_noise * rng.standard_normal(n_p)
    rating = np.clip(np.round(latent - beh.rating_return_penalty * returned), 1, 5).astype(np.int64)
    vtime_review = ptime + np.floor(rng.uniform(*beh.review_lag_days, n_p) * DAY).astype(np.int64)
    vapp = rng.random(n_p) < beh.app_share

    # Keep what falls in a kept session and before the end of the period.
    view_ok = kept[vs] & (vtime < horizon)
    cart_ok = kept[vs[cidx]] & (vtime[cidx] + cart_gap[cidx] < horizon)
    purchase_ok = kept[ps] & (ptime < horizon)
    return_ok = purchase_ok & returned & (rtime < horizon)
    review_ok = purchase_ok & reviewed & (vtime_review < horizon)
    n_reviews = int(review_ok.sum())
    texts = _review_texts(rng, rating[review_ok])

    vi = np.flatnonzero(view_ok)
    ci = cidx[cart_ok]
    pi = np.flatnonzero(purchase_ok)
    ri = np.flatnonzero(return_ok)
    wi = np.flatnonzero(review_ok)
    sizes = (vi.size, ci.size, pi.size, ri.size, wi.size)

    def by_type(view=0, cart=0, purchase=0, returned=0, review=0, dtype=np.int64) -> np.ndarray:
        """One column over (views, carts, purchases, returns, reviews); a scalar fills its type."""
        values = (view, cart, purchase, returned, review)
        return np.concatenate(
            [np.broadcast_to(np.asarray(v, dtype), (k,)) for v, k in zip(values, sizes, strict=True)]
        )

    cols = {
        "user": by_type(vu[vi], vu[ci], su[ps[pi]], su[ps[ri]], su[ps[wi]]),
        "time": by_type(vtime[vi], vtime[ci] + cart_gap[ci], ptime[pi], rtime[ri], vtime_review[wi]),
        "item": by_type(item[vi], item[ci], item[pline[pi]], item[pline[ri]], item[pline[wi]]),
        "quantity": by_type(0, quantity[cart_ok], pquantity[pi], rquantity[ri], 0),
        "order": by_type(0, 0, order_id[ps[pi]], order_id[ps[ri]], 0, dtype=np.uint64),
        "rating": by_type(0, 0, 0, 0, rating[wi]),
        "session": by_type(vs[vi], vs[ci], ps[pi], -1, -1),
        "anonymous": by_type(
            anonymous[vs[vi]], anonymous[vs[ci]], anonymous[ps[pi]], anonymous[ps[ri]], False, dtype=bool
        ),
        "app": by_type(app[vs[vi]], app[vs[ci]], app[ps[pi]], rapp[ri], vapp[wi], dtype=bool),
        "paid": by_type(0, 0, pprice[pi], pprice[ri], 0),
    }
    etype = np.repeat(np.arange(5), sizes)
    text = np.full(etype.size, -1, dtype=np.int64)
    text[etype == REVIEW] = np.arange(n_reviews)
    day = cols["time"] // DAY
    price = np.full(etype.size, -1, dtype=np.int64)
    browsing = etype <= CART
    price[browsing] = cat.price_cents(cols["item"][browsing], day[browsing])
    paid = (etype == PURCHASE) | (etype == RETURN)
    price[paid] = cols["paid"][paid]
    session_of = session_no[np.maximum(cols["session"], 0)]
    session_key_input = event_key(first_user + cols["user"], session_of, _SESSION_VARIANT)

    sim = _assemble(
        first_user, n, cols["user"], cols["time"], etype, cols["item"], price, cols["quantity"], cols["order"],
        cols["rating"], text, texts, session_key_input, cols["session"] < 0, cols["anonymous"], cols["app"], keys,
    )

    # Ground truth per user and counts for the manifest.
    logged_in = kept & ~anonymous
    sessions = np.bincount(su[logged_in], minlength=n)
    anon_sessions = np.bincount(su[kept & anonymous], minlength=n)
    events = np.bincount(sim.user - first_user, minlength=n)
    purchases = np.bincount(su[ps[pi]], minlength=n)
    users = []
    for k in range(n):
        merged: dict[int, float] = {}
        for c, w in zip(favourites[k].tolist(), taste[k].tolist(), strict=True):
            merged[c] = merged.get(c, 0.0) + w
        users.append(
            {
                "lifecycle": LIFECYCLES[life[k]],
                "joined_at": float(join[k]) if life[k] == NEW else None,
                "churned_at": float(leave[k]) if life[k] == CHURNED else None,
                "fade_efold_days": float(efold[k] / DAY) if fading[k] else None,
                "sessions_per_day": float(rate[k]),
                "taste": sorted(merged.items(), key=lambda cw: (-cw[1], cw[0])),
                "sessions": int(sessions[k]),
                "anonymous_sessions": int(anon_sessions[k]),
                "events": int(events[k]),
                "purchases": int(purchases[k]),
            }
        )
    sim.users = users
    sim.stats = {
        "sessions_logged_in": int(sessions.sum()),
        "sessions_anonymous": int(anon_sessions.sum()),
        "sessions_dropped_too_close": int((~kept).sum()),
        "views": int(vi.size),
        "carts": int(ci.size),
        "purchases": int(pi.size),
        "orders": int(np.unique(ps[pi]).size),
        "returns": int(ri.size),
        "reviews": int(wi.size),
        "anonymous_events": int(sim.anonymous.sum()),
        "discounted_purchases": int(discounted[pi].sum()),
        **{f"rating_{k}": int((rating[wi] == k).sum()) for k in range(1, 6)},
    }
    return sim


def _review_texts(rng: np.random.Generator, ratings: np.ndarray) -> list[str]:
    """Returns one review text per rating: 2-4 phrases, each positive with a rating-dependent chance."""
    n_phrases = rng.integers(2, 5, ratings.size)
    p_positive = np.asarray(words.POSITIVE_PHRASE_PROBABILITY)[np.repeat(ratings, n_phrases)]
    positive = (rng.random(p_positive.size) < p_positive).tolist()
    pick = rng.random(p_positive.size).tolist()
    texts = []
    at = 0
    for count in n_phrases.tolist():
        phrases = []
        for is_positive, r in zip(positive[at : at + count], pick[at : at + count], strict=True):
            pool = words.POSITIVE_PHRASES if is_positive else words.NEGATIVE_PHRASES
            phrases.append(pool[int(r * len(pool))])
        at += count
        texts.append(". ".join(p[0].upper() + p[1:] for p in phrases) + ".")
    return texts


def _assemble(
    first_user: int,
    n_users: int,
    user: np.ndarray,
    time: np.ndarray,
    etype: np.ndarray,
    item: np.ndarray,
    price: np.ndarray,
    quantity: np.ndarray,
    order: np.ndarray,
    rating: np.ndarray,
    text: np.ndarray,
    texts: list[str],
    session_key_input: np.ndarray,
    post_purchase: np.ndarray,
    anonymous: np.ndarray,
    app: np.ndarray,
    keys: IdKeys,
) -> Simulated:
    """Sorts events by (user, time, build order), numbers them per user and computes their ids."""
    sort = np.lexsort((np.arange(user.size), time, user))
    user = user[sort]
    seq = _segments(np.bincount(user, minlength=n_users))[2]
    guser = first_user + user
    post = post_purchase[sort]
    session_input = session_key_input[sort]
    session_input[post] = event_key(guser[post], seq[post], _POST_SESSION_VARIANT)
    return Simulated(
        user=guser,
        seq=seq,
        time=time[sort],
        etype=etype[sort],
        item=item[sort],
        price_cents=price[sort],
        quantity=quantity[sort],
        order=order[sort],
        rating=rating[sort],
        text=text[sort],
        texts=texts,
        session_key=mix64(session_input, keys.session),
        anonymous=anonymous[sort],
        app=app[sort],
        event_id=mix64(event_key(guser, seq), keys.event),
        users=[],
        stats={},
    )


def bot_plan(rng: np.random.Generator, beh: Behaviour, crawls: int, days: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns a bot's crawl starts and lengths (kept crawls only) and its inter-event gap in seconds."""
    horizon = days * DAY
    gap = int(rng.integers(beh.bot_gap_s[0], beh.bot_gap_s[1] + 1))
    length = rng.integers(beh.bot_crawl_views[0], beh.bot_crawl_views[1] + 1, crawls)
    longest = length * (gap + 1)
    start = np.floor(rng.random(crawls) * np.maximum(horizon - longest, 1)).astype(np.int64)
    order = np.argsort(start, kind="stable")
    start, length = start[order], length[order]
    kept = _keep_separated(np.zeros(crawls, np.int64), start, start + length * (gap + 1), beh.min_session_gap_s)
    return start[kept], length[kept], gap


def simulate_bot(
    rng: np.random.Generator, cat: Catalogue, beh: Behaviour, keys: IdKeys, user: int, crawls: int, days: int
) -> Simulated:
    """Returns a bot's events: crawls of many views of distinct random items at a regular pace."""
    start, length, gap = bot_plan(rng, beh, crawls, days)
    owner, first, _ = _segments(length)
    n = owner.size
    jitter = np.where(rng.random(n) < beh.bot_jitter_share, rng.choice(np.array([-1, 1]), n), 0)
    step = np.maximum(gap + jitter, 1)
    step[first == np.arange(n)] = 0
    within = np.cumsum(step)
    time = start[owner] + within - within[first]
    item = rng.integers(0, cat.n_items, n)
    zeros = np.zeros(n, dtype=np.int64)
    sim = _assemble(
        user, 1, zeros, time, np.full(n, VIEW), item, cat.price_cents(item, time // DAY), zeros,
        np.zeros(n, np.uint64), zeros, np.full(n, -1), [], event_key(np.full(n, user), owner, _SESSION_VARIANT),
        np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), keys,
    )
    sim.users = [
        {
            "lifecycle": LIFECYCLES[BOT],
            "joined_at": None,
            "churned_at": None,
            "fade_efold_days": None,
            "sessions_per_day": float(start.size / days),
            "taste": [],
            "sessions": int(start.size),
            "anonymous_sessions": 0,
            "events": n,
            "purchases": 0,
        }
    ]
    sim.stats = {"bot_sessions": int(start.size), "bot_views": n}
    return sim
