"""build_sequences: ``silver.events`` (+ ``gold.session_events``) → ``gold.item_vocab`` and
``gold.sequence_examples``.

For each dataset (every dataset in silver unless ``--dataset`` names some), as of run date R:

1. ``gold.item_vocab``: counts each item's non-bot events of ``sequences.event_types`` with event
   date <= R and replaces the dataset's slice with its update: known items keep their index (only
   their count is refreshed); items that reach ``sequences.min_item_count`` are added with the next
   indices in the order (count descending, item_id). 0 is padding, 1 out of vocabulary.
2. ``gold.sequence_examples``: rebuilt whole for the dataset (``replace_slice`` on dataset): it is
   a snapshot derived from silver and the vocabulary, like a materialised view. Grain ``user`` for
   identified users; grain ``session`` for datasets with sessions (``build_sessions`` first). The
   split, the example rule and the negatives: :mod:`shoplens.sequences`, docs/SEQUENCES.md.

The table is partitioned by (dataset, grain, split, shard) so that each training process reads its
own shards' files directly (:mod:`shoplens.shards`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, sequences
from shoplens import schemas as S
from shoplens.config import Config, ConfigError
from shoplens.ingest.rules import CANONICAL_EVENT_TYPES
from shoplens.io import DRIVER_ROWS, read_table, replace_slice, small_query

log = logging.getLogger(__name__)


def _read(spark: SparkSession, spec: catalog.TableSpec, cfg: Config) -> DataFrame | None:
    location = spec.location(cfg)
    if not catalog.table_exists(spark, location):
        return None
    return read_table(spark, location)


def update_vocab(spark: SparkSession, cfg: Config, counted: DataFrame, dataset: str, run_date: dt.date) -> int:
    """Replaces the dataset's slice of gold.item_vocab with its update by ``counted`` (the dataset's
    counted events): known items keep their index and take their new count, new items that reach
    ``sequences.min_item_count`` are numbered after the highest index, and known items that
    ``counted`` no longer holds stay as they were. One overwrite of a table of items, not a MERGE:
    the slice is computed whole either way, and the overwrite costs half the Spark jobs.

    Returns: the rows of the dataset's vocabulary."""
    location = catalog.ITEM_VOCAB.location(cfg)
    in_dataset = F.col(S.DATASET) == dataset
    if catalog.table_exists(spark, location):
        vocab = read_table(spark, location).where(in_dataset)
    else:
        vocab = spark.createDataFrame([], catalog.ITEM_VOCAB.schema)
    counts = sequences.item_counts(counted.where(in_dataset))
    updates = sequences.vocab_updates(counts, vocab, cfg.sequences.min_item_count, run_date)
    absent = vocab.join(counts.select(S.DATASET, S.ITEM_ID), [S.DATASET, S.ITEM_ID], "left_anti")
    slice_ = updates.unionByName(absent.select(*updates.columns))
    return replace_slice(slice_, catalog.ITEM_VOCAB, cfg, {S.DATASET: dataset}, driver_rows=DRIVER_ROWS)


def highest_index(spark: SparkSession, cfg: Config, dataset: str) -> int:
    """The dataset's highest index in gold.item_vocab (1, out of vocabulary, when it has none), by
    delta-rs where it reads (:func:`shoplens.io.small_query`)."""
    found = small_query(spark, cfg, catalog.ITEM_VOCAB.location(cfg), f"max({S.ITEM_INDEX}) AS m", {S.DATASET: dataset})
    highest = found[0]["m"] if found else None
    return S.OOV_INDEX if highest is None else int(highest)


def build_dataset(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date,
    events: DataFrame,
    dataset: str,
    session_events: DataFrame | None,
) -> dict[str, int]:
    """MERGEs the vocabulary of one dataset's events (already limited to the run's dates), then
    replaces the dataset's examples.

    Returns: the examples written by ``grain/split`` (counted on the cached examples after the write,
    not read back: the negatives and the shard add columns, never rows)."""
    seq = cfg.sequences
    # Counted once: the vocabulary's counts and the timelines both read it.
    counted = sequences.counted_events(events, seq.event_types).persist(StorageLevel.MEMORY_AND_DISK)
    update_vocab(spark, cfg, counted, dataset, run_date)
    vocab = read_table(spark, catalog.ITEM_VOCAB.location(cfg)).where(F.col(S.DATASET) == dataset)
    max_index = highest_index(spark, cfg, dataset)
    labelled = sequences.with_split(sequences.with_item_index(counted, vocab), seq)
    labelled = labelled.persist(StorageLevel.MEMORY_AND_DISK)
    built = sequences.examples(labelled, S.GRAIN_USER, seq.max_len)
    if session_events is not None:
        in_sessions = labelled.join(
            session_events.select(S.DATASET, S.EVENT_ID, S.SESSION_ID), [S.DATASET, S.EVENT_ID], "inner"
        )
        built = built.unionByName(sequences.examples(in_sessions, S.GRAIN_SESSION, seq.max_len))
    built = built.persist(StorageLevel.MEMORY_AND_DISK)
    touched = sequences.interactions(events, vocab).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with_negatives = sequences.with_negatives(built, touched, max_index, seq.num_negatives, seq.seed)
        replace_slice(
            sequences.with_shard(with_negatives, seq.num_shards), catalog.SEQUENCE_EXAMPLES, cfg, {S.DATASET: dataset}
        )
        return {f"{r[S.GRAIN]}/{r[S.SPLIT]}": r["count"] for r in built.groupBy(S.GRAIN, S.SPLIT).count().collect()}
    finally:
        for df in (touched, built, labelled, counted):
            df.unpersist()


def run(spark: SparkSession, cfg: Config, run_date: dt.date, datasets: Sequence[str] | None = None) -> dict[str, Any]:
    """Rebuilds the vocabulary and the examples of ``datasets`` (default: every dataset in silver).

    Returns: per dataset, the number of examples by ``grain/split``.
    """
    unknown = sorted(set(cfg.sequences.event_types) - set(CANONICAL_EVENT_TYPES))
    if unknown:
        raise ConfigError(f"sequences.event_types: unknown event type(s) {', '.join(unknown)}")
    silver = (
        read_table(spark, catalog.SILVER_EVENTS.location(cfg))
        .where(F.col(S.EVENT_DATE) <= F.lit(run_date))
    )
    if datasets is None:
        datasets = sorted(r[S.DATASET] for r in silver.select(S.DATASET).distinct().collect())  # a handful
    all_session_events = _read(spark, catalog.SESSION_EVENTS, cfg)
    summary: dict[str, Any] = {}
    for dataset in datasets:
        events = silver.where(F.col(S.DATASET) == dataset)
        session_events = None
        if dataset not in cfg.sessions.exclude_datasets and all_session_events is not None:
            session_events = all_session_events.where(F.col(S.DATASET) == dataset)
            if session_events.limit(1).count() == 0:
                log.warning("no sessions for dataset %s: run build_sessions first; user grain only", dataset)
                session_events = None
        summary[dataset] = build_dataset(spark, cfg, run_date, events, dataset, session_events)
    log.info("sequence examples for %s: %s", run_date, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", dest="datasets", action="append", default=None,
        help="a silver dataset to rebuild (repeatable; default: every dataset in silver)",
    )
    return cli.run_job("build_sequences", parser, argv, _work, dataset=lambda args: cli.joined(args.datasets))


def _work(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> None:
    run(spark, cfg, args.run_date, args.datasets)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
