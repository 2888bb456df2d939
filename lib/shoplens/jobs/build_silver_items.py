"""build_silver_items: the catalogue lines landed on a run date → ``silver.items`` (MERGE on item_id).

Catalogue files land only on days the catalogue changes (``<landing>/items/<date>/part-*``, see
docs/LANDING.md): a date without them changes nothing. Each item keeps the attributes of its latest
landing date: a re-run, or a run of an older date after a newer one, never reverts an item.
Rejected lines go to ``silver.quarantine`` (stage ``items``) with their reason. ``--since D`` merges
every catalogue landed on ``[D, R]`` in one pass (each item with its latest date's attributes, as
in-order runs leave it) and replaces the quarantine of those dates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from shoplens import catalog, cli, runs
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest.items import STAGE_ITEMS, with_item_fields
from shoplens.io import LandingNotFound, read_landing_lines, read_landing_range, replace_slice

log = logging.getLogger(__name__)

DATASET = "items"


def run(spark: SparkSession, cfg: Config, run_date: dt.date, since: dt.date | None = None) -> dict[str, int]:
    """Merges the run date's catalogue lines (or those of ``[since, run_date]``); returns counts
    (lines, merged, quarantined)."""
    several = since is not None and since != run_date
    try:
        if several:
            lines = read_landing_range(spark, cfg, DATASET, since, run_date, every_date=False)
        else:
            lines = read_landing_lines(spark, cfg, DATASET, run_date)
    except LandingNotFound:
        log.info("no catalogue lines landed on %s: silver.items unchanged", run_date)
        return {"lines": 0, "merged": 0, "quarantined": 0}
    staged = with_item_fields(lines, None if several else run_date).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {row[S.REASON]: row["count"] for row in staged.groupBy(S.REASON).count().collect()}
        usable = staged.where(F.col(S.REASON).isNull())
        if several:
            newest = Window.partitionBy(S.ITEM_ID).orderBy(F.col(S.UPDATED_ON).desc())
            usable = usable.withColumn("_newest", F.row_number().over(newest)).where("_newest = 1").drop("_newest")
        _merge_latest(spark, cfg, catalog.SILVER_ITEMS.conform(usable))
        rejected = staged.where(F.col(S.REASON).isNotNull()).select(
            F.col(S.UPDATED_ON).alias(S.RUN_DATE), F.lit(STAGE_ITEMS).alias(S.STAGE), S.SOURCE_FILE, S.REASON,
            S.RAW_LINE,
        )
        dates = (since, run_date) if several else run_date
        replace_slice(rejected, catalog.QUARANTINE, cfg, {S.RUN_DATE: dates, S.STAGE: STAGE_ITEMS})
    finally:
        staged.unpersist()
    summary = {
        "lines": sum(counts.values()),
        "merged": counts.get(None, 0),
        "quarantined": sum(n for reason, n in counts.items() if reason is not None),
    }
    log.info("catalogue of %s: %s", run_date, summary)
    return summary


def _merge_latest(spark: SparkSession, cfg: Config, items) -> None:
    location = catalog.SILVER_ITEMS.location(cfg)
    if not catalog.table_exists(spark, location):
        # An empty table first, so the first landing goes through the same MERGE as every other.
        empty = spark.createDataFrame([], catalog.SILVER_ITEMS.schema).write.format("delta")
        runs.commit(spark, catalog.SILVER_ITEMS, cfg, lambda: empty.save(location))
        catalog.register_table(spark, catalog.SILVER_ITEMS, cfg)
    target = DeltaTable.forPath(spark, location).alias("t")
    merge = (
        target.merge(items.alias("s"), f"t.{S.ITEM_ID} = s.{S.ITEM_ID}")
        .whenMatchedUpdateAll(condition=f"s.{S.UPDATED_ON} >= t.{S.UPDATED_ON}")
        .whenNotMatchedInsertAll()
    )
    runs.commit(spark, catalog.SILVER_ITEMS, cfg, merge.execute)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--since", type=cli.run_date_arg, default=None, help="merge every catalogue landed from this date on"
    )
    return cli.run_job("build_silver_items", parser, argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    if args.since is not None and args.since > args.run_date:
        raise ValueError(f"--since {args.since} is after the run date {args.run_date}")
    summary = run(spark, cfg, args.run_date, args.since)
    runs.add_input_rows(summary["lines"])
    runs.add_metrics({"items_merged": summary["merged"], "lines_quarantined": summary["quarantined"]})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
