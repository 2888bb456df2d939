"""build_silver_events: ``bronze.events`` → ``silver.events`` (+ reviews, quarantine, duplicates).

A run date R owns silver's event dates ``[R - late_days, R]``. It re-reads the bronze landings of
those dates (every event of those days landed on one of them, or is too late), types them, rejects
what breaks a rule (quarantine, reason per rule), keeps the first delivery of each ``event_id``
(later ones are counted in ``silver.duplicates``), pseudonymises user ids, flags bots, validates the
staged rows with Great Expectations, and replaces the window in one transaction per table. So a
re-run, or running days one by one, gives the same silver as one run over all days.

For run date R: bronze rows landed on R = silver.events rows with run_date R + silver.quarantine
rows (stage silver) of R + silver.duplicates rows of R.

``--since D`` builds the run dates ``[D, R]`` in one pass (a history, a small shop's backfill): each
bronze row keeps its own run date for the rules, the first delivery of an event id is its earliest
(run date, file, line) as in-order runs would find it, the reject shares are checked per run date,
and each table's slices of those run dates are replaced in one commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, quality, runs
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest import rules, silver
from shoplens.ingest.pseudonymise import load_key
from shoplens.io import read_table, replace_rows, replace_slice

log = logging.getLogger(__name__)


class TooManyRejectedRows(RuntimeError):
    """One rule rejected more of a run date's rows than ``silver.max_reject_share`` allows."""


@dataclass(frozen=True)
class SilverSummary:
    run_date: dt.date
    bronze_rows: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SilverTarget:
    """What one silver build owns: the nightly job for a run date, or one bulk import of a dataset.

    The bronze rows handed to :func:`commit_silver` are the ones landed on ``run_date``: they are
    counted, quarantined and deduplicated; accepted events fall on the event dates
    ``[window_start, window_end]``. ``incremental`` (the nightly job): earlier run dates' accepted
    events stay, the run MERGEs its own into the window; otherwise (a bulk import) ``events_slice``
    is replaced. Each ``*_slice`` is a ``replace_slice`` condition, so builds of other datasets or
    dates are untouched; ``prices_required`` is false for sources whose purchases carry no price.
    """

    run_date: dt.date
    late_days: int
    dataset: str
    stage: str
    quality_table: str
    events_slice: Mapping[str, object]
    quarantine_slice: Mapping[str, object]
    duplicates_slice: Mapping[str, object]
    prices_required: bool = True
    incremental: bool = False
    future_days: int = 1
    # The first run date of a build of several (``--since``); None: ``run_date`` only.
    first_run_date: dt.date | None = None

    @property
    def first(self) -> dt.date:
        return self.first_run_date or self.run_date

    @property
    def window_start(self) -> dt.date:
        return self.first - dt.timedelta(days=self.late_days)

    @property
    def window_end(self) -> dt.date:
        """The latest event date a row landed on ``run_date`` can have (``future_event_time``'s
        tolerance reaches past midnight)."""
        return self.run_date + dt.timedelta(days=self.future_days)


def nightly_target(cfg: Config, run_date: dt.date, since: dt.date | None = None) -> SilverTarget:
    """The nightly job's slices: the accepted events landed on R (event dates ``[R - late_days,
    R + tolerance]``) of dataset ``landing``, and the run date's quarantine (stage ``silver``) and
    duplicates; with ``since``, those of every run date ``[since, R]``."""
    first = since or run_date
    window_start = first - dt.timedelta(days=cfg.silver.late_days)
    dates = run_date if first == run_date else (first, run_date)
    return SilverTarget(
        run_date=run_date,
        late_days=cfg.silver.late_days,
        dataset=S.DATASET_LANDING,
        stage=silver.STAGE_SILVER,
        quality_table=catalog.SILVER_EVENTS.name,
        events_slice={
            S.DATASET: S.DATASET_LANDING,
            S.RUN_DATE: dates,
            S.EVENT_DATE: (window_start, run_date + dt.timedelta(days=future_days(cfg))),
        },
        quarantine_slice={S.RUN_DATE: dates, S.STAGE: silver.STAGE_SILVER},
        duplicates_slice={S.RUN_DATE: dates, S.DATASET: S.DATASET_LANDING},
        incremental=True,
        future_days=future_days(cfg),
        first_run_date=None if first == run_date else first,
    )


