"""Great Expectations quality gates: validate a staged DataFrame before it is committed.

A job builds a list of expectations (each either a *gate*, which stops the run when it fails, or a
*warning*), validates the staged DataFrame with them through an ephemeral GX context, stores one
result row per expectation in ``ops.quality_results`` and only then decides whether to commit.
Inside a job's run, each report also goes into the run's quality summary in gold.pipeline_runs
(``runs.add_quality``), from memory: nothing is read back from ops.quality_results.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame

from shoplens import runs
from shoplens import schemas as S

log = logging.getLogger(__name__)

GATE = "gate"
# Counts per expectation, without the sample of unexpected values GX fetches by default: the
# sample costs one Spark job per expectation (32 jobs instead of 7 for silver's suite), and the
# rejected rows themselves are in silver.quarantine.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


class QualityGateFailed(RuntimeError):
    """A gate expectation failed: the staged data was not committed."""


@dataclass(frozen=True)
class QualityReport:
    """What one validation found: one result row per expectation, and the gates that failed."""

    rows: tuple[dict[str, Any], ...]

    @property
    def failed_gates(self) -> list[str]:
        return [describe(r) for r in self.rows if r[S.IS_GATE] and not r[S.SUCCESS]]

    def raise_for_gates(self) -> None:
        if self.failed_gates:
            raise QualityGateFailed("quality gate failed: " + "; ".join(self.failed_gates))


def describe(row: dict[str, Any]) -> str:
    """One line an operator can read: which rule, on which column, how much of the data broke it."""
    where = f" on {row[S.TABLE_NAME]}.{row[S.COLUMN]}" if row[S.COLUMN] else f" on {row[S.TABLE_NAME]}"
    share = row[S.UNEXPECTED_PERCENT]
    observed = f": {share:.2f}% of {row[S.ELEMENT_COUNT]} rows unexpected" if share is not None else ""
    if share is None and row[S.OBSERVED_VALUE] is not None:
        observed = f": observed {row[S.OBSERVED_VALUE]}"
    return f"{row[S.EXPECTATION]}{where}{observed}"


def validate(
    df: DataFrame,
    table_name: str,
    expectations: Sequence[Any],
    run_date: dt.date,
) -> QualityReport:
    """Validates ``df`` against ``expectations`` (GX expectation objects; ``meta={"gate": True}``
    marks a gate) and returns one result row per expectation; adds the report to the current run's
    quality summary (a no-op outside a run)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # heavy import, kept off the module import path

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    asset = context.data_sources.add_spark(name="shoplens").add_dataframe_asset(name=table_name)
    batch = asset.add_batch_definition_whole_dataframe("staged").get_batch(
        batch_parameters={"dataframe": df}
    )
    suite = gx.ExpectationSuite(name=f"{table_name}.staged", expectations=list(expectations))
    result = batch.validate(suite, result_format=RESULT_FORMAT)
    rows = tuple(_result_row(r, table_name, suite.name, run_date) for r in result.results)
    for row in rows:
        if not row[S.SUCCESS]:
            level = logging.ERROR if row[S.IS_GATE] else logging.WARNING
            log.log(level, "expectation failed: %s", describe(row))
    report = QualityReport(rows)
    runs.add_quality(report)
    return report


def _result_row(result: Any, table_name: str, suite: str, run_date: dt.date) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    stats = result.result or {}
    observed = stats.get("observed_value")
    return {
        S.RUN_DATE: run_date,
        S.TABLE_NAME: table_name,
        S.SUITE: suite,
        S.EXPECTATION: config.type,
        S.COLUMN: kwargs.get("column"),
        S.IS_GATE: bool((config.meta or {}).get(GATE, False)),
        S.SUCCESS: bool(result.success),
        S.ELEMENT_COUNT: stats.get("element_count"),
        S.UNEXPECTED_COUNT: stats.get("unexpected_count"),
        S.UNEXPECTED_PERCENT: _float_or_none(stats.get("unexpected_percent")),
        S.OBSERVED_VALUE: None if observed is None else json.dumps(observed, default=str),
        S.DETAILS: json.dumps({"kwargs": kwargs}, default=str, sort_keys=True),
    }


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
