"""ingest_landing: the run date's landing event files → ``bronze.events`` (+ quarantine).

Reads ``<landing>/events/<run_date>/part-*``, keeps every well-formed line as landed with its
ingest metadata, sets malformed lines aside in ``silver.quarantine`` with a reason, validates the
staged rows with Great Expectations (results in ``ops.quality_results``) and only then commits.
Re-running a date replaces that date's slice: no duplicates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from shoplens import catalog, cli, quality, runs
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest.landing import STAGE_LANDING, bronze_events, rejected_lines, with_parse_result
from shoplens.io import read_landing_lines, replace_slice

log = logging.getLogger(__name__)

DATASET = "events"


class TooManyMalformedLines(RuntimeError):
    """More of a run date's lines were malformed than ``ingest.max_malformed_share`` allows."""


@dataclass(frozen=True)
class IngestSummary:
    run_date: dt.date
    landed: int
    accepted: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())


def bronze_expectations(cfg: Config) -> list:
    """The suite on staged ``bronze.events``: the column contract and the fields every event needs."""
    import great_expectations as gx

    gate = {quality.GATE: True}
    return [
        gx.expectations.ExpectTableColumnsToMatchOrderedList(
            column_list=catalog.BRONZE_EVENTS.columns, meta=gate
        ),
        *[
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column=name, mostly=cfg.quality.min_valid_share, meta=gate
            )
            for name in S.REQUIRED_LANDING_EVENT_FIELDS
        ],
    ]


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> IngestSummary:
    """Ingests one run date; returns what landed and where it went."""
    lines = read_landing_lines(spark, cfg, DATASET, run_date)
    parsed = with_parse_result(lines).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_reason = {
            row[S.REASON]: row["count"]
            for row in parsed.groupBy(S.REASON).count().collect()  # one row per reason code
        }
        landed = sum(by_reason.values())
        summary = IngestSummary(
            run_date=run_date,
            landed=landed,
            accepted=by_reason.pop(None, 0),
            quarantined_by_reason=dict(sorted(by_reason.items())),
        )
        staged = bronze_events(parsed, run_date)
        report = quality.validate(staged, catalog.BRONZE_EVENTS.name, bronze_expectations(cfg), run_date)
        replace_slice(
            quality.report_frame(spark, report),
            catalog.QUALITY_RESULTS,
            cfg,
            {S.RUN_DATE: run_date, S.TABLE_NAME: catalog.BRONZE_EVENTS.name},
        )
        _check_malformed_share(summary, cfg)
        report.raise_for_gates()
        replace_slice(staged, catalog.BRONZE_EVENTS, cfg, {S.RUN_DATE: run_date})
        replace_slice(
            rejected_lines(parsed, run_date),
            catalog.QUARANTINE,
            cfg,
            {S.RUN_DATE: run_date, S.STAGE: STAGE_LANDING},
        )
    finally:
        parsed.unpersist()
    log.info(
        "ingested %s: %d lines landed, %d accepted, %d quarantined %s",
        run_date, summary.landed, summary.accepted, summary.quarantined, summary.quarantined_by_reason,
    )
    return summary


def _check_malformed_share(summary: IngestSummary, cfg: Config) -> None:
    share = summary.quarantined / summary.landed if summary.landed else 0.0
    if share > cfg.ingest.max_malformed_share:
        raise TooManyMalformedLines(
            f"{summary.quarantined} of {summary.landed} landing lines for {summary.run_date} "
            f"({share:.1%}) are malformed {summary.quarantined_by_reason}, above "
            f"ingest.max_malformed_share={cfg.ingest.max_malformed_share:.1%}; nothing was committed"
        )


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_job("ingest_landing", cli.job_parser(__doc__.splitlines()[0]), argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    summary = run(spark, cfg, args.run_date)
    runs.add_input_rows(summary.landed)
    runs.add_metrics({"lines_accepted": summary.accepted, "lines_quarantined": summary.quarantined})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
