"""``python -m shoplens.bench night --scale N --days D``: what one nightly job-run costs on a small night.

1. Generates the demo shop (about N events over D days) and prepares its history up to the night
   before the last two, as ``make run`` does up to its last night (``shoplens.pipeline.prepare_history``).
2. Runs the last two nights through every nightly job's ``main`` (the spark-submit entry point:
   run lock, ``gold.pipeline_runs`` record, commits) in one warm local session, and measures the
   last night: per job the seconds, Spark jobs and tasks (the status tracker, by the run's job
   group), Delta commits (the run's own records included), rows written (the commits' own
   ``operationMetrics``) and rows read (records read from files and tables, from Spark's event log).
3. Starts one job the way spark-submit starts it (``spark-submit jobs/build_user_activity.py``, a
   re-run of the last night: a small job that always reads and writes a table), three times in a
   row, and reports the median of the seconds from process start to its first Spark job's
   submission time in Spark's event log: JVM start-up, Python imports, the run record and the
   planning of the job's first read.

The last stdout line is one JSON object: ``jobs`` (per job: ``seconds``, ``spark_jobs``,
``spark_tasks``, ``commits``, ``rows_written``, ``rows_read``), ``night_seconds``,
``median_job_seconds``, ``seconds_to_first_spark_job`` (and each start's, ``..._runs``),
``build_recommendations_by_night`` (seconds,
Spark jobs and whether ALS re-tuned, on each night: a re-tune night and a normal night),
``build_churn_scores_by_night`` (the same, and whether it fitted: a fit night and a reuse night), the
machine and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from shoplens import cli, runs
from shoplens.session import build_session

PROBE_JOB = "build_user_activity"
# spark-submitted starts measured in a row; the figure is their median (one start varies by 1–2 s here).
START_PROBES = 3
# A re-tune night for ALS (the first after the history), then the measured night, a normal one.
NIGHTS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, default=30_000, help="demo shop events to generate")
    parser.add_argument("--days", type=int, default=None, help="demo days (default: the demo's own)")
    parser.add_argument("--start", default=None, help="first demo day (default: the demo's own)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the landing files and tables here")
    parser.add_argument("--skip-submit", action="store_true", help="do not measure a spark-submitted start")
    cli.add_env_args(parser)


def _event_log_dir(workdir: Path) -> Path:
    folder = workdir / "eventlog"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _event_log_overrides(workdir: Path) -> list[str]:
    return [
        "spark.conf.spark.eventLog.enabled=true",
        # Spark 4 compresses event logs (zstd) by default; the bench reads them as JSON lines.
        "spark.conf.spark.eventLog.compress=false",
        f"spark.conf.spark.eventLog.dir={_event_log_dir(workdir).as_uri()}",
    ]


def _lines(log_files: list[Path]):
    for log_file in log_files:
        with log_file.open() as lines:
            yield from lines


def _records_read_by_group(log_files: list[Path]) -> dict[str, int]:
    """Records read from files and tables per job group, from one application's event log."""
    stage_group: dict[int, str] = {}
    read: dict[str, int] = {}
    for line in _lines(log_files):
        if '"SparkListenerJobStart"' in line:
            event = json.loads(line)
            group = (event.get("Properties") or {}).get("spark.jobGroup.id")
            for stage_id in event.get("Stage IDs", []):
                if group:
                    stage_group[stage_id] = group
        elif '"SparkListenerTaskEnd"' in line:
            event = json.loads(line)
            group = stage_group.get(event.get("Stage ID"))
            metrics = event.get("Task Metrics") or {}
            records = (metrics.get("Input Metrics") or {}).get("Records Read", 0)
            if group and records:
                read[group] = read.get(group, 0) + int(records)
    return read


def _first_job_submission_ms(log_files: list[Path]) -> int | None:
    for line in _lines(log_files):
        if '"SparkListenerJobStart"' in line:
            return int(json.loads(line)["Submission Time"])
    return None


def _new_log(folder: Path, before: set[str]) -> list[Path]:
    """The event log files of the one application that wrote a log under ``folder`` since ``before``
    (Spark 4 writes a folder of rolling ``events_N_*`` files, or a single file)."""
    found = [Path(p) for p in glob.glob(str(folder / "*")) if p not in before and not p.endswith(".inprogress")]
    if len(found) != 1:
        raise RuntimeError(f"expected one new event log under {folder}, found {found}")
    if found[0].is_dir():
        return sorted(found[0].glob("events_*"), key=lambda f: int(f.name.split("_")[1]))
    return found


def _submit_starts(cfg, args, workdir: Path, run_date: dt.date, overrides: list[str]) -> list[float]:
    """Seconds from starting ``spark-submit`` of the probe job to its first Spark job, for each of
    ``START_PROBES`` starts in a row (re-runs of the same date: the same work each time)."""
    return [_submit_start(cfg, args, workdir, run_date, overrides) for _ in range(START_PROBES)]


