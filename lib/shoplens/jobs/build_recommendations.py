"""build_recommendations: ``silver.events`` → ``gold.recommendations`` (and ``gold.similar_items``,
the id maps ``gold.user_index`` / ``gold.item_index``, the tuning trials ``gold.als_trials`` and the
figures in ``gold.model_metrics``), with implicit-feedback ALS.

For each dataset (every dataset in silver unless ``--dataset`` names some), as of run date R:

1. confidence per (user, item) from the non-bot events of the training window (event-type weights,
   recency decay: :mod:`shoplens.recs.interactions`); new user and item ids MERGEd into the id maps;
2. tuning, on the nights the data calls for it (no earlier tuning, a changed grid, a tuning
   ``als.retune_every_days`` old, validation users ``als.retune_growth`` apart; else the last
   tuning's best is reused): each (rank, regParam, alpha) of ``als.grid`` is trained on the events
   before each user's validation target and scored on the validation rows of
   ``gold.sequence_examples`` (never test);
3. evaluation, on the nights that choose the parameters (a tuning night, or no tuning to reuse;
   every night with ``als.evaluate_nightly``): the winner, global popularity and item-item
   co-occurrence, trained on the events before each user's test target, scored on the test rows;
   the quality gate fails the run when ALS trails popularity by more than ``als.gate_margin``
   (nDCG@K), and a tuning's trials are written only once its winner passed the gate;
4. the winner refitted on the whole window: K recommendations for every user of the latest profile
   snapshot and every user with interactions (ALS, else the cold-start chain), similar items from
   the item factors; both slices (run_date, dataset) replaced.

docs/ALS.md has the definitions and the bad-input outcomes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from shoplens import catalog, cli, runs
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.io import DRIVER_ROWS, read_table, replace_rows, replace_slice, small_query
from shoplens.metrics import Metric, write_metrics
from shoplens.quality import QualityGateFailed
from shoplens.recs import als, evaluate, idmaps, interactions, recommend, topk

log = logging.getLogger(__name__)

JOB = "build_recommendations"
PROTOCOL = "leave_last_out_full_catalogue"
CUTOFF = interactions.CUTOFF


def run(spark: SparkSession, cfg: Config, run_date: dt.date, datasets: Sequence[str] | None = None) -> dict[str, Any]:
    """Builds the recommendations of ``datasets`` (default: every dataset in silver) for ``run_date``.

    Returns: per dataset, a summary (users, recommendations, best parameters, whether and why ALS
    re-tuned, test metrics).
    Raises QualityGateFailed when ALS trails popularity by more than the configured margin.
    """
    location = catalog.SILVER_EVENTS.location(cfg)
    if not catalog.table_exists(spark, location):
        raise FileNotFoundError(f"silver.events does not exist at {location}: run build_silver_events")
    als.set_checkpoint_dir(spark, cfg)
    window_start = run_date - dt.timedelta(days=cfg.als.window_days)
    silver = read_table(spark, location).where(
        (F.col(S.EVENT_DATE) <= F.lit(run_date)) & (F.col(S.EVENT_DATE) > F.lit(window_start))
    )
    if datasets is None:
        # Every dataset in silver, even one with no event in the window: its slices are emptied.
        found = small_query(spark, cfg, location, f"DISTINCT {S.DATASET}", {S.EVENT_DATE: (dt.date.min, run_date)})
        datasets = sorted(r[S.DATASET] for r in found)  # a handful
    summary = {}
    for dataset in datasets:
        summary[dataset] = build_dataset(spark, cfg, run_date, silver.where(F.col(S.DATASET) == dataset), dataset)
    runs.add_metrics({"als_retuned": sum(bool(s.get("is_retuned")) for s in summary.values())})
    log.info("recommendations for %s: %s", run_date, summary)
    return summary


class _Inputs:
    """One dataset's training inputs, persisted while the dataset is built."""

    def __init__(self, cfg: Config, events: DataFrame, run_date: dt.date) -> None:
        a = cfg.als
        self.exclude_types = a.exclude_event_types
        self.scored = interactions.scored_events(
            events, a.event_weights, a.half_life_days, run_date, a.window_days
        ).persist(StorageLevel.MEMORY_AND_DISK)
        self.inter = interactions.interactions(self.scored).persist(StorageLevel.MEMORY_AND_DISK)
        self.excluded = interactions.exclusions(self.scored, a.exclude_event_types).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        self.categories = interactions.item_categories(self.scored).persist(StorageLevel.MEMORY_AND_DISK)

    def before(self, cutoffs: DataFrame) -> tuple[DataFrame, DataFrame]:
        """(interactions, exclusions) from the events before each user's cutoff."""
        scored = interactions.before_cutoffs(self.scored, cutoffs)
        return (
            interactions.interactions(scored).persist(StorageLevel.MEMORY_AND_DISK),
            interactions.exclusions(scored, self.exclude_types).persist(StorageLevel.MEMORY_AND_DISK),
        )

    def unpersist(self) -> None:
        for df in (self.scored, self.inter, self.excluded, self.categories):
            df.unpersist()


