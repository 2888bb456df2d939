"""check_horovod: trains a tiny Keras model with Horovod on Spark and reports whether the ranks agree.

A self-check of the distributed-training stack, writing no table. Every Horovod process trains the
same tiny model, starting from different random weights, on its own shard of deterministic
synthetic data. If Horovod works, rank 0's weights are broadcast at the start and gradients are
averaged at every step, so all ranks end with identical weights. Each rank reports its weights'
fingerprint and where it ran (pid, host, the command lines of its parent processes).

The last line of stdout is one JSON object: ``{"run_date", "driver_pid", "num_proc", "problems",
"ranks": [...]}``; the exit code is 1 if ``problems`` is not empty.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from pyspark.sql import SparkSession

from shoplens import cli, distributed
from shoplens.config import Config
from shoplens.models import tiny

log = logging.getLogger(__name__)

EPOCHS = 3
ROWS_PER_RANK = 64
BATCH_SIZE = 16
LEARNING_RATE = 0.01
SEED = 7


def train_tiny(epochs: int, rows_per_rank: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Trains the tiny model on this rank's shard; runs in every Horovod process.

    Returns: one dict for this rank: rank, size, pid, hostname, initial and final weight
    fingerprints (sha256 and sum), the final (rank-averaged) loss, TensorFlow's thread and GPU
    settings, and the process's ancestry (from itself up to pid 1).
    """
    import tensorflow as tf

    rank, size = distributed.rank(), distributed.size()
    x, y = tiny.synthetic_shard(rank, size, rows_per_rank, seed)
    # A different start per rank: identical final weights then prove the broadcast happened.
    model = tiny.build_tiny_model(seed=seed + 1000 * rank)
    initial_sha, initial_sum = tiny.weights_fingerprint(model.get_weights())
    model.compile(
        optimizer=distributed.distributed_optimizer(tf.keras.optimizers.SGD(learning_rate=LEARNING_RATE)),
        loss="mse",
    )
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
        callbacks=distributed.callbacks(),
    )
    final_sha, final_sum = tiny.weights_fingerprint(model.get_weights())
    return {
        "rank": rank,
        "size": size,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        # The interpreter, and so the environment, the training ran in (the packed one on a cluster).
        "python": sys.executable,
        "tensorflow_file": tf.__file__,
        "initial_weights_sha256": initial_sha,
        "initial_weights_sum": initial_sum,
        "weights_sha256": final_sha,
        "weights_sum": final_sum,
        "final_loss": float(history.history["loss"][-1]),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "visible_gpus": len(tf.config.get_visible_devices("GPU")),
        "ancestors": distributed.process_ancestry(),
    }


def problems(ranks: Sequence[dict[str, Any]], num_proc: int) -> list[str]:
    """Returns what is wrong with the ranks' reports, [] when they agree and training happened."""
    found = []
    if sorted(r["rank"] for r in ranks) != list(range(num_proc)):
        found.append(f"ranks {[r['rank'] for r in ranks]} are not 0..{num_proc - 1}")
    if {r["size"] for r in ranks} != {num_proc}:
        found.append(f"sizes {[r['size'] for r in ranks]} are not all {num_proc}")
    if len({r["weights_sha256"] for r in ranks}) != 1:
        found.append("final weights differ between ranks")
    if any(r["weights_sha256"] == r["initial_weights_sha256"] for r in ranks):
        found.append("weights unchanged by training")
    if len({r["pid"] for r in ranks}) != len(ranks):
        found.append("two ranks ran in the same process")
    return found


def run(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict[str, Any]:
    """Runs the check on ``cfg.horovod.num_proc`` processes.

    Returns: ``{"run_date", "driver_pid", "num_proc", "problems", "ranks"}``, ``ranks`` holding one
    dict per Horovod process in rank order (see :func:`train_tiny`).
    """
    num_proc = cfg.horovod.num_proc
    ranks = distributed.run_distributed(
        spark, cfg, train_tiny, args=(EPOCHS, ROWS_PER_RANK, BATCH_SIZE, SEED), num_proc=num_proc
    )
    report = {
        "run_date": run_date.isoformat(),
        "driver_pid": os.getpid(),
        "num_proc": num_proc,
        "problems": problems(ranks, num_proc),
        "ranks": ranks,
    }
    log.info(
        "Horovod check on %d processes: %s; weights %s, final loss %s",
        num_proc,
        "; ".join(report["problems"]) or "ranks agree",
        sorted({r["weights_sha256"][:12] for r in ranks}),
        [round(r["final_loss"], 6) for r in ranks],
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    reports: list[dict[str, Any]] = []
    code = cli.run_job("check_horovod", cli.job_parser(__doc__.splitlines()[0]), argv, partial(_work, reports))
    # The job's output contract: the report as the last line of stdout, printed once the run record
    # is written and the run lock released (whatever they log comes before it).
    if reports:
        print(json.dumps(reports[-1], sort_keys=True), flush=True)
    return code


def _work(reports: list[dict[str, Any]], spark: SparkSession, cfg: Config, args: argparse.Namespace) -> int:
    report = run(spark, cfg, args.run_date)
    reports.append(report)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