def _submit_start(cfg, args: argparse.Namespace, workdir: Path, run_date: dt.date, overrides: list[str]) -> float:
    """Seconds from starting ``spark-submit`` of one job to its first Spark job's submission."""
    from shoplens import submit
    from shoplens.config import default_conf_dir

    folder = _event_log_dir(workdir)
    before = set(glob.glob(str(folder / "*")))
    conf_dir = Path(args.conf_dir).resolve() if args.conf_dir else default_conf_dir()
    spec = submit.spec_from_clone(cfg, conf_dir, conf_dir.parent, tuple(overrides))
    command = submit.command(spec, PROBE_JOB, run_date.isoformat(), submit.spark_submit_path())
    started_ms = time.time() * 1000
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(command, env=submit.submit_env(spec), check=True, **quiet)
    first = _first_job_submission_ms(_new_log(folder, before))
    if first is None:
        raise RuntimeError(f"{PROBE_JOB} ran no Spark job")
    return round((first - started_ms) / 1000, 2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from shoplens import pipeline

    overrides = [
        f"paths.landing={workdir / 'landing'}", f"paths.warehouse={workdir / 'warehouse'}",
        *_event_log_overrides(workdir), *args.overrides,
    ]
    demo = pipeline.demo_args(args.env, args.conf_dir, overrides, args.scale, args.days, args.start, args.seed)
    cfg = cli.load_job_config(demo)
    started = time.perf_counter()
    dates = pipeline.generate_demo(cfg, demo)
    log_folder = _event_log_dir(workdir)
    logs_before = set(glob.glob(str(log_folder / "*")))
    spark = build_session(cfg, "shoplens.bench night")
    history = pipeline.prepare_history(demo, dates, nightly_days=NIGHTS)
    prep_seconds = round(time.perf_counter() - started, 1)
    measured: dict[str, dict[str, Any]] = {}
    groups: dict[str, str] = {}
    # build_recommendations on each night: the first after the history re-tunes ALS, the last reuses.
    als_nights: dict[str, dict[str, Any]] = {}
    # build_churn_scores likewise: the first night fits (and saves) its models, the last reuses them.
    churn_nights: dict[str, dict[str, Any]] = {}
    for run_date in history.nightly:
        last = run_date == history.nightly[-1]
        for name in pipeline.night_steps(demo, last):
            began = time.perf_counter()
            code = pipeline.STEPS[name](pipeline.job_argv(name, run_date, demo))
            seconds = time.perf_counter() - began
            if code:
                raise RuntimeError(f"{name} for {run_date} exited with {code}")
            done = runs.last_run()
            assert done is not None and done.job == name
            if name == "build_recommendations":
                als_nights[run_date.isoformat()] = {
                    "seconds": round(seconds, 2), "retuned": bool(done.metrics.get("als_retuned", 1.0)),
                    "spark_jobs": runs.spark_job_counts(spark, done.job_group)[0],
                }
            if name == "build_churn_scores":
                churn_nights[run_date.isoformat()] = {
                    "seconds": round(seconds, 2), "fitted": bool(done.metrics.get("churn_fitted", 0.0)),
                    "spark_jobs": runs.spark_job_counts(spark, done.job_group)[0],
                }
            if not last:
                continue
            spark_jobs, tasks = runs.spark_job_counts(spark, done.job_group)
            groups[done.job_group] = name
            measured[name] = {
                "seconds": round(seconds, 2), "spark_jobs": spark_jobs, "spark_tasks": tasks,
                "commits": len(done.commits), "rows_written": sum(done.rows_written.values()),
                "rows_written_by_table": dict(sorted(done.rows_written.items())),
            }
    night_seconds = round(sum(j["seconds"] for j in measured.values()), 1)
    spark.stop()
    read = _records_read_by_group(_new_log(log_folder, logs_before))
    for group, name in groups.items():
        measured[name]["rows_read"] = read.get(group, 0)
    result: dict[str, Any] = {
        "bench": "night", "scale": args.scale, "days": len(dates), "measured_night": history.nightly[-1].isoformat(),
        "history": history.mode, "prep_seconds": prep_seconds, "jobs": measured, "night_seconds": night_seconds,
        "median_job_seconds": round(statistics.median(j["seconds"] for j in measured.values()), 2),
        "max_job_seconds_but_training": max(j["seconds"] for n, j in measured.items() if n != "train_next_item"),
        "spark_jobs": sum(j["spark_jobs"] for j in measured.values()),
        "commits": sum(j["commits"] for j in measured.values()),
        "build_recommendations_by_night": als_nights,
        "build_churn_scores_by_night": churn_nights,
    }
    if not args.skip_submit:
        starts = _submit_starts(cfg, args, workdir, history.nightly[-1], overrides)
        result["seconds_to_first_spark_job"] = statistics.median(starts)
        result["seconds_to_first_spark_job_runs"] = starts
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(args: argparse.Namespace) -> int:
    from shoplens.bench import measure

    return measure(run, args, "shoplens-bench-night-")
