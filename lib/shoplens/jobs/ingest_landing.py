"""ingest_landing: the run date's landing event files → ``bronze.events`` (+ quarantine).

Reads ``<landing>/events/<run_date>/part-*``, keeps every well-formed line as landed with its
ingest metadata, sets malformed lines aside in ``silver.quarantine`` with a reason, validates the
staged rows with Great Expectations (results in ``ops.quality_results``) and only then commits.
Re-running a date replaces that date's slice: no duplicates.

``--since D`` ingests every landing date ``[D, R]`` in one pass (a history, a small shop's backfill):
each line keeps the run date of its folder, the malformed share is checked per date, and the bronze
and quarantine slices of all those dates are replaced in one commit each, as running the dates one
by one would leave them. The quality results are recorded once, under run date R.
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
from pyspark.sql import functions as F

from shoplens import catalog, cli, quality, runs
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.ingest.landing import STAGE_LANDING, bronze_events, rejected_lines, with_parse_result
from shoplens.io import read_landing_lines, read_landing_range, replace_rows, replace_slice

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


def run(spark: SparkSession, cfg: Config, run_date: dt.date, since: dt.date | None = None) -> IngestSummary:
    """Ingests one run date, or every date from ``since`` on; returns what landed and where it went."""
    if since is None or since == run_date:
        lines, dates, line_date = read_landing_lines(spark, cfg, DATASET, run_date), run_date, run_date
    else:
        lines, dates, line_date = read_landing_range(spark, cfg, DATASET, since, run_date), (since, run_date), None
    parsed = with_parse_result(lines).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_date = parsed.groupBy(F.col(S.RUN_DATE) if line_date is None else F.lit(run_date), S.REASON).count()
        counts = [(row[0], row[S.REASON], row["count"]) for row in by_date.collect()]  # dates x reason codes
        summaries = [_summary(day, counts) for day in sorted({day for day, _, _ in counts})]
        summary = _summary(run_date, [(run_date, reason, n) for _, reason, n in counts])
        staged = bronze_events(parsed, line_date)
        report = quality.validate(staged, catalog.BRONZE_EVENTS.name, bronze_expectations(cfg), run_date)
        replace_rows(
            spark,
            list(report.rows),
            catalog.QUALITY_RESULTS,
            cfg,
            {S.RUN_DATE: run_date, S.TABLE_NAME: catalog.BRONZE_EVENTS.name},
        )
        for day in summaries:
            _check_malformed_share(day, cfg)
        report.raise_for_gates()
        replace_slice(staged, catalog.BRONZE_EVENTS, cfg, {S.RUN_DATE: dates})
        replace_slice(
            rejected_lines(parsed, line_date),
            catalog.QUARANTINE,
            cfg,
            {S.RUN_DATE: dates, S.STAGE: STAGE_LANDING},
        )
    finally:
        parsed.unpersist()
    log.info(
        "ingested %s: %d lines landed, %d accepted, %d quarantined %s",
        run_date, summary.landed, summary.accepted, summary.quarantined, summary.quarantined_by_reason,
    )
    return summary


def _summary(run_date: dt.date, counts: list[tuple[dt.date, str | None, int]]) -> IngestSummary:
    """The summary of ``run_date`` from (run date, reason, lines) counts."""
    by_reason: dict[str | None, int] = {}
    for day, reason, n in counts:
        if day == run_date:
            by_reason[reason] = by_reason.get(reason, 0) + n
    accepted = by_reason.pop(None, 0)
    return IngestSummary(run_date, accepted + sum(by_reason.values()), accepted, dict(sorted(by_reason.items())))


def _check_malformed_share(summary: IngestSummary, cfg: Config) -> None:
    share = summary.quarantined / summary.landed if summary.landed else 0.0
    if share > cfg.ingest.max_malformed_share:
        raise TooManyMalformedLines(
            f"{summary.quarantined} of {summary.landed} landing lines for {summary.run_date} "
            f"({share:.1%}) are malformed {summary.quarantined_by_reason}, above "
            f"ingest.max_malformed_share={cfg.ingest.max_malformed_share:.1%}; nothing was committed"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--since", type=cli.run_date_arg, default=None, help="ingest every landing date from this one to the run date"
    )
    return cli.run_job("ingest_landing", parser, argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    if args.since is not None and args.since > args.run_date:
        raise ValueError(f"--since {args.since} is after the run date {args.run_date}")
    summary = run(spark, cfg, args.run_date, args.since)
    runs.add_input_rows(summary.landed)
    runs.add_metrics({"lines_accepted": summary.accepted, "lines_quarantined": summary.quarantined})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
