"""build_customer_value: ``gold.user_daily_activity`` → ``gold.customer_value`` for one snapshot:
BG/NBD p_alive and expected purchases, Gamma-Gamma expected spend, their product as expected value.

Per-user statistics are computed in Spark; identical (x, t_x, T) triples are grouped and only the
groups reach the driver, where SciPy fits each dataset from generic starting values and predicts per
triple; predictions join back to users on the triple. Fit parameters and log-likelihoods go to
``gold.model_metrics`` (docs/VALUE.md). A re-run replaces the snapshot's slice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shoplens import catalog, cli
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.io import DRIVER_ROWS, read_table, replace_slice
from shoplens.metrics import Metric, write_metrics
from shoplens.value import stats as V
from shoplens.value.fit import Triple, ValueFit, fit_value

log = logging.getLogger(__name__)

JOB = "build_customer_value"
PROTOCOL = "calibration_to_snapshot"
_PREDICTIONS = T.StructType(
    [
        T.StructField(S.DATASET, T.StringType(), False),
        T.StructField(S.REPEAT_PURCHASES, T.IntegerType(), False),
        T.StructField(V.T_X_DAYS, T.IntegerType(), False),
        T.StructField(V.AGE_DAYS, T.IntegerType(), False),
        T.StructField(S.P_ALIVE, T.DoubleType(), False),
        T.StructField(S.EXPECTED_PURCHASES, T.DoubleType(), False),
        T.StructField("_p", T.DoubleType(), True),
        T.StructField("_q", T.DoubleType(), True),
        T.StructField("_v", T.DoubleType(), True),
    ]
)


@dataclass(frozen=True)
class ValueSummary:
    snapshot: dt.date
    users: int
    fits: dict[str, ValueFit]


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> ValueSummary:
    """Fits and scores every dataset's customers as of snapshot ``run_date``."""
    location = catalog.USER_DAILY_ACTIVITY.location(cfg)
    if not catalog.table_exists(spark, location):
        raise FileNotFoundError(f"gold.user_daily_activity does not exist at {location}: run build_user_activity")
    activity = read_table(spark, location)
    stats = V.purchase_stats(activity, run_date).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        fits = _fit_datasets(stats, cfg)
        rows = []
        for dataset, fitted in fits.items():
            gg = fitted.gamma_gamma
            for (x, t_x, age), (alive, expected) in fitted.predictions.items():
                rows.append((dataset, x, t_x, age, alive, expected,
                             gg.p if gg else None, gg.q if gg else None, gg.v if gg else None))
        predictions = spark.createDataFrame(rows, _PREDICTIONS)
        values = customer_values(stats, predictions, run_date, cfg.value.horizon_weeks)
        users = replace_slice(
            values, catalog.CUSTOMER_VALUE, cfg, {S.SNAPSHOT_DATE: run_date}, driver_rows=DRIVER_ROWS
        )
    finally:
        stats.unpersist()
    write_metrics(spark, cfg, fit_metrics(run_date, fits))
    log.info("customer value of snapshot %s: %d users; fits %s", run_date, users,
             {d: f.bgnbd for d, f in fits.items()})
    return ValueSummary(run_date, users, fits)


def _fit_datasets(stats, cfg: Config) -> dict[str, ValueFit]:
    # Bounded by distinct (x, t_x, T) per dataset, not by users (shoplens.value.stats).
    by_dataset: dict[str, list[Triple]] = {}
    for r in V.grouped_triples(stats).collect():
        by_dataset.setdefault(r[S.DATASET], []).append(
            Triple(r[S.REPEAT_PURCHASES], r[V.T_X_DAYS], r[V.AGE_DAYS], r[V.CUSTOMERS])
        )
    spend: dict[str, list[tuple[int, float, int]]] = {}
    for r in V.grouped_spend(stats).collect():  # bounded by x and the 0.1 % spend grid
        spend.setdefault(r[S.DATASET], []).append((r[S.REPEAT_PURCHASES], r[S.AVG_REPEAT_VALUE], r[V.CUSTOMERS]))
    value = cfg.value
    return {
        dataset: fit_value(triples, spend.get(dataset, []), value.horizon_weeks, value.min_customers, value.max_iter)
        for dataset, triples in sorted(by_dataset.items())
    }


def customer_values(stats, predictions, snapshot: dt.date, horizon_weeks: float):
    """Per-user statistics + per-triple predictions → gold.customer_value rows.

    Gamma-Gamma's conditional mean spend is p (v + x m) / (p x + q - 1) for a customer with repeat
    purchases and a mean m, and the population mean p v / (q - 1) otherwise.
    Returns: one row per (dataset, user_id) of ``stats``; model columns null without a fit or a
    purchase.
    """
    keys = [S.DATASET, S.REPEAT_PURCHASES, V.T_X_DAYS, V.AGE_DAYS]
    joined = stats.join(F.broadcast(predictions), keys, "left")
    p, q, v = F.col("_p"), F.col("_q"), F.col("_v")
    x = F.col(S.REPEAT_PURCHASES)
    m = F.col(S.AVG_REPEAT_VALUE).cast("double")
    expected_spend = F.when(
        (x > 0) & m.isNotNull(), F.try_divide(p * (v + x * m), p * x + q - F.lit(1.0))
    ).otherwise(F.try_divide(p * v, q - F.lit(1.0)))
    return joined.select(
        F.lit(snapshot).alias(S.SNAPSHOT_DATE),
        S.DATASET,
        S.USER_ID,
        S.HAS_PURCHASED,
        S.REPEAT_PURCHASES,
        S.RECENCY_WEEKS,
        S.AGE_WEEKS,
        S.AVG_REPEAT_VALUE,
        S.P_ALIVE,
        S.EXPECTED_PURCHASES,
        expected_spend.alias(S.EXPECTED_AVG_VALUE),
        (F.col(S.EXPECTED_PURCHASES) * expected_spend).alias(S.EXPECTED_VALUE),
        F.lit(float(horizon_weeks)).alias(S.HORIZON_WEEKS),
    )


def fit_metrics(run_date: dt.date, fits: dict[str, ValueFit]) -> list[Metric]:
    """The fits' parameters and log-likelihoods as gold.model_metrics rows (split ``calibration``)."""
    out = []
    for dataset, fitted in fits.items():
        if fitted.bgnbd is not None:
            b = fitted.bgnbd
            for name, value in (("r", b.r), ("alpha", b.alpha), ("a", b.a), ("b", b.b),
                                ("log_likelihood", b.log_likelihood), ("triples", float(b.groups))):
                out.append(Metric(run_date, JOB, dataset, "bgnbd", "calibration", PROTOCOL, name, value, b.customers))
        if fitted.gamma_gamma is not None:
            g = fitted.gamma_gamma
            for name, value in (("p", g.p), ("q", g.q), ("v", g.v), ("log_likelihood", g.log_likelihood)):
                out.append(
                    Metric(run_date, JOB, dataset, "gamma_gamma", "calibration", PROTOCOL, name, value, g.customers)
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_job("build_customer_value", cli.job_parser(__doc__.splitlines()[0]), argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    run(spark, cfg, args.run_date)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
