"""train_next_item: ``gold.sequence_examples`` → a next-item model version per dataset (SavedModel and
meta.json, ``shoplens.models.registry``) and its test figures in ``gold.model_metrics``, trained with
Horovod on Spark.

For each dataset (every dataset in gold.sequence_examples unless ``--dataset`` names some), at one
grain (``--grain``, default ``user``), for run date R:

1. pins the current Delta versions of gold.sequence_examples and gold.item_vocab (read once, here);
   the vocabulary size is the dataset's highest item index + 1 at that version;
2. assigns the 16 hash shards to the N ranks round-robin (rank r: shards r, r + N, ...), resolves
   each rank's train, validation and test files at the pinned version (``shoplens.shards``, the
   Delta log replayed with pyarrow) and counts each rank's examples from the Parquet footers;
   refuses to start (:class:`EmptyRankError`) if a rank would get no train or validation example,
   and refuses a run folder whose checkpoint was built for another vocabulary size or input length
   (``checkpoints.CheckpointError``), both before any Horovod process starts: a rank that fails
   alone would leave the others waiting in a collective operation;
3. for each model to train (``seqrec.model``, or every ``seqrec.candidates`` model when it is
   ``best``) runs ``models.worker.train_evaluate_export`` in N Horovod processes
   (``horovod.num_proc``, or ``--num-proc``) through ``distributed.run_distributed``: each trains on
   its shards (the processes agree on steps per epoch from the mean rank's train examples), scores
   its own test shards, the figures are combined across ranks weighted by counts, and rank 0 exports
   the model into the run folder;
4. publishes the candidate with the highest validation ``seqrec.select_metric`` as the (dataset,
   run date) model version (``registry.publish``; meta.json's ``selection`` names the winner and
   every candidate's figure). Test figures never take part in the choice;
5. MERGEs the figures into gold.model_metrics: every candidate and ``popularity``, splits
   validation and test, one protocol per suffix (``_sampled``: the target against its 99 sampled
   negatives; ``_full``: against the whole catalogue), and a ``selected`` row per candidate (1.0 for
   the published one).

The run folder ``{warehouse}/models/next_item_runs/dataset=D/grain=G/run_date=R/model=M`` holds a
model's checkpoints and export: re-running a date resumes a crashed run after its last epoch, and a
finished one is only re-evaluated and re-exported (``--restart`` trains from scratch). docs/SEQREC.md has the details.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shoplens import catalog, cli, distributed, shards
from shoplens import schemas as S
from shoplens.config import Config
from shoplens.metrics import Metric, write_metrics
from shoplens.models import checkpoints, registry
from shoplens.models.worker import RunPlan, train_evaluate_export

log = logging.getLogger(__name__)

JOB = "train_next_item"
POPULARITY = "popularity"
# gold.model_metrics' metric of the model selection: 1.0 for the published candidate, 0.0 for the others.
SELECTED = "selected"
SPLITS = ("train", "validation", "test")


class EmptyRankError(ValueError):
    """A rank would get no train or validation example: the run is refused before it starts."""


def protocol_name(cfg: Config, protocol: str) -> str:
    """The ``protocol`` column of a figure whose name ends in ``_<protocol>``: the split rule and the
    candidates (``leave_last_out_full_catalogue``, as ALS's rows; ``leave_last_out_sampled_100``)."""
    if protocol == "full":
        return f"{cfg.sequences.split}_full_catalogue"
    return f"{cfg.sequences.split}_sampled_{cfg.sequences.num_negatives + 1}"


def run_dir(cfg: Config, dataset: str, grain: str, run_date: dt.date) -> str:
    """Returns the run folder of (dataset, grain, run date) for the model ``cfg.seqrec.model``:
    checkpoints and state, for resuming."""
    return (
        f"{cfg.paths.warehouse.rstrip('/')}/models/next_item_runs/dataset={dataset}/grain={grain}"
        f"/run_date={run_date.isoformat()}/model={cfg.seqrec.model}"
    )


def select_model(metric: str, validation: dict[str, dict[str, float]]) -> str:
    """Returns the candidate with the highest validation ``metric`` (``validation``: model → its
    validation figures, in candidate order); a tie goes to the earlier candidate, and a candidate
    without the figure (no validation example) never wins over one with it."""
    # max() keeps the first of equal keys.
    return max(validation, key=lambda m: validation[m].get(metric, float("-inf")))


def assign_shards(num_shards: int, num_proc: int) -> list[tuple[int, ...]]:
    """Returns each rank's shard ids, round-robin: rank r gets r, r + num_proc, ... (none when
    num_proc > num_shards and r >= num_shards)."""
    if num_proc < 1:
        raise ValueError(f"num_proc must be at least 1, got {num_proc}")
    return [tuple(range(r, num_shards, num_proc)) for r in range(num_proc)]


def count_rows(files: Sequence[str]) -> int:
    """Returns the rows of Parquet files from their footers (gold.sequence_examples holds no row
    without input items: each row is one example)."""
    total = 0
    for path in files:
        fs, inner = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
        total += pq.read_metadata(inner, filesystem=fs).num_rows
    return total


def vocab_size_at(spark: SparkSession, cfg: Config, dataset: str, version: int) -> int:
    """Returns the dataset's highest item index + 1 in gold.item_vocab at ``version``."""
    row = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(catalog.ITEM_VOCAB.location(cfg))
        .where(F.col(S.DATASET) == dataset)
        .agg(F.max(S.ITEM_INDEX).alias("m"))
        .first()
    )
    if row is None or row["m"] is None or row["m"] <= S.OOV_INDEX:
        raise EmptyRankError(f"{dataset}: gold.item_vocab (version {version}) holds no item: run build_sequences")
    return int(row["m"]) + 1