def future_days(cfg: Config) -> int:
    """How many days past its run date an accepted event may fall (``future_tolerance_minutes``)."""
    return math.ceil(cfg.silver.future_tolerance_minutes / (24 * 60)) if cfg.silver.future_tolerance_minutes > 0 else 0


def run(
    spark: SparkSession, cfg: Config, run_date: dt.date, demo: bool = False, since: dt.date | None = None
) -> SilverSummary:
    """Builds silver from the rows landed on ``run_date`` (or on ``[since, run_date]``); returns the
    rejection counts.

    When a later run date already accepted events first delivered on ``run_date`` (it ran before
    this one), those later run dates are rebuilt after it, in order, so the result is the same as
    running every date in order.
    """
    key = load_key(demo)
    target = nightly_target(cfg, run_date, since)
    summary, displaced = _build_one(spark, cfg, target, key)
    for later in displaced:
        log.warning("run date %s had accepted events first delivered on %s: rebuilding it", later, run_date)
        _build_one(spark, cfg, nightly_target(cfg, later), key)
    return summary


def _build_one(spark: SparkSession, cfg: Config, target: SilverTarget, key: bytes) -> tuple[SilverSummary, list]:
    bronze = (
        read_table(spark, catalog.BRONZE_EVENTS.location(cfg))
        .where(F.col(S.RUN_DATE).between(F.lit(target.first), F.lit(target.run_date)))
    )
    summary, displaced = commit_silver(spark, cfg, bronze, target, key)
    log.info(
        "silver for %s: %d bronze rows landed, rejected %s",
        target.run_date, summary.bronze_rows, summary.rejected_by_reason,
    )
    return summary, displaced