def build_dataset(
    spark: SparkSession, cfg: Config, run_date: dt.date, events: DataFrame, dataset: str
) -> dict[str, Any]:
    """Tunes, evaluates, fits and writes one dataset's recommendations (module doc)."""
    inputs = _Inputs(cfg, events, run_date)
    try:
        targets = _targets(spark, cfg, dataset, run_date, inputs.inter, inputs.categories).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        if inputs.inter.limit(1).count() == 0:
            log.warning(
                "%s: no interactions in the training window ending %s: empty slices, no metrics", dataset, run_date
            )
            _write(spark, cfg, run_date, dataset, _empty(spark, S.RECOMMENDATIONS), _empty(spark, S.SIMILAR_ITEMS))
            return {"users": 0, "recommendations": 0}
        ids = inputs.inter.select(F.lit(dataset).alias(S.DATASET), S.USER_ID, S.ITEM_ID)
        user_map = idmaps.merge_index(spark, cfg, catalog.USER_INDEX, ids, S.USER_ID, run_date).drop(S.DATASET)
        item_map = idmaps.merge_index(spark, cfg, catalog.ITEM_INDEX, ids, S.ITEM_ID, run_date).drop(S.DATASET)
        user_map = user_map.join(ids.select(S.USER_ID).distinct(), [S.USER_ID], "left_semi").persist()
        item_map = item_map.join(ids.select(S.ITEM_ID).distinct(), [S.ITEM_ID], "left_semi").persist()
        # Every id of the window is in its map: the maps' sizes are the window's distinct ids, one job.
        sizes = inputs.inter.agg(
            F.count_distinct(S.USER_ID).alias("users"), F.count_distinct(S.ITEM_ID).alias("items")
        ).first()
        n_users, n_items = int(sizes["users"]), int(sizes["items"])
        held_out = _held_out(spark, cfg, dataset)
        best, val_figures, choice, trials = _tune(
            spark, cfg, run_date, dataset, inputs, held_out, user_map, item_map, n_users, n_items
        )
        metrics = [
            Metric(run_date, JOB, dataset, "als", "validation", PROTOCOL, name, float(value), val_figures.get("users"))
            for name, value in val_figures.items()
            if name != "users"
        ]
        test_figures = {}
        if _evaluates(cfg, choice):
            test_figures = _evaluate(spark, cfg, inputs, held_out, user_map, item_map, best, n_users, n_items)
            for model, figures in test_figures.items():
                metrics += [
                    Metric(run_date, JOB, dataset, model, "test", PROTOCOL, name, float(value), int(figures["users"]))
                    for name, value in figures.items()
                    if name != "users"
                ]
            metrics += _explicit_metrics(spark, cfg, run_date, dataset, events, best)
        write_metrics(spark, cfg, metrics)
        _gate(cfg, dataset, test_figures)
        if trials is not None:
            # After the gate: a tuning whose winner failed it leaves no trials, so the next night tunes
            # (and gates) again instead of reusing it.
            replace_rows(spark, trials, catalog.ALS_TRIALS, cfg, {S.RUN_DATE: run_date, S.DATASET: dataset})

        recs, similar = _final(spark, cfg, inputs, targets, user_map, item_map, best, n_users, n_items)
        try:  # recs is cached by _recommend
            written = _write(
                spark,
                cfg,
                run_date,
                dataset,
                recs.withColumn(S.RUN_DATE, F.lit(run_date)).withColumn(S.DATASET, F.lit(dataset)),
                similar.withColumn(S.RUN_DATE, F.lit(run_date)).withColumn(S.DATASET, F.lit(dataset)),
            )
        finally:
            recs.unpersist()
        return {
            "users": targets.count(),
            "recommendations": written,
            "best": {"rank": best.rank, "reg_param": best.reg_param, "alpha": best.alpha},
            "tuning": choice.note,
            "is_retuned": choice.params is None,
            "test": test_figures,
        }
    finally:
        inputs.unpersist()


