"""build_user_profiles: ``gold.user_daily_activity`` → ``gold.user_profiles`` for one snapshot date,
with RFM scores, named segments, value tiers, behavioural clusters and ``gold.segment_summary``.

The snapshot of run date S uses daily rows up to S only and replaces S's slice of each table, so a
re-run gives the same rows and later data never changes an earlier snapshot. Clusters come from the
dataset's latest fitted pipeline when it is younger than ``profiles.clusters.refit_every_days``,
else from a new fit (docs/PROFILES.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.io import DRIVER_ROWS, read_table, replace_rows, replace_slice, small_query
from shoplens.profiles import clusters, features, rfm, summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfilesSummary:
    snapshot: dt.date
    users: int
    models: dict[str, str]


def model_location(cfg: Config, dataset: str, fit_date: dt.date) -> str:
    return f"{cfg.paths.warehouse.rstrip('/')}/models/user_clusters/dataset={dataset}/fit_date={fit_date.isoformat()}"


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> ProfilesSummary:
    """Builds the profiles, segments, clusters and summary of snapshot ``run_date``."""
    location = catalog.USER_DAILY_ACTIVITY.location(cfg)
    if not catalog.table_exists(spark, location):
        raise FileNotFoundError(f"gold.user_daily_activity does not exist at {location}: run build_user_activity")
    activity = read_table(spark, location)
    names = clusters.feature_names(cfg.profiles.longest_window_days)
    scored = (
        features.profile_rows(activity, run_date, cfg.profiles)
        .transform(lambda df: rfm.with_rfm(df, cfg.profiles))
        .transform(lambda df: clusters.with_features(df, cfg.profiles.longest_window_days))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        datasets = sorted(r[S.DATASET] for r in scored.select(S.DATASET).distinct().collect())  # a handful
        parts, models = [], {}
        for dataset in datasets:
            rows = scored.where(F.col(S.DATASET) == dataset)
            model, how = _model_for(spark, cfg, dataset, run_date, rows, names)
            models[dataset] = how
            if isinstance(model, clusters.Centres):
                parts.append(clusters.assign(model, rows, names))
            elif model is not None:
                parts.append(clusters.assign_by_pipeline(model, rows))
            else:
                parts.append(rows.withColumn(S.CLUSTER, F.lit(None)))
        # Not cached: the write and the summary each add only the cluster assignment (a projection)
        # to the cached rows.
        profiles = (
            reduce(DataFrame.unionByName, parts)
            if parts
            else scored.withColumn(S.CLUSTER, F.lit(None).cast("int"))
        )
        users = replace_slice(
            profiles, catalog.USER_PROFILES, cfg, {S.SNAPSHOT_DATE: run_date}, driver_rows=DRIVER_ROWS
        )
        replace_rows(
            spark,
            summary.summary_rows(profiles, run_date, names),
            catalog.SEGMENT_SUMMARY,
            cfg,
            {S.SNAPSHOT_DATE: run_date},
        )
    finally:
        scored.unpersist()
    log.info("profiles of snapshot %s: %d users; clusters %s", run_date, users, models)
    return ProfilesSummary(run_date, users, models)


def _model_for(
    spark: SparkSession, cfg: Config, dataset: str, snapshot: dt.date, rows: DataFrame, names: list[str]
) -> tuple[clusters.Centres | PipelineModel | None, str]:
    """The dataset's clustering for ``snapshot``: reused if fitted within the refit period before it,
    else fitted now (None when there are too few non-bot users to cluster). A reused fit is its
    recorded numbers, or its saved pipeline for a registry row written before them."""
    settings = cfg.profiles.clusters
    latest = _latest_fit(spark, cfg, dataset, snapshot)
    if latest and (snapshot - latest[S.FIT_DATE]).days < settings.refit_every_days:
        how = f"reused fit of {latest[S.FIT_DATE]}"
        centres = clusters.Centres.from_details(latest[S.DETAILS])
        return (centres if centres is not None else PipelineModel.load(latest[S.MODEL_PATH])), how
    train = rows.where(~F.col(S.IS_BOT))
    users = train.count()
    if users < settings.min_users:
        log.warning("clusters: %s has %d non-bot users on %s, fewer than %d: not clustered",
                    dataset, users, snapshot, settings.min_users)
        return None, f"not clustered ({users} users)"
    fitted = clusters.fit(train, names, settings)
    path = model_location(cfg, dataset, snapshot)
    fitted.model.write().overwrite().save(path)
    replace_rows(
        spark,
        [clusters.model_row(dataset, snapshot, fitted, path, names)],
        catalog.CLUSTER_MODELS,
        cfg,
        {S.DATASET: dataset, S.FIT_DATE: snapshot},
    )
    return fitted.centres, f"fitted k={fitted.k} silhouette={fitted.silhouette:.3f}"


def _latest_fit(spark: SparkSession, cfg: Config, dataset: str, snapshot: dt.date) -> dict | None:
    """The dataset's registry row with the latest fit date up to ``snapshot`` (a handful of rows per
    dataset: read by delta-rs where it reads, :func:`shoplens.io.small_query`); None without one."""
    columns = [S.FIT_DATE, S.MODEL_PATH, S.DETAILS]
    where = {S.DATASET: dataset, S.FIT_DATE: (dt.date.min, snapshot)}
    found = small_query(spark, cfg, catalog.CLUSTER_MODELS.location(cfg), columns, where)
    return max(found, key=lambda r: r[S.FIT_DATE]) if found else None


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_job("build_user_profiles", cli.job_parser(__doc__.splitlines()[0]), argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    run(spark, cfg, args.run_date)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
