"""Command-line plumbing shared by every job: ``--run-date``, ``--env``, ``--conf-dir``, ``--set``."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence

from shoplens.config import ENVIRONMENTS, Config, load_config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--run-date must be YYYY-MM-DD, got {value!r}") from err


def job_parser(description: str) -> argparse.ArgumentParser:
    """Returns a parser with the arguments every job takes; a job may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-date", required=True, type=run_date_arg, help="business date, YYYY-MM-DD")
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
