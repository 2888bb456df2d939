"""``gold.segment_summary``: each RFM segment and each cluster of a snapshot, in words.

Statistics are over non-bot users (a ``bots`` row counts the bots apart). A group is described by
its size, its share of users and of revenue (net spend in the RFM window), and the two features
where its mean departs most from the dataset's, in standard deviations. The aggregation happens in
Spark; only one row per group (a dozen or so) reaches the driver to be put into words.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S

KIND_SEGMENT = "rfm_segment"
KIND_CLUSTER = "cluster"
KIND_BOTS = "bots"

# Feature column → how an analyst reads "higher" and "lower" of it.
WORDS = {
    "recency": ("bought longer ago", "bought more recently"),
    "log_frequency": ("more orders", "fewer orders"),
    "log_monetary": ("higher spend", "lower spend"),
    "log_events": ("more activity", "less activity"),
    "active_days": ("more active days", "fewer active days"),
    "view_to_cart": ("carts more of what they view", "carts less of what they view"),
    "cart_to_purchase": ("buys more of what they cart", "buys less of what they cart"),
    "log_avg_session_s": ("longer sessions", "shorter sessions"),
    "distinct_categories": ("browses more categories", "browses fewer categories"),
}


def summary_rows(profiles: DataFrame, snapshot: dt.date, names: list[str]) -> list[dict]:
    """Scored profiles with feature columns ``names`` (``_f_<feature>``) → gold.segment_summary rows
    (a handful: one per dataset and segment or cluster, and the bots).

    One aggregation (GROUPING SETS) gives every statistic per (dataset, is_bot), per (dataset, is_bot,
    segment) and per (dataset, is_bot, cluster): one pass over the profiles, one Spark action."""
    level = "_level"  # grouping_id() over (dataset, is_bot, segment, cluster): 3 the dataset, 1 a segment, 2 a cluster
    stats = (
        profiles.groupingSets(
            [[S.DATASET, S.IS_BOT], [S.DATASET, S.IS_BOT, S.RFM_SEGMENT], [S.DATASET, S.IS_BOT, S.CLUSTER]],
            S.DATASET, S.IS_BOT, S.RFM_SEGMENT, S.CLUSTER,
        )
        .agg(
            F.grouping_id().alias(level),
            F.count(F.lit(1)).alias("n"),
            F.sum(S.MONETARY).alias("revenue"),
            F.avg(S.RECENCY_DAYS).alias("recency"),
            F.avg(S.FREQUENCY).alias("frequency"),
            F.avg(S.MONETARY).cast("double").alias("monetary"),
            *[F.avg(n).alias(f"mean{n}") for n in names],
            *[F.stddev_pop(n).alias(f"std{n}") for n in names],
        )
        .collect()  # one row per dataset, segment or cluster (and bots): bounded by config, not by users
    )
    people = [r.asDict() for r in stats if r[S.IS_BOT] is False]
    overall = {r[S.DATASET]: r for r in people if r[level] == 3}
    rows = []
    for kind, column, at in ((KIND_SEGMENT, S.RFM_SEGMENT, 1), (KIND_CLUSTER, S.CLUSTER, 2)):
        for g in people:
            if g[level] == at and g[column] is not None:
                rows.append(_row(snapshot, kind, {**g, "_group": str(g[column])}, overall[g[S.DATASET]], names))
    bots = [r for r in stats if r[S.IS_BOT] is True and r[level] == 3]
    for b in bots:
        everyone = (overall[b[S.DATASET]]["n"] if b[S.DATASET] in overall else 0) + b["n"]
        rows.append(
            {
                S.SNAPSHOT_DATE: snapshot, S.DATASET: b[S.DATASET], S.KIND: KIND_BOTS, S.SEGMENT: KIND_BOTS,
                S.USERS: b["n"], S.USER_SHARE: b["n"] / everyone, S.REVENUE: Decimal(0),
                S.REVENUE_SHARE: 0.0, S.AVG_RECENCY_DAYS: None, S.AVG_FREQUENCY: 0.0, S.AVG_MONETARY: 0.0,
                S.DESCRIPTION: f"{b['n']} users flagged as bots, kept out of every statistic above",
            }
        )
    return rows


def _row(snapshot: dt.date, kind: str, g, overall, names: list[str]) -> dict:
    revenue = g["revenue"] or Decimal(0)
    total = overall["revenue"] or Decimal(0)
    user_share = g["n"] / overall["n"]
    revenue_share = float(revenue / total) if total else 0.0
    return {
        S.SNAPSHOT_DATE: snapshot,
        S.DATASET: g[S.DATASET],
        S.KIND: kind,
        S.SEGMENT: g["_group"],
        S.USERS: g["n"],
        S.USER_SHARE: user_share,
        S.REVENUE: revenue,
        S.REVENUE_SHARE: revenue_share,
        S.AVG_RECENCY_DAYS: g["recency"],
        S.AVG_FREQUENCY: float(g["frequency"] or 0.0),
        S.AVG_MONETARY: float(g["monetary"] or 0.0),
        S.DESCRIPTION: describe(g, overall, names, user_share, revenue_share),
    }


def describe(g, overall, names: list[str], user_share: float, revenue_share: float) -> str:
    """'412 users (18% of users, 61% of revenue); higher spend (+1.9 sd), more orders (+1.4 sd)'."""
    departures = []
    for n in names:
        std = overall[f"std{n}"] or 0.0
        if std > 0 and g[f"mean{n}"] is not None:
            departures.append(((g[f"mean{n}"] - overall[f"mean{n}"]) / std, n))
    departures.sort(key=lambda d: (-abs(d[0]), d[1]))
    words = []
    for z, n in departures[:2]:
        if abs(z) < 0.25:
            continue
        higher, lower = WORDS[n.removeprefix("_f_")]
        words.append(f"{higher if z > 0 else lower} ({z:+.1f} sd)")
    traits = ", ".join(words) if words else "close to the average user"
    return f"{g['n']} users ({user_share:.0%} of users, {revenue_share:.0%} of revenue); {traits}"