def plan_run(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date,
    dataset: str,
    grain: str,
    num_proc: int,
    examples_version: int,
    vocab_version: int,
) -> RunPlan:
    """Resolves one run: every rank's files and example counts at the pinned versions.

    Raises: :class:`EmptyRankError` when a rank would get no train or validation example;
    ``checkpoints.CheckpointError`` when the run folder holds a run for another vocabulary size or
    input length.
    """
    location = catalog.SEQUENCE_EXAMPLES.location(cfg)
    assigned = assign_shards(cfg.sequences.num_shards, num_proc)
    files: dict[str, list[tuple[str, ...]]] = {split: [] for split in SPLITS}
    counts: dict[str, list[int]] = {split: [] for split in SPLITS}
    for shard_ids in assigned:
        for split in SPLITS:
            found = (
                tuple(shards.shard_files(location, examples_version, dataset, split, shard_ids, grain))
                if shard_ids else ()
            )
            files[split].append(found)
            counts[split].append(count_rows(found))
    empty = [
        f"rank {r} (shards {list(assigned[r]) or 'none'}: {counts['train'][r]} train, "
        f"{counts['validation'][r]} validation examples)"
        for r in range(num_proc)
        if not counts["train"][r] or not counts["validation"][r]
    ]
    if empty:
        raise EmptyRankError(
            f"{dataset}/{grain}: gold.sequence_examples version {examples_version} leaves {len(empty)} of "
            f"{num_proc} ranks without train or validation examples: {'; '.join(empty)}. Train with fewer "
            "processes (--num-proc) or on a dataset with more actors; nothing was started"
        )
    vocab_size = vocab_size_at(spark, cfg, dataset, vocab_version)
    out_dir = run_dir(cfg, dataset, grain, run_date)
    _check_resumable(out_dir, vocab_size, cfg.sequences.max_len)
    return RunPlan(
        dataset=dataset,
        grain=grain,
        run_date=run_date,
        out_dir=out_dir,
        vocab_size=vocab_size,
        examples_version=examples_version,
        vocab_version=vocab_version,
        train_files=tuple(files["train"]),
        val_files=tuple(files["validation"]),
        test_files=tuple(files["test"]),
        shard_ids=tuple(assigned),
        examples_per_rank={split: tuple(c) for split, c in counts.items()},
    )


def _check_resumable(out_dir: str, vocab_size: int, max_len: int) -> None:
    """The run folder's state must fit this run: checked here, before any process starts."""
    fs, inner = pafs.FileSystem.from_uri(out_dir) if "://" in out_dir else (pafs.LocalFileSystem(), out_dir)
    path = f"{inner}/{checkpoints.STATE_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return
    try:
        with fs.open_input_stream(path) as stream:
            state = json.loads(stream.read().decode("utf-8"))
        built_for = (int(state["vocab_size"]), int(state["max_len"]))
    except (ValueError, KeyError, TypeError) as err:
        raise checkpoints.CheckpointError(
            f"{out_dir}/{checkpoints.STATE_FILE} is unreadable ({err}): re-run with --restart to train from scratch"
        ) from err
    if built_for != (vocab_size, max_len):
        raise checkpoints.CheckpointError(
            f"the run in {out_dir} was built for {built_for[0]} item indices and inputs of {built_for[1]} items; "
            f"gold.item_vocab now gives {vocab_size} and sequences.max_len is {max_len} (the vocabulary changed "
            "since the checkpoint): re-run with --restart to train this date from scratch"
        )