def _empty(spark: SparkSession, schema) -> DataFrame:
    return spark.createDataFrame([], schema)


def _write(
    spark: SparkSession, cfg: Config, run_date: dt.date, dataset: str, recs: DataFrame, similar: DataFrame
) -> int:
    """Replaces the dataset's slices of the run date. Returns: the recommendations written (the
    commit's own count)."""
    where = {S.RUN_DATE: run_date, S.DATASET: dataset}
    # A small night's slices are collected and written by delta-rs where it writes.
    written = replace_slice(recs, catalog.RECOMMENDATIONS, cfg, where, driver_rows=DRIVER_ROWS)
    replace_slice(similar, catalog.SIMILAR_ITEMS, cfg, where, driver_rows=DRIVER_ROWS)
    return written


def _targets(
    spark: SparkSession, cfg: Config, dataset: str, run_date: dt.date, inter: DataFrame, categories: DataFrame
) -> DataFrame:
    """Who gets recommendations: every user of the dataset's latest profile snapshot (<= R) and every
    user with interactions; with their RFM segment and preferred category (the profile's top
    category, else the one with most confidence).

    Returns: one row per user_id: user_id, _segment, category_id (either may be null).
    """
    users = inter.select(S.USER_ID).distinct()
    preferred = interactions.preferred_categories(inter, categories).withColumnRenamed(S.CATEGORY_ID, "_pref")
    location = catalog.USER_PROFILES.location(cfg)
    profiles = None
    if catalog.table_exists(spark, location):
        where = {S.DATASET: dataset, S.SNAPSHOT_DATE: (dt.date.min, run_date)}
        latest = small_query(spark, cfg, location, f"max({S.SNAPSHOT_DATE}) AS s", where)
        if latest and latest[0]["s"] is not None:
            rows = read_table(spark, location).where(F.col(S.DATASET) == dataset)
            profiles = rows.where(F.col(S.SNAPSHOT_DATE) == F.lit(latest[0]["s"])).select(
                S.USER_ID,
                F.col(S.RFM_SEGMENT).alias(recommend.SEGMENT_KEY),
                F.try_element_at(S.TOP_CATEGORIES, F.lit(1)).alias("_top"),
            )
    if profiles is None:
        everyone = users.select(
            S.USER_ID, F.lit(None).cast("string").alias(recommend.SEGMENT_KEY), F.lit(None).cast("string").alias("_top")
        )
    else:
        everyone = users.join(profiles, [S.USER_ID], "full")
    return everyone.join(preferred, [S.USER_ID], "left").select(
        S.USER_ID, recommend.SEGMENT_KEY, F.coalesce("_top", "_pref").alias(S.CATEGORY_ID)
    )


