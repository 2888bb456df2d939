"""``python -m shoplens.bench_sasrec``: SASRec's training choices on a sequences file, in one process,
without Spark or Horovod. The last stdout line is one JSON object.

    python -m shoplens.bench_sasrec --input ../shared/data/amazon_beauty_seq/Beauty.txt \\
        --mode sequence|prefixes|sampled [--epochs 3] [--timing-steps 0] [--set seqrec.sasrec.dropout=0.3 ...]

The file is the S3-Rec / SASRec papers' format (``user item item ...``, items in time order). It is
split as gold.sequence_examples splits it (leave-last-out, docs/SEQUENCES.md): per user the last item
is the test target (never read here), the one before it the validation target with 99 negatives
drawn uniformly from the items the user never touched, and the train example is the items before
the validation target (most recent ``sequences.max_len`` inputs). Item indices follow gold.item_vocab:
2, 3, ... in descending order of count (so the log-uniform sampler of sampled softmax fits).

Modes: ``sequence`` (every position in one pass, full softmax), ``prefixes`` (one example per prefix,
``data.all_prefixes``, full softmax at the last position: the layout GRU4Rec trains on), ``sampled``
(every position, sampled softmax with ``seqrec.num_sampled`` items, 1024 unless set).
``--timing-steps N`` times N training steps after a few warm-up steps and extrapolates to an epoch
(for the slow prefix mode) instead of training ``--epochs`` whole epochs. The figures are validation
figures: for choosing settings, never test figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.config import Config, load_config
from shoplens.models import data
from shoplens.models.metrics import FIRST_ITEM

MODES = ("sequence", "prefixes", "sampled")
DEFAULT_NUM_SAMPLED = 1024
_WARMUP_STEPS = 5


def read_sequences(path: str | Path) -> list[list[str]]:
    """Returns each line's items (the user id dropped), in file order; blank lines skipped."""
    with open(path, encoding="utf-8") as lines:
        return [line.split()[1:] for line in lines if line.strip()]


def leave_last_out(
    sequences: list[list[str]], max_len: int, num_negatives: int, seed: int
) -> tuple[data.Examples, data.Examples, int]:
    """Train and validation examples of the sequences, as gold.sequence_examples holds them for the
    ``leave_last_out`` split (module doc). Sequences with fewer than 4 items give no train example
    with an input; fewer than 3, no validation example.

    Returns: (train examples, validation examples with negatives, vocabulary size).
    """
    counts: dict[str, int] = {}
    for items in sequences:
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    ordered = sorted(counts, key=lambda item: (-counts[item], item))
    index = {item: FIRST_ITEM + i for i, item in enumerate(ordered)}
    vocab_size = FIRST_ITEM + len(ordered)
    rng = np.random.default_rng(seed)
    train_in, train_target, val_in, val_target, val_negatives = [], [], [], [], []
    for items in sequences:
        indices = [index[item] for item in items]
        if len(indices) < 3:
            continue
        if len(indices) >= 4:
            train_in.append(indices[:-3][-max_len:])
            train_target.append(indices[-3])
        val_in.append(indices[:-2][-max_len:])
        val_target.append(indices[-2])
        touched = set(indices)
        negatives: set[int] = set()
        while len(negatives) < num_negatives:
            for candidate in rng.integers(FIRST_ITEM, vocab_size, size=2 * num_negatives):
                if int(candidate) not in touched and len(negatives) < num_negatives:
                    negatives.add(int(candidate))
        val_negatives.append(sorted(negatives))

    def padded(rows: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(rows), max_len), dtype=np.int32)
        for i, row in enumerate(rows):
            out[i, max_len - len(row):] = row
        return out

    train = data.Examples(padded(train_in), np.array(train_target, dtype=np.int32))
    val = data.Examples(padded(val_in), np.array(val_target, dtype=np.int32),
                        np.array(val_negatives, dtype=np.int32).reshape(len(val_in), num_negatives))
    return train, val, vocab_size


