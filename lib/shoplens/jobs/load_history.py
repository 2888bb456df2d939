"""load_history: one bulk historical load of a public-format file into silver, through silver's rules.

``--format F --input PATH --run-date R`` reads every line of PATH (a file, a folder or a glob; Online
Retail also as Parquet), turns it into bronze-shaped rows with the format's adapter
(``shoplens.ingest.adapters``), and builds silver for the whole history in one pass with the same
building blocks as the nightly job: typing, row rules (a late window that covers any history; events
after R are still future), first delivery per event id, pseudonyms, bot flag, the reject-share check
and the Great Expectations gate (results under table name ``silver.events[F]``).

A load owns all of its format's rows: ``dataset = F`` in silver.events, silver.reviews and
silver.duplicates and ``stage = import:F`` in silver.quarantine, all with run date R. Re-running
replaces them (same ids: they are derived deterministically); the nightly ``landing`` rows are
never touched. Lines that are not records are quarantined (``blank_line``, ``malformed_record``);
header lines are skipped and counted.

Reconciliation, each term counted from its own place: records = silver.events rows (dataset F,
run_date R) + silver.quarantine rows (stage import:F, run_date R) + silver.duplicates rows
(dataset F, run_date R); and, for one-record-per-line formats, raw lines = header lines + records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest import adapters, silver
from shoplens.ingest.pseudonymise import load_key
from shoplens.io import read_import_lines, read_import_table, read_table
from shoplens.jobs.build_silver_events import SilverTarget, commit_silver

log = logging.getLogger(__name__)

# A bulk load accepts any history: an event is too late only if it happened over a century before R.
HISTORY_LATE_DAYS = 100 * 366
PARQUET_SUFFIX = ".parquet"


class TooManyMalformedRecords(RuntimeError):
    """More of an import's lines were malformed than ``ingest.max_malformed_share`` allows."""


def import_stage(dataset: str) -> str:
    """The quarantine stage of a bulk import of ``dataset``."""
    return f"import:{dataset}"


def import_target(dataset: str, run_date: dt.date) -> SilverTarget:
    """The slices a bulk import of ``dataset`` owns: every row of its dataset (and stage)."""
    stage = import_stage(dataset)
    adapter = adapters.ADAPTERS[dataset]
    return SilverTarget(
        run_date=run_date,
        late_days=HISTORY_LATE_DAYS,
        dataset=dataset,
        stage=stage,
        quality_table=f"{catalog.SILVER_EVENTS.name}[{dataset}]",
        events_slice={S.DATASET: dataset},
        quarantine_slice={S.STAGE: stage},
        duplicates_slice={S.DATASET: dataset},
        prices_required=adapter.has_prices,
    )


def read_input(spark: SparkSession, adapter: adapters.Adapter, path: str) -> DataFrame:
    """Returns the input's lines (``raw_line``, ``source_file``); Parquet rows are rendered as lines
    by the adapter's ``from_table``."""
    if path.rstrip("/").endswith(PARQUET_SUFFIX):
        if adapter.from_table is None:
            raise ValueError(f"format {adapter.name} has no Parquet form; give its text file(s)")
        return adapter.from_table(read_import_table(spark, path))
    return read_import_lines(spark, path)