def _held_out(spark: SparkSession, cfg: Config, dataset: str) -> DataFrame | None:
    """The validation and test targets of the dataset's user-grain sequence examples, as item ids.

    Returns: one row per example: user_id, split, item_id, _cutoff (the target's time); None when
    gold.sequence_examples or gold.item_vocab does not exist.
    """
    examples_at = catalog.SEQUENCE_EXAMPLES.location(cfg)
    vocab_at = catalog.ITEM_VOCAB.location(cfg)
    if not (catalog.table_exists(spark, examples_at) and catalog.table_exists(spark, vocab_at)):
        log.warning("%s: no gold.sequence_examples / gold.item_vocab: no tuning, no evaluation", dataset)
        return None
    vocab = read_table(spark, vocab_at).where(F.col(S.DATASET) == dataset)
    return (
        read_table(spark, examples_at)
        .where(
            (F.col(S.DATASET) == dataset) & (F.col(S.GRAIN) == S.GRAIN_USER) & F.col(S.SPLIT).isin("validation", "test")
        )
        .where(F.col(S.USER_ID).isNotNull())
        .join(vocab.select(F.col(S.ITEM_INDEX).alias(S.TARGET_ITEM), S.ITEM_ID), [S.TARGET_ITEM], "inner")
        .select(S.USER_ID, S.SPLIT, S.ITEM_ID, F.col(S.TARGET_TIME).alias(CUTOFF))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


def _fit(
    spark: SparkSession,
    cfg: Config,
    inter: DataFrame,
    user_map: DataFrame,
    item_map: DataFrame,
    params: als.Params,
    n_users: int,
    n_items: int,
    implicit: bool = True,
):
    a = cfg.als
    ratings = (
        inter.join(user_map, [S.USER_ID], "inner")
        .join(item_map, [S.ITEM_ID], "inner")
        .select(S.USER_INDEX, S.ITEM_INDEX, F.col(S.CONFIDENCE).alias(als.RATING))
    )
    return als.fit(
        spark,
        ratings,
        params,
        implicit=implicit,
        max_iter=a.max_iter,
        seed=a.seed,
        checkpoint_interval=a.checkpoint_interval,
        n_users=n_users,
        n_items=n_items,
        rows_per_block=a.rows_per_block,
        max_blocks=a.max_blocks,
    )


def _recommend(
    spark: SparkSession,
    cfg: Config,
    model,
    inter: DataFrame,
    excluded: DataFrame,
    targets: DataFrame,
    categories: DataFrame,
    user_map: DataFrame,
    item_map: DataFrame,
    n_users: int,
    n_items: int,
) -> DataFrame:
    """ALS's top K for targets with enough history, the cold-start chain for the rest and to fill up.

    Returns: one row per (user_id, rank): user_id, rank, item_id, score, source.
    """
    a = cfg.als
    user_factors, item_factors = als.factors(model)
    enough = inter.groupBy(S.USER_ID).count().where(F.col("count") >= a.min_user_items).select(S.USER_ID)
    eligible = user_map.join(enough, [S.USER_ID], "left_semi").join(targets.select(S.USER_ID), [S.USER_ID], "left_semi")
    user_factors = user_factors.join(eligible, [S.USER_INDEX], "inner").select(S.USER_INDEX, "features")
    candidates = recommend.als_candidates(
        user_factors,
        item_factors,
        user_map,
        item_map,
        excluded,
        a.k,
        als.block_count(n_items, a.rows_per_block, a.max_blocks),
        als.block_count(n_users, a.rows_per_block, a.max_blocks),
    )
    length = recommend.candidate_length(excluded, a.k)
    candidates = candidates.unionByName(recommend.fallback_candidates(targets, inter, categories, length))
    # Cached so that the plans built on the result (metrics, the write) stay small.
    return recommend.top_k_of(candidates, excluded, a.k).persist(StorageLevel.MEMORY_AND_DISK)


def _grid(cfg: Config) -> list[als.Params]:
    g = cfg.als.grid
    return [als.Params(r, p, x) for r, p, x in itertools.product(g.rank, g.reg_param, g.alpha)]


def _eval_targets(inter: DataFrame, categories: DataFrame, users: DataFrame) -> DataFrame:
    """Held-out users as targets, without profile data (a profile may have seen the target)."""
    preferred = interactions.preferred_categories(inter, categories)
    return (
        users.select(S.USER_ID)
        .distinct()
        .join(preferred, [S.USER_ID], "left")
        .select(S.USER_ID, F.lit(None).cast("string").alias(recommend.SEGMENT_KEY), S.CATEGORY_ID)
    )


@dataclass(frozen=True)
class _LastTuning:
    """A dataset's newest tuning in gold.als_trials: its grid by trial, its best trial's parameters and
    validation users, and the metrics it scored."""

    run_date: dt.date
    grid: tuple[als.Params, ...]
    best: als.Params
    n_examples: int
    metrics: frozenset[str]


@dataclass(frozen=True)
class _Choice:
    """Tonight's ALS parameters, None to tune the grid, why in words (the summary's "tuning"), and
    whether they are an earlier tuning's best."""

    params: als.Params | None
    note: str
    reused: bool = False


def _evaluates(cfg: Config, choice: _Choice) -> bool:
    """Whether tonight runs the test evaluation and the gate: unless it reuses an earlier tuning's
    parameters (which were evaluated and gated that night), or always with ``als.evaluate_nightly``."""
    return cfg.als.evaluate_nightly or not choice.reused


def _last_tuning(spark, cfg, dataset: str, run_date: dt.date) -> tuple[_LastTuning | None, bool]:
    """The dataset's newest tuning before ``run_date``, and whether gold.als_trials already holds trials
    of ``run_date`` (an earlier run of the date). Three small questions (:func:`shoplens.io.small_query`:
    delta-rs' query engine where it reads, no Spark job), at most one night's trial rows."""
    location = catalog.ALS_TRIALS.location(cfg)
    has_tonight = bool(
        small_query(spark, cfg, location, "1 AS found", {S.DATASET: dataset, S.RUN_DATE: run_date}, limit=1)
    )
    before = (dt.date.min, run_date - dt.timedelta(days=1))
    newest = small_query(spark, cfg, location, f"max({S.RUN_DATE}) AS d", {S.DATASET: dataset, S.RUN_DATE: before})
    if not newest or newest[0]["d"] is None:
        return None, has_tonight
    last_date = newest[0]["d"]
    columns = [S.TRIAL, S.ALS_RANK, S.REG_PARAM, S.ALPHA, S.METRIC, S.N_EXAMPLES, S.IS_BEST]
    rows = small_query(spark, cfg, location, columns, {S.DATASET: dataset, S.RUN_DATE: last_date})
    best = [r for r in rows if r[S.IS_BEST]]
    if not best:
        return None, has_tonight
    grid = {r[S.TRIAL]: als.Params(r[S.ALS_RANK], r[S.REG_PARAM], r[S.ALPHA]) for r in rows}
    last = _LastTuning(
        last_date,
        tuple(grid[t] for t in sorted(grid)),
        grid[best[0][S.TRIAL]],
        int(best[0][S.N_EXAMPLES]),
        frozenset(r[S.METRIC] for r in rows),
    )
    return last, has_tonight


def _incompatible(cfg: Config, last: _LastTuning | None) -> str | None:
    """Why the last tuning cannot stand for tonight's configuration, or None."""
    if last is None:
        return "no earlier tuning"
    if last.grid != tuple(_grid(cfg)):
        return f"als.grid changed since the tuning of {last.run_date}"
    if f"ndcg@{cfg.als.k}" not in last.metrics:
        return f"als.k changed since the tuning of {last.run_date}"
    return None


def _choose(cfg: Config, run_date: dt.date, last: _LastTuning | None, n_validation: int) -> _Choice:
    """Re-tune or reuse (docs/ALS.md, "When ALS re-tunes"), from the tables before ``run_date`` and
    tonight's validation users only, so that a re-run or a backfill of the date decides the same."""
    a = cfg.als
    why = _incompatible(cfg, last)
    if n_validation == 0:
        if why is None:
            return _Choice(last.best, f"reused {last.run_date}: no validation rows tonight", reused=True)
        return _Choice(_grid(cfg)[0], f"untuned: no validation rows and {why}: the first grid point")
    if why is not None:
        return _Choice(None, f"retuned: {why}")
    age = (run_date - last.run_date).days
    if age >= a.retune_every_days:
        return _Choice(
            None, f"retuned: the tuning of {last.run_date} is {age} d old (als.retune_every_days {a.retune_every_days})"
        )
    if abs(n_validation - last.n_examples) > a.retune_growth * last.n_examples:
        return _Choice(
            None,
            f"retuned: {n_validation} validation users against {last.n_examples} at the tuning of "
            f"{last.run_date} (more than als.retune_growth {a.retune_growth} apart)",
        )
    return _Choice(
        last.best,
        f"reused {last.run_date}: {age} d old, {n_validation} validation users against {last.n_examples}",
        reused=True,
    )


def _tune(spark, cfg, run_date, dataset, inputs, held_out, user_map, item_map, n_users, n_items):
    """Tonight's parameters: the grid tuned on the validation rows when _choose says so, else the
    last tuning's best (an earlier run's trials of the date are then removed).

    Returns: (best, the best trial's validation figures or {} when not tuned, the _Choice, the trials
    for the slice (run_date, dataset) of gold.als_trials or None when not tuned).
    """
    validation = None if held_out is None else held_out.where(F.col(S.SPLIT) == "validation")
    # The users ranking_metrics scores ("users", the trials' n_examples).
    n_validation = 0 if validation is None else validation.select(S.USER_ID).distinct().count()
    last, has_tonight = _last_tuning(spark, cfg, dataset, run_date)
    choice = _choose(cfg, run_date, last, n_validation)
    log.info("%s: ALS %s", dataset, choice.note)
    where = {S.RUN_DATE: run_date, S.DATASET: dataset}
    if choice.params is not None:
        if has_tonight:
            # An earlier run of the date tuned: its trials go, so the slice says what tonight used.
            replace_rows(spark, [], catalog.ALS_TRIALS, cfg, where)
        return choice.params, {}, choice, None
    scored = _trials(spark, cfg, inputs, validation, user_map, item_map, n_users, n_items)
    # The best nDCG@K; ties: the earlier trial.
    best_trial, best, figures = max(scored, key=lambda s: (s[2][f"ndcg@{cfg.als.k}"], -s[0]))
    rows = _trial_rows(run_date, dataset, scored, best_trial)
    val = dict(figures)
    val.update({"param_rank": best.rank, "param_reg_param": best.reg_param, "param_alpha": best.alpha})
    return best, val, choice, rows


def _trial_rows(run_date: dt.date, dataset: str, scored, best_trial: int) -> list[tuple]:
    """gold.als_trials rows, in its column order: one per (trial, metric)."""
    rows = [
        {
            S.RUN_DATE: run_date,
            S.DATASET: dataset,
            S.TRIAL: trial,
            S.ALS_RANK: params.rank,
            S.REG_PARAM: params.reg_param,
            S.ALPHA: params.alpha,
            S.METRIC: name,
            S.VALUE: float(figures[name]),
            S.N_EXAMPLES: int(figures["users"]),
            S.IS_BEST: trial == best_trial,
        }
        for trial, params, figures in scored
        for name in sorted(figures)
        if name != "users"
    ]
    return [tuple(row[c] for c in S.ALS_TRIALS.fieldNames()) for row in rows]


def _trials(spark, cfg, inputs, validation, user_map, item_map, n_users, n_items):
    """Every grid point trained on the events before each validation target and scored on the targets.

    Returns: one (trial, params, figures) per grid point, in grid order.
    """
    inter, excluded = inputs.before(validation.select(S.USER_ID, CUTOFF))
    targets = _eval_targets(inter, inputs.categories, validation).persist()
    scored = []
    try:
        for trial, params in enumerate(_grid(cfg)):
            model = _fit(spark, cfg, inter, user_map, item_map, params, n_users, n_items)
            recs = _recommend(
                spark, cfg, model, inter, excluded, targets, inputs.categories, user_map, item_map, n_users, n_items
            )
            figures = evaluate.ranking_metrics(recs, validation, cfg.als.k)
            recs.unpersist()
            scored.append((trial, params, figures))
            log.info("trial %d %s: %s", trial, params, figures)
    finally:
        for df in (inter, excluded, targets):
            df.unpersist()
    return scored


def _evaluate(spark, cfg, inputs, held_out, user_map, item_map, best, n_users, n_items) -> dict[str, dict[str, float]]:
    """ALS (with its cold-start fill), global popularity and co-occurrence on the test rows."""
    k = cfg.als.k
    test = None if held_out is None else held_out.where(F.col(S.SPLIT) == "test")
    if test is None or test.limit(1).count() == 0:
        return {}
    inter, excluded = inputs.before(test.select(S.USER_ID, CUTOFF))
    targets = _eval_targets(inter, inputs.categories, test).persist()
    try:
        model = _fit(spark, cfg, inter, user_map, item_map, best, n_users, n_items)
        length = recommend.candidate_length(excluded, k)
        lists = {
            "als": _recommend(
                spark, cfg, model, inter, excluded, targets, inputs.categories, user_map, item_map, n_users, n_items
            ),
            "popularity": recommend.top_k_of(
                recommend.fallback_candidates(targets, inter, inputs.categories, length, (S.SOURCE_GLOBAL,)),
                excluded,
                k,
            ),
            "cooccurrence": recommend.top_k_of(
                evaluate.cooccurrence_candidates(inter, targets, cfg.als.cooccurrence_max_items, length), excluded, k
            ),
        }
        # The three lists scored in one action, grouped by model.
        return evaluate.ranking_metrics_of(lists, test, k, n_items)
    finally:
        for df in (inter, excluded, targets):
            df.unpersist()


def _gate(cfg: Config, dataset: str, figures: dict[str, dict[str, float]]) -> None:
    a = cfg.als
    key = f"ndcg@{a.k}"
    if "als" not in figures:
        return
    users = int(figures["als"]["users"])
    als_ndcg, pop_ndcg = figures["als"][key], figures["popularity"][key]
    if users < a.gate_min_users:
        log.warning(
            "%s: quality gate not judged: %d test users < %d (ALS %s %.4f, popularity %.4f)",
            dataset,
            users,
            a.gate_min_users,
            key,
            als_ndcg,
            pop_ndcg,
        )
        return
    if als_ndcg < pop_ndcg - a.gate_margin:
        raise QualityGateFailed(
            f"{dataset}: ALS {key} {als_ndcg:.4f} is below popularity's {pop_ndcg:.4f} by more than "
            f"als.gate_margin {a.gate_margin} on {users} test users; recommendations not written"
        )


def _explicit_metrics(spark, cfg, run_date, dataset, events, best) -> list[Metric]:
    """Explicit ALS on review ratings, each user's last rating held out (users with 2 or more)."""
    a = cfg.als
    rated = events.where(F.col(S.RATING).isNotNull() & ~F.col(S.IS_BOT) & F.col(S.USER_ID).isNotNull())
    if rated.limit(a.explicit_min_ratings).count() < a.explicit_min_ratings:
        return []
    last = Window.partitionBy(S.USER_ID).orderBy(F.col(S.EVENT_TIME).desc(), F.col(S.EVENT_ID).desc())
    whole = Window.partitionBy(S.USER_ID)
    labelled = rated.select(
        S.USER_ID,
        S.ITEM_ID,
        F.col(S.RATING).cast("double").alias(als.RATING),
        ((F.row_number().over(last) == 1) & (F.count(F.lit(1)).over(whole) >= 2)).alias("_is_test"),
    ).persist()
    try:
        train = (
            labelled.where(~F.col("_is_test")).groupBy(S.USER_ID, S.ITEM_ID).agg(F.avg(als.RATING).alias(S.CONFIDENCE))
        )
        ids = train.select(F.lit(dataset).alias(S.DATASET), S.USER_ID, S.ITEM_ID)
        user_map = idmaps.merge_index(spark, cfg, catalog.USER_INDEX, ids, S.USER_ID, run_date).drop(S.DATASET)
        item_map = idmaps.merge_index(spark, cfg, catalog.ITEM_INDEX, ids, S.ITEM_ID, run_date).drop(S.DATASET)
        model = _fit(spark, cfg, train, user_map, item_map, best, user_map.count(), item_map.count(), implicit=False)
        test = (
            labelled.where(F.col("_is_test")).join(user_map, [S.USER_ID], "inner").join(item_map, [S.ITEM_ID], "inner")
        )
        errors = als.rating_errors(model.transform(test))
    finally:
        labelled.unpersist()
    if not errors["n"]:
        return []
    return [
        Metric(
            run_date,
            JOB,
            dataset,
            "als_explicit",
            "test",
            "last_rating_per_user",
            name,
            float(errors[name]),
            int(errors["n"]),
        )
        for name in ("rmse", "mae")
    ]


def _final(spark, cfg, inputs, targets, user_map, item_map, best, n_users, n_items) -> tuple[DataFrame, DataFrame]:
    """The winner refitted on the whole window: recommendations and similar items."""
    a = cfg.als
    model = _fit(spark, cfg, inputs.inter, user_map, item_map, best, n_users, n_items)
    recs = _recommend(
        spark,
        cfg,
        model,
        inputs.inter,
        inputs.excluded,
        targets,
        inputs.categories,
        user_map,
        item_map,
        n_users,
        n_items,
    )
    _, item_factors = als.factors(model)
    unit = topk.normalized(item_factors)
    near = topk.top_k(
        unit.select(F.col(S.ITEM_INDEX).alias(topk.Q), topk.FEATURES),
        unit.select(F.col(S.ITEM_INDEX).alias(topk.ITEM), topk.FEATURES),
        a.k,
        als.block_count(n_items, a.rows_per_block, a.max_blocks),
        exclude_self=True,
    )
    similar = (
        near.join(item_map.withColumnRenamed(S.ITEM_INDEX, topk.Q), [topk.Q], "inner")
        .join(
            item_map.select(F.col(S.ITEM_ID).alias(S.SIMILAR_ITEM_ID), F.col(S.ITEM_INDEX).alias(topk.ITEM)),
            [topk.ITEM],
            "inner",
        )
        .select(S.ITEM_ID, topk.RANK, S.SIMILAR_ITEM_ID, F.col(topk.SCORE).alias(S.SCORE))
    )
    return recs, similar


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        dest="datasets",
        action="append",
        default=None,
        help="a silver dataset to build (repeatable; default: every dataset in silver)",
    )
    return cli.run_job("build_recommendations", parser, argv, _work, dataset=lambda args: cli.joined(args.datasets))


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    run(spark, cfg, args.run_date, args.datasets)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