def run(cfg: Config, train: data.Examples, val: data.Examples, vocab_size: int, mode: str, epochs: int,
        timing_steps: int = 0, eval_every: int = 1) -> dict[str, Any]:
    """Trains SASRec (``cfg.seqrec.sasrec``) in ``mode`` and times it.

    Returns: mode, examples, targets and steps per epoch, the seconds of each timed epoch (or the
    seconds per epoch extrapolated from ``timing_steps`` steps), and the validation figures after
    every ``eval_every``-th epoch (none when only timing).
    """
    import tensorflow as tf

    from shoplens.models.evaluate import evaluate
    from shoplens.models.sasrec import build_sasrec

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    s, a = cfg.seqrec, cfg.seqrec.sasrec
    max_len = cfg.sequences.max_len
    examples = data.all_prefixes(train) if mode == "prefixes" else data.sequence_targets(train)
    num_sampled = (s.num_sampled or DEFAULT_NUM_SAMPLED) if mode == "sampled" else 0
    tf.keras.utils.set_random_seed(s.seed)
    model = build_sasrec(vocab_size, max_len, a.embedding_dim, a.num_blocks, a.num_heads, a.dropout,
                         num_sampled=num_sampled, loss_positions=a.loss_positions, seed=s.seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=s.learning_rate))
    steps = math.ceil(len(examples) / s.batch_size)
    if a.batch_by_length:
        dataset = data.to_length_batches(examples, s.batch_size, repeat=True, seed=s.seed)
    else:
        dataset = data.to_dataset(examples, s.batch_size, shuffle=True, repeat=True, seed=s.seed)
    result: dict[str, Any] = {
        "mode": mode, "num_sampled": num_sampled, "examples": len(examples),
        "targets": int(examples.target_items().size), "steps_per_epoch": steps, "batch_size": s.batch_size,
        "sasrec": dataclasses.asdict(a), "learning_rate": s.learning_rate, "max_len": max_len,
    }
    # The first steps trace the graph: never timed.
    model.fit(dataset, epochs=1, steps_per_epoch=_WARMUP_STEPS, verbose=0)
    if timing_steps:
        started, cpu = time.monotonic(), time.process_time()
        model.fit(dataset, epochs=1, steps_per_epoch=timing_steps, verbose=0)
        seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu
        result.update(timed_steps=timing_steps, s_per_step=round(seconds / timing_steps, 4),
                      s_per_epoch_extrapolated=round(seconds / timing_steps * steps, 1),
                      cpu_s_per_epoch_extrapolated=round(cpu_seconds / timing_steps * steps, 1))
        return result
    epoch_s, epoch_cpu_s, history = [], [], []
    for epoch in range(1, epochs + 1):
        started, cpu = time.monotonic(), time.process_time()
        fitted = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        epoch_s.append(round(time.monotonic() - started, 1))
        epoch_cpu_s.append(round(time.process_time() - cpu, 1))
        row = {"epoch": epoch, "loss": round(float(fitted.history["loss"][-1]), 4)}
        if epoch % eval_every == 0 or epoch == epochs:
            started = time.monotonic()
            row.update({k: round(v, 4) for k, v in evaluate(model, val, s.eval_batch_size).items()})
            row["eval_s"] = round(time.monotonic() - started, 1)
        history.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    result.update(epoch_s=epoch_s, epoch_cpu_s=epoch_cpu_s, history=history)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shoplens.bench_sasrec", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="a sequences file: user item item ... per line")
    parser.add_argument("--mode", choices=MODES, default="sequence")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timing-steps", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cfg = load_config("local", None, args.set)
    started = time.monotonic()
    train, val, vocab_size = leave_last_out(
        read_sequences(args.input), cfg.sequences.max_len, cfg.sequences.num_negatives, cfg.sequences.seed
    )
    result = run(cfg, train, val, vocab_size, args.mode, args.epochs, args.timing_steps, args.eval_every)
    result.update(
        input=str(args.input), vocab_size=vocab_size, val_examples=len(val), protocol="validation",
        total_s=round(time.monotonic() - started, 1), threads=args.threads,
        loadavg=Path("/proc/loadavg").read_text().split()[:3], cpu_s=round(time.process_time(), 1),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    )
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
