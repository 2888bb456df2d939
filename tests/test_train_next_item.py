"""train_next_item end to end in local[2]: synthetic silver → build_sequences → 2 Horovod processes
(horovod.spark.run) → a model version and gold.model_metrics; the distributed figures against a
single-process evaluation of the exported model; resuming; an empty rank and a changed vocabulary
refused before any process starts.

Kept cheap (CI time): one end-to-end training per module (tiny GRU, 2 epochs), one resumed run.
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
            s, epochs=2, batch_size=32, eval_batch_size=256, patience=5,
            gru4rec=dataclasses.replace(s.gru4rec, embedding_dim=8, hidden_units=(8,), dropout=0.0),
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

    assert summary["hvd_size"] == 2 and summary["shards_per_rank"] == [[0, 2], [1, 3]]
    assert set(registry.META_KEYS) <= set(meta)
    assert meta["model"] == "gru4rec" and meta["hvd_size"] == 2 and meta["epochs"] == 2
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
    assert {k[3] for k in got} == names
    assert {k[2] for k in got} == PROTOCOLS
    assert {(k[0], k[1]) for k in got} == {(m, s) for m in ("gru4rec", "popularity") for s in ("validation", "test")}
    assert len(got) == 4 * len(names)
    for name in names:
        protocol = "leave_last_out_sampled_100" if name.endswith("_sampled") else "leave_last_out_full_catalogue"
        assert got[("gru4rec", "test", protocol, name)] == (pytest.approx(summary["test"][name]), summary["test_examples"])
        assert got[("popularity", "test", protocol, name)][0] == pytest.approx(summary["popularity_test"][name])
        assert 0.0 <= got[("gru4rec", "test", protocol, name)][0] <= 1.0


@pytest.mark.horovod
def test_a_rerun_of_the_date_resumes_from_the_checkpoint(spark, trained, tmp_path):
    cfg = _copy(trained[0], tmp_path)
    # As if the first run had crashed after epoch 2 of 3: the re-run trains epoch 3 only.
    cfg = dataclasses.replace(cfg, seqrec=dataclasses.replace(cfg.seqrec, epochs=3))

    again = train_next_item.run(spark, cfg, RUN_DATE)[DATASET]

    assert (again["initial_epoch"], again["epochs"]) == (2, 3)
    assert registry.read_meta(cfg, DATASET, RUN_DATE)["epochs"] == 3
    assert checkpoints.read_state(train_next_item.run_dir(cfg, DATASET, S.GRAIN_USER, RUN_DATE)).epoch == 3
    assert registry.list_versions(cfg, DATASET) == [RUN_DATE]


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
