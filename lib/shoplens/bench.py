"""``python -m shoplens.bench``: measured runs whose last stdout line is one JSON object.

    python -m shoplens.bench night --scale 30000 [--days D] [--seed S]   (shoplens.bench_night)
    python -m shoplens.bench ingest --scale 1000000 [--days 14] [--workdir DIR]
    python -m shoplens.bench ingest --input PATH --format taobao|online_retail|movielens|sequences|diginetica
    python -m shoplens.bench sessions --scale 1000000 [--days 14] [--workdir DIR]   (shoplens.bench_sessions)
    python -m shoplens.bench profiles --scale 1000000 [--days 28] [--workdir DIR]   (shoplens.bench_profiles)
    python -m shoplens.bench bgnbd --input PATH --format cdnow_summary|cdnow_transactions   (shoplens.bench_value)
    python -m shoplens.bench churn --input PATH --format online_retail   (shoplens.bench_value)
    python -m shoplens.bench als --input PATH --format movielens|ratings_tsv   (shoplens.bench_als)
    python -m shoplens.bench seqrec --input PATH --format s3rec --model gru4rec|sasrec --num-proc N   (bench_seqrec)

``ingest --scale N`` generates the demo shop with about N events, then runs ``ingest_landing`` and
``build_silver_events`` for every landing date in one local session, and counts every term of the
reconciliation from its own table. ``--input`` loads a real public file in one bulk load
(``load_history``). Generation time is reported apart from ingest time; ``events_per_s`` is landed
lines per second of ingest. Figures go to docs/BENCHMARKS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from shoplens import bench_als, bench_night, bench_profiles, bench_seqrec, bench_sessions, bench_value, catalog, cli
from shoplens import schemas as S
from shoplens.session import build_session


def machine() -> dict[str, Any]:
    """The machine a figure was measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1), "python": platform.python_version()}


def workdir_config(args: argparse.Namespace, workdir: Path):
    """The job config of ``args`` with landing files and tables under ``workdir``."""
    cfg = cli.load_job_config(args)
    paths = dataclasses.replace(cfg.paths, landing=str(workdir / "landing"), warehouse=str(workdir / "warehouse"))
    return dataclasses.replace(cfg, paths=paths)


