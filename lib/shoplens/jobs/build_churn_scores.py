"""build_churn_scores: ``gold.user_profiles`` snapshots + ``gold.user_daily_activity`` →
``gold.churn_scores``, ``gold.churn_feature_importance`` and churn rows of ``gold.model_metrics``.

Protocol (docs/CHURN.md): for run date R, the evaluation snapshot E = R - N (or churn.evaluation_snapshot)
and training snapshots t with t + N <= E (churn.*). A gradient-boosted classifier and a
logistic-regression baseline are fitted on the training snapshots, then evaluated on E against a
recency-only baseline; the same fitted GBT scores R's buyers. The models are saved and recorded in
``gold.churn_models``; the next ``churn.refit_every_days - 1`` run dates score with them, without
fitting or evaluating (their scores name the fit's evaluation snapshot). Without enough labelled
history (a young shop, missing snapshots) the run writes empty slices and says why in the log.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, runs
from shoplens import schemas as S
from shoplens.churn import evaluate
from shoplens.churn.examples import feature_names, labelled, with_features
from shoplens.config import ChurnConfig, Config
from shoplens.io import DRIVER_ROWS, read_table, replace_rows, replace_slice, small_query
from shoplens.metrics import Metric, write_metrics

log = logging.getLogger(__name__)

JOB = "build_churn_scores"
GBT, LOGREG, RECENCY = "gbt", "logreg", "recency_baseline"
_SCORE = "_score"


@dataclass(frozen=True)
class ChurnSummary:
    run_date: dt.date
    evaluation_snapshot: dt.date
    training_snapshots: tuple[dt.date, ...]
    # dataset → figures on the evaluation snapshot (the bench's JSON); only datasets fitted by this run.
    by_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    # dataset → fit date of the models that scored it, for datasets scored with an earlier fit.
    reused: dict[str, dt.date] = field(default_factory=dict)


def protocol(cfg: ChurnConfig) -> str:
    return f"snapshot_holdout_{cfg.horizon_days}d"


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> ChurnSummary:
    """Fits, evaluates and scores churn for every dataset with enough labelled history; a dataset
    with models fitted within ``churn.refit_every_days`` before the run date is scored with those."""
    churn = cfg.churn
    evaluation, training = churn.evaluation_date(run_date), churn.training_dates(run_date)
    summary = ChurnSummary(run_date, evaluation, training)
    for spec in (catalog.USER_PROFILES, catalog.USER_DAILY_ACTIVITY):
        if not catalog.table_exists(spark, spec.location(cfg)):
            raise FileNotFoundError(f"{spec.name} does not exist at {spec.location(cfg)}: run its job first")
    profiles = read_table(spark, catalog.USER_PROFILES.location(cfg))
    activity = read_table(spark, catalog.USER_DAILY_ACTIVITY.location(cfg)).where(
        F.col(S.EVENT_DATE) <= F.lit(run_date)
    )
    wanted = [*training, evaluation, run_date]
    found = present_snapshots(spark, cfg, wanted)
    present = {r[S.SNAPSHOT_DATE] for r in found}
    missing = [d.isoformat() for d in wanted if d not in present]
    if missing:
        log.warning("churn: no gold.user_profiles snapshot for %s (build_user_profiles)", ", ".join(missing))
    names = feature_names(cfg.profiles.windows_days)
    settings = fit_settings(churn, names)
    fitted = latest_fits(spark, cfg, run_date, settings)
    features = with_features(profiles.where(F.col(S.SNAPSHOT_DATE).isin(wanted)), cfg.profiles.windows_days)
    examples = None
    scores, importances, metrics = [], [], []
    try:
        for dataset in sorted({r[S.DATASET] for r in found}):  # a handful
            current = features.where((F.col(S.SNAPSHOT_DATE) == F.lit(run_date)) & (F.col(S.DATASET) == dataset))
            fit = fitted.get(dataset)
            if fit is not None:
                gbt = PipelineModel.load(fit[S.GBT_PATH])
                log.info("churn: %s on %s scored with the models fitted on %s", dataset, run_date, fit[S.FIT_DATE])
                summary.reused[dataset] = fit[S.FIT_DATE]
                scores.append(score_rows(gbt, current, run_date, fit[S.EVALUATION_SNAPSHOT], churn))
                # The fit's importances, as the fit night wrote them; the models only when they are missing.
                fit_rows = fit_importances(spark, cfg, dataset, fit[S.FIT_DATE])
                if not fit_rows:
                    fit_rows = importance_rows(gbt, PipelineModel.load(fit[S.LOGREG_PATH]), names, run_date, dataset)
                importances += [(run_date, *row[1:]) for row in fit_rows]
                continue
            if examples is None:
                examples = labelled(features, activity, [*training, evaluation], churn.horizon_days).persist(
                    StorageLevel.MEMORY_AND_DISK
                )
            rows = examples.where(F.col(S.DATASET) == dataset)
            train = rows.where(F.col(S.SNAPSHOT_DATE).isin(list(training)))
            test = rows.where(F.col(S.SNAPSHOT_DATE) == F.lit(evaluation))
            counts = {r[S.LABEL]: r["count"] for r in train.groupBy(S.LABEL).count().collect()}  # two rows
            reason = _cannot_fit(counts, test, churn)
            if reason:
                log.warning("churn: %s on %s not fitted: %s", dataset, run_date, reason)
                continue
            gbt, logreg = _fit(train, names, churn)
            figures, rows_out = _evaluate(gbt, logreg, train, test, churn)
            summary.by_dataset[dataset] = figures
            metrics += [Metric(run_date, JOB, dataset, *m) for m in rows_out]
            _save_fit(spark, cfg, dataset, run_date, evaluation, training, sum(counts.values()), settings, gbt, logreg)
            scores.append(score_rows(gbt, current, run_date, evaluation, churn))
            importances += importance_rows(gbt, logreg, names, run_date, dataset)
        if not summary.by_dataset and not catalog.table_exists(spark, catalog.CHURN_MODELS.location(cfg)):
            # No fit yet (history shorter than the horizon): the table exists, empty, as churn_scores does.
            replace_slice(spark.createDataFrame([], S.CHURN_MODELS), catalog.CHURN_MODELS, cfg, {S.FIT_DATE: run_date})
        empty = spark.createDataFrame([], S.CHURN_SCORES)
        replace_slice(_union(scores, empty), catalog.CHURN_SCORES, cfg, {S.RUN_DATE: run_date}, driver_rows=DRIVER_ROWS)
        replace_rows(spark, importances, catalog.CHURN_FEATURE_IMPORTANCE, cfg, {S.RUN_DATE: run_date})
    finally:
        if examples is not None:
            examples.unpersist()
    write_metrics(spark, cfg, metrics)
    log.info("churn of %s (evaluated on %s, trained on %s): fitted %s, reused %s", run_date, evaluation, training,
             summary.by_dataset, summary.reused)
    return summary


def present_snapshots(spark: SparkSession, cfg: Config, wanted: Sequence[dt.date]) -> list[Any]:
    """The (dataset, snapshot_date) pairs of gold.user_profiles among the ``wanted`` snapshot dates
    (at most len(wanted) per dataset), by delta-rs where it reads (:func:`shoplens.io.small_query`)."""
    select = f"DISTINCT {S.DATASET}, {S.SNAPSHOT_DATE}"
    return small_query(spark, cfg, catalog.USER_PROFILES.location(cfg), select, {S.SNAPSHOT_DATE: list(wanted)})


def fit_settings(cfg: ChurnConfig, names: list[str]) -> str:
    """What a fit depends on beyond the data, as JSON: a fit with other settings is not reused."""
    return json.dumps(
        {
            "horizon_days": cfg.horizon_days, "evaluation_snapshot": cfg.evaluation_snapshot,
            "training_snapshots": cfg.training_snapshots, "snapshot_step_days": cfg.snapshot_step_days,
            "min_training_examples": cfg.min_training_examples, "gbt": dataclasses.asdict(cfg.gbt),
            "logreg_reg_param": cfg.logreg_reg_param, "features": names,
        },
        sort_keys=True,
    )


def latest_fits(spark: SparkSession, cfg: Config, run_date: dt.date, settings: str) -> dict[str, Any]:
    """Each dataset's latest fit before ``run_date`` that it may reuse: fitted fewer than
    ``churn.refit_every_days`` days before, with the same settings. A fit of ``run_date`` itself is
    not reused (a re-run of the date fits again, as its first run did)."""
    every = cfg.churn.refit_every_days
    if every <= 1:
        return {}
    oldest = run_date - dt.timedelta(days=every)
    # At most refit_every_days rows per dataset: read by delta-rs where it reads (no Spark job).
    day = dt.timedelta(days=1)
    columns = [f.name for f in catalog.CHURN_MODELS.schema.fields]
    location = catalog.CHURN_MODELS.location(cfg)
    rows = small_query(spark, cfg, location, columns, {S.FIT_DATE: (oldest + day, run_date - day)})
    latest: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r[S.FIT_DATE]):
        latest[row[S.DATASET]] = row
    return {dataset: row for dataset, row in latest.items() if row[S.SETTINGS] == settings}


def fit_importances(spark: SparkSession, cfg: Config, dataset: str, fit_date: dt.date) -> list[tuple]:
    """The gold.churn_feature_importance rows the fit of ``fit_date`` wrote for ``dataset`` (two
    models x the features: read by delta-rs where it reads), as tuples in the table's column order;
    empty when there are none. A night that reuses the fit repeats them under its own date instead
    of loading the logistic regression only to recompute them (a dozen small Spark jobs)."""
    location = catalog.CHURN_FEATURE_IMPORTANCE.location(cfg)
    columns = [f.name for f in catalog.CHURN_FEATURE_IMPORTANCE.schema.fields]
    rows = small_query(spark, cfg, location, columns, {S.RUN_DATE: fit_date, S.DATASET: dataset})
    return sorted(tuple(row[c] for c in columns) for row in rows)


def model_location(cfg: Config, dataset: str, fit_date: dt.date, model: str) -> str:
    root = cfg.paths.warehouse.rstrip("/")
    return f"{root}/models/churn/dataset={dataset}/fit_date={fit_date.isoformat()}/{model}"


def _save_fit(spark, cfg: Config, dataset: str, fit_date: dt.date, evaluation: dt.date, training, examples: int,
              settings: str, gbt: PipelineModel, logreg: PipelineModel) -> None:
    """Saves the models, then records them in gold.churn_models: killed in between, the models are
    saved again by the re-run, and no row points at a model not fully written."""
    paths = {name: model_location(cfg, dataset, fit_date, name) for name in (GBT, LOGREG)}
    gbt.write().overwrite().save(paths[GBT])
    logreg.write().overwrite().save(paths[LOGREG])
    row = (dataset, fit_date, evaluation, list(training), int(examples), paths[GBT], paths[LOGREG], settings)
    replace_slice(
        spark.createDataFrame([row], S.CHURN_MODELS), catalog.CHURN_MODELS, cfg,
        {S.DATASET: dataset, S.FIT_DATE: fit_date},
    )


def _union(parts: list[DataFrame], empty: DataFrame) -> DataFrame:
    out = empty
    for part in parts:
        out = out.unionByName(part)
    return out


def _cannot_fit(counts: dict[int, int], test: DataFrame, cfg: ChurnConfig) -> str | None:
    if sum(counts.values()) < cfg.min_training_examples:
        return f"{sum(counts.values())} training examples, fewer than {cfg.min_training_examples}"
    if len(counts) < 2:
        return "a single class in the training snapshots"
    if test.limit(1).count() == 0:
        return "no example on the evaluation snapshot"
    return None


def _fit(train: DataFrame, names: list[str], cfg: ChurnConfig) -> tuple[PipelineModel, PipelineModel]:
    assemble = VectorAssembler(inputCols=names, outputCol="features")
    gbt = GBTClassifier(
        labelCol=S.LABEL, featuresCol="features", maxIter=cfg.gbt.max_iter, maxDepth=cfg.gbt.max_depth,
        stepSize=cfg.gbt.step_size, seed=cfg.gbt.seed,
    )
    scaler = StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True)
    logreg = LogisticRegression(labelCol=S.LABEL, featuresCol="scaled", regParam=cfg.logreg_reg_param)
    return Pipeline(stages=[assemble, gbt]).fit(train), Pipeline(stages=[assemble, scaler, logreg]).fit(train)


def probability(model: PipelineModel, rows: DataFrame) -> DataFrame:
    """``rows`` with ``_score``, the model's probability of churn (class 1)."""
    return model.transform(rows).withColumn(_SCORE, vector_to_array(F.col("probability"))[1])


