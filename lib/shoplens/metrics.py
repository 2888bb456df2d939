"""``gold.model_metrics``: every model's evaluation figures, in one long table, written only here.

One row per (run_date, job, dataset, model, split, protocol, metric). Jobs hand their figures to
:func:`write_metrics`, which MERGEs them on that full key: a job re-running a date replaces its own
rows and never touches another job's (or another model's, split's or protocol's) rows. The table is
partitioned by ``job`` and each MERGE names its job(s) as a literal, so two jobs writing at once
touch disjoint partitions and do not conflict in Delta's optimistic concurrency check.

On a local warehouse (``runs.record_writer`` auto or deltalake, as the run record) the same upsert
goes through delta-rs: the rows of the figures' (job, run date)s are read from the log-pruned job
partitions, the new figures replace the rows with their key, and the (job, run date) slice is
replaced in one commit. A handful of rows: about 50 ms, where Spark's MERGE of them cost 1 to 1.5 s
of ten Spark jobs on a demo night. (delta-rs' own MERGE aborted the process at its exit in delta-rs
1.6.6, so it is not used.)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass

from pyspark.sql import SparkSession

from shoplens import catalog, runs
from shoplens import schemas as S
from shoplens.catalog import register_table
from shoplens.config import Config

log = logging.getLogger(__name__)

KEY = (S.RUN_DATE, S.JOB, S.DATASET, S.MODEL, S.SPLIT, S.PROTOCOL, S.METRIC)


@dataclass(frozen=True)
class Metric:
    """One figure: ``value`` of ``metric`` for ``model`` on ``split`` under ``protocol``.

    ``value`` None means "not defined here" (e.g. a ROC-AUC on a single-class split); NaN and
    infinities are refused, so the gold table never holds them."""

    run_date: dt.date
    job: str
    dataset: str
    model: str
    split: str
    protocol: str
    metric: str
    value: float | None
    n_examples: int | None = None

    @property
    def key(self) -> tuple:
        return astuple(self)[: len(KEY)]


def write_metrics(spark: SparkSession, cfg: Config, metrics: Iterable[Metric]) -> int:
    """MERGEs ``metrics`` into gold.model_metrics on the full key; returns the rows written.

    Rows with a key already in the table are updated, others inserted; nothing else changes.
    Raises ValueError on a duplicate key or a non-finite value.
    """
    rows = list(metrics)
    if not rows:
        return 0
    keys = [m.key for m in rows]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)[0]
        raise ValueError(f"duplicate metric key {dup}")
    for m in rows:
        if m.value is not None and not math.isfinite(m.value):
            raise ValueError(f"metric {m.key} is {m.value}: gold.model_metrics holds no NaN or infinity")
    spec = catalog.MODEL_METRICS
    location = spec.location(cfg)
    source = spark.createDataFrame(
        [(*m.key, None if m.value is None else float(m.value), m.n_examples) for m in rows], schema=S.MODEL_METRICS
    )
    if not catalog.table_exists(spark, location):
        # First write: an empty table with the schema, so the MERGE below is the only writing path.
        empty = spark.createDataFrame([], S.MODEL_METRICS).write.format("delta").partitionBy(*spec.partition_by)
        runs.commit(spark, spec, cfg, lambda: empty.save(location))
    if runs.uses_deltalake(cfg, location):
        runs.commit(spark, spec, cfg, lambda: _upsert_by_deltalake(spark, location, rows))
        register_table(spark, spec, cfg)
        log.info("wrote %d rows into %s", len(rows), spec.name)
        return len(rows)
    from delta.tables import DeltaTable

    jobs = ", ".join(sorted({"'" + m.job.replace("'", "\\'") + "'" for m in rows}))
    condition = " AND ".join([f"t.`{S.JOB}` IN ({jobs})"] + [f"t.`{c}` = s.`{c}`" for c in KEY])
    merge = (
        DeltaTable.forPath(spark, location)
        .alias("t")
        .merge(source.alias("s"), condition)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
    )
    runs.commit(spark, spec, cfg, merge.execute)
    register_table(spark, spec, cfg)
    log.info("merged %d rows into %s", len(rows), spec.name)
    return len(rows)


def _upsert_by_deltalake(spark: SparkSession, location: str, rows: list[Metric]) -> runs.Written:
    """The MERGE on the full key through delta-rs: the (job, run date) slices the figures fall in are
    read, updated and inserted into, and replaced in one commit. Returns the commit: its version and
    the rows merged."""
    from shoplens import deltars

    jobs, dates = sorted({m.job for m in rows}), sorted({m.run_date for m in rows})
    names = [f.name for f in S.MODEL_METRICS.fields]
    kept = deltars.read_rows(location, [(S.JOB, "in", jobs), (S.RUN_DATE, "in", dates)], names)
    merged = {tuple(r[c] for c in KEY): tuple(r[c] for c in names) for r in kept}
    for m in rows:
        merged[m.key] = (*m.key, None if m.value is None else float(m.value), m.n_examples)
    predicate = (
        f'"{S.JOB}" IN ({", ".join(map(deltars.sql_literal, jobs))})'
        f' AND "{S.RUN_DATE}" IN ({", ".join(map(deltars.sql_literal, dates))})'
    )
    data = deltars.arrow_rows(sorted(merged.values(), key=lambda r: tuple(map(str, r))), S.MODEL_METRICS)
    return runs.Written(deltars.replace_where(location, data, predicate, runs.commit_tag(spark)), len(rows))
