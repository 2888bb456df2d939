"""Command-line plumbing shared by every job: ``--run-date``, ``--attempt``, ``--env``, ``--conf-dir``,
``--set``, and :func:`run_job`, the whole of every job's ``main``."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence

from pyspark.sql import SparkSession

from shoplens import runs
from shoplens.config import ENVIRONMENTS, Config, load_config
from shoplens.session import build_session

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--run-date must be YYYY-MM-DD, got {value!r}") from err


def attempt_arg(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--attempt must be a whole number from 1, got {value!r}")
    return int(value)


def job_parser(description: str) -> argparse.ArgumentParser:
    """Returns a parser with the arguments every job takes; a job may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-date", required=True, type=run_date_arg, help="business date, YYYY-MM-DD")
    parser.add_argument(
        "--attempt",
        type=attempt_arg,
        default=None,
        help="attempt number for gold.pipeline_runs (Airflow's try_number); default: one more than recorded",
    )
    add_env_args(parser)
    return parser


def add_env_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=ENVIRONMENTS, default="local", help="config overlay to use")
    parser.add_argument("--conf-dir", default=None, help="folder with base.yaml and the overlays")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set paths.warehouse=/tmp/wh (repeatable)",
    )


def load_job_config(args: argparse.Namespace) -> Config:
    return load_config(args.env, args.conf_dir, args.overrides)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for noisy in ("py4j", "great_expectations", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    setup_logging()
    return parser.parse_args(argv)


Work = Callable[[SparkSession, Config, argparse.Namespace], "int | None"]


def run_job(
    job: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    work: Work,
    dataset: Callable[[argparse.Namespace], str | None] | None = None,
) -> int:
    """The whole of a job's ``main``: parses ``argv``, loads the config, builds the session and runs
    ``work(spark, cfg, args)`` inside ``runs.job_run`` (run lock, gold.pipeline_runs row, commits).

    ``work`` returns the exit code (None means 0); a non-zero code records the run as failed.
    ``dataset`` picks the run's dataset(s) from the arguments for its record. Returns the exit code.
    """
    args = parse(parser, argv)
    cfg = load_job_config(args)
    spark = build_session(cfg, f"shoplens.{job} {args.run_date}", register=False)
    arguments = list(sys.argv[1:] if argv is None else argv)
    with runs.job_run(
        spark, cfg, job, args.run_date, attempt=args.attempt, dataset=dataset(args) if dataset else None,
        arguments=arguments,
    ) as run:
        code = work(spark, cfg, args) or 0
        if code:
            run.mark_failed(f"exit code {code}")
    return code


def joined(values: Sequence[str] | None) -> str | None:
    """``a,b`` for a repeatable argument's values; None when not given."""
    return ",".join(values) if values else None