def _evaluate(gbt, logreg, train, test, cfg: ChurnConfig) -> tuple[dict[str, Any], list[tuple]]:
    """Figures of the three rankers on the evaluation snapshot (and the fitted ones on training).

    The recency baseline ranks by days since the last purchase; at the threshold it predicts churn
    when recency_days >= horizon_days (the rule of thumb "no purchase for N days")."""
    proto = protocol(cfg)
    figures: dict[str, Any] = {}
    out: list[tuple] = []
    threshold = F.col(_SCORE) >= F.lit(cfg.threshold)
    splits = {
        (GBT, "test"): (probability(gbt, test), threshold),
        (LOGREG, "test"): (probability(logreg, test), threshold),
        (RECENCY, "test"): (test.withColumn(_SCORE, F.col(S.RECENCY_DAYS)),
                            F.col(_SCORE) >= F.lit(float(cfg.horizon_days))),
        (GBT, "train"): (probability(gbt, train), threshold),
        (LOGREG, "train"): (probability(logreg, train), threshold),
    }
    for (model, split), (scored, predicted) in splits.items():
        scored = scored.select(S.LABEL, _SCORE).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            values = evaluate.figures(scored, _SCORE, predicted)
        finally:
            scored.unpersist()
        n = values.pop("n")
        for metric, value in values.items():
            out.append((model, split, proto, metric, value, n))
        if split == "test":
            prefix = "" if model == GBT else f"{model}_"
            figures.update({f"{prefix}{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()})
            if model == GBT:
                figures["n_users"] = n
    return figures, out


def score_rows(model: PipelineModel, current: DataFrame, run_date: dt.date, evaluation: dt.date, cfg: ChurnConfig):
    """The run date's buyers scored by ``model``. Returns: gold.churn_scores rows, one per
    (dataset, user_id)."""
    p = F.col(_SCORE)
    band = (
        F.when(p >= F.lit(cfg.threshold), "high").when(p >= F.lit(cfg.medium_threshold), "medium").otherwise("low")
    )
    return probability(model, current).select(
        F.lit(run_date).alias(S.RUN_DATE),
        S.DATASET,
        S.USER_ID,
        F.lit(GBT).alias(S.MODEL),
        p.alias(S.CHURN_PROBABILITY),
        band.alias(S.RISK_BAND),
        F.col(S.RECENCY_DAYS).cast("int").alias(S.RECENCY_DAYS),
        F.lit(evaluation).alias(S.EVALUATION_SNAPSHOT),
    )


def importance_rows(gbt: PipelineModel, logreg: PipelineModel, names: list[str], run_date, dataset) -> list[tuple]:
    """GBT impurity importances and |standardised logistic coefficients|, ranked per model.
    Returns: gold.churn_feature_importance rows (tuples in its column order), one per (model, feature)."""
    rows = []
    for model, values in (
        (GBT, gbt.stages[-1].featureImportances.toArray()),
        (LOGREG, [abs(c) for c in logreg.stages[-1].coefficients.toArray()]),
    ):
        ranked = sorted(zip(names, (float(v) for v in values), strict=True), key=lambda nv: (-nv[1], nv[0]))
        rows += [(run_date, dataset, model, name, value, rank) for rank, (name, value) in enumerate(ranked, 1)]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_job("build_churn_scores", cli.job_parser(__doc__.splitlines()[0]), argv, _work)


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    summary = run(spark, cfg, args.run_date)
    runs.add_metrics({"churn_fitted": len(summary.by_dataset), "churn_reused": len(summary.reused)})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
