"""``python -m shoplens.bench bgnbd|churn``: lifetime-value and churn figures on public data.

    python -m shoplens.bench bgnbd --input ../shared/data/cdnow --format cdnow_summary|cdnow_transactions
    python -m shoplens.bench churn --input ../shared/data/online_retail/online_retail.parquet --format online_retail

``bgnbd`` fits BG/NBD through the same code as ``build_customer_value``: Spark computes per-customer
(x, t_x, T) (for transactions: from daily purchase rows, paper conventions, calibration ending
``--calibration-end``, 1997-09-30 for CDNOW) and groups identical triples; SciPy fits the groups
from generic starting values. ``cdnow_summary`` reads ``cdnow_customers_summary.csv`` (ID, frequency,
recency, T in weeks); ``cdnow_transactions`` reads ``CDNOW_sample.txt`` (the 2,357-customer sample
of the paper) when given the folder, or the given file (sample or master layout).

``churn`` loads the file with ``load_history``, builds the daily activity, the profile snapshots the
churn protocol needs (churn.* in conf/base.yaml, fixed before the run) and runs ``build_churn_scores``
for the last event date of the file. The profile snapshots are built without behavioural clusters,
which churn does not use.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli
from shoplens import schemas as S
from shoplens.session import build_session

CDNOW_SUMMARY_FILE = "cdnow_customers_summary.csv"
CDNOW_SAMPLE_FILE = "CDNOW_sample.txt"
PAPER = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def add_bgnbd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--format", required=True, choices=("cdnow_summary", "cdnow_transactions"))
    parser.add_argument("--calibration-end", type=cli.run_date_arg, default=dt.date(1997, 9, 30))
    parser.add_argument("--workdir", type=Path, default=None, help="unused; kept for measure()")
    cli.add_env_args(parser)


def add_churn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--format", required=True, choices=("online_retail",))
    parser.add_argument("--workdir", type=Path, default=None, help="keep the tables here")
    cli.add_env_args(parser)


def cdnow_daily_rows(spark: SparkSession, path: str, calibration_end: dt.date) -> DataFrame:
    """CDNOW transaction lines (sample: id, index, yyyymmdd, cds, dollars; master: id, yyyymmdd, cds,
    dollars, with a header) → daily rows up to ``calibration_end``.

    Returns: one row per (dataset, user_id, event_date) with orders (transactions that day), spend,
    refunds 0 and is_bot false: the columns shoplens.value.stats reads."""
    fields = F.split(F.trim(F.col("value")), r"\s+")
    n = F.size(fields)
    lines = spark.read.text(path).select(
        fields[0].alias(S.USER_ID),
        F.when(n == 5, fields[2]).otherwise(fields[1]).alias("_day"),
        F.when(n == 5, fields[4]).otherwise(fields[3]).alias("_dollars"),
    )
    typed = lines.select(
        S.USER_ID,
        F.to_date(F.col("_day"), "yyyyMMdd").alias(S.EVENT_DATE),
        F.expr("try_cast(_dollars AS DECIMAL(18, 2))").alias("_amount"),
    ).where(F.col("_amount").isNotNull() & F.col(S.EVENT_DATE).isNotNull())  # the master's header line
    return (
        typed.where(F.col(S.EVENT_DATE) <= F.lit(calibration_end))
        .groupBy(S.USER_ID, S.EVENT_DATE)
        .agg(F.count(F.lit(1)).alias(S.ORDERS), F.sum("_amount").cast(S.MONEY).alias(S.SPEND))
        .select(F.lit("cdnow").alias(S.DATASET), S.USER_ID, S.EVENT_DATE, S.ORDERS, S.SPEND,
                F.lit(0).cast(S.MONEY).alias(S.REFUNDS), F.lit(False).alias(S.IS_BOT))
    )


def run_bgnbd(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import numpy as np

    from shoplens.value import bgnbd
    from shoplens.value import stats as V
    from shoplens.value.fit import Triple, fit_triples

    cfg = cli.load_job_config(args)
    spark = build_session(cfg, f"shoplens.bench bgnbd {args.format}")
    started = time.perf_counter()
    path = args.input
    if args.format == "cdnow_summary":
        path = path / CDNOW_SUMMARY_FILE if path.is_dir() else path
        summary = spark.read.option("header", True).csv(str(path))
        grouped = summary.groupBy(
            F.expr("try_cast(frequency AS INT)").alias("x"),
            F.expr("try_cast(recency AS DOUBLE)").alias("t_x"),
            F.expr("try_cast(T AS DOUBLE)").alias("T"),
        ).count().collect()  # one row per distinct (x, t_x, T)
        x, t_x, age, w = (np.array([r[k] for r in grouped], dtype=float) for k in ("x", "t_x", "T", "count"))
        fitted = bgnbd.fit(x, t_x, age, w, max_iter=cfg.value.max_iter)
    else:
        path = path / CDNOW_SAMPLE_FILE if path.is_dir() else path
        stats = V.purchase_stats(cdnow_daily_rows(spark, str(path), args.calibration_end), args.calibration_end)
        triples = [
            Triple(r[S.REPEAT_PURCHASES], r[V.T_X_DAYS], r[V.AGE_DAYS], r[V.CUSTOMERS])
            for r in V.grouped_triples(stats).collect()  # bounded by distinct triples
        ]
        fitted = fit_triples(triples, cfg.value.max_iter)
    seconds = time.perf_counter() - started
    result = {
        "bench": "bgnbd",
        "format": args.format,
        "input": str(path),
        "customers": fitted.customers,
        "triples": fitted.groups,
        "r": round(fitted.r, 4),
        "alpha": round(fitted.alpha, 4),
        "a": round(fitted.a, 4),
        "b": round(fitted.b, 4),
        "log_likelihood": round(fitted.log_likelihood, 3),
        "converged": fitted.converged,
        "seconds": round(seconds, 1),
    }
    got = {"r": fitted.r, "alpha": fitted.alpha, "a": fitted.a, "b": fitted.b}
    result["max_relative_error_vs_paper"] = round(max(abs(got[k] / PAPER[k] - 1) for k in PAPER), 5)
    result["within_1pct_of_paper"] = result["max_relative_error_vs_paper"] <= 0.01
    return result


def run_churn(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from shoplens.bench import workdir_config
    from shoplens.jobs import build_churn_scores, build_user_activity, build_user_profiles, load_history

    cfg = workdir_config(args, workdir)
    # Churn features do not use the behavioural clusters: the profile snapshots are built without
    # them (a cluster fit per snapshot would dominate the bench's time and change no figure).
    no_clusters = dataclasses.replace(cfg.profiles.clusters, min_users=2**31 - 1)
    cfg = dataclasses.replace(cfg, profiles=dataclasses.replace(cfg.profiles, clusters=no_clusters))
    spark = build_session(cfg, f"shoplens.bench churn {args.format}")
    started = time.perf_counter()
    load_history.run(spark, cfg, args.format, args.input, dt.date(2024, 1, 1), demo=True)
    silver = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg)).where(
        F.col(S.DATASET) == args.format
    )
    first, last = silver.agg(F.min(S.EVENT_DATE), F.max(S.EVENT_DATE)).first()
    load_s = time.perf_counter() - started
    build_user_activity.run(spark, cfg, last, since=first)
    activity_s = time.perf_counter() - started - load_s
    snapshots = [*cfg.churn.training_dates(last), cfg.churn.evaluation_date(last), last]
    for snapshot in snapshots:
        build_user_profiles.run(spark, cfg, snapshot)
    prep_s = time.perf_counter() - started
    result = build_churn_scores.run(spark, cfg, last)
    seconds = time.perf_counter() - started
    figures = result.by_dataset[args.format]
    return {
        "bench": "churn",
        "format": args.format,
        "input": str(args.input),
        "run_date": last.isoformat(),
        "horizon_days": cfg.churn.horizon_days,
        "threshold": cfg.churn.threshold,
        "training_snapshots": [d.isoformat() for d in cfg.churn.training_dates(last)],
        "evaluation_snapshot": cfg.churn.evaluation_date(last).isoformat(),
        **figures,
        "load_seconds": round(load_s, 1),
        "activity_seconds": round(activity_s, 1),
        "profiles_seconds": round(prep_s - load_s - activity_s, 1),
        "prep_seconds": round(prep_s, 1),
        "churn_seconds": round(seconds - prep_s, 1),
        "seconds": round(seconds, 1),
    }


def main_bgnbd(args: argparse.Namespace) -> int:
    from shoplens.bench import measure

    return measure(run_bgnbd, args, "shoplens-bench-bgnbd-")


def main_churn(args: argparse.Namespace) -> int:
    from shoplens.bench import measure

    return measure(run_churn, args, "shoplens-bench-churn-")
