"""What every Horovod process of ``train_next_item`` runs: train, evaluate on the test split, export.

The driver (``shoplens.jobs.train_next_item``) resolves a :class:`RunPlan` (every rank's file lists
at pinned Delta versions, the vocabulary size) and hands the same plan
to every process through ``distributed.run_distributed``; each process picks its own files by rank.
:func:`train_evaluate_export` then:

1. trains (or resumes, or re-evaluates a finished run) with ``models.train.train_model``;
2. scores its own test shards with the best weights and the popularity baseline (train targets of
   every process), and combines the figures across processes exactly: each process's means times
   its example count, summed with an allreduce, over the total count. So the test evaluation is
   spread over the processes like the data, and nothing the size of the test split ever reaches the
   Spark driver (only a few dozen numbers do);
3. on rank 0 only, saves the best weights with their meta.json into the plan's ``export_dir``
   (``registry.write_folder``); the driver then publishes the chosen candidate's export as the
   (dataset, run date) model version (``registry.publish``).

No SparkSession here; TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoplens import distributed
from shoplens.config import Config
from shoplens.models import data, registry
from shoplens.models import metrics as M
from shoplens.models.evaluate import evaluate, evaluate_scores
from shoplens.models.train import train_model

log = logging.getLogger(__name__)

# Every figure evaluate() reports on examples with negatives, in a fixed order: all processes must
# put the same names into the allreduce, those without a test example too.
FIGURE_NAMES = tuple(sorted(name for p in M.PROTOCOLS for name in M.ranking_metrics([0], p)))


@dataclass(frozen=True)
class RunPlan:
    """One (dataset, grain, run date) training run, as resolved by the driver; the same on every
    process. ``*_files[r]`` are rank r's Parquet files of gold.sequence_examples at
    ``examples_version``."""

    dataset: str
    grain: str
    run_date: dt.date
    # Checkpoints and training state (resuming), and the export of the trained model (export_dir).
    out_dir: str
    vocab_size: int
    examples_version: int
    vocab_version: int
    train_files: tuple[tuple[str, ...], ...]
    val_files: tuple[tuple[str, ...], ...]
    test_files: tuple[tuple[str, ...], ...]
    shard_ids: tuple[tuple[int, ...], ...]
    # Rank r's example counts as the driver counted them (train: after train_all_prefixes).
    examples_per_rank: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # None: the processes agree on it from their train example counts (train.common_steps_per_epoch).
    steps_per_epoch: int | None = None

    @property
    def export_dir(self) -> str:
        """Where rank 0 exports the trained model (model and meta.json) before the driver publishes
        the chosen candidate as the model version."""
        return f"{self.out_dir}/export"

    @property
    def num_proc(self) -> int:
        return len(self.train_files)


def train_evaluate_export(cfg: Config, plan: RunPlan) -> dict[str, Any]:
    """Trains, evaluates and (rank 0) exports the run of ``plan`` (module doc). Every process runs it.

    Returns: this process's dict from ``train`` plus ``test_examples`` (this process's), and, the
    same on every process, ``test`` / ``popularity_test`` (figures over every process's test examples,
    names ending in ``_sampled`` / ``_full``, empty when the split has none), ``test_examples_total``;
    rank 0 also writes the model into ``plan.export_dir``.
    """
    rank, size = distributed.rank(), distributed.size()
    if size != plan.num_proc:
        raise RuntimeError(f"the plan has file lists for {plan.num_proc} processes, Horovod runs {size}")
    s = cfg.seqrec
    trained = train_model(
        cfg, plan.train_files[rank], plan.val_files[rank], plan.out_dir, plan.vocab_size,
        steps_per_epoch=plan.steps_per_epoch,
    )
    result = dict(trained.result)
    try:
        test = data.read_examples(
            plan.test_files[rank], cfg.sequences.max_len, num_negatives=cfg.sequences.num_negatives
        )
    except data.EmptyShardError:
        # Possible with a time_cutoff split; this process still takes part in the allreduces.
        test = None
    n = len(test) if test is not None else 0
    if test is not None and data.max_item(test) >= plan.vocab_size:
        raise ValueError(f"a test example holds an item index >= the vocabulary size {plan.vocab_size}")
    model_figures = evaluate(trained.model, test, s.eval_batch_size) if n else {}
    popularity_figures = evaluate_scores(trained.popularity, test, s.eval_batch_size) if n else {}
    test_figures, total = distributed.weighted_mean(_all_figures(model_figures), n, "test_model")
    popularity_test, _ = distributed.weighted_mean(_all_figures(popularity_figures), n, "test_popularity")
    if total == 0:
        log.warning("%s: no test example in any shard: no test figures", plan.dataset)
        test_figures, popularity_test = {}, {}
    result.update(
        process=distributed.process_report(),
        test_examples=n, test_examples_total=total, test=test_figures, popularity_test=popularity_test
    )
    if distributed.is_chief():
        registry.write_folder(plan.export_dir, trained.model, meta(cfg, plan, result, size))
    return result


def _all_figures(figures: Mapping[str, float]) -> dict[str, float]:
    return {name: float(figures.get(name, 0.0)) for name in FIGURE_NAMES}


def meta(cfg: Config, plan: RunPlan, result: Mapping[str, Any], hvd_size: int) -> dict[str, Any]:
    """Returns the meta.json of the run's model version (``registry.META_KEYS`` and a few more)."""
    import dataclasses

    return {
        "model": cfg.seqrec.model,
        "dataset": plan.dataset,
        "grain": plan.grain,
        "run_date": plan.run_date.isoformat(),
        "config": dataclasses.asdict(cfg.seqrec),
        "sequence_examples_version": plan.examples_version,
        "item_vocab_version": plan.vocab_version,
        "vocab_size": plan.vocab_size,
        "max_len": cfg.sequences.max_len,
        "num_negatives": cfg.sequences.num_negatives,
        "metrics": {
            "validation": result["val"],
            "popularity_validation": result["popularity_val"],
            "test": result["test"],
            "popularity_test": result["popularity_test"],
            "validation_examples": result["val_examples_total"],
            "test_examples": result["test_examples_total"],
        },
        "hvd_size": hvd_size,
        "epochs": result["epochs_done"],
        "best_epoch": result["best_epoch"],
        "stopped_early": result["stopped_early"],
        "steps_per_epoch": result["steps_per_epoch"],
        "examples_per_rank": {k: list(v) for k, v in plan.examples_per_rank.items()},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def per_rank(results: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    """Returns ``key`` of each rank's result, in rank order."""
    return [r[key] for r in sorted(results, key=lambda r: r["rank"])]
