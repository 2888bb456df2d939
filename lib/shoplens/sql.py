"""``python -m shoplens.sql "SELECT ..."``: run one SQL query over the registered tables.

Tables are addressed as ``bronze.events``, ``silver.quarantine``, ``gold.*``, ``ops.*``.
"""

from __future__ import annotations

import argparse
import sys

from shoplens import cli
from shoplens.session import build_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", help="a Spark SQL query")
    parser.add_argument("--limit", type=int, default=50, help="rows to print")
    cli.add_env_args(parser)
    args = cli.parse(parser, argv)
    spark = build_session(cli.load_job_config(args), "shoplens.sql")
    spark.sql(args.query).show(args.limit, truncate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
