"""train_next_item end to end in local[2]: synthetic silver → build_sequences → 2 Horovod processes
(horovod.spark.run) per candidate model → the best on validation published as the model version,
every figure in gold.model_metrics; the distributed figures against a single-process evaluation of
the exported model; resuming; an empty rank and a changed vocabulary refused before any process
starts.

Kept cheap (CI time): one end-to-end training per module (tiny GRU4Rec and SASRec, 2 epochs), one
resumed run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

import numpy as np
import pytest
from pyspark.sql import functions as F

from shoplens import catalog, shards
from shoplens import schemas as S
from shoplens.distributed import TrainingProcessError
from shoplens.faults import FAULT_ENV_VAR
from shoplens.jobs import build_sequences, train_next_item
from shoplens.models import checkpoints, data, registry
from shoplens.models import metrics as M
from shoplens.models.evaluate import evaluate, evaluate_scores

from .synthetic_silver import generate, write_all_silver

RUN_DATE = dt.date(2024, 1, 6)
DATASET = S.DATASET_LANDING
PROTOCOLS = {"leave_last_out_full_catalogue", "leave_last_out_sampled_100"}


def _small(cfg, warehouse: str):
    s = cfg.seqrec
    return dataclasses.replace(
        cfg,
        paths=dataclasses.replace(cfg.paths, warehouse=warehouse),
        sequences=dataclasses.replace(cfg.sequences, min_item_count=1, max_len=10, num_shards=4),
        seqrec=dataclasses.replace(
            s, model="best", candidates=("gru4rec", "sasrec"), select_metric="ndcg@10_sampled",
            epochs=2, batch_size=32, eval_batch_size=256, patience=5,
            gru4rec=dataclasses.replace(s.gru4rec, embedding_dim=8, hidden_units=(8,), dropout=0.0),
            sasrec=dataclasses.replace(s.sasrec, embedding_dim=8, num_blocks=1, num_heads=1, dropout=0.0),
        ),
        horovod=dataclasses.replace(cfg.horovod, num_proc=2, threads_per_proc=1, start_timeout_s=60),
    )


@pytest.fixture(scope="module")
def trained(spark, cfg, tmp_path_factory):
    """gold.sequence_examples from synthetic silver, and one training run on 2 processes."""
    base = tmp_path_factory.mktemp("next_item")
    wh = _small(cfg, str(base / "warehouse"))
    write_all_silver(spark, wh, generate(dt.date(2024, 1, 1), 6, seed=11, users=60, anonymous=0, items=200,
                                         late_share=0))
    build_sequences.run(spark, wh, RUN_DATE)
    summary = train_next_item.run(spark, wh, RUN_DATE)
    return wh, summary[DATASET]


def _examples(cfg, split: str, num_negatives: int = 0) -> data.Examples:
    location = catalog.SEQUENCE_EXAMPLES.location(cfg)
    files = shards.shard_files(location, shards.latest_version(location), DATASET, split, range(cfg.sequences.num_shards))
    return data.read_examples(files, cfg.sequences.max_len, num_negatives=num_negatives)


def _copy(cfg, tmp_path):
    shutil.copytree(cfg.paths.warehouse, tmp_path / "warehouse")
    return dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, warehouse=str(tmp_path / "warehouse")))


@pytest.mark.horovod
def test_training_exports_a_model_version_whose_meta_and_scores_match_the_run(spark, trained):
    cfg, summary = trained
    vocab = spark.read.format("delta").load(catalog.ITEM_VOCAB.location(cfg)).where(F.col(S.DATASET) == DATASET)
    vocab_size = vocab.agg(F.max(S.ITEM_INDEX)).first()[0] + 1

    meta = registry.read_meta(cfg, DATASET, RUN_DATE)

    # The published model is the candidate with the best validation NDCG@10 (sampled candidates).
    validation = {m: c["val"]["ndcg@10_sampled"] for m, c in summary["candidates"].items()}
    chosen = max(validation, key=validation.get)
    assert set(validation) == {"gru4rec", "sasrec"} and validation["gru4rec"] != validation["sasrec"]
    assert summary["model"] == meta["model"] == meta["selection"]["chosen"] == chosen
    assert meta["selection"]["validation"] == pytest.approx(validation)
    assert summary["val"] == summary["candidates"][chosen]["val"]

    assert summary["hvd_size"] == 2 and summary["shards_per_rank"] == [[0, 2], [1, 3]]
    assert set(registry.META_KEYS) <= set(meta)
    assert meta["hvd_size"] == 2 and meta["epochs"] == 2
    assert meta["vocab_size"] == vocab_size and meta["max_len"] == 10
    assert meta["sequence_examples_version"] == shards.latest_version(catalog.SEQUENCE_EXAMPLES.location(cfg))
    assert meta["item_vocab_version"] == shards.latest_version(catalog.ITEM_VOCAB.location(cfg))
    assert meta["config"]["gru4rec"]["hidden_units"] == [8]
    assert registry.list_versions(cfg, DATASET) == [RUN_DATE]
    assert registry.latest_version(cfg, DATASET, RUN_DATE + dt.timedelta(days=3)) == RUN_DATE
    assert registry.latest_version(cfg, DATASET, RUN_DATE - dt.timedelta(days=1)) is None

    # The SavedModel as the scorer loads it: int32 (batch, max_len) → scores (batch, vocab_size).
    model = registry.load_model(cfg, DATASET, RUN_DATE)
    assert tuple(model(np.zeros((3, 10), dtype=np.int32) + 2).shape) == (3, vocab_size)

    # The figures the 2 processes combined (count-weighted) equal one process scoring every row.
    test = _examples(cfg, "test", cfg.sequences.num_negatives)
    validation = _examples(cfg, "validation", cfg.sequences.num_negatives)
    popularity = M.popularity_scores(data.all_prefixes(_examples(cfg, "train")).targets, vocab_size)
    assert meta["metrics"]["test_examples"] == len(test) == summary["test_examples"]
    assert sum(summary["examples_per_rank"]["validation"]) == len(validation) == summary["val_examples"]
    assert meta["metrics"]["test"] == pytest.approx(evaluate(model, test, 256), abs=1e-6)
    assert meta["metrics"]["validation"] == pytest.approx(evaluate(model, validation, 256), abs=1e-6)
    assert meta["metrics"]["popularity_test"] == pytest.approx(evaluate_scores(popularity, test, 256), abs=1e-9)
    assert summary["test"] == meta["metrics"]["test"]


@pytest.mark.horovod
def test_test_and_validation_figures_land_in_model_metrics_under_both_protocols(spark, trained):
    cfg, summary = trained
    rows = (
        spark.read.format("delta")
        .load(catalog.MODEL_METRICS.location(cfg))
        .where(F.col(S.JOB) == "train_next_item")
        .collect()
    )

    got = {(r[S.MODEL], r[S.SPLIT], r[S.PROTOCOL], r[S.METRIC]): (r["value"], r["n_examples"]) for r in rows}
    names = {f"{m}_{p}" for p in ("sampled", "full") for m in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@20", "p@20")}
    assert {k[3] for k in got} == names | {"selected"}
    assert {k[2] for k in got} == PROTOCOLS
    models = ("gru4rec", "sasrec", "popularity")
    assert {(k[0], k[1]) for k in got} == {(m, s) for m in models for s in ("validation", "test")}
    assert len(got) == 6 * len(names) + 2
    for model, candidate in summary["candidates"].items():
        for name in names:
            protocol = "leave_last_out_sampled_100" if name.endswith("_sampled") else "leave_last_out_full_catalogue"
            test = got[(model, "test", protocol, name)]
            assert test == (pytest.approx(candidate["test"][name]), candidate["test_examples"])
            assert got[(model, "validation", protocol, name)][0] == pytest.approx(candidate["val"][name])
            assert got[("popularity", "test", protocol, name)][0] == pytest.approx(summary["popularity_test"][name])
            assert 0.0 <= test[0] <= 1.0
        selected = got[(model, "validation", "leave_last_out_sampled_100", "selected")][0]
        assert selected == (1.0 if model == summary["model"] else 0.0)


@pytest.mark.horovod
def test_a_rerun_of_the_date_resumes_from_the_checkpoint(spark, trained, tmp_path):
    cfg = _copy(trained[0], tmp_path)
    # As if the first run had crashed after epoch 2 of 3: the re-run trains epoch 3 only.
    cfg = dataclasses.replace(cfg, seqrec=dataclasses.replace(cfg.seqrec, epochs=3))

    again = train_next_item.run(spark, cfg, RUN_DATE)[DATASET]

    for model, candidate in again["candidates"].items():
        assert (candidate["initial_epoch"], candidate["epochs"]) == (2, 3)
        model_cfg = dataclasses.replace(cfg, seqrec=dataclasses.replace(cfg.seqrec, model=model))
        assert checkpoints.read_state(train_next_item.run_dir(model_cfg, DATASET, S.GRAIN_USER, RUN_DATE)).epoch == 3
    assert registry.read_meta(cfg, DATASET, RUN_DATE)["epochs"] == 3
    assert registry.list_versions(cfg, DATASET) == [RUN_DATE]


@pytest.mark.horovod
def test_a_rank_that_dies_stops_the_run_with_a_clear_error_and_the_rerun_resumes_after_its_last_epoch(
    spark, trained, tmp_path, monkeypatch
):
    cfg = _copy(trained[0], tmp_path)
    cfg = dataclasses.replace(cfg, seqrec=dataclasses.replace(cfg.seqrec, model="gru4rec", epochs=4))
    # Rank 1 is SIGKILLed at the end of the run's first epoch (epoch 3 of 4; rank 0 checkpoints it):
    # rank 0 fails in its next collective operation instead of waiting for it.
    monkeypatch.setenv(FAULT_ENV_VAR, "train_next_item:after_epoch:rank1")

    with pytest.raises(TrainingProcessError, match="running the job again for the same date resumes"):
        train_next_item.run(spark, cfg, RUN_DATE)

    run_folder = train_next_item.run_dir(cfg, DATASET, S.GRAIN_USER, RUN_DATE)
    assert checkpoints.read_state(run_folder).epoch == 3
    monkeypatch.delenv(FAULT_ENV_VAR)
    again = train_next_item.run(spark, cfg, RUN_DATE)[DATASET]
    assert (again["initial_epoch"], again["epochs"]) == (3, 4)
    assert registry.read_meta(cfg, DATASET, RUN_DATE)["epochs"] == 4


def test_a_rank_without_examples_is_refused_before_any_process_starts(spark, trained):
    cfg, _ = trained

    # 4 shards, 5 processes: rank 4 gets none.
    with pytest.raises(train_next_item.EmptyRankError, match=r"rank 4 \(shards none: 0 train, 0 validation"):
        train_next_item.run(spark, cfg, RUN_DATE, num_proc=5)


def test_a_vocabulary_changed_since_the_checkpoint_is_refused_before_any_process_starts(spark, trained, tmp_path):
    cfg = _copy(trained[0], tmp_path)
    location = catalog.ITEM_VOCAB.location(cfg)
    highest = spark.read.format("delta").load(location).where(F.col(S.DATASET) == DATASET).agg(F.max(S.ITEM_INDEX))
    new_item = [(DATASET, "item-new", highest.first()[0] + 1, RUN_DATE, 5)]
    spark.createDataFrame(new_item, S.ITEM_VOCAB).write.format("delta").mode("append").save(location)

    with pytest.raises(checkpoints.CheckpointError, match="the vocabulary changed since the checkpoint"):
        train_next_item.run(spark, cfg, RUN_DATE)


def test_the_selection_takes_the_best_validation_figure_and_the_first_of_equals():
    figures = {"sasrec": {"ndcg@10_sampled": 0.30}, "gru4rec": {"ndcg@10_sampled": 0.31}}
    assert train_next_item.select_model("ndcg@10_sampled", figures) == "gru4rec"
    assert train_next_item.select_model("ndcg@10_sampled", {**figures, "gru4rec": {"ndcg@10_sampled": 0.30}}) == "sasrec"
    # No validation figure (no validation example anywhere) never beats a real one.
    assert train_next_item.select_model("ndcg@10_sampled", {"sasrec": {}, "gru4rec": {"ndcg@10_sampled": 0.0}}) == "gru4rec"
