"""score_next_item: each user's top-K next items from a next-item model version → ``gold.next_item_predictions``.

Reads ``silver.events``, ``gold.item_vocab`` and the model version (SavedModel and meta.json).

For each dataset (every dataset of gold.item_vocab unless ``--dataset`` names some), as of run date R:

1. the model version: the newest one on or before R under ``{paths.warehouse}/models/next_item/``
   (``shoplens.models.registry``); none is a clear error, raised for every dataset before anything
   is written;
2. each identified user's input: the last ``max_len`` (the version's meta.json) counted events up to
   R, as gold.item_vocab indices, left-padded, most recent last (:func:`shoplens.scoring.latest_inputs`);
3. the top ``scoring.top_k`` items per user, on the executors (``mapInPandas``, the model loaded once
   per Python worker), never padding, out of vocabulary or (``scoring.exclude_purchased``) an item the
   user bought; indices mapped back to item ids with gold.item_vocab;
4. the slice (run_date, dataset) replaced: a re-run of R gives the same rows, never twice as many.

docs/SEQREC.md, "Batch scoring", has the details.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, scoring, sequences
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.io import DRIVER_ROWS, read_table, replace_slice
from shoplens.models import registry

log = logging.getLogger(__name__)


class ModelVersionNotFound(FileNotFoundError):
    """A dataset has no next-item model version on or before the run date."""


@dataclass(frozen=True)
class ModelVersion:
    """The model version a dataset is scored with."""

    dataset: str
    run_date: dt.date
    path: str
    model: str
    vocab_size: int
    max_len: int


def resolve_versions(cfg: Config, datasets: Sequence[str], run_date: dt.date) -> dict[str, ModelVersion]:
    """Returns each dataset's newest model version on or before ``run_date``.

    Raises: ModelVersionNotFound naming every dataset without one (and where it looked).
    """
    found: dict[str, ModelVersion] = {}
    missing = []
    for dataset in datasets:
        version = registry.latest_version(cfg, dataset, run_date)
        if version is None:
            missing.append(f"{dataset} (looked in {registry.versions_root(cfg, dataset)})")
            continue
        meta = registry.read_meta(cfg, dataset, version)
        found[dataset] = ModelVersion(
            dataset=dataset,
            run_date=version,
            path=registry.model_dir(cfg, dataset, version),
            model=str(meta["model"]),
            vocab_size=int(meta["vocab_size"]),
            max_len=int(meta["max_len"]),
        )
    if missing:
        raise ModelVersionNotFound(
            f"no next-item model version on or before {run_date} for dataset(s): {'; '.join(missing)}. "
            "Train one first (train_next_item), or leave the dataset out with --dataset."
        )
    return found


def _load(spark: SparkSession, spec: catalog.TableSpec, cfg: Config) -> DataFrame:
    location = spec.location(cfg)
    if not catalog.table_exists(spark, location):
        raise FileNotFoundError(f"{spec.name} does not exist at {location}: run the jobs that build it first")
    return read_table(spark, location)


def predictions(
    cfg: Config, run_date: dt.date, version: ModelVersion, events: DataFrame, vocab: DataFrame
) -> DataFrame:
    """One dataset's predictions: ``events`` are its silver.events up to ``run_date``, ``vocab`` its
    gold.item_vocab rows.

    Returns: one row per (dataset, user_id, rank): gold.next_item_predictions' columns.
    """
    sc = cfg.scoring
    timeline = sequences.with_item_index(sequences.counted_events(events, cfg.sequences.event_types), vocab)
    inputs = scoring.latest_inputs(timeline, version.max_len, version.vocab_size)
    excluded = scoring.purchased_items(events, vocab, version.vocab_size) if sc.exclude_purchased else None
    scored = scoring.top_items(
        scoring.with_excluded_items(inputs, excluded),
        version.path,
        version.vocab_size,
        sc.top_k,
        sc.batch_size,
        cfg.horovod.use_gpu,
    )
    return catalog.NEXT_ITEM_PREDICTIONS.conform(
        scoring.with_item_ids(scored, vocab).select(
            F.lit(run_date).alias(S.RUN_DATE),
            S.DATASET,
            S.USER_ID,
            S.RANK,
            S.ITEM_ID,
            S.SCORE,
            F.lit(version.model).alias(S.MODEL),
            F.lit(version.run_date).alias(S.MODEL_VERSION),
        )
    )


def _check_vocabulary(vocab: DataFrame, version: ModelVersion) -> None:
    highest = vocab.agg(F.max(S.ITEM_INDEX).alias("m")).first()
    known = int(highest["m"]) + 1 if highest and highest["m"] is not None else 0
    if known < version.vocab_size:
        raise ValueError(
            f"gold.item_vocab of dataset {version.dataset} ends at index {known - 1}, but model version "
            f"{version.run_date} scores {version.vocab_size} indices: the vocabulary was rebuilt since, and the "
            "model's indices would name other items. Retrain before scoring."
        )


def run(spark: SparkSession, cfg: Config, run_date: dt.date, datasets: Sequence[str] | None = None) -> dict[str, Any]:
    """Scores every identified user of ``datasets`` (default: every dataset of gold.item_vocab) and
    replaces their (run_date, dataset) slices of gold.next_item_predictions.

    Returns: per dataset, the model and version used, the users scored and the rows written.
    Raises: ModelVersionNotFound (before any write) when a dataset has no model version.
    """
    silver = _load(spark, catalog.SILVER_EVENTS, cfg).where(F.col(S.EVENT_DATE) <= F.lit(run_date))
    all_vocab = _load(spark, catalog.ITEM_VOCAB, cfg)
    if datasets is None:
        datasets = sorted(r[S.DATASET] for r in all_vocab.select(S.DATASET).distinct().collect())  # a handful
    versions = resolve_versions(cfg, datasets, run_date)
    summary: dict[str, Any] = {}
    for dataset in datasets:
        version = versions[dataset]
        vocab = all_vocab.where(F.col(S.DATASET) == dataset)
        _check_vocabulary(vocab, version)
        log.info("scoring %s with %s version %s (%s)", dataset, version.model, version.run_date, version.path)
        # Cached: scored once, written (a small night's slice through the driver and delta-rs where
        # it writes) and summed up without reading the table back.
        rows = predictions(cfg, run_date, version, silver.where(F.col(S.DATASET) == dataset), vocab).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            where = {S.RUN_DATE: run_date, S.DATASET: dataset}
            replace_slice(rows, catalog.NEXT_ITEM_PREDICTIONS, cfg, where, driver_rows=DRIVER_ROWS)
            written = rows.agg(F.countDistinct(S.USER_ID).alias("users"), F.count(F.lit(1)).alias("rows")).first()
        finally:
            rows.unpersist()
        summary[dataset] = {
            "model": version.model,
            "model_version": version.run_date.isoformat(),
            "users": int(written["users"]) if written else 0,
            "rows": int(written["rows"]) if written else 0,
        }
    log.info("next-item predictions for %s: %s", run_date, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", dest="datasets", action="append", default=None,
        help="a dataset to score (repeatable; default: every dataset of gold.item_vocab)",
    )

    def work(spark, cfg, args) -> None:
        run(spark, cfg, args.run_date, args.datasets)

    return cli.run_job("score_next_item", parser, argv, work, dataset=lambda args: cli.joined(args.datasets))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