def measure(run: Callable[[argparse.Namespace, Path], dict[str, Any]], args: argparse.Namespace, prefix: str) -> int:
    """Runs ``run(args, workdir)`` in ``--workdir`` or a temporary folder (removed after), adds the
    machine and the date, and prints the figures as the last stdout line (one JSON object)."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = machine()
    result["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")  # when measured, not business data
    print(json.dumps(result, sort_keys=True))
    return 0


def _count(spark, spec, cfg, where=None) -> int:
    if not catalog.table_exists(spark, spec.location(cfg)):
        return 0
    df = spark.read.format("delta").load(spec.location(cfg))
    return df.where(where).count() if where is not None else df.count()


def _by_reason(spark, cfg, where) -> dict[str, int]:
    if not catalog.table_exists(spark, catalog.QUARANTINE.location(cfg)):
        return {}
    df = spark.read.format("delta").load(catalog.QUARANTINE.location(cfg)).where(where)
    return dict(sorted((r[S.REASON], r["count"]) for r in df.groupBy(S.REASON).count().collect()))


def bench_generated(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from shoplens.demo import generate
    from shoplens.jobs import build_silver_events, ingest_landing

    cfg = workdir_config(args, workdir)
    started = time.perf_counter()
    manifest = generate(cfg.paths.landing, args.start, args.days, args.scale, args.seed, overwrite=True)
    generation_s = time.perf_counter() - started
    spark = build_session(cfg, "shoplens.bench ingest")
    started = time.perf_counter()
    for day in manifest["landing_dates"]:
        run_date = dt.date.fromisoformat(day)
        ingest_landing.run(spark, cfg, run_date)
        build_silver_events.run(spark, cfg, run_date, demo=True)
    seconds = time.perf_counter() - started
    landed = manifest["totals"]["lines"]
    result = {
        "bench": "ingest",
        "source": "demo",
        "scale": args.scale,
        "days": args.days,
        "events_landed": landed,
        "accepted": _count(spark, catalog.SILVER_EVENTS, cfg),
        "quarantined": _count(spark, catalog.QUARANTINE, cfg),
        "duplicates": _count(spark, catalog.DUPLICATES, cfg),
        "quarantined_by_reason": _by_reason(spark, cfg, F.lit(True)),
        "planted_by_reason": {
            k: manifest["totals"][k]
            for k in [*manifest["dirty_kinds"], "too_late"]
            if k != "duplicate" and manifest["totals"][k]
        },
        "planted_duplicates": manifest["totals"]["duplicate"],
        "generation_seconds": round(generation_s, 1),
        "seconds": round(seconds, 1),
        "events_per_s": round(landed / seconds, 1),
    }
    result["reconciled"] = result["events_landed"] == (
        result["accepted"] + result["quarantined"] + result["duplicates"]
    ) and result["quarantined_by_reason"] == result["planted_by_reason"]
    return result


def bench_input(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from shoplens.jobs import load_history

    cfg = workdir_config(args, workdir)
    spark = build_session(cfg, f"shoplens.bench ingest {args.format}")
    started = time.perf_counter()
    summary = load_history.run(spark, cfg, args.format, args.input, args.run_date, demo=True)
    seconds = time.perf_counter() - started
    result = {"bench": "ingest", "source": args.format, "input": str(args.input), **summary}
    result["seconds"] = round(seconds, 1)
    result["events_per_s"] = round(result["events_landed"] / seconds, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    ingest = sub.add_parser("ingest", help="ingest throughput and reconciliation")
    ingest.add_argument("--scale", type=int, default=None, help="demo shop events to generate")
    ingest.add_argument("--days", type=int, default=14)
    ingest.add_argument("--start", default="2024-01-01")
    ingest.add_argument("--seed", type=int, default=42)
    ingest.add_argument("--input", type=Path, default=None, help="a real public file instead of the demo shop")
    ingest.add_argument("--format", default=None, help="the input's format (see load_history)")
    ingest.add_argument("--run-date", type=cli.run_date_arg, default=dt.date(2024, 1, 1))
    ingest.add_argument("--workdir", type=Path, default=None, help="keep landing files and tables here")
    cli.add_env_args(ingest)
    sessions = sub.add_parser("sessions", help="sessionization: Spark against DuckDB on the same input")
    bench_sessions.add_arguments(sessions)
    profiles = sub.add_parser("profiles", help="user activity and profile jobs: full history and a nightly increment")
    bench_profiles.add_arguments(profiles)
    bench_value.add_bgnbd_arguments(sub.add_parser("bgnbd", help="BG/NBD fit on CDNOW against the paper"))
    bench_value.add_churn_arguments(sub.add_parser("churn", help="churn models against baselines on a public file"))
    bench_als.add_arguments(sub.add_parser("als", help="explicit and implicit ALS on a ratings file"))
    bench_seqrec.add_arguments(sub.add_parser("seqrec", help="a next-item model on a sequence file, Horovod on Spark"))
    bench_night.add_arguments(sub.add_parser("night", help="what every nightly job-run costs on a small demo night"))
    args = cli.parse(parser, argv)
    if args.bench == "night":
        return bench_night.main(args)
    if args.bench == "als":
        return bench_als.main(args)
    if args.bench == "seqrec":
        return bench_seqrec.main(args)
    if args.bench == "sessions":
        return bench_sessions.main(args)
    if args.bench == "profiles":
        return bench_profiles.main(args)
    if args.bench == "bgnbd":
        return bench_value.main_bgnbd(args)
    if args.bench == "churn":
        return bench_value.main_churn(args)
    if (args.scale is None) == (args.input is None):
        parser.error("give either --scale N or --input PATH --format F")
    if args.input is not None and not args.format:
        parser.error("--input needs --format")
    return measure(bench_generated if args.scale else bench_input, args, "shoplens-bench-")


if __name__ == "__main__":
    sys.exit(main())
