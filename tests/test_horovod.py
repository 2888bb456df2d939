"""Horovod on Spark: ranks agree after training, in executor processes (locally here; on the standalone
cluster in tests/test_package.py); a missing task slot fails within the start timeout; GPU is a
configuration switch."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys

import pytest

from shoplens import distributed
from shoplens.jobs import check_horovod

RUN_DATE = dt.date(2024, 1, 1)


def _with_horovod(cfg, **changes):
    return dataclasses.replace(cfg, horovod=dataclasses.replace(cfg.horovod, **changes))


def assert_ranks_agree_after_training(report: dict, driver_pid: int) -> list[dict]:
    ranks = report["ranks"]
    assert report["problems"] == []
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["size"] for r in ranks] == [2, 2]
    # Different starting weights, identical final weights: broadcast and gradient averaging worked.
    assert ranks[0]["initial_weights_sha256"] != ranks[1]["initial_weights_sha256"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]
    assert all(r["weights_sha256"] != r["initial_weights_sha256"] for r in ranks)
    # MetricAverageCallback: every rank reports the loss averaged over both shards.
    assert ranks[0]["final_loss"] == pytest.approx(ranks[1]["final_loss"], rel=1e-6)
    pids = {r["pid"] for r in ranks}
    assert len(pids) == 2 and driver_pid not in pids
    for r in ranks:
        # The CPU path, with the configured thread budget.
        assert r["visible_gpus"] == 0
        assert r["intra_op_threads"] == 1 and r["omp_num_threads"] == "1"
        chain = r["ancestors"]
        assert chain[0]["pid"] == r["pid"]
        assert "horovod.spark.task.gloo_exec_fn" in chain[0]["cmdline"]
        # Spawned by a PySpark worker (forked from pyspark.daemon) running a Horovod task service...
        assert any("pyspark.daemon" in p["cmdline"] for p in chain[1:-1])
        # ...under a JVM, where the ancestry walk stops.
        assert chain[-1]["name"] == "java"
    return ranks


@pytest.mark.horovod
def test_local_two_ranks_train_to_identical_weights_in_spark_worker_processes(spark, cfg):
    cfg = _with_horovod(cfg, num_proc=2, threads_per_proc=0)

    report = check_horovod.run(spark, cfg, RUN_DATE)

    assert report["driver_pid"] == os.getpid()
    ranks = assert_ranks_agree_after_training(report, os.getpid())
    for r in ranks:
        jvm = r["ancestors"][-1]
        # local[2]: the tasks run in the driver's own JVM, which this test process started.
        assert "org.apache.spark.deploy.SparkSubmit" in jvm["cmdline"]
        assert jvm["ppid"] == os.getpid()


@pytest.mark.horovod
# Horovod's own Spark thread re-raises the cancelled job (SPARK_JOB_CANCELLED) after run() has
# raised the timeout: expected, and not ours to catch.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_missing_task_slot_fails_within_the_start_timeout(spark, cfg):
    # local[2] has 2 task slots: the third process never gets one.
    cfg = _with_horovod(cfg, num_proc=3, start_timeout_s=10, threads_per_proc=1)
    args = (check_horovod.EPOCHS, check_horovod.ROWS_PER_RANK, check_horovod.BATCH_SIZE, check_horovod.SEED)

    with pytest.raises(distributed.StartTimeout, match="horovod.start_timeout_s=10s"):
        distributed.run_distributed(spark, cfg, check_horovod.train_tiny, args=args)

    # The two tasks that did start were cancelled: the session's slots are free again.
    assert spark.sparkContext.parallelize(range(4), 2).map(lambda x: x + 1).sum() == 10


@pytest.mark.horovod
def test_use_gpu_without_a_gpu_fails_instead_of_training_on_the_cpu(tmp_path):
    # One Horovod process of size 1, outside Spark: init_worker as a training process runs it.
    code = (
        "from shoplens.distributed import init_worker\n"
        "try:\n"
        "    init_worker(use_gpu=True, threads=1)\n"
        "except RuntimeError as err:\n"
        "    print('refused:', err)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: horovod.use_gpu is true but TensorFlow sees no GPU" in done.stdout


def test_threads_per_proc_splits_the_cores_unless_configured():
    assert distributed.threads_per_proc(0, cores=2, num_proc=2) == 1
    assert distributed.threads_per_proc(0, cores=8, num_proc=2) == 4
    assert distributed.threads_per_proc(0, cores=2, num_proc=3) == 1
    assert distributed.threads_per_proc(3, cores=2, num_proc=2) == 3


def test_spark_cores_reads_the_local_master_not_default_parallelism(spark):
    # The session is local[2]; spark.default.parallelism may be set higher for more partitions.
    assert spark.sparkContext.master == "local[2]"
    assert distributed.spark_cores(spark.sparkContext) == 2


def test_worker_executable_follows_sparks_python_setting(monkeypatch):
    from pyspark import SparkConf

    packed = SparkConf(loadDefaults=False).set("spark.pyspark.python", "./environment/bin/python")
    unset = SparkConf(loadDefaults=False)

    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/python/bin/python3")
    assert distributed.worker_executable(packed) == "./environment/bin/python"
    assert distributed.worker_executable(unset) == "/opt/python/bin/python3"
    monkeypatch.delenv("PYSPARK_PYTHON")
    assert distributed.worker_executable(unset) == sys.executable


def test_worker_env_sets_threads_and_hides_gpus_only_on_the_cpu_path():
    cpu = distributed.worker_env(distributed.WorkerSettings(use_gpu=False, threads=2), start_timeout_s=30)
    gpu = distributed.worker_env(distributed.WorkerSettings(use_gpu=True, threads=2), start_timeout_s=30)

    for env in (cpu, gpu):
        assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "2"
        assert env["HOROVOD_SPARK_START_TIMEOUT"] == "30"
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in gpu


def test_gpu_index_prefers_the_gpu_spark_assigned_over_the_local_rank():
    assert distributed.gpu_index(["3"], local_rank=0, visible=4) == 3
    assert distributed.gpu_index([], local_rank=1, visible=2) == 1
    with pytest.raises(RuntimeError, match="Spark assigned GPU 2 but this process sees only 2"):
        distributed.gpu_index(["2"], local_rank=0, visible=2)
    with pytest.raises(RuntimeError, match="local rank 1 but this process sees only 1"):
        distributed.gpu_index([], local_rank=1, visible=1)


def test_check_problems_names_disagreement_and_untrained_weights():
    def rank(i, final="f", initial=None):
        return {"rank": i, "size": 2, "pid": 100 + i, "weights_sha256": final,
                "initial_weights_sha256": initial or f"i{i}"}

    assert check_horovod.problems([rank(0), rank(1)], 2) == []
    assert check_horovod.problems([rank(0, "a"), rank(1, "b")], 2) == ["final weights differ between ranks"]
    assert check_horovod.problems([rank(0, "a", "a"), rank(1, "a")], 2) == ["weights unchanged by training"]
    assert check_horovod.problems([rank(0)], 2) == ["ranks [0] are not 0..1"]
