"""All reads of landing files, reads of tables at a pinned version, and writes of tables. Every write
rewrites a defined slice.

A write either replaces exactly the slice a job owns (``replace_slice``: one Delta transaction with
``replaceWhere``) so that a re-run gives the same table as one clean run, or creates the table.

A job reads a table with :func:`read_table`: the table as of its version at the time of the read
(Delta time travel to that version). Two reasons:

- A read sees one version of the table, however many actions use it, even when the job writes the
  same table in between (silver's own window of events, the id maps before their MERGE).
- Spark re-plans and empties every cached frame whose plan reads a table just written: a
  ``DataFrameWriter.save`` ends with ``recacheByPlan`` of the written relation, and Delta's MERGE,
  UPDATE and DELETE do the same. A frame read at a pinned version is another relation (Delta
  compares the version), so its cache survives the job's own writes. Unpinned, a
  ``build_silver_events`` run recomputed its cached events from bronze for each use after writing
  silver.events (docs/BENCHMARKS.md, "pinned reads").
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shoplens import deltars, runs
from shoplens import schemas as S
from shoplens.catalog import TableSpec, register_table, table_version
from shoplens.config import Config

log = logging.getLogger(__name__)

LANDING_FILE_GLOB = "part-*"


class LandingNotFound(FileNotFoundError):
    """The landing folder of a run date does not exist or holds no part files."""


def landing_dir(cfg: Config, dataset: str, run_date: dt.date) -> str:
    """Returns ``<landing>/<dataset>/<YYYY-MM-DD>``, the folder one run date reads."""
    return f"{cfg.paths.landing.rstrip('/')}/{dataset}/{run_date.isoformat()}"


def read_landing_lines(spark: SparkSession, cfg: Config, dataset: str, run_date: dt.date) -> DataFrame:
    """Returns one row per line of the run date's landing part files.

    Returns: columns ``raw_line`` (the line as landed, without its newline) and ``source_file``
    (the part file's full path); one row per line.
    """
    folder = landing_dir(cfg, dataset, run_date)
    pattern = f"{folder}/{LANDING_FILE_GLOB}"
    if not _glob_matches(spark, pattern):
        raise LandingNotFound(
            f"no landing files for {dataset} on {run_date}: expected part files at {pattern} "
            "(see docs/LANDING.md for the landing contract)"
        )
    # Reading the folder with a file filter (not a glob path) keeps Spark from probing the glob
    # as a streaming-sink metadata folder and logging a FileNotFoundException.
    reader = spark.read.option("pathGlobFilter", LANDING_FILE_GLOB)
    return reader.text(folder).select(
        F.col("value").alias(S.RAW_LINE),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
    )


def read_landing_range(
    spark: SparkSession, cfg: Config, dataset: str, first: dt.date, last: dt.date, every_date: bool = True
) -> DataFrame:
    """Returns one row per line of the landing part files of every run date in ``[first, last]``,
    read in one pass (a bulk ingest of a history). With ``every_date`` each date must have part
    files, as for :func:`read_landing_lines`; otherwise (a feed that lands only on some days) the
    dates without are skipped, and only no file at all is an error.

    Returns: columns ``raw_line``, ``source_file`` and ``run_date`` (the date of the line's folder).
    """
    if first > last:
        raise ValueError(f"first run date {first} is after the last {last}")
    dates = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    folders = [landing_dir(cfg, dataset, d) for d in dates]
    found = [_glob_matches(spark, f"{f}/{LANDING_FILE_GLOB}") for f in folders]
    missing = [d.isoformat() for d, ok in zip(dates, found, strict=True) if not ok]
    if not every_date:
        folders = [f for f, ok in zip(folders, found, strict=True) if ok]
        missing = [] if folders else [f"{first} to {last}"]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LandingNotFound(
            f"no landing files for {dataset} on {shown}: expected part files under "
            f"{cfg.paths.landing.rstrip('/')}/{dataset}/<date>/{LANDING_FILE_GLOB} (docs/LANDING.md)"
        )
    folder_date = F.regexp_extract(F.col("_metadata.file_path"), r"/(\d{4}-\d{2}-\d{2})/[^/]+$", 1)
    reader = spark.read.option("pathGlobFilter", LANDING_FILE_GLOB)
    return reader.text(folders).select(
        F.col("value").alias(S.RAW_LINE),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
        F.to_date(folder_date).alias(S.RUN_DATE),
    )


class ImportNotFound(FileNotFoundError):
    """The input of a bulk import matches no file."""


def read_import_lines(spark: SparkSession, path: str) -> DataFrame:
    """Returns one row per line of the text file(s) at ``path`` (a file, a folder or a glob).

    Returns: columns ``raw_line`` (the line without its line end; read as UTF-8) and ``source_file``
    (the file's full path); one row per line.
    """
    _require_match(spark, path)
    return spark.read.text(path).select(
        F.col("value").alias(S.RAW_LINE),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
    )


def read_import_table(spark: SparkSession, path: str) -> DataFrame:
    """Returns the rows of the Parquet file(s) at ``path`` with their ``source_file``.

    Returns: one row per Parquet row; the file's columns plus ``source_file``.
    """
    _require_match(spark, path)
    table = spark.read.parquet(path)
    return table.select("*", F.col("_metadata.file_path").alias(S.SOURCE_FILE))


def _require_match(spark: SparkSession, path: str) -> None:
    if not _glob_matches(spark, path):
        raise ImportNotFound(f"no input at {path}: give a file, a folder or a glob that matches files")


def _glob_matches(spark: SparkSession, pattern: str) -> bool:
    """True when the Hadoop file system of ``pattern`` (local, HDFS, S3A) has a match for it."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    path = jvm.org.apache.hadoop.fs.Path(pattern)
    matches = path.getFileSystem(hadoop_conf).globStatus(path)
    return matches is not None and len(matches) > 0


def _sql_literal(value: object) -> str:
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"unsupported slice value {value!r}")


def _condition(column: str, value: object) -> str:
    """``col = v``, or ``lo <= col <= hi`` for a (lo, hi) pair.

    Not ``BETWEEN``: Delta 4.0 fails to resolve it in a replaceWhere on a partition column."""
    if isinstance(value, tuple):
        low, high = value
        return f"`{column}` >= {_sql_literal(low)} AND `{column}` <= {_sql_literal(high)}"
    return f"`{column}` = {_sql_literal(value)}"


def replace_rows(
    spark: SparkSession,
    rows: Sequence[Mapping[str, object] | Sequence[object]],
    spec: TableSpec,
    cfg: Config,
    where: Mapping[str, object],
) -> int:
    """:func:`replace_slice` for a slice the driver already holds: a handful of rows bounded by
    config (a summary per segment, the results of a quality suite, a run's publication), given as
    mappings by column name or tuples in ``spec.schema``'s column order.

    On a warehouse where delta-rs writes (``runs.uses_deltalake``), an existing table's slice is
    replaced by delta-rs in one tagged commit of the run, with no Spark job (a Spark write of a few
    rows costs a second or two of snapshot and write jobs on a small night); elsewhere, and for the
    table's first write, by Spark. Returns the rows written."""
    rows = [tuple(r[f.name] for f in spec.schema.fields) if isinstance(r, Mapping) else tuple(r) for r in rows]
    location = spec.location(cfg)
    if not (runs.uses_deltalake(cfg, location) and deltars.table_exists(location)):
        return replace_slice(spark.createDataFrame(list(rows), spec.schema), spec, cfg, where)

    data = deltars.arrow_rows(rows, spec.schema)
    predicate = " AND ".join(deltars.condition(column, value) for column, value in where.items())

    def write() -> runs.Written:
        version = deltars.replace_where(location, data, predicate, runs.commit_tag(spark))  # runs.commit's tag
        return runs.Written(version, len(rows))

    written = runs.commit(spark, spec, cfg, write)
    register_table(spark, spec, cfg)
    log.info("wrote %d rows to %s where %s (delta-rs)", written, spec.name, predicate)
    return written


def small_query(
    spark: SparkSession,
    cfg: Config,
    location: str,
    select: str | Sequence[str],
    where: Mapping[str, object],
    limit: int | None = None,
) -> list[dict]:
    """``SELECT {select} WHERE {where} [LIMIT {limit}]`` over the Delta table at ``location``, for an
    aggregate or a few rows: by delta-rs' query engine (DataFusion, in this process: no Spark job,
    no file listing job) where it reads (``runs.uses_deltalake``), else by Spark. [] when there is
    no table there.

    ``select`` is column names (quoted for each engine) or SQL both engines read alike (plain
    column names, standard aggregates, ``DISTINCT``); ``where`` maps a column to a value, an
    inclusive ``(low, high)`` pair or a list of values (``IN``), each rendered in the engine's own
    quoting.

    Returns: the result's rows as dicts.
    """
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    if runs.uses_deltalake(cfg, location):
        if not deltars.table_exists(location):
            return []
        predicate = " AND ".join(
            _in_list(f'"{c}"', v, deltars.sql_literal) if isinstance(v, list) else deltars.condition(c, v)
            for c, v in where.items()
        )
        selected = select if isinstance(select, str) else ", ".join(f'"{c}"' for c in select)
        return deltars.query(location, f"SELECT {selected} FROM t WHERE {predicate}{tail}")
    if table_version(spark, location) < 0:
        return []
    predicate = " AND ".join(
        _in_list(f"`{c}`", v, _sql_literal) if isinstance(v, list) else _condition(c, v) for c, v in where.items()
    )
    selected = select if isinstance(select, str) else ", ".join(f"`{c}`" for c in select)
    rows = spark.sql(f"SELECT {selected} FROM {{t}} WHERE {predicate}{tail}", t=read_table(spark, location)).collect()
    return [r.asDict() for r in rows]


def _in_list(column: str, values: list, literal: Callable[[object], str]) -> str:
    """``column IN (...)`` (false for no value), ``column`` already quoted for its engine."""
    return f"{column} IN ({', '.join(literal(v) for v in values)})" if values else "false"


class TableNotFound(FileNotFoundError):
    """No Delta table at the location read."""


def read_table(spark: SparkSession, location: str) -> DataFrame:
    """The Delta table at ``location`` as of its version now (module doc: why pinned).

    Raises TableNotFound when there is no Delta table there."""
    version = table_version(spark, location)
    if version < 0:
        raise TableNotFound(f"no Delta table at {location}")
    return spark.read.format("delta").option("versionAsOf", version).load(location)


# The most rows a job's slice collects to the driver for a delta-rs write (replace_slice's
# driver_rows): a demo night's sessions, profiles, scores, recommendations (6,360) or similar items
# (11,750); a large shop's slices stay on Spark's path.
DRIVER_ROWS = 50_000


def replace_slice(
    df: DataFrame, spec: TableSpec, cfg: Config, where: Mapping[str, object], driver_rows: int = 0
) -> int:
    """Atomically replaces the rows of ``spec`` matching ``where`` with ``df`` (conformed to spec).

    ``where`` maps a column to a value, or to a ``(low, high)`` pair for an inclusive range.
    Every row of ``df`` must belong to the slice; Delta checks that and fails the write otherwise.
    Creates (and registers) the table on first write. Inside a job's run, the write is a commit of
    that run (``shoplens.runs.commit``: table lock, fault hook, run record).

    ``driver_rows``: on a warehouse where delta-rs writes (``runs.uses_deltalake``), a slice of at
    most this many rows is collected (bounded) and replaced as :func:`replace_rows` does, with no
    Spark write (a Spark write of a few thousand rows costs about 1.8 s of snapshot, file
    filtering, write and statistics jobs on a small night); a larger one is written by Spark from
    the same computation: ``df`` is cached for the two steps unless it already is. delta-rs checks
    that every row belongs to the slice, as Spark does.

    Returns the rows written, from the commit's own metrics (no recount).
    """
    location = spec.location(cfg)
    if driver_rows > 0 and runs.uses_deltalake(cfg, location) and deltars.table_exists(location):
        level = df.storageLevel
        cached = level.useMemory or level.useDisk
        if not cached:
            df = df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            rows = spec.conform(df).limit(driver_rows + 1).collect()  # bounded
            if len(rows) <= driver_rows:
                return replace_rows(df.sparkSession, [tuple(r) for r in rows], spec, cfg, where)
            return _spark_replace(df, spec, cfg, where, location)
        finally:
            if not cached:
                df.unpersist()
    return _spark_replace(df, spec, cfg, where, location)


def _spark_replace(df: DataFrame, spec: TableSpec, cfg: Config, where: Mapping[str, object], location: str) -> int:
    """:func:`replace_slice`'s Spark write (replaceWhere, a commit of the run)."""
    condition = " AND ".join(_condition(col, val) for col, val in where.items())
    writer = (
        spec.conform(df)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", condition)
        .partitionBy(*spec.partition_by)
    )
    rows = runs.commit(df.sparkSession, spec, cfg, lambda: writer.save(location))
    register_table(df.sparkSession, spec, cfg)
    log.info("wrote %d rows to %s where %s", rows, spec.name, condition)
    return rows