def commit_silver(
    spark: SparkSession,
    cfg: Config,
    bronze: DataFrame,
    target: SilverTarget,
    key: bytes,
    rejected_upstream: DataFrame | None = None,
) -> tuple[SilverSummary, list[dt.date]]:
    """Bronze rows landed on ``target.run_date`` → silver.events, silver.reviews, silver.quarantine
    and silver.duplicates, behind the reject-share check and the Great Expectations gate.

    ``bronze`` has bronze.events' columns; ``rejected_upstream`` (silver.quarantine's columns) are
    records set aside before the rules (an import's malformed lines), written with the rule rejects.
    A row is a duplicate when an earlier delivery of its ``event_id`` was accepted: on an earlier
    run date within ``late_days`` (incremental targets), or earlier on the same run date (source
    file, then line). Returns: the run date's counts, and the later run dates (sorted) whose
    accepted events this run's first deliveries displaced (they need a rebuild).
    """
    ctx = rules.RowContext(
        cfg.shop.timezone, target.late_days, cfg.silver.future_tolerance_minutes, target.prices_required
    )
    staged = (
        bronze.transform(rules.with_typed_fields)
        .transform(lambda df: rules.with_reject_reason(df, ctx))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    cached = [staged]
    try:
        counts = [
            (row[S.RUN_DATE], row[S.REASON], row["count"])
            for row in staged.groupBy(S.RUN_DATE, S.REASON).count().collect()  # run dates x reasons
        ]
        summary = _summary(target.run_date, counts)
        per_date = [_summary(day, [c for c in counts if c[0] == day]) for day in sorted({c[0] for c in counts})]
        # Cached: the first deliveries feed the new events and the duplicates, and the new events
        # feed the actor-days they touch, the rows they replace and the bot flags. Uncached, each
        # use shuffled the night's rows for the delivery rank again (docs/BENCHMARKS.md).
        ranked = silver.with_delivery_rank(staged.where(F.col(S.REASON).isNull())).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        cached.append(ranked)
        firsts = ranked.where(F.col(silver.DELIVERY_RANK) == 1).withColumn(silver.TRIMMED_ID, F.trim(S.EVENT_ID))
        redelivered = firsts.limit(0)
        displaced: list[dt.date] = []
        existing = None
        if target.incremental and catalog.table_exists(spark, catalog.SILVER_EVENTS.location(cfg)):
            existing = _window_rows(spark, cfg, target)
            # Never broadcast: the window's ids grow with the shop, and their shuffle blocks compress
            # so well that adaptive execution took 2.2M of them (a 335 MB hash table in a 2 GiB
            # driver) for a small side on the 10M bench's fourth night (docs/BENCHMARKS.md).
            earlier = _accepted_ids(
                spark, cfg, target, target.window_start, target.first - dt.timedelta(days=1)
            ).hint("shuffle_merge")
            redelivered = firsts.join(earlier, silver.TRIMMED_ID, "left_semi")
            firsts = firsts.join(earlier, silver.TRIMMED_ID, "left_anti")
        new_events = silver.silver_event_rows(firsts, key, cfg.shop.timezone, target.dataset).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        cached.append(new_events)
        others = None
        if existing is not None:
            touched = new_events.select(silver.actor_of().alias(silver.ACTOR), S.EVENT_DATE).distinct()
            others = (
                existing.join(touched, [silver.ACTOR, S.EVENT_DATE], "left_semi")
                # A later run date's copy of an event delivered first on this one is replaced, not counted.
                .join(new_events.select(S.EVENT_ID), S.EVENT_ID, "left_anti")
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
        events = silver.with_is_bot(new_events, cfg.bots, others).drop(silver.ACTOR).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            report = quality.validate(
                catalog.SILVER_EVENTS.conform(events),
                target.quality_table,
                rules.silver_expectations(target.window_start, target.window_end, cfg.quality.min_valid_share),
                target.run_date,
            )
            replace_rows(
                spark,
                list(report.rows),
                catalog.QUALITY_RESULTS,
                cfg,
                {S.RUN_DATE: target.run_date, S.TABLE_NAME: target.quality_table},
            )
            for day in per_date:
                _check_reject_shares(day, cfg)
            report.raise_for_gates()
            # The run date's own rows: one atomic replace of their slice per table.
            replace_slice(events, catalog.SILVER_EVENTS, cfg, target.events_slice)
            replace_slice(silver.review_rows(events), catalog.SILVER_REVIEWS, cfg, target.events_slice)
            if existing is not None:
                later = _accepted_ids(
                    spark, cfg, target, target.run_date + dt.timedelta(days=1),
                    target.run_date + dt.timedelta(days=target.late_days),
                )
                displaced = sorted(
                    row[S.RUN_DATE]
                    for row in later.join(events.select(F.col(S.EVENT_ID).alias(silver.TRIMMED_ID)), silver.TRIMMED_ID)
                    .select(S.RUN_DATE).distinct().collect()  # at most late_days rows
                )
                changed = _flag_changes(others, events).persist(StorageLevel.MEMORY_AND_DISK)
                try:
                    if not changed.isEmpty():
                        _update_flags(spark, cfg, catalog.SILVER_EVENTS, changed, target)
                        _update_flags(spark, cfg, catalog.SILVER_REVIEWS, changed, target)
                finally:
                    changed.unpersist()
        finally:
            events.unpersist()
            if others is not None:
                others.unpersist()
        quarantined = silver.quarantine_rows(staged.where(F.col(S.REASON).isNotNull()), target.stage)
        if rejected_upstream is not None:
            quarantined = quarantined.unionByName(rejected_upstream)
        replace_slice(quarantined, catalog.QUARANTINE, cfg, target.quarantine_slice)
        duplicates = ranked.where(F.col(silver.DELIVERY_RANK) > 1).unionByName(redelivered.drop(silver.TRIMMED_ID))
        replace_slice(
            silver.duplicate_rows(duplicates, target.dataset), catalog.DUPLICATES, cfg, target.duplicates_slice
        )
    finally:
        for frame in cached:
            frame.unpersist()
    return summary, displaced


def _silver_of(spark: SparkSession, cfg: Config, target: SilverTarget, first: dt.date, last: dt.date) -> DataFrame:
    """The feed's silver.events rows whose event date is in ``[first, last]``."""
    events = read_table(spark, catalog.SILVER_EVENTS.location(cfg))
    in_dates = (F.col(S.EVENT_DATE) >= F.lit(first)) & (F.col(S.EVENT_DATE) <= F.lit(last))
    return events.where((F.col(S.DATASET) == target.dataset) & in_dates)


def _accepted_ids(spark: SparkSession, cfg: Config, target: SilverTarget, first: dt.date, last: dt.date) -> DataFrame:
    """``event_id`` (as ``trimmed_id``) and ``run_date`` of the feed's events accepted on the run
    dates ``[first, last]``: their event dates lie in ``[first - late_days, last + future_days]``."""
    rows = _silver_of(
        spark, cfg, target, first - dt.timedelta(days=target.late_days), last + dt.timedelta(days=target.future_days)
    )
    return rows.where(F.col(S.RUN_DATE).between(F.lit(first), F.lit(last))).select(
        F.col(S.EVENT_ID).alias(silver.TRIMMED_ID), S.RUN_DATE
    )


def _window_rows(spark: SparkSession, cfg: Config, target: SilverTarget) -> DataFrame:
    """The window's events accepted on other run dates, with their actor: the bot flags' context."""
    rows = _silver_of(spark, cfg, target, target.window_start, target.window_end)
    return rows.where(~F.col(S.RUN_DATE).between(F.lit(target.first), F.lit(target.run_date))).select(
        silver.actor_of().alias(silver.ACTOR), S.EVENT_DATE, S.EVENT_TIME, S.EVENT_ID, S.IS_BOT
    )


def _flag_changes(others: DataFrame, events: DataFrame) -> DataFrame:
    """Already accepted events whose bot flag the new events change: (event_id, event_date, is_bot)."""
    flags = events.select(
        silver.actor_of().alias(silver.ACTOR), S.EVENT_DATE, F.col(S.IS_BOT).alias("_flag")
    ).distinct()
    return (
        others.join(flags, [silver.ACTOR, S.EVENT_DATE])
        .where(F.col(S.IS_BOT) != F.col("_flag"))
        .select(S.EVENT_ID, S.EVENT_DATE, F.col("_flag").alias(S.IS_BOT))
    )


def _update_flags(
    spark: SparkSession, cfg: Config, spec: catalog.TableSpec, changed: DataFrame, target: SilverTarget
) -> None:
    """Sets the bot flags that R's events changed on other run dates' rows of the window (a MERGE
    that only updates: rare, as it takes late events that push an actor-day over the rule)."""
    from delta.tables import DeltaTable

    window = (
        f"t.`{S.DATASET}` = '{target.dataset}' AND t.`{S.EVENT_DATE}` >= DATE'{target.window_start}' "
        f"AND t.`{S.EVENT_DATE}` <= DATE'{target.window_end}'"
    )
    same_event = f"t.`{S.EVENT_DATE}` = s.`{S.EVENT_DATE}` AND t.`{S.EVENT_ID}` = s.`{S.EVENT_ID}`"
    merge = (
        DeltaTable.forPath(spark, spec.location(cfg))
        .alias("t")
        .merge(changed.alias("s"), f"{window} AND {same_event}")
        .whenMatchedUpdate(set={S.IS_BOT: f"s.`{S.IS_BOT}`"})
    )
    runs.commit(spark, spec, cfg, merge.execute)
    log.info("run date %s changed bot flags of earlier events in %s", target.run_date, spec.name)


def _summary(run_date: dt.date, counts: list[tuple[dt.date, str | None, int]]) -> SilverSummary:
    """The counts of every (run date, reason) in ``counts`` as the summary of ``run_date``."""
    by_reason: dict[str, int] = {}
    for _, reason, n in counts:
        if reason is not None:
            by_reason[reason] = by_reason.get(reason, 0) + n
    return SilverSummary(run_date, sum(n for _, _, n in counts), dict(sorted(by_reason.items())))


def _check_reject_shares(summary: SilverSummary, cfg: Config) -> None:
    if not summary.bronze_rows:
        return
    for reason, count in summary.rejected_by_reason.items():
        share = count / summary.bronze_rows
        if share > cfg.silver.max_reject_share:
            raise TooManyRejectedRows(
                f"rule {reason} rejected {count} of {summary.bronze_rows} bronze rows landed on "
                f"{summary.run_date} ({share:.1%}), above silver.max_reject_share="
                f"{cfg.silver.max_reject_share:.1%}; nothing was committed"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="pseudonymise with the published demo key")
    parser.add_argument(
        "--since", type=cli.run_date_arg, default=None, help="build every run date from this one to the run date"
    )
    return cli.run_job("build_silver_events", parser, argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    if args.since is not None and args.since > args.run_date:
        raise ValueError(f"--since {args.since} is after the run date {args.run_date}")
    summary = run(spark, cfg, args.run_date, demo=args.demo, since=args.since)
    runs.add_input_rows(summary.bronze_rows)
    runs.add_metrics({f"rejected_{reason}": n for reason, n in summary.rejected_by_reason.items()})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
