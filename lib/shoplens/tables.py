"""``python -m shoplens.tables``: every registered table with its location, Delta version and rows.

The last line of stdout is one JSON object,
``{"bronze.events": {"location": ..., "version": ..., "rows": ...}, ...}``, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pyspark.sql import SparkSession

from shoplens import cli
from shoplens.catalog import register_tables
from shoplens.config import Config
from shoplens.session import build_session


def describe_tables(spark: SparkSession, cfg: Config) -> dict[str, dict[str, Any]]:
    """Returns, for each existing table, its location, current Delta version and row count."""
    from delta.tables import DeltaTable

    described = {}
    for spec in register_tables(spark, cfg):
        location = spec.location(cfg)
        version = DeltaTable.forPath(spark, location).history(1).select("version").first()
        described[spec.name] = {
            "location": location,
            "version": int(version["version"]) if version else None,
            # Delta answers a plain count from the log's file statistics, without a scan.
            "rows": spark.read.format("delta").load(location).count(),
        }
    return described


def format_table(described: dict[str, dict[str, Any]]) -> str:
    if not described:
        return "no tables yet"
    width = max(len(name) for name in described)
    lines = [f"{'table':<{width}}  {'version':>7}  {'rows':>12}  location"]
    for name, info in described.items():
        lines.append(f"{name:<{width}}  {info['version']:>7}  {info['rows']:>12}  {info['location']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_env_args(parser)
    args = cli.parse(parser, argv)
    cfg = cli.load_job_config(args)
    spark = build_session(cfg, "shoplens.tables")
    described = describe_tables(spark, cfg)
    print(format_table(described))
    print(json.dumps(described, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
