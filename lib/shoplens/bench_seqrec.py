"""``python -m shoplens.bench seqrec``: a next-item model on a public sequence file, end to end.

    python -m shoplens.bench seqrec --input ../shared/data/amazon_beauty_seq/Beauty.txt --format s3rec \\
        --model gru4rec --num-proc 2 [--max-epochs N] [--workdir DIR]

The path every nightly run takes, on the file: the adapter (``load_history``, format ``sequences``:
S3-Rec's "user item item ..." lines, one user a line, items in order) → silver.events →
``build_sequences`` (gold.item_vocab, gold.sequence_examples: leave-last-out, 99 sampled negatives
per validation and test example) → ``train_next_item`` (``horovod.spark.run`` with ``--num-proc``
processes, evaluation on the test rows in the processes, a model version, gold.model_metrics).

Protocol: per user, the last item is the test target, the one before it the validation target
(early stopping on validation NDCG@10 against the sampled candidates). ``*_sampled``: the target
against its 99 sampled negatives (100 candidates, as published for SASRec / S3-Rec);
``*_full``: against every item. ``mrr@20`` and ``p@20`` without a suffix are the full-catalogue
ones. ``train_s`` is the wall time of the Horovod run (start-up, reading, training, evaluation,
export); ``seconds_per_epoch`` the mean time of one epoch of ``model.fit`` (training steps plus that
epoch's validation scoring and checkpoint); ``prep_s`` the adapter and sequence building.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

from shoplens import cli
from shoplens import schemas as S
from shoplens.session import build_session

# --format → the load_history format that reads it.
FORMATS = {"s3rec": "sequences"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True, help="a sequence file, e.g. S3-Rec's Beauty.txt")
    parser.add_argument("--format", choices=sorted(FORMATS), required=True)
    parser.add_argument("--model", default="gru4rec", help="seqrec.model: gru4rec or sasrec")
    parser.add_argument("--num-proc", type=int, default=None, help="Horovod processes (default horovod.num_proc)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap seqrec.epochs (smoke runs)")
    parser.add_argument("--run-date", type=cli.run_date_arg, default=dt.date(2024, 1, 1))
    parser.add_argument("--workdir", type=Path, default=None, help="keep tables and the model version here")
    cli.add_env_args(parser)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from shoplens.bench import workdir_config
    from shoplens.jobs import build_sequences, load_history, train_next_item

    cfg = workdir_config(args, workdir)
    epochs = min(cfg.seqrec.epochs, args.max_epochs) if args.max_epochs else cfg.seqrec.epochs
    cfg = dataclasses.replace(cfg, seqrec=dataclasses.replace(cfg.seqrec, model=args.model, epochs=epochs))
    num_proc = args.num_proc or cfg.horovod.num_proc
    dataset = FORMATS[args.format]
    spark = build_session(cfg, f"shoplens.bench seqrec {args.model}")
    started = time.perf_counter()
    load_history.run(spark, cfg, dataset, args.input, args.run_date, demo=True)
    build_sequences.run(spark, cfg, args.run_date, [dataset])
    prep_s = time.perf_counter() - started
    # restart: a kept --workdir would otherwise resume (or only re-evaluate) the previous run.
    summary = train_next_item.train_dataset(
        spark, cfg, args.run_date, dataset, S.GRAIN_USER, num_proc, restart=True
    )
    test, popularity = summary["test"], summary["popularity_test"]
    return {
        "bench": "seqrec",
        "input": str(args.input),
        "format": args.format,
        "model": args.model,
        "protocol": (
            "leave_last_out; *_sampled: target vs its 99 sampled negatives (100 candidates); *_full: vs every "
            "item; mrr@20 and p@20 unsuffixed are full-catalogue"
        ),
        **{name: round(value, 4) for name, value in sorted(test.items())},
        "mrr@20": round(test["mrr@20_full"], 4),
        "p@20": round(test["p@20_full"], 4),
        **{f"popularity_{name}": round(value, 4) for name, value in sorted(popularity.items())},
        **{f"val_{name}": round(value, 4) for name, value in sorted(summary["val"].items())},
        "num_proc": num_proc,
        "hvd_size": summary["hvd_size"],
        "examples_per_rank": summary["examples_per_rank"]["train"],
        "train_examples_per_rank": [n for _, n in summary["train_examples_per_rank"]],
        "test_examples": summary["test_examples"],
        "vocab_size": summary["vocab_size"],
        "delta_version": summary["delta_version"],
        "epochs": summary["epochs"],
        "max_epochs": epochs,
        "best_epoch": summary["best_epoch"],
        "stopped_early": summary["stopped_early"],
        "steps_per_epoch": summary["steps_per_epoch"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "train_s": summary["train_s"],
        "prep_s": round(prep_s, 1),
    }


def main(args: argparse.Namespace) -> int:
    from shoplens.bench import measure

    return measure(run, args, "shoplens-bench-seqrec-")
