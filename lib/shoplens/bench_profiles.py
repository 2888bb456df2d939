"""``python -m shoplens.bench profiles --scale N``: the profile jobs over N generated events.

1. Generates the demo shop with about N events over ``--days`` days and writes its valid events as
   ``silver.events`` directly (typed, one row per event id, the generator's bots flagged): the
   ingest path has its own bench, so this preparation is reported apart (``prep_seconds``).
2. Full history: ``build_user_activity --since <first day>`` then ``build_user_profiles`` for the
   last day (``full_activity_seconds``, ``full_profiles_seconds``; the first fit of the clusters).
3. A nightly increment for the last day: ``build_user_activity`` over its window, then
   ``build_user_profiles`` again (``nightly_activity_seconds``, ``nightly_profiles_seconds``; the
   fitted clusters are reused, as on most nights).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from shoplens import bench_sessions, catalog, cli
from shoplens import schemas as S
from shoplens.io import replace_slice
from shoplens.session import build_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, required=True, help="demo shop events to generate")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the landing files and tables here")
    cli.add_env_args(parser)


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - started, 1)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from shoplens.bench import workdir_config
    from shoplens.demo import generate
    from shoplens.jobs import build_user_activity, build_user_profiles

    cfg = workdir_config(args, workdir)
    started = time.perf_counter()
    manifest = generate(cfg.paths.landing, args.start, args.days, args.scale, args.seed, overwrite=True)
    spark = build_session(cfg, "shoplens.bench profiles")
    events = bench_sessions.landing_events(spark, cfg.paths.landing, manifest["bots"]["user_ids"])
    event_date = F.to_date(F.from_utc_timestamp(F.col(S.EVENT_TIME), cfg.shop.timezone))
    first, last = dt.date.fromisoformat(args.start), dt.date.fromisoformat(manifest["landing_dates"][-1])
    silver = events.select(
        "*",
        event_date.alias(S.EVENT_DATE),
        F.col(S.EVENT_TYPE).alias(S.SOURCE_EVENT_TYPE),
        F.lit(None).cast("string").alias(S.ORDER_ID),
        F.lit(None).cast("int").alias(S.RATING),
        F.lit("bench").alias(S.SOURCE),
        event_date.alias(S.RUN_DATE),
        F.lit("bench").alias(S.SOURCE_FILE),
    ).where(F.col(S.EVENT_DATE).between(first, last))
    replace_slice(silver, catalog.SILVER_EVENTS, cfg, {S.DATASET: S.DATASET_LANDING})
    silver_rows = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg)).count()
    prep_seconds = round(time.perf_counter() - started, 1)

    activity_rows, full_activity_s = _timed(build_user_activity.run, spark, cfg, last, since=first)
    full, full_profiles_s = _timed(build_user_profiles.run, spark, cfg, last)
    nightly_rows, nightly_activity_s = _timed(build_user_activity.run, spark, cfg, last)
    nightly, nightly_profiles_s = _timed(build_user_profiles.run, spark, cfg, last)
    summary = (
        spark.read.format("delta")
        .load(catalog.SEGMENT_SUMMARY.location(cfg))
        .where(F.col(S.SNAPSHOT_DATE) == F.lit(last))
    )
    segments = {
        r[S.SEGMENT]: r[S.USERS] for r in summary.where(F.col(S.KIND) == "rfm_segment").collect()  # ~10 rows
    }
    return {
        "bench": "profiles",
        "scale": args.scale,
        "days": args.days,
        "events": silver_rows,
        "activity_rows": activity_rows,
        "nightly_activity_rows": nightly_rows,
        "users_profiled": full.users,
        "same_profiles_after_rerun": full.users == nightly.users,
        "clusters": full.models,
        "rfm_segments": dict(sorted(segments.items())),
        "prep_seconds": prep_seconds,
        "full_activity_seconds": full_activity_s,
        "full_profiles_seconds": full_profiles_s,
        "nightly_activity_seconds": nightly_activity_s,
        "nightly_profiles_seconds": nightly_profiles_s,
        "seconds": round(full_activity_s + full_profiles_s, 1),
        "nightly_seconds": round(nightly_activity_s + nightly_profiles_s, 1),
        "events_per_s": round(silver_rows / max(full_activity_s + full_profiles_s, 0.1), 1),
    }


def main(args: argparse.Namespace) -> int:
    from shoplens.bench import measure

    return measure(run, args, "shoplens-bench-profiles-")
