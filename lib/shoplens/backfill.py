"""``python -m shoplens.backfill``: re-process run dates in date order, whatever order they are asked in.

A night's tables depend on the nights before it: sessions continue the previous night's, the item
vocabulary and the ALS indices give new items the next numbers, profiles roll up the daily activity.
So a date processed late (a night that was missed, a landing file that arrived a week late, a
fix to re-apply) cannot simply be run on its own after later nights: every job refuses that
(``runs.OutOfOrderRun``). A backfill of dates ``D…`` instead

1. **plans**: the dates asked for, plus every later date already processed, in date order; the
   first of them is F;
2. **rewinds** every table (as one recorded run of the job ``backfill`` for F) to its version at the
   end of night F-1: the version before its first commit by a run of a later date, found by the
   tag every commit carries in its Delta history (``runs.commit``). ``RESTORE`` for a table that
   existed then; ``DELETE`` of all rows for one created later. Model folders made for F or later
   (next-item training runs and versions, user-cluster models) are removed, so the replay trains
   anew instead of resuming a finished run. ``gold.pipeline_runs`` is not rewound: its succeeded
   rows for dates from F on are marked ``rewound``;
3. **replays** the planned dates in order, every nightly job of each (the jobs' own ``main``s, as
   ``make run`` does), so the tables end as running the dates one by one in order would leave them.
   With ``--rewind-only`` it stops after the rewind, and Airflow replays the dates through the
   nightly DAG, one job per application (docs/AIRFLOW.md).

Killed at any point, the backfill is re-run with the same dates: the rewind goes back to the same
versions (the first later commit has not moved) and the replay starts again from F. The rewind
reaches back only as far as the tables' Delta history and un-vacuumed files (VACUUM's retention,
7 days by default); a date older than that is re-built into a new warehouse from the landing files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, runs
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.session import build_session

log = logging.getLogger(__name__)

JOB = "backfill"
# runs.RunContext.next_commit_tag: "shoplens <job> <run date> attempt <n> commit <k> <random>".
_COMMIT_TAG = re.compile(r"^shoplens (?P<job>\S+) (?P<run_date>\d{4}-\d{2}-\d{2}) attempt \d+ commit \d+ ")
# EndOfBase.version of a table whose version at the end of the base predates its retained log.
BEFORE_HISTORY = -1
_DATED_FOLDER = re.compile(r"^(run_date|fit_date)=(?P<date>\d{4}-\d{2}-\d{2})$")


class BackfillError(RuntimeError):
    """The backfill cannot rewind safely; nothing was changed."""


@dataclass(frozen=True)
class Plan:
    """``dates``: run in this order; the tables are first rewound to the end of ``base``."""

    requested: tuple[dt.date, ...]
    dates: tuple[dt.date, ...]

    @property
    def base(self) -> dt.date:
        return self.dates[0] - dt.timedelta(days=1)


@dataclass(frozen=True)
class Rewind:
    """How one table goes back: ``to_version`` None deletes every row (the table came later)."""

    table: str
    current_version: int
    to_version: int | None


def processed_dates(spark: SparkSession, cfg: Config, jobs: Sequence[str], since: dt.date) -> list[dt.date]:
    """Run dates from ``since`` on for which one of ``jobs`` (on the nightly feed) succeeded, or was
    rewound by a backfill that has not finished, sorted."""
    location = catalog.PIPELINE_RUNS.location(cfg)
    if not catalog.table_exists(spark, location):
        return []
    rows = (
        spark.read.format("delta").load(location)
        .where(
            F.col(S.JOB).isin(list(jobs)) & (F.col(S.RUN_DATE) >= F.lit(since))
            & F.col(S.STATUS).isin(S.STATUS_SUCCEEDED, S.STATUS_REWOUND)
            & (F.col(S.DATASET).isNull() | (F.col(S.DATASET) == S.DATASET_LANDING))
        )
        .select(S.RUN_DATE).distinct()
    )
    return sorted(r[0] for r in rows.collect())  # one row per night processed


def plan(spark: SparkSession, cfg: Config, requested: Sequence[dt.date], jobs: Sequence[str]) -> Plan:
    """The requested dates and every later date already processed by one of ``jobs``, in date order."""
    if not requested:
        raise ValueError("give at least one date to backfill")
    later = processed_dates(spark, cfg, jobs, min(requested))
    return Plan(tuple(sorted(set(requested))), tuple(sorted(set(requested) | set(later))))


def rewind_as_run(
    spark: SparkSession, cfg: Config, p: Plan, jobs: Sequence[str], **run_args: Any
) -> tuple[list[Rewind], list[str]]:
    """:func:`rewind` inside the backfill's own recorded run for the plan's first date."""
    with runs.job_run(spark, cfg, JOB, p.dates[0], **run_args):
        return rewind(spark, cfg, p, jobs)


@dataclass(frozen=True)
class EndOfBase:
    """A table at some version, read back to the end of the night ``base``.

    ``version``: the version equal to the table at the end of ``base`` (None: the table did not exist
    then); ``undone``: the commits by runs of later dates since that version (``job date``);
    ``blocked``: commits on or before ``base`` made after later ones, which no version can keep
    while dropping those.
    """

    version: int | None
    undone: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()


def end_of_base(history: Sequence[Any], base: dt.date) -> EndOfBase:
    """Replays a table's commits (ascending) to find its version at the end of ``base``.

    A commit tagged with a date after ``base`` is undone; one on or before it (or untagged: written
    outside a run) moves the answer forward, unless later ones came before it. A backfill's RESTORE
    or DELETE for first date F puts the table at the end of F-1: the answer when F-1 is on or before
    ``base`` (later replays build on it), else the answer at the version it restored.
    """
    at: dict[int, EndOfBase] = {}
    # Before version 0 the table did not exist; before a later first version, the log was cleaned up.
    state = EndOfBase(None if not history or int(history[0]["version"]) == 0 else BEFORE_HISTORY)
    for commit in history:
        version = int(commit["version"])
        tag = _COMMIT_TAG.match(commit["userMetadata"] or "")
        job, day = (tag["job"], dt.date.fromisoformat(tag["run_date"])) if tag else (None, None)
        if job == JOB and day is not None and commit["operation"] in ("RESTORE", "DELETE"):
            if day - dt.timedelta(days=1) <= base:
                state = EndOfBase(version)
            elif commit["operation"] == "DELETE":
                state = EndOfBase(None)
            else:
                restored = int((commit["operationParameters"] or {})["version"])
                if restored not in at:
                    raise BackfillError(
                        f"version {restored}, which a backfill restored, is no longer in the table's Delta history"
                    )
                state = at[restored]
        elif day is not None and day > base:
            state = EndOfBase(state.version, (*state.undone, f"{job} {day}"), state.blocked)
        elif state.undone:
            what = f"{job} {day}" if tag else "a commit made outside a run"
            state = EndOfBase(state.version, state.undone, (*state.blocked, f"{what} (version {version})"))
        else:
            state = EndOfBase(version)
        at[version] = state
    return state


def rewinds(spark: SparkSession, cfg: Config, base: dt.date, jobs: Sequence[str]) -> list[Rewind]:
    """For each existing table but gold.pipeline_runs with commits by runs of dates after ``base``:
    the version it had at the end of ``base`` (None: it did not exist then).

    Raises: BackfillError, before anything changes, when a table's history no longer reaches that
    version, or when the rewind would undo commits the replay of ``jobs`` does not make again (a
    bulk load, a job on another dataset) or lose commits on or before ``base`` made after later ones.
    """
    from delta.tables import DeltaTable

    found, refused = [], []
    for spec in catalog.TABLES:
        location = spec.location(cfg)
        if spec is catalog.PIPELINE_RUNS or not catalog.table_exists(spark, location):
            continue
        # The table's log: one row per commit, read from _delta_log, never from the data.
        history = sorted(
            DeltaTable.forPath(spark, location).history()
            .select("version", "operation", "operationParameters", "userMetadata").collect(),
            key=lambda r: int(r["version"]),
        )
        end = end_of_base(history, base)
        if not end.undone:
            continue
        current = int(history[-1]["version"])
        foreign = sorted({u for u in end.undone if u.split(" ")[0] not in (*jobs, JOB)})
        if foreign:
            refused.append(f"{spec.name} would lose {', '.join(foreign)}, which the replay does not run again")
        if end.blocked:
            refused.append(f"{spec.name} would lose {', '.join(end.blocked)}, committed after later nights")
        if end.version == BEFORE_HISTORY:
            refused.append(f"{spec.name}: its version at the end of {base} is no longer in its Delta history")
        found.append(Rewind(spec.name, current, end.version))
    if refused:
        raise BackfillError(
            f"cannot rewind to the end of {base}: " + "; ".join(refused)
            + ". Nothing was changed: re-run those after the backfill, backfill from a later date, or rebuild "
            "into a new warehouse from the landing files"
        )
    return found


def model_folders_after(cfg: Config, base: dt.date) -> list[str]:
    """Folders under ``<warehouse>/models`` named ``run_date=R`` or ``fit_date=R`` with R after
    ``base``: next-item training runs (their checkpoints would make a re-run resume instead of
    training on the rewound data), next-item model versions and user-cluster models."""
    import pyarrow.fs as pafs

    root = f"{cfg.paths.warehouse.rstrip('/')}/models"
    fs, inner = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return []
    found, pending = [], [inner]
    while pending:  # one listing per folder down to the dated ones: a few per dataset and night
        folder = pending.pop()
        for info in fs.get_file_info(pafs.FileSelector(folder)):
            if info.type != pafs.FileType.Directory:
                continue
            dated = _DATED_FOLDER.match(info.base_name)
            if dated:
                if dt.date.fromisoformat(dated["date"]) > base:
                    found.append(info.path)
            elif folder == inner or "=" in info.base_name:
                pending.append(info.path)
    prefix = root[: len(root) - len(inner)] if "://" in root else ""
    return sorted(prefix + path for path in found)


def _delete_folder(path: str) -> None:
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    fs.delete_dir(inner)


def rewind(spark: SparkSession, cfg: Config, p: Plan, jobs: Sequence[str]) -> tuple[list[Rewind], list[str]]:
    """Rewinds every table and model folder to the end of ``p.base`` and marks the runs it undid
    ``rewound``; must run inside the backfill's own run (``runs.job_run``), which tags, locks and
    records each commit. Returns the tables' rewinds and the model folders removed."""
    from delta.tables import DeltaTable

    planned = rewinds(spark, cfg, p.base, jobs)
    for step in planned:
        spec = catalog.table_spec(step.table)
        table = DeltaTable.forPath(spark, spec.location(cfg))
        to_version = step.to_version
        if to_version is None:
            log.info("rewinding %s: it was created after %s, every row deleted", step.table, p.base)
            runs.commit(spark, spec, cfg, table.delete)
        else:
            log.info(
                "rewinding %s from version %d to %d (the end of %s)",
                step.table, step.current_version, to_version, p.base,
            )
            runs.commit(spark, spec, cfg, lambda t=table, v=to_version: t.restoreToVersion(v))
    folders = model_folders_after(cfg, p.base)
    for folder in folders:
        log.info("rewinding the models: removing %s (made for a date after %s)", folder, p.base)
        _delete_folder(folder)
    asked = ", ".join(map(str, p.requested))
    runs.mark_rewound(p.dates[0], f"its tables were rewound to the end of {p.base} by a backfill of {asked}")
    return planned, folders


