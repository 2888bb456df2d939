"""train_next_item and score_next_item submitted with spark-submit to the standalone cluster
(``make cluster-up``): 2 Horovod processes train on the executor, not in the driver, and scoring fills
gold.next_item_predictions. The sequences are built locally first (small synthetic shop)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.request

import pytest
from pyspark.sql import functions as F

from shoplens import catalog, submit
from shoplens import schemas as S
from shoplens.config import load_config
from shoplens.jobs import build_sequences
from shoplens.models import registry

from .synthetic_silver import generate, write_all_silver

pytestmark = [pytest.mark.cluster, pytest.mark.horovod]

RUN_DATE = dt.date(2024, 1, 6)
DATASET = S.DATASET_LANDING
JOB_TIMEOUT_S = 900
# Small enough for a 2-core machine; the same settings for the local preparation and the cluster jobs.
SMALL = (
    "sequences.min_item_count=1", "sequences.max_len=10", "sequences.num_shards=4",
    "seqrec.model=gru4rec", "seqrec.epochs=1", "seqrec.batch_size=32", "seqrec.eval_batch_size=256",
    "seqrec.gru4rec.embedding_dim=8", "seqrec.gru4rec.hidden_units=[8]",
    "horovod.num_proc=2", "horovod.start_timeout_s=120",
)


def _submit(spec: submit.SubmitSpec, job: str) -> subprocess.CompletedProcess:
    argv = submit.command(spec, job, RUN_DATE.isoformat(), submit.spark_submit_path())
    done = subprocess.run(argv, env=submit.submit_env(spec), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, f"{job} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_training_runs_on_the_executor_and_scoring_fills_the_predictions(
    standalone_cluster, spark, root, local_overrides, tmp_path
):
    overrides = (*local_overrides, f"paths.warehouse={tmp_path / 'warehouse'}", *SMALL)
    local = load_config("local", root / "conf", overrides)
    write_all_silver(spark, local, generate(dt.date(2024, 1, 1), 6, seed=11, users=60, anonymous=0, items=200,
                                            late_share=0))
    build_sequences.run(spark, local, RUN_DATE)
    cluster_cfg = load_config("cluster", root / "conf", overrides)
    spec = submit.spec_from_clone(cluster_cfg, root / "conf", root, overrides)

    _submit(spec, "train_next_item")
    _submit(spec, "score_next_item")

    runs = {
        r[S.JOB]: r
        for r in spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(local))
        .where(F.col(S.RUN_DATE) == RUN_DATE).collect()
    }
    assert {job: r[S.STATUS] for job, r in runs.items()} == {"train_next_item": "succeeded", "score_next_item": "succeeded"}
    # Both ran as applications of the standalone master, with their executors on its worker.
    master = _json("http://127.0.0.1:8080/json/")
    finished = {a["id"]: a for a in master["completedapps"]}
    worker = _json("http://127.0.0.1:8081/json/")
    executor_apps = {e["appid"] for e in worker["finishedexecutors"] + worker["executors"]}
    for job, row in runs.items():
        assert row[S.APP_ID] in finished and finished[row[S.APP_ID]]["name"] == f"shoplens.{job} {RUN_DATE}"
        assert row[S.APP_ID] in executor_apps, (job, row[S.APP_ID], executor_apps)

    # The two ranks ran in two processes under the executor's JVM, not in the driver (the run
    # record's driver column is the driver's host:pid).
    meta = registry.read_meta(local, DATASET, RUN_DATE)
    driver_pid = int(runs["train_next_item"][S.DRIVER].rsplit(":", 1)[1])
    processes = meta["processes"]
    assert [p["rank"] for p in processes] == [0, 1] and meta["hvd_size"] == 2
    assert len({p["pid"] for p in processes}) == 2 and driver_pid not in {p["pid"] for p in processes}
    for process in processes:
        assert "org.apache.spark.executor.CoarseGrainedExecutorBackend" in process["jvm_command"], process
        assert process["jvm_pid"] != driver_pid

    predictions = spark.read.format("delta").load(catalog.NEXT_ITEM_PREDICTIONS.location(local))
    tonight = predictions.where(F.col(S.RUN_DATE) == RUN_DATE)
    assert tonight.select(S.USER_ID).distinct().count() > 0
    assert {r[0] for r in tonight.select(S.MODEL).distinct().collect()} == {"gru4rec"}