def run(
    spark: SparkSession, cfg: Config, dataset: str, input_path: str | Path, run_date: dt.date, demo: bool = False
) -> dict[str, Any]:
    """Loads the whole input as dataset ``dataset`` with run date ``run_date``.

    Returns: the load's summary: ``raw_lines``, ``header_lines``, ``records`` (= ``events_landed``),
    ``accepted``, ``reviews``, ``quarantined``, ``duplicates``, ``quarantined_by_reason``, the event
    date range and ``reconciled``; every count after the load is read back from its own table.
    """
    if dataset not in adapters.ADAPTERS:
        raise ValueError(f"unknown format {dataset!r}; known: {', '.join(adapters.ADAPTERS)}")
    adapter = adapters.ADAPTERS[dataset]
    key = load_key(demo)
    lines = read_input(spark, adapter, str(input_path))
    staged = adapter.from_lines(lines, run_date).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_kind = {
            row[S.REASON]: row["count"]
            for row in staged.groupBy(S.REASON).count().collect()  # one row per reason code
        }
        raw_lines = lines.count()
        header_lines = by_kind.pop(adapters.HEADER_LINE, 0)
        records = sum(by_kind.values())
        _check_malformed_share(dataset, {k: v for k, v in by_kind.items() if k is not None}, records, cfg)
        is_record = F.col(S.REASON).isNull()
        is_header = F.col(S.REASON) == adapters.HEADER_LINE
        rejected = silver.quarantine_rows(staged.where(~is_record & ~is_header), import_stage(dataset))
        commit_silver(
            spark, cfg, staged.where(is_record).drop(S.REASON), import_target(dataset, run_date), key, rejected
        )
    finally:
        staged.unpersist()
    summary = {
        "format": dataset,
        "run_date": run_date.isoformat(),
        "raw_lines": raw_lines,
        "header_lines": header_lines,
        "records": records,
        "events_landed": records,
        **counted_load(spark, cfg, dataset, run_date),
    }
    summary["reconciled"] = summary["records"] == summary["accepted"] + summary["quarantined"] + summary[
        "duplicates"
    ] and (not adapter.one_record_per_line or raw_lines == header_lines + records)
    log.info("loaded %s from %s: %s", dataset, input_path, json.dumps(summary, sort_keys=True))
    return summary


def counted_load(spark: SparkSession, cfg: Config, dataset: str, run_date: dt.date) -> dict[str, Any]:
    """Counts one load's rows in each silver table (dataset / stage ``import:<dataset>``, run date).

    Returns: ``accepted``, ``reviews``, ``quarantined``, ``duplicates``, ``quarantined_by_reason``,
    ``first_event_date`` and ``last_event_date`` (ISO dates, null when nothing was accepted).
    """
    on_date = F.col(S.RUN_DATE) == F.lit(run_date)

    def table(spec: catalog.TableSpec) -> DataFrame:
        return read_table(spark, spec.location(cfg))

    events = table(catalog.SILVER_EVENTS).where((F.col(S.DATASET) == dataset) & on_date)
    span = events.agg(
        F.count(F.lit(1)).alias("n"), F.min(S.EVENT_DATE).alias("first"), F.max(S.EVENT_DATE).alias("last")
    ).first()
    assert span is not None
    quarantine = table(catalog.QUARANTINE).where((F.col(S.STAGE) == import_stage(dataset)) & on_date)
    by_reason = dict(sorted((r[S.REASON], r["count"]) for r in quarantine.groupBy(S.REASON).count().collect()))
    return {
        "accepted": span["n"],
        "reviews": table(catalog.SILVER_REVIEWS).where((F.col(S.DATASET) == dataset) & on_date).count(),
        "quarantined": sum(by_reason.values()),
        "duplicates": table(catalog.DUPLICATES).where((F.col(S.DATASET) == dataset) & on_date).count(),
        "quarantined_by_reason": by_reason,
        "first_event_date": span["first"].isoformat() if span["first"] else None,
        "last_event_date": span["last"].isoformat() if span["last"] else None,
    }


def _check_malformed_share(dataset: str, malformed: dict[str, int], records: int, cfg: Config) -> None:
    count = sum(malformed.values())
    share = count / records if records else 0.0
    if share > cfg.ingest.max_malformed_share:
        raise TooManyMalformedRecords(
            f"{count} of {records} {dataset} records ({share:.1%}) are malformed {malformed}, above "
            f"ingest.max_malformed_share={cfg.ingest.max_malformed_share:.1%}: wrong format? nothing was committed"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=sorted(adapters.ADAPTERS), help="the input's format")
    parser.add_argument("--input", required=True, help="a file, a folder or a glob (local, hdfs://, s3a://)")
    parser.add_argument("--demo", action="store_true", help="pseudonymise with the published demo key")
    return cli.run_job("load_history", parser, argv, _work, dataset=lambda args: args.format)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> int:
    summary = run(spark, cfg, args.format, args.input, args.run_date, demo=args.demo)
    return 0 if summary["reconciled"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