def backfill(
    spark: SparkSession,
    cfg: Config,
    args: argparse.Namespace,
    steps: Mapping[str, Callable[[list[str]], int]],
    job_argv: Callable[[str, dt.date, argparse.Namespace], list[str]],
) -> dict:
    """Plans, rewinds and replays ``args.dates`` with ``steps`` (job name → main, in order)."""
    p = plan(spark, cfg, args.dates, list(steps))
    log.info("backfill of %s: rewind to the end of %s, then run %s in order", ", ".join(map(str, p.requested)),
             p.base, ", ".join(map(str, p.dates)))
    summary = {"requested": [str(d) for d in p.requested], "dates": [str(d) for d in p.dates], "base": str(p.base)}
    if args.dry_run:
        summary["rewind"] = {r.table: r.to_version for r in rewinds(spark, cfg, p.base, list(steps))}
        summary["models_removed"] = model_folders_after(cfg, p.base)
        return summary
    done, folders = rewind_as_run(spark, cfg, p, list(steps), attempt=args.attempt, arguments=args.argv)
    summary["rewind"] = {r.table: r.to_version for r in done}
    summary["models_removed"] = folders
    if args.rewind_only:
        return summary
    for run_date in p.dates:
        for name, main_of_job in steps.items():
            log.info("backfill: running %s for %s", name, run_date)
            code = main_of_job(job_argv(name, run_date, args))
            if code:
                raise SystemExit(f"backfill: {name} for {run_date} exited with code {code}; re-run the backfill")
    return summary