def _remove_run(out_dir: str) -> None:
    fs, inner = pafs.FileSystem.from_uri(out_dir) if "://" in out_dir else (pafs.LocalFileSystem(), out_dir)
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        log.info("--restart: removing the run in %s", out_dir)
        fs.delete_dir(inner)


def datasets_at(location: str, version: int, grain: str) -> list[str]:
    """Returns the datasets with examples of ``grain`` at ``version`` (from the Delta log's partition values)."""
    live = shards.live_files(location, version).values()
    return sorted({v[S.DATASET] for v in live if v.get(S.GRAIN) == grain and v.get(S.DATASET)})


def metric_rows(
    cfg: Config, run_date: dt.date, dataset: str, candidates: dict[str, dict[str, Any]], chosen: str
) -> list[Metric]:
    """The figures of every candidate (``candidates``: model → its :func:`_train_candidate` summary)
    and of the popularity baseline as gold.model_metrics rows, both splits, plus one ``selected``
    row per candidate (1.0 for the published one) under the protocol of ``seqrec.select_metric``."""
    rows = []
    published = candidates[chosen]
    sources = [
        (POPULARITY, "validation", published["popularity_val"], published["val_examples"]),
        (POPULARITY, "test", published["popularity_test"], published["test_examples"]),
    ]
    for model, summary in candidates.items():
        sources += [
            (model, "validation", summary["val"], summary["val_examples"]),
            (model, "test", summary["test"], summary["test_examples"]),
        ]
    for model, split, figures, n in sources:
        for name, value in sorted(figures.items()):
            protocol = protocol_name(cfg, name.rsplit("_", 1)[1])
            rows.append(Metric(run_date, JOB, dataset, model, split, protocol, name, float(value), int(n)))
    selection_protocol = protocol_name(cfg, cfg.seqrec.select_metric.rsplit("_", 1)[1])
    for model, summary in candidates.items():
        rows.append(Metric(run_date, JOB, dataset, model, "validation", selection_protocol, SELECTED,
                           1.0 if model == chosen else 0.0, int(summary["val_examples"])))
    return rows


def train_dataset(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date,
    dataset: str,
    grain: str,
    num_proc: int,
    *,
    restart: bool = False,
) -> dict[str, Any]:
    """Pins the versions, then plans, trains, evaluates and exports each model of
    ``seqrec.models_to_train`` on them, publishes the best on validation as the model version and
    writes every figure into gold.model_metrics (module doc).

    Returns: the published model's summary (:func:`_train_candidate`: versions, vocabulary size,
    per-rank example counts, epochs, the test and validation figures of the model and of popularity,
    seconds), with ``model`` (the chosen one), ``selection`` (as in meta.json), ``version_dir`` and
    ``candidates`` (model → its summary).
    """
    examples_version = shards.latest_version(catalog.SEQUENCE_EXAMPLES.location(cfg))
    vocab_version = shards.latest_version(catalog.ITEM_VOCAB.location(cfg))
    candidates = {}
    for model in cfg.seqrec.models_to_train:
        model_cfg = dataclasses.replace(cfg, seqrec=dataclasses.replace(cfg.seqrec, model=model))
        candidates[model] = _train_candidate(
            spark, model_cfg, run_date, dataset, grain, num_proc, examples_version, vocab_version, restart=restart
        )
    metric = cfg.seqrec.select_metric
    chosen = select_model(metric, {m: c["val"] for m, c in candidates.items()})
    selection = {
        "chosen": chosen,
        "metric": f"validation {metric}",
        "validation": {m: c["val"].get(metric) for m, c in candidates.items()},
    }
    log.info("%s/%s: publishing %s (%s: %s)", dataset, grain, chosen, selection["metric"], selection["validation"])
    extra_meta = {"selection": selection, "processes": candidates[chosen]["processes"]}
    version = registry.publish(cfg, dataset, run_date, candidates[chosen]["export_dir"], extra_meta)
    write_metrics(spark, cfg, metric_rows(cfg, run_date, dataset, candidates, chosen))
    return {**candidates[chosen], "selection": selection, "version_dir": version, "candidates": candidates}


