"""Horovod on Spark: the one module that owns all Horovod wiring (each such line is marked ``# hvd``).

Driver side, :func:`run_distributed` starts ``cfg.horovod.num_proc`` training processes through
``horovod.spark.run``: one Spark task per process hosts a small Horovod task service, which spawns
the training process (a fresh Python interpreter) next to it on the executor. Each process first
runs :func:`init_worker` (Horovod, TensorFlow threads, GPU pinning or hiding) and then the training
function. Training-process side, the training function uses :func:`rank`, :func:`size`,
:func:`is_chief`, :func:`distributed_optimizer`, :func:`callbacks` and :func:`chief_only`, so the
Keras model code itself (``shoplens.models``) knows nothing of Horovod.

CPU or GPU is one configuration switch, ``horovod.use_gpu``, on the same code path: false hides
every GPU from TensorFlow (what the tests exercise: these machines have none); true pins each process
to the GPU Spark assigned to its task (see ``docs/GPU.md`` for the Spark resource settings).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from shoplens.config import Config
from shoplens.faults import FAULT_ENV_VAR

log = logging.getLogger(__name__)

_LOCAL_MASTER = re.compile(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?")


class TrainingProcessError(RuntimeError):
    """A Horovod process failed or died after the start: the run is stopped, its checkpoints kept."""


class StartTimeout(RuntimeError):
    """Not every Horovod process got a Spark task slot and started within ``horovod.start_timeout_s``."""


@dataclass(frozen=True)
class WorkerSettings:
    """What every training process needs before the training function runs."""

    use_gpu: bool
    threads: int


# --- driver side -----------------------------------------------------------------------------


def run_distributed(
    spark: SparkSession,
    cfg: Config,
    train_fn: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    num_proc: int | None = None,
    verbose: int = 0,
) -> list[Any]:
    """Runs ``train_fn(*args, **kwargs)`` in ``num_proc`` (default ``cfg.horovod.num_proc``)
    Horovod processes on Spark's executors and waits for all of them.

    ``train_fn`` must be picklable by cloudpickle: a function of a module importable on the
    executors, importing TensorFlow inside its body. If the processes cannot all get a task slot
    and start within ``cfg.horovod.start_timeout_s`` (Horovod's default would be 600 s), it raises
    :class:`StartTimeout`.

    Each process gets ``threads_per_proc`` TensorFlow intra-/inter-op threads and OpenMP threads
    (``cfg.horovod.threads_per_proc``; 0 means ``max(1, cores // num_proc)``, see :func:`spark_cores`),
    so that the processes and the JVM do not oversubscribe the executor's cores.

    The interpreter the executors start for the training processes is :func:`worker_executable`:
    Spark's own Python-worker interpreter, so a packed environment shipped with
    ``--archives env.tar.gz#environment --conf spark.pyspark.python=./environment/bin/python``
    trains with ``./environment/bin/python``, resolved in the executor's working directory.

    Training processes' output is streamed to the driver's stderr (stdout stays the job's own).
    ``verbose`` is Horovod's (0-2); from 1 on it logs every rendezvous key at INFO.

    Returns: one element per Horovod process, in rank order: what ``train_fn`` returned there.
    """
    hcfg = cfg.horovod
    num_proc = num_proc or hcfg.num_proc
    sc = spark.sparkContext
    settings = WorkerSettings(
        use_gpu=hcfg.use_gpu,
        threads=threads_per_proc(hcfg.threads_per_proc, spark_cores(sc), num_proc),
    )
    env = worker_env(settings, hcfg.start_timeout_s)
    executable = worker_executable(sc.getConf())
    log.info(
        "starting %d Horovod processes (use_gpu=%s, %d threads each, executable %s, nics %s)",
        num_proc, settings.use_gpu, settings.threads, executable, ",".join(hcfg.nics) or "any",
    )
    import horovod.spark  # hvd
    from horovod.runner.common.util.timeout import TimeoutException  # hvd

    try:
        with _signal_handlers_kept():  # hvd: run() leaves its own handlers installed
            return horovod.spark.run(  # hvd
                functools.partial(_worker_main, settings, train_fn),
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                num_proc=num_proc,
                start_timeout=hcfg.start_timeout_s,
                nics=set(hcfg.nics) or None,
                env=env,
                executable=executable,
                stdout=sys.stderr,
                stderr=sys.stderr,
                verbose=verbose,
            )
    except TimeoutException as err:  # hvd
        raise StartTimeout(
            f"{num_proc} Horovod processes did not all start within horovod.start_timeout_s="
            f"{hcfg.start_timeout_s}s; each needs its own Spark task slot and the application has "
            f"{spark_cores(sc)} core(s). Horovod said: {err.message}"
        ) from err
    except Exception as err:
        # A process that raised, or died (killed, out of memory): the others fail in their next
        # collective operation (Gloo sees the closed connection), so the whole run stops.
        raise TrainingProcessError(
            f"a Horovod training process failed or died ({type(err).__name__}: {_first_line(err)}); the "
            "others stopped with it. Their output is above in the driver's stderr; checkpoints written "
            "so far are kept, so running the job again for the same date resumes after the last "
            "completed epoch"
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:500] if text else "no message"


def threads_per_proc(configured: int, cores: int, num_proc: int) -> int:
    """Returns ``configured`` if positive, else ``max(1, cores // num_proc)``."""
    if configured > 0:
        return configured
    return max(1, cores // max(1, num_proc))


def spark_cores(sc: SparkContext) -> int:
    """Returns the cores the application may use: ``spark.cores.max`` if set, N for a
    ``local[N]`` master (the machine's CPUs for ``local[*]``), else Spark's default parallelism.

    ``spark.default.parallelism`` is not used for local masters: it is often set above the real
    core count to get more partitions.
    """
    cores_max = sc.getConf().get("spark.cores.max", None)
    if cores_max:
        return int(cores_max)
    local = _LOCAL_MASTER.fullmatch(sc.master)
    if local:
        n = local.group(1)
        if n is None:
            return 1
        if n == "*":
            return os.cpu_count() or 1
        return int(n)
    return sc.defaultParallelism


def worker_executable(conf: SparkConf) -> str:
    """Returns the interpreter that runs the training processes on the executors.

    ``spark.pyspark.python`` if set (spark-submit's setting for the executors' Python workers; a
    relative path such as ``./environment/bin/python`` resolves in the executor's working
    directory, where ``--archives`` are unpacked), else ``$PYSPARK_PYTHON`` (the same setting as an
    environment variable), else the driver's own interpreter, which is right on one machine only.
    """
    return (
        conf.get("spark.pyspark.python", None)
        or os.environ.get("PYSPARK_PYTHON")
        or sys.executable
    )


def worker_env(settings: WorkerSettings, start_timeout_s: int) -> dict[str, str]:
    """Returns the environment variables added to every training process's environment."""
    threads = str(settings.threads)
    env = {
        "HOROVOD_SPARK_START_TIMEOUT": str(start_timeout_s),  # hvd
        "OMP_NUM_THREADS": threads,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    if not settings.use_gpu:
        # Hide GPUs before CUDA initialises, not only from TensorFlow's device list.
        env["CUDA_VISIBLE_DEVICES"] = ""
    if os.environ.get(FAULT_ENV_VAR):
        # The driver's fault hook reaches the training processes (their after_epoch faults).
        env[FAULT_ENV_VAR] = os.environ[FAULT_ENV_VAR]
    return env


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    # horovod.spark.run installs SIGINT/SIGTERM handlers that only set an event of that run, and
    # never restores the previous ones: afterwards Ctrl-C or a scheduler's SIGTERM would no longer
    # stop the driver.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


# --- training-process side --------------------------------------------------------------------


def _worker_main(settings: WorkerSettings, train_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    init_worker(settings.use_gpu, settings.threads)
    return train_fn(*args, **kwargs)


def init_worker(use_gpu: bool, threads: int = 0) -> None:
    """Initialises Horovod and TensorFlow's devices and threads in a training process.

    ``run_distributed`` calls it before the training function. ``use_gpu`` false hides every GPU
    (the CPU path); true pins this process to one GPU, with memory growth on: the GPU Spark assigned
    to its task, else the one at the process's local rank; it fails if TensorFlow sees no GPU
    rather than training on the CPU unnoticed.
    """
    import horovod.tensorflow.keras as hvd  # hvd
    import tensorflow as tf

    if threads > 0:
        # Must happen before TensorFlow's runtime starts, i.e. before any op runs.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    hvd.init()  # hvd
    gpus = tf.config.list_physical_devices("GPU")
    if not use_gpu:
        tf.config.set_visible_devices([], "GPU")
        return
    if not gpus:
        raise RuntimeError(
            "horovod.use_gpu is true but TensorFlow sees no GPU in this process: check the executors' "
            "GPU resources and that the environment has tensorflow[and-cuda] (docs/GPU.md)"
        )
    from horovod.spark.task.task_info import get_available_devices  # hvd

    gpu = gpus[gpu_index(get_available_devices(), hvd.local_rank(), len(gpus))]  # hvd
    tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.set_visible_devices(gpu, "GPU")


def gpu_index(assigned: Sequence[str], local_rank: int, visible: int) -> int:
    """Returns the index, among the ``visible`` GPUs, of the GPU a training process should use.

    ``assigned`` holds the addresses Spark's resource scheduling gave the process's task (one GPU
    per task, see docs/GPU.md); without resource scheduling it is empty and the local rank picks.
    """
    index = int(assigned[0]) if assigned else local_rank
    if not 0 <= index < visible:
        source = f"Spark assigned GPU {assigned[0]}" if assigned else f"local rank {local_rank}"
        raise RuntimeError(f"{source} but this process sees only {visible} GPU(s)")
    return index


def rank() -> int:
    """Returns this process's Horovod rank (0 .. size-1)."""
    import horovod.tensorflow.keras as hvd  # hvd

    return hvd.rank()  # hvd


def size() -> int:
    """Returns the number of Horovod processes."""
    import horovod.tensorflow.keras as hvd  # hvd

    return hvd.size()  # hvd


def is_chief() -> bool:
    """True in the process of rank 0, the one that writes checkpoints, exports and logs."""
    return rank() == 0


def chief_only(callbacks_: Sequence[Any]) -> list[Any]:
    """Returns ``callbacks_`` on the chief and [] elsewhere (checkpoints, TensorBoard, exports)."""
    return list(callbacks_) if is_chief() else []


def distributed_optimizer(optimizer: Any) -> Any:
    """Returns ``optimizer`` with its learning rate scaled by the number of processes and its
    gradients averaged across them (``hvd.DistributedOptimizer``).

    The learning rate must be a number: scale a schedule yourself before building the optimizer.
    """
    import horovod.tensorflow.keras as hvd  # hvd
    import tensorflow as tf

    if isinstance(optimizer.learning_rate, tf.keras.optimizers.schedules.LearningRateSchedule):
        raise TypeError("distributed_optimizer scales a numeric learning rate, not a schedule")
    # The global batch is size() times the per-process batch (Goyal et al., linear scaling rule).
    base_lr = float(tf.keras.backend.get_value(optimizer.learning_rate))
    optimizer.learning_rate = base_lr * hvd.size()  # hvd
    return hvd.DistributedOptimizer(optimizer)  # hvd


def callbacks() -> list[Any]:
    """Returns the callbacks every process needs, to put first in ``model.fit``'s list: rank 0's
    initial weights broadcast to all, and epoch metrics averaged across processes."""
    import horovod.tensorflow.keras as hvd  # hvd

    return [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # hvd
        hvd.callbacks.MetricAverageCallback(),  # hvd
    ]


def allreduce_sum(values: Any, name: str) -> Any:
    """Returns the element-wise sum over every process of ``values`` (a float64 array of the same
    shape on each; every process must call it, in the same order, with the same ``name``)."""
    import horovod.tensorflow.keras as hvd  # hvd
    import numpy as np

    summed = hvd.allreduce(np.asarray(values, dtype=np.float64), name=name, op=hvd.Sum)  # hvd
    return np.asarray(summed, dtype=np.float64)


def weighted_mean(figures: Mapping[str, float], count: int, name: str) -> tuple[dict[str, float], int]:
    """Combines per-process means over examples into the exact mean over every process's examples:
    sum of (count × mean) over processes / total count (a mean of per-process means is exact only
    for shards of equal size). Every process must pass the same names; a process with ``count`` 0
    contributes nothing (its figures may be anything finite, e.g. 0).

    Returns: (the combined figures, the total count); figures are NaN when the total count is 0.
    """
    import numpy as np

    names = sorted(figures)
    local = np.array([float(count)] + [count * float(figures[n]) if count else 0.0 for n in names])
    total = allreduce_sum(local, name)
    n = int(round(total[0]))
    return {k: (float(v) / n if n else float("nan")) for k, v in zip(names, total[1:], strict=True)}, n


# process_ancestry cuts arguments longer than this (Horovod's base64 settings, classpaths).
MAX_ARG_CHARS = 200


def process_ancestry(pid: int | None = None) -> list[dict[str, Any]]:
    """Returns the process ``pid`` (default: this one) and its parents up to the first JVM: the
    Spark executor (or, in local mode, the driver's JVM) that the Python processes descend from.

    Arguments longer than ``MAX_ARG_CHARS`` (Horovod's base64 settings, classpaths) are cut short.

    Returns: one dict per process, nearest first: ``{"pid", "ppid", "name", "cmdline"}``.
    """
    import psutil

    chain: list[dict[str, Any]] = []
    proc: psutil.Process | None = psutil.Process(pid)
    while proc is not None:
        try:
            args = [a if len(a) <= MAX_ARG_CHARS else a[:MAX_ARG_CHARS] + "..." for a in proc.cmdline()]
            chain.append({"pid": proc.pid, "ppid": proc.ppid(), "name": proc.name(), "cmdline": " ".join(args)})
            if proc.name() == "java":
                break
            proc = proc.parent()
        except psutil.Error:  # the parent exited or is not ours to read
            break
    return chain


def process_report() -> dict[str, Any]:
    """Where this training process runs: host, pid, and the JVM it descends from (on a cluster, the
    executor; in local mode, the driver's JVM), for the run's meta.json."""
    import socket

    chain = process_ancestry()
    jvm = chain[-1] if chain and chain[-1]["name"] == "java" else None
    return {
        "rank": rank(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "jvm_pid": jvm["pid"] if jvm else None,
        "jvm_command": jvm["cmdline"] if jvm else None,
    }