def dates_arg(value: str) -> list[dt.date]:
    try:
        return [dt.date.fromisoformat(d.strip()) for d in value.split(",") if d.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--dates must be YYYY-MM-DD[,YYYY-MM-DD...], got {value!r}") from err


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    first = parser.add_mutually_exclusive_group(required=True)
    first.add_argument("--dates", type=dates_arg, help="run dates to re-process, in any order, comma-separated")
    # What `python -m shoplens.submit backfill --run-date D` and the DAG tasks' arguments give.
    first.add_argument("--run-date", type=cli.run_date_arg, help="one date to re-process (with every later one)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the versions, change nothing")
    parser.add_argument(
        "--rewind-only", action="store_true",
        help="rewind and stop; Airflow then runs the dates in order (airflow backfill create ... --max-active-runs 1)",
    )
    parser.add_argument("--attempt", type=cli.attempt_arg, default=None, help="attempt of the rewind's run record")
    parser.add_argument("--demo", action="store_true", help="the warehouse is the embedded demo shop's (as make run)")
    cli.add_env_args(parser)
    args = cli.parse(parser, argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.dates is None:
        args.dates = [args.run_date]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from shoplens import pipeline

    args = parse_args(argv)
    cfg = cli.load_job_config(args)
    # The jobs' mains find this session (getOrCreate), as in the local pipeline.
    spark = build_session(cfg, f"shoplens.backfill {','.join(map(str, args.dates))}")
    print(json.dumps(backfill(spark, cfg, args, pipeline.STEPS, pipeline.job_argv), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