def _train_candidate(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date,
    dataset: str,
    grain: str,
    num_proc: int,
    examples_version: int,
    vocab_version: int,
    *,
    restart: bool,
) -> dict[str, Any]:
    """Trains, evaluates and exports ``cfg.seqrec.model`` at the pinned versions.

    Returns: its summary (rank 0's figures, which every rank shares, and the run's counts and seconds).
    """
    if restart:
        _remove_run(run_dir(cfg, dataset, grain, run_date))
    plan = plan_run(spark, cfg, run_date, dataset, grain, num_proc, examples_version, vocab_version)
    log.info(
        "%s/%s: training %s on %d processes, gold.sequence_examples v%d, gold.item_vocab v%d (%d indices), "
        "train examples per rank %s",
        dataset, grain, cfg.seqrec.model, num_proc, examples_version, vocab_version, plan.vocab_size,
        plan.examples_per_rank["train"],
    )
    started = time.perf_counter()
    results = distributed.run_distributed(spark, cfg, train_evaluate_export, args=(cfg, plan), num_proc=num_proc)
    train_s = time.perf_counter() - started
    rank0 = next(r for r in results if r["rank"] == 0)
    epochs_run = rank0["epochs_done"] - rank0["initial_epoch"]
    return {
        "dataset": dataset,
        "grain": grain,
        "model": cfg.seqrec.model,
        "delta_version": examples_version,
        "item_vocab_version": vocab_version,
        "vocab_size": plan.vocab_size,
        "num_proc": num_proc,
        "hvd_size": rank0["size"],
        "shards_per_rank": [list(s) for s in plan.shard_ids],
        "examples_per_rank": {k: list(v) for k, v in plan.examples_per_rank.items()},
        "train_examples_per_rank": sorted((r["rank"], r["train_examples"]) for r in results),
        "steps_per_epoch": rank0["steps_per_epoch"],
        "initial_epoch": rank0["initial_epoch"],
        "epochs": rank0["epochs_done"],
        "best_epoch": rank0["best_epoch"],
        "stopped_early": rank0["stopped_early"],
        "seconds_per_epoch": round(rank0["fit_s"] / epochs_run, 2) if epochs_run else None,
        "train_s": round(train_s, 1),
        "val": rank0["val"],
        "popularity_val": rank0["popularity_val"],
        "test": rank0["test"],
        "popularity_test": rank0["popularity_test"],
        "val_examples": rank0["val_examples_total"],
        "test_examples": rank0["test_examples_total"],
        "export_dir": plan.export_dir,
        # Where each rank ran (host, pid, the executor JVM): meta.json's "processes".
        "processes": [r["process"] for r in sorted(results, key=lambda r: r["rank"])],
    }


def run(
    spark: SparkSession,
    cfg: Config,
    run_date: dt.date,
    datasets: Sequence[str] | None = None,
    *,
    grain: str = S.GRAIN_USER,
    num_proc: int | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Trains, evaluates and exports the next-item model of ``datasets`` (default: every dataset with
    examples of ``grain``) for ``run_date`` on ``num_proc`` (default ``horovod.num_proc``) processes.

    Returns: per dataset, the run's summary (:func:`train_dataset`).
    """
    location = catalog.SEQUENCE_EXAMPLES.location(cfg)
    if not catalog.table_exists(spark, location):
        raise FileNotFoundError(f"gold.sequence_examples does not exist at {location}: run build_sequences")
    num_proc = num_proc or cfg.horovod.num_proc
    if datasets is None:
        datasets = datasets_at(location, shards.latest_version(location), grain)
    summary = {}
    for dataset in datasets:
        summary[dataset] = train_dataset(spark, cfg, run_date, dataset, grain, num_proc, restart=restart)
        log.info("%s: %s", dataset, {k: summary[dataset][k] for k in ("model", "epochs", "test", "version_dir")})
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", dest="datasets", action="append", default=None,
        help="a dataset of gold.sequence_examples to train on (repeatable; default: every dataset)",
    )
    parser.add_argument("--grain", choices=(S.GRAIN_USER, S.GRAIN_SESSION), default=S.GRAIN_USER)
    parser.add_argument("--num-proc", type=int, default=None, help="Horovod processes (default horovod.num_proc)")
    parser.add_argument("--restart", action="store_true", help="drop the run date's checkpoints and train anew")

    def work(spark, cfg, args) -> None:
        run(spark, cfg, args.run_date, args.datasets, grain=args.grain, num_proc=args.num_proc, restart=args.restart)

    return cli.run_job("train_next_item", parser, argv, work, dataset=lambda args: cli.joined(args.datasets))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
