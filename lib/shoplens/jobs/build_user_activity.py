"""build_user_activity: ``silver.events`` + ``gold.sessions`` → ``gold.user_daily_activity``.

Run date R recomputes the event dates that can still change: silver's late window
``[R - late_days, R]`` plus the days a session may spill over (a session starting the day before
the window can gain events in it), so every daily row ends equal to one computed from complete
data. ``--since D`` recomputes ``[D, R]`` instead (a bulk import, a backfill). Profiles roll up
from this table, so a nightly run reads a few days of silver, not a year of it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.io import DRIVER_ROWS, read_table, replace_slice
from shoplens.profiles.activity import daily_activity

log = logging.getLogger(__name__)


def window_start(cfg: Config, run_date: dt.date) -> dt.date:
    """The first event date run date R recomputes."""
    return run_date - dt.timedelta(days=cfg.silver.late_days + cfg.sessions.spill_days)


def run(spark: SparkSession, cfg: Config, run_date: dt.date, since: dt.date | None = None) -> int:
    """Rewrites the daily activity of event dates ``[start, run_date]``; returns the rows written."""
    start = since or window_start(cfg, run_date)
    if start > run_date:
        raise ValueError(f"--since {start} is after the run date {run_date}")
    events_path = catalog.SILVER_EVENTS.location(cfg)
    if not catalog.table_exists(spark, events_path):
        raise FileNotFoundError(f"silver.events does not exist at {events_path}: run build_silver_events first")
    events = read_table(spark, events_path).where(F.col(S.EVENT_DATE).between(start, run_date))
    sessions = None
    if catalog.table_exists(spark, catalog.SESSIONS.location(cfg)):
        sessions = (
            read_table(spark, catalog.SESSIONS.location(cfg))
            .where(F.col(S.START_DATE).between(start, run_date))
        )
    daily = daily_activity(events, sessions, cfg.profiles.affinity_weights)
    written = replace_slice(
        daily, catalog.USER_DAILY_ACTIVITY, cfg, {S.EVENT_DATE: (start, run_date)}, driver_rows=DRIVER_ROWS
    )
    log.info("user daily activity for event dates %s..%s: %d rows", start, run_date, written)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument("--since", type=cli.run_date_arg, default=None, help="recompute event dates from this one")
    return cli.run_job("build_user_activity", parser, argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    run(spark, cfg, args.run_date, since=args.since)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
