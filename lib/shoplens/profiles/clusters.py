"""Behavioural clusters: KMeans (Spark ML) on standardised profile features, and the segment summary.

A dataset's pipeline (assembler → scaler → KMeans) is fitted on the non-bot profiles of a snapshot,
with k chosen by silhouette in ``[k_min, k_max]``, saved under ``<warehouse>/models/user_clusters``
and recorded in ``gold.cluster_models``; snapshots within ``refit_every_days`` of the fit reuse it,
so cluster numbers keep their meaning between refits. Every profile (bots too) gets the cluster of
its features; bots never shape the fit nor the summary's statistics.

The registry row also holds the fitted numbers themselves (the scaler's means and deviations and
the centres, a few dozen doubles): a profile's cluster is the nearest centre to its standardised
features, computed with column expressions from those numbers (:class:`Centres`), the way the
pipeline's own transform computes it. A night that reuses a fit reads one row instead of loading a
saved pipeline (a dozen small Spark jobs); the saved pipeline stays, for Spark ML users and for
registry rows written before the numbers were.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shoplens import schemas as S
from shoplens.config import ClustersConfig

log = logging.getLogger(__name__)

FEATURES = "features"
_SCALED = "_scaled"
_PREDICTION = "_prediction"


def feature_columns(longest_window_days: int) -> dict[str, F.Column]:
    """The clustering features: counts and money on a log scale, rates as they are; nulls (no
    purchase, no views, no sessions) become the value that means 'none of it'."""
    return {
        "recency": F.coalesce(F.col(S.RECENCY_DAYS), F.lit(longest_window_days)).cast("double"),
        "log_frequency": F.log1p(F.col(S.FREQUENCY).cast("double")),
        "log_monetary": F.log1p(F.col(S.MONETARY).cast("double")),
        "log_events": F.log1p(F.col(S.EVENTS).cast("double")),
        "active_days": F.col(S.ACTIVE_DAYS).cast("double"),
        "view_to_cart": F.coalesce(F.col(S.VIEW_TO_CART), F.lit(0.0)),
        "cart_to_purchase": F.coalesce(F.col(S.CART_TO_PURCHASE), F.lit(0.0)),
        "log_avg_session_s": F.log1p(F.coalesce(F.col(S.AVG_SESSION_S), F.lit(0.0))),
        "distinct_categories": F.col(S.DISTINCT_CATEGORIES).cast("double"),
    }


def with_features(profiles: DataFrame, longest_window_days: int) -> DataFrame:
    cols = feature_columns(longest_window_days)
    return profiles.select("*", *[c.alias(f"_f_{n}") for n, c in cols.items()])


def feature_names(longest_window_days: int) -> list[str]:
    return [f"_f_{n}" for n in feature_columns(longest_window_days)]


@dataclass(frozen=True)
class Centres:
    """A fitted pipeline's numbers: feature means and standard deviations (StandardScaler), and the
    KMeans centres in the standardised space, one list per cluster (its index is the cluster)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    centres: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, model: PipelineModel) -> Centres:
        scaler, kmeans = model.stages[1], model.stages[-1]
        return cls(
            tuple(float(v) for v in scaler.mean.toArray()),
            tuple(float(v) for v in scaler.std.toArray()),
            tuple(tuple(float(v) for v in c) for c in kmeans.clusterCenters()),
        )

    @classmethod
    def from_details(cls, details: str | None) -> Centres | None:
        """The numbers recorded in a registry row's ``details`` (None for rows written before them)."""
        found = json.loads(details or "{}").get("centres")
        if not found:
            return None
        return cls(tuple(found["mean"]), tuple(found["std"]), tuple(tuple(c) for c in found["centres"]))

    def as_details(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "centres": [list(c) for c in self.centres]}

    def nearest(self, names: list[str]) -> F.Column:
        """The index of the centre nearest to the standardised features ``names`` (squared Euclidean
        distance; the lower index on a tie, as KMeans' own prediction). A feature without spread
        standardises to 0, as StandardScaler does."""
        scaled = [
            (F.col(n) - F.lit(m)) * F.lit(1.0 / s if s != 0 else 0.0)
            for n, m, s in zip(names, self.mean, self.std, strict=True)
        ]

        def squared_distance(centre: tuple[float, ...]) -> F.Column:
            return sum(((x - F.lit(c)) * (x - F.lit(c)) for x, c in zip(scaled, centre, strict=True)), F.lit(0.0))

        distances = [
            F.struct(squared_distance(centre).alias("d"), F.lit(i).alias("i")) for i, centre in enumerate(self.centres)
        ]
        closest = F.least(*distances) if len(distances) > 1 else distances[0]
        return closest.getField("i")


@dataclass(frozen=True)
class FittedClusters:
    model: PipelineModel
    k: int
    silhouette: float
    users: int
    trials: dict[int, float]

    @property
    def centres(self) -> Centres:
        return Centres.of(self.model)


def fit(train: DataFrame, names: list[str], cfg: ClustersConfig) -> FittedClusters:
    """Fits the pipeline for each k in the configured range on ``train`` (features added) and keeps
    the best silhouette (the smaller k on a tie)."""
    train = train.select(*names).persist()
    try:
        users = train.count()
        prepare = Pipeline(
            stages=[
                VectorAssembler(inputCols=names, outputCol=FEATURES),
                StandardScaler(inputCol=FEATURES, outputCol=_SCALED, withMean=True, withStd=True),
            ]
        ).fit(train)
        scaled = prepare.transform(train).select(_SCALED).persist()
        evaluator = ClusteringEvaluator(featuresCol=_SCALED, predictionCol=_PREDICTION)
        trials: dict[int, float] = {}
        best = None
        for k in range(cfg.k_min, cfg.k_max + 1):
            kmeans = KMeans(k=k, seed=cfg.seed, maxIter=cfg.max_iter, featuresCol=_SCALED, predictionCol=_PREDICTION)
            model = kmeans.fit(scaled)
            score = evaluator.evaluate(model.transform(scaled))
            score = score if math.isfinite(score) else -1.0
            trials[k] = round(score, 6)
            log.info("clusters: k=%d silhouette=%.4f", k, score)
            if best is None or score > best[1]:
                best = (model, score, k)
        scaled.unpersist()
        assert best is not None
        model, score, k = best
        pipeline = PipelineModel(stages=[*prepare.stages, model])
        return FittedClusters(pipeline, k, score, users, trials)
    finally:
        train.unpersist()


def assign(centres: Centres, profiles: DataFrame, names: list[str]) -> DataFrame:
    """Adds ``cluster`` (the nearest centre) to profiles that carry the feature columns ``names``."""
    return profiles.withColumn(S.CLUSTER, centres.nearest(names).cast("int"))


def assign_by_pipeline(model: PipelineModel, profiles: DataFrame) -> DataFrame:
    """:func:`assign` through a saved pipeline's own transform (registry rows without the numbers)."""
    return model.transform(profiles).withColumn(S.CLUSTER, F.col(_PREDICTION).cast("int")).drop(
        FEATURES, _SCALED, _PREDICTION
    )


def model_row(dataset: str, fit_date: dt.date, fitted: FittedClusters, path: str, names: list[str]) -> dict:
    return {
        S.DATASET: dataset,
        S.FIT_DATE: fit_date,
        S.K: fitted.k,
        S.SILHOUETTE: float(fitted.silhouette),
        S.USERS: fitted.users,
        S.MODEL_PATH: path,
        S.DETAILS: json.dumps(
            {"silhouette_by_k": fitted.trials, "features": names, "centres": fitted.centres.as_details()},
            sort_keys=True,
        ),
    }
