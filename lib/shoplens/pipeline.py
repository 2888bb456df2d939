"""``python -m shoplens.pipeline``: the nightly pipeline in one local Spark session (``make run``).

With ``--demo`` it first generates the demo shop (``shoplens.demo.generate``: three months of
landing files with planted dirt and their ground truth under ``<landing>/_truth``), bulk-loads its
history (every landing date but the last, :func:`prepare_history`) and runs the last date as a
night through every nightly job, pseudonymising with the published demo key; otherwise it runs
the given ``--run-date``. Each step is the job's own ``main``, the entry point spark-submit and Airflow run,
inside this one session: a local run computes what a cluster run computes, takes the same run
locks and records every job in gold.pipeline_runs. A job that exits non-zero stops the pipeline
with its exit code. Dates processed before in the same warehouse are rewound first (as
``shoplens.backfill`` does), so a second ``make run`` ends with the tables of the first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass

from shoplens import backfill, cli, demo, runs
from shoplens.jobs import (
    build_churn_scores,
    build_customer_value,
    build_recommendations,
    build_sequences,
    build_sessions,
    build_silver_events,
    build_silver_items,
    build_user_activity,
    build_user_profiles,
    ingest_landing,
    publish,
    score_next_item,
    train_next_item,
)
from shoplens.session import build_session
from shoplens.tables import describe_tables, format_table

log = logging.getLogger(__name__)

# The nightly jobs in dependency order; the Airflow DAG chains the same names.
STEPS = {
    "ingest_landing": ingest_landing.main,
    "build_silver_events": build_silver_events.main,
    "build_silver_items": build_silver_items.main,
    "build_sessions": build_sessions.main,
    "build_sequences": build_sequences.main,
    "build_user_activity": build_user_activity.main,
    "build_user_profiles": build_user_profiles.main,
    "build_churn_scores": build_churn_scores.main,
    "build_customer_value": build_customer_value.main,
    "build_recommendations": build_recommendations.main,
    "train_next_item": train_next_item.main,
    "score_next_item": score_next_item.main,
    "publish": publish.main,
}
# The demo trains the next-item model once, on its last date, with few epochs (the nightly DAG trains
# every night): two Horovod launches a night would double the demo's time and show nothing more.
# Only that date is complete (next-item predictions included), so only it is published.
LAST_DATE_STEPS = ("train_next_item", "score_next_item", "publish")
# Churn on three months: a 21-day horizon, training snapshots 21 and 35 days before the
# evaluation snapshot (the shop's own 90-day horizon needs most of a year of history).
DEMO_OVERRIDES = (
    "seqrec.epochs=3", "churn.horizon_days=21", "churn.snapshot_step_days=14", "churn.training_snapshots=2",
    # One KMeans fit over the demo's history (its profile snapshots span 56 days), reused after.
    "profiles.clusters.refit_every_days=60",
)
DEMO_START, DEMO_DAYS, DEMO_EVENTS = "2024-01-01", 91, 30_000
# The demo's last night, run after its history through every nightly job (the night bench runs two:
# ALS re-tunes on the first and reuses that tuning on the second).
NIGHTLY_DAYS = 1


@dataclass(frozen=True)
class History:
    """How the demo's history was prepared, and the nights still to run one by one."""

    mode: str
    nightly: tuple[dt.date, ...]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-date", type=cli.run_date_arg, default=None)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="seed the embedded demo shop, run its dates, pseudonymise with the published demo key",
    )
    parser.add_argument("--demo-start", default=DEMO_START, help="first day of the demo shop")
    parser.add_argument("--demo-days", type=int, default=DEMO_DAYS, help="days of demo landing files")
    parser.add_argument("--demo-events", type=int, default=DEMO_EVENTS, help="about this many demo events")
    parser.add_argument("--demo-seed", type=int, default=42)
    cli.add_env_args(parser)
    return parser


