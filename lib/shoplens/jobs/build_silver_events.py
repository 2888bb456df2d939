"""build_silver_events: ``bronze.events`` → ``silver.events`` (+ reviews, quarantine, duplicates).

A run date R owns silver's event dates ``[R - late_days, R]``. It re-reads the bronze landings of
those dates (every event of those days landed on one of them, or is too late), types them, rejects
what breaks a rule (quarantine, reason per rule), keeps the first delivery of each ``event_id``
(later ones are counted in ``silver.duplicates``), pseudonymises user ids, flags bots, validates the
staged rows with Great Expectations, and replaces the window in one transaction per table. So a
re-run, or running days one by one, gives the same silver as one run over all days.

For run date R: bronze rows landed on R = silver.events rows with run_date R + silver.quarantine
rows (stage silver) of R + silver.duplicates rows of R.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, quality
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest import rules, silver
from shoplens.ingest.pseudonymise import load_key
from shoplens.io import replace_slice
from shoplens.session import build_session

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

    Rows of ``run_date`` are the ones counted, quarantined and deduplicated; accepted events must
    fall on the event dates ``[run_date - late_days, run_date]``; each ``*_slice`` is the
    ``replace_slice`` condition of one table, so builds of other datasets or dates are untouched;
    ``prices_required`` is false for sources whose purchases carry no price.
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

    @property
    def window_start(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.late_days)


def nightly_target(cfg: Config, run_date: dt.date) -> SilverTarget:
    """The nightly job's slices: event dates ``[R - late_days, R]`` of dataset ``landing``, and the
    run date's quarantine (stage ``silver``) and duplicates."""
    window_start = run_date - dt.timedelta(days=cfg.silver.late_days)
    return SilverTarget(
        run_date=run_date,
        late_days=cfg.silver.late_days,
        dataset=S.DATASET_LANDING,
        stage=silver.STAGE_SILVER,
        quality_table=catalog.SILVER_EVENTS.name,
        # Bulk imports of other datasets may share these dates: each feed owns only its rows.
        events_slice={S.EVENT_DATE: (window_start, run_date), S.DATASET: S.DATASET_LANDING},
        quarantine_slice={S.RUN_DATE: run_date, S.STAGE: silver.STAGE_SILVER},
        duplicates_slice={S.RUN_DATE: run_date, S.DATASET: S.DATASET_LANDING},
    )


def run(spark: SparkSession, cfg: Config, run_date: dt.date, demo: bool = False) -> SilverSummary:
    """Builds silver for the window of ``run_date``; returns the run date's rejection counts."""
    key = load_key(demo)
    target = nightly_target(cfg, run_date)
    bronze = (
        spark.read.format("delta")
        .load(catalog.BRONZE_EVENTS.location(cfg))
        .where(F.col(S.RUN_DATE).between(target.window_start, run_date))
    )
    summary = commit_silver(spark, cfg, bronze, target, key)
    log.info(
        "silver for %s (event dates %s..%s): %d bronze rows landed on %s, rejected %s",
        run_date, target.window_start, run_date, summary.bronze_rows, run_date, summary.rejected_by_reason,
    )
    return summary


def commit_silver(
    spark: SparkSession,
    cfg: Config,
    bronze: DataFrame,
    target: SilverTarget,
    key: bytes,
    rejected_upstream: DataFrame | None = None,
) -> SilverSummary:
    """Bronze-shaped rows → the target's slices of silver.events, silver.reviews, silver.quarantine
    and silver.duplicates, behind the reject-share check and the Great Expectations gate.

    ``bronze`` has bronze.events' columns; ``rejected_upstream`` (silver.quarantine's columns) are
    records set aside before the rules (an import's malformed lines), written with the rule rejects.
    Returns: the counts of the rows of ``target.run_date``.
    """
    ctx = rules.RowContext(
        cfg.shop.timezone, target.late_days, cfg.silver.future_tolerance_minutes, target.prices_required
    )
    staged = (
        bronze.transform(rules.with_typed_fields)
        .transform(lambda df: rules.with_reject_reason(df, ctx))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        is_today = F.col(S.RUN_DATE) == F.lit(target.run_date)
        by_reason = {
            row[S.REASON]: row["count"]
            for row in staged.where(is_today).groupBy(S.REASON).count().collect()  # one row per reason
        }
        summary = SilverSummary(
            run_date=target.run_date,
            bronze_rows=sum(by_reason.values()),
            rejected_by_reason=dict(sorted((k, v) for k, v in by_reason.items() if k is not None)),
        )
        ranked = silver.with_delivery_rank(staged.where(F.col(S.REASON).isNull()))
        events = (
            silver.silver_event_rows(
                ranked.where(F.col(silver.DELIVERY_RANK) == 1), key, cfg.shop.timezone, target.dataset
            )
            .where(F.col(S.EVENT_DATE).between(target.window_start, target.run_date))
            .transform(lambda df: silver.with_is_bot(df, cfg.bots))
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            report = quality.validate(
                catalog.SILVER_EVENTS.conform(events),
                target.quality_table,
                rules.silver_expectations(target.window_start, target.run_date, cfg.quality.min_valid_share),
                target.run_date,
            )
            replace_slice(
                quality.report_frame(spark, report),
                catalog.QUALITY_RESULTS,
                cfg,
                {S.RUN_DATE: target.run_date, S.TABLE_NAME: target.quality_table},
            )
            _check_reject_shares(summary, cfg)
            report.raise_for_gates()
            replace_slice(events, catalog.SILVER_EVENTS, cfg, target.events_slice)
            replace_slice(silver.review_rows(events), catalog.SILVER_REVIEWS, cfg, target.events_slice)
        finally:
            events.unpersist()
        quarantined = silver.quarantine_rows(staged.where(is_today & F.col(S.REASON).isNotNull()), target.stage)
        if rejected_upstream is not None:
            quarantined = quarantined.unionByName(rejected_upstream)
        replace_slice(quarantined, catalog.QUARANTINE, cfg, target.quarantine_slice)
        replace_slice(
            silver.duplicate_rows(ranked.where(is_today & (F.col(silver.DELIVERY_RANK) > 1)), target.dataset),
            catalog.DUPLICATES,
            cfg,
            target.duplicates_slice,
        )
    finally:
        staged.unpersist()
    return summary


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
    args = cli.parse(parser, argv)
    cfg = cli.load_job_config(args)
    spark = build_session(cfg, f"shoplens.build_silver_events {args.run_date}")
    run(spark, cfg, args.run_date, demo=args.demo)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
