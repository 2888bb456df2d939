"""build_sessions: ``silver.events`` → ``gold.sessions`` and ``gold.session_events``.

Sessions are cut by inactivity (``sessions.gap_minutes``) and a maximum length
(``sessions.max_length_hours``), per actor and dataset (rule: :mod:`shoplens.sessions`).

Nightly (dataset ``landing``), run date R with W = R - late_days: silver event dates before W never
change again, and a session's events fall at most ``spill_days`` (1 for a length up to 23 h, 2 up
to 24 h: an hour more for a 23-hour daylight-saving day) after its start date. So sessions that
start on or before F = W - 1 - spill_days are final: run R-1 already wrote them from final events.
Run R reads silver event dates [F+1, R], leaves out each actor's events up to its last final
session's end, continues that session's activity, and replaces the sessions starting in
[F+1, R]. Running the dates in order gives exactly the table a full rebuild gives (tested).

A full rebuild (``--full-rebuild``, the first run for a dataset, and any bulk-imported dataset, whose
load owns all of its history) reads all of the dataset's events up to R and replaces all of its
sessions. Datasets in ``sessions.exclude_datasets`` (sequence files: synthetic times) get none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, sessions
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.io import DRIVER_ROWS, read_table, replace_slice, small_query

log = logging.getLogger(__name__)

EARLIEST = dt.date(1, 1, 1)


class DatasetExcluded(ValueError):
    """The dataset is in ``sessions.exclude_datasets``."""


@dataclass(frozen=True)
class SessionsPlan:
    """What one run reads and replaces.

    ``events_from``/``events_to``: the silver event dates read (None: unbounded); ``state_from``/
    ``state_to``: the start dates of committed final sessions read as state (None: no state);
    ``slice``: the ``replace_slice`` condition of both tables.
    """

    dataset: str
    is_incremental: bool
    events_from: dt.date | None
    events_to: dt.date | None
    state_from: dt.date | None
    state_to: dt.date | None
    slice: Mapping[str, object]


def plan(cfg: Config, run_date: dt.date, dataset: str, is_incremental: bool) -> SessionsPlan:
    """The dates a run of ``dataset`` for ``run_date`` reads and replaces (see the module docstring)."""
    if not is_incremental:
        if dataset == S.DATASET_LANDING:
            return SessionsPlan(
                dataset, False, None, run_date, None, None,
                {S.DATASET: dataset, S.START_DATE: (EARLIEST, run_date)},
            )
        return SessionsPlan(dataset, False, None, None, None, None, {S.DATASET: dataset})
    window_start = run_date - dt.timedelta(days=cfg.silver.late_days)
    final_through = window_start - dt.timedelta(days=1 + cfg.sessions.spill_days)
    # A final session matters as state only if it ends within the gap before day F+1's first
    # instant: it started at most gap + max length (+1 h of daylight saving) earlier.
    reach_hours = cfg.sessions.gap_minutes / 60 + cfg.sessions.max_length_hours + 1
    state_days = -(-reach_hours // 24)
    first_open = final_through + dt.timedelta(days=1)
    return SessionsPlan(
        dataset,
        True,
        first_open,
        run_date,
        first_open - dt.timedelta(days=int(state_days)),
        final_through,
        {S.DATASET: dataset, S.START_DATE: (first_open, run_date)},
    )


def _has_sessions(spark: SparkSession, cfg: Config, dataset: str) -> bool:
    """Whether gold.sessions holds a session of ``dataset`` (by delta-rs where it reads, stopping at
    the first row: :func:`shoplens.io.small_query`)."""
    return bool(small_query(spark, cfg, catalog.SESSIONS.location(cfg), "1 AS found", {S.DATASET: dataset}, limit=1))


def _between(column: str, low: dt.date | None, high: dt.date | None) -> Column:
    condition = F.lit(True)
    if low is not None:
        condition = condition & (F.col(column) >= F.lit(low))
    if high is not None:
        condition = condition & (F.col(column) <= F.lit(high))
    return condition


def run(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date,
    dataset: str = S.DATASET_LANDING,
    full_rebuild: bool = False,
) -> dict[str, Any]:
    """Builds the sessions of ``dataset`` that run ``run_date`` owns; returns what it did.

    Returns: ``dataset``, ``mode`` (incremental / full), the event dates read, ``events`` and
    ``sessions`` written.
    """
    if dataset in cfg.sessions.exclude_datasets:
        raise DatasetExcluded(
            f"dataset {dataset!r} is in sessions.exclude_datasets: its event times are not real, "
            "so it has sequences but no sessions"
        )
    is_incremental = dataset == S.DATASET_LANDING and not full_rebuild and _has_sessions(spark, cfg, dataset)
    p = plan(cfg, run_date, dataset, is_incremental)
    silver = (
        read_table(spark, catalog.SILVER_EVENTS.location(cfg))
        .where((F.col(S.DATASET) == dataset) & _between(S.EVENT_DATE, p.events_from, p.events_to))
    )
    state = None
    if p.is_incremental:
        final = (
            read_table(spark, catalog.SESSIONS.location(cfg))
            .where((F.col(S.DATASET) == dataset) & _between(S.START_DATE, p.state_from, p.state_to))
        )
        state = sessions.session_state(final)
    marked = sessions.mark_sessions(
        sessions.actor_events(silver), cfg.sessions.gap_us, cfg.sessions.max_length_us, state
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # One row per session and one per event: the commits' own row counts are the summary's.
        # A small night's slices go through the driver and delta-rs where it writes (io.replace_slice).
        written = replace_slice(
            sessions.session_rows(marked, cfg.shop.timezone), catalog.SESSIONS, cfg, p.slice, driver_rows=DRIVER_ROWS
        )
        events = replace_slice(
            sessions.session_event_rows(sessions.assign_sessions(marked), cfg.shop.timezone),
            catalog.SESSION_EVENTS, cfg, p.slice, driver_rows=DRIVER_ROWS,
        )
    finally:
        marked.unpersist()
    summary = {
        "dataset": p.dataset,
        "mode": "incremental" if p.is_incremental else "full",
        "events_from": p.events_from.isoformat() if p.events_from else None,
        "events_to": p.events_to.isoformat() if p.events_to else None,
        "events": events,
        "sessions": written,
    }
    log.info("sessions of %s for %s: %s", dataset, run_date, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", default=S.DATASET_LANDING, help="the silver dataset (default: the nightly feed, landing)"
    )
    parser.add_argument(
        "--full-rebuild", action="store_true", help="recompute all of the dataset's sessions up to the run date"
    )
    return cli.run_job("build_sessions", parser, argv, _work, dataset=lambda args: args.dataset)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    run(spark, cfg, args.run_date, args.dataset, args.full_rebuild)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