def demo_args(
    env: str, conf_dir: str | None, overrides: list[str], events: int, days: int | None, start: str | None, seed: int
) -> argparse.Namespace:
    """The pipeline's arguments for a demo run (the night bench's too), demo overrides first."""
    argv = ["--demo", "--env", env, "--demo-events", str(events), "--demo-seed", str(seed)]
    argv += ["--demo-days", str(days)] if days else []
    argv += ["--demo-start", start] if start else []
    argv += ["--conf-dir", conf_dir] if conf_dir else []
    for item in overrides:
        argv += ["--set", item]
    args = _parser().parse_args(argv)
    args.overrides = [*DEMO_OVERRIDES, *args.overrides]
    return args


def generate_demo(cfg, args: argparse.Namespace) -> list[dt.date]:
    """Generates the demo shop's landing files; returns its landing dates."""
    manifest = demo.generate(
        cfg.paths.landing, args.demo_start, args.demo_days, args.demo_events, args.demo_seed, overwrite=True
    )
    dates = [dt.date.fromisoformat(d) for d in manifest["landing_dates"]]
    log.info("demo shop generated under %s: %d landing dates", cfg.paths.landing, len(dates))
    return dates


def prepare_history(
    args: argparse.Namespace, dates: list[dt.date], progress=None, nightly_days: int = NIGHTLY_DAYS
) -> History:
    """Bulk-loads the demo's history (every landing date but the last ``nightly_days``); returns the
    nights left to run one by one.

    The history H = [first, last] goes through each job once where the job can take a range:
    ``ingest_landing``, ``build_silver_events`` and ``build_silver_items`` with ``--since first``
    (one pass each, the same rows as in-order nights), ``build_sessions``
    (its first run rebuilds the dataset), ``build_sequences``, ``build_user_activity --since
    first``, and ``build_user_profiles`` on every snapshot date the last night's churn reads. The
    nightly nights then run every job, so each job runs as a night at least once.
    """
    history, nightly = dates[:-nightly_days], dates[-nightly_days:]
    for name, run_date, extra in history_steps(args, history, nightly):
        began = time.perf_counter()
        code = STEPS[name]([*job_argv(name, run_date, args), *extra])
        if progress is not None:
            progress.line(name, run_date, time.perf_counter() - began, code)
        if code:
            log.error("%s for %s exited with code %d: the pipeline stops here", name, run_date, code)
            raise SystemExit(code)
    return History("bulk" if history else "nightly", tuple(nightly))


def history_steps(
    args: argparse.Namespace, history: list[dt.date], nightly: list[dt.date]
) -> list[tuple[str, dt.date, list[str]]]:
    """The job-runs that bulk-load ``history``: (job, run date, extra arguments), in order."""
    if not history:
        return []
    first, last = history[0], history[-1]
    cfg = cli.load_job_config(args)
    since = ["--since", first.isoformat()]
    # The snapshots churn reads on the nights it fits: the first nightly night, then every
    # churn.refit_every_days (the nights between reuse that fit, as on a shop's real nights).
    fitting = (nightly or [last])[:: max(cfg.churn.refit_every_days, 1)]
    churn = {d for night in fitting for d in (*cfg.churn.training_dates(night), cfg.churn.evaluation_date(night))}
    snapshots = sorted({d for d in churn if first <= d < last} | {last})
    return [
        ("ingest_landing", last, since), ("build_silver_events", last, since),
        ("build_silver_items", last, since),
        ("build_sessions", last, []), ("build_sequences", last, []), ("build_user_activity", last, since),
        *[("build_user_profiles", d, []) for d in snapshots],
    ]


class Progress:
    """One line per job-run (job, date, seconds, rows written) and a running total, on stdout."""

    def __init__(self, total_runs: int) -> None:
        self.total_runs = total_runs
        self.done = 0
        self.started = time.perf_counter()

    def line(self, job: str, run_date: dt.date, seconds: float, code: int) -> None:
        self.done += 1
        done = runs.last_run()
        rows = sum(done.rows_written.values()) if done is not None and done.job == job else 0
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        width = len(str(self.total_runs))
        print(
            f"[{self.done:>{width}}/{self.total_runs}] {run_date} {job:<22} {seconds:6.1f} s  "
            f"{rows:>9,} rows written  {status}   total {self.elapsed():6.1f} s",
            flush=True,
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def run_night(run_date: dt.date, args: argparse.Namespace, last: bool, progress: Progress | None = None) -> int:
    """Runs every nightly job's main for ``run_date`` in order; stops at the first non-zero exit."""
    for name in night_steps(args, last):
        log.info("running %s for %s", name, run_date)
        began = time.perf_counter()
        code = STEPS[name](job_argv(name, run_date, args))
        if progress is not None:
            progress.line(name, run_date, time.perf_counter() - began, code)
        if code:
            log.error("%s for %s exited with code %d: the pipeline stops here", name, run_date, code)
            return code
    return 0


def night_steps(args: argparse.Namespace, last: bool) -> list[str]:
    """The jobs a night runs, in order: the demo trains, scores and publishes on its last night only."""
    return [name for name in STEPS if not (args.demo and name in LAST_DATE_STEPS and not last)]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = cli.parse(parser, argv)
    if not args.demo and args.run_date is None:
        parser.error("give --run-date, or --demo to run the embedded demo shop")
    if args.demo:
        args.overrides = [*DEMO_OVERRIDES, *args.overrides]
    cfg = cli.load_job_config(args)
    dates = generate_demo(cfg, args) if args.demo else [args.run_date]
    # The jobs' mains find this session (getOrCreate) instead of starting their own.
    spark = build_session(cfg, "shoplens.pipeline")
    dates = _rewind_if_run_before(spark, cfg, dates, argv, args.demo)
    nights = list(dates)
    if args.demo:
        history, last_nights = dates[:-NIGHTLY_DAYS], dates[-NIGHTLY_DAYS:]
        total = len(history_steps(args, history, last_nights))
        total += sum(len(night_steps(args, d == dates[-1])) for d in last_nights)
        progress = Progress(total)
        nights = list(prepare_history(args, dates, progress).nightly)
    else:
        progress = Progress(sum(len(night_steps(args, d == dates[-1])) for d in dates))
    for run_date in nights:
        code = run_night(run_date, args, last=run_date == nights[-1], progress=progress)
        if code:
            return code
    described = describe_tables(spark, cfg)
    print(f"\nShopLens tables under {cfg.paths.warehouse}:\n{format_table(described)}")
    print('Query them with: .venv/bin/python -m shoplens.sql "SELECT ... FROM bronze.events" (README.md)')
    print(f"ShopLens pipeline: {progress.done} job-runs in {progress.elapsed():.1f} s", flush=True)
    print(json.dumps(described, sort_keys=True))
    return 0


def _rewind_if_run_before(
    spark, cfg, dates: list[dt.date], argv: list[str] | None, is_demo: bool
) -> list[dt.date]:
    """Dates already processed in this warehouse would be refused as out of order (``make run``
    again, or ``--run-date`` of an earlier night): rewinds every table to the end of the day before
    the first date (``shoplens.backfill``) and returns the dates to run. The demo runs its own days
    only (its landing files are regenerated; nights after them stay rewound); a ``--run-date`` run
    goes on through every later night processed before, as a backfill does."""
    later = [d for d in backfill.processed_dates(spark, cfg, list(STEPS), dates[0]) if d > dates[0]]
    if not later:
        return dates  # nothing processed after the first date: running it (again) is allowed
    requested = tuple(sorted(set(dates)))
    p = backfill.Plan(requested, requested if is_demo else tuple(sorted(set(dates) | set(later))))
    log.info("the warehouse already holds runs after %s: rewinding it to the end of %s first", p.dates[0], p.base)
    backfill.rewind_as_run(spark, cfg, p, list(STEPS), arguments=list(sys.argv[1:] if argv is None else argv))
    return list(p.dates)


def job_argv(job: str, run_date: dt.date, args: argparse.Namespace) -> list[str]:
    """The job's command line for ``run_date`` with the pipeline's environment, config and overrides."""
    argv = ["--run-date", run_date.isoformat(), "--env", args.env]
    if args.conf_dir:
        argv += ["--conf-dir", args.conf_dir]
    for item in args.overrides:
        argv += ["--set", item]
    if args.demo and job == "build_silver_events":
        argv.append("--demo")
    return argv


if __name__ == "__main__":
    sys.exit(main())
