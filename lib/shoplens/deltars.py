"""Small reads and writes of Delta tables without Spark, through the ``deltalake`` package (delta-rs).

A job-run's own bookkeeping touches a handful of rows: its row of ``gold.pipeline_runs`` (read at
its start, appended, replaced at its end) and, for ``publish``, the rows each table holds for a
date. Through Spark each of those cost one to three seconds of Spark jobs on a small night (a
write job, the optimized write's shuffle, snapshot state and a scan of the files to replace);
here they cost milliseconds: the Delta log is replayed in Rust, and a replace of a partition is
decided from the log alone. The data of a job is always read and written by Spark.

delta-rs and Spark's Delta write the same protocol, and ShopLens serialises the commits to a table
across drivers with its own commit lock (``shoplens.runs``). On S3, delta-rs needs a locking
provider of its own (``AWS_S3_LOCKING_PROVIDER=dynamodb``, delta-rs' documentation) and
credentials in its own environment variables: ``runs.record_writer: auto`` (the default) uses
delta-rs on a local warehouse only and Spark elsewhere; ``deltalake`` forces it, ``spark`` keeps
every record in Spark.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

# Spark's checkpoint interval when a table does not set delta.checkpointInterval (delta-rs' is 100).
SPARK_CHECKPOINT_INTERVAL = 10
_CHECKPOINT_INTERVAL = "delta.checkpointInterval"


def is_local(location: str) -> bool:
    """Whether ``location`` is on the local file system (a path, or a ``file:`` URI)."""
    return "://" not in location or location.startswith("file:")


def _table(location: str, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(location) if version is None else DeltaTable(location, version=version)


def table_exists(location: str) -> bool:
    """Whether ``location`` holds a Delta table (its log read without Spark: in a new driver, Spark's
    ``DeltaTable.isDeltaTable`` first loads Delta's classes and the table's snapshot, seconds)."""
    from deltalake import DeltaTable

    return bool(DeltaTable.is_deltatable(location))


def partition_columns(location: str) -> list[str]:
    return list(_table(location).metadata().partition_columns)


def partition_rows(location: str, at_version: int, column: str, value: str) -> int | None:
    """The rows of the table at ``at_version`` whose partition ``column`` is ``value`` (as the log
    spells it, ``2024-03-31`` for a date), summed from the ``numRecords`` statistic of each live
    file. None when a file of that partition has no row count in the log, or the table may have
    deletion vectors (the count would include deleted rows): count it with Spark then."""
    table = _table(location, at_version)
    if "deletionVectors" in (table.protocol().reader_features or []):
        return None
    actions = pa.table(table.get_add_actions(flatten=True))
    key = f"partition.{column}"
    if actions.num_rows == 0:
        return 0
    if key not in actions.column_names:
        raise ValueError(f"{location} is not partitioned by {column}")
    values = [None if v is None else str(v) for v in actions.column(key).to_pylist()]
    counts = actions.column("num_records").to_pylist()
    picked = [n for v, n in zip(values, counts, strict=True) if v == value]
    if any(n is None for n in picked):
        return None
    return int(sum(picked))


def read_rows(location: str, filters: Sequence[tuple[str, str, Any]], columns: Sequence[str]) -> list[dict]:
    """``columns`` of the rows passing ``filters`` (conjunctive, ``(column, op, value)`` as in
    pyarrow; on partition columns the log prunes the files first) at the table's current version."""
    frame = _table(location).to_pyarrow_table(columns=list(columns), filters=list(filters))
    return frame.to_pylist()


def query(location: str, sql: str) -> list[dict]:
    """The rows of ``sql`` (delta-rs' SQL, the table named ``t``) run by DataFusion in this process:
    for an aggregate or a few rows; the table's data streams through, only the result comes back."""
    from deltalake import QueryBuilder

    reader = QueryBuilder().register("t", _table(location)).execute(sql)
    return pa.table(reader.read_all()).to_pylist()


def arrow_rows(rows: Sequence[Sequence[Any]], schema: T.StructType) -> pa.Table:
    """Rows given as tuples in ``schema``'s column order, as an Arrow table of that schema (maps
    as key/value pairs, timestamps in UTC microseconds, Spark's nullability)."""
    arrow_schema = to_arrow_schema(schema, timestamp_utc=True)
    maps = {f.name for f in schema.fields if isinstance(f.dataType, T.MapType)}
    columns = {
        f.name: [
            (list(row[i].items()) if f.name in maps and row[i] is not None else row[i]) for row in rows
        ]
        for i, f in enumerate(schema.fields)
    }
    return pa.Table.from_pydict(columns, schema=arrow_schema)


def append_once(location: str, data: pa.Table, app_id: str) -> bool:
    """Appends ``data`` in one commit unless a commit of ``app_id`` is already in the table's log
    (Delta's idempotent write: ``txn`` app id and version 0). Returns whether it committed.

    Call it under the table's commit lock: the check and the commit are two steps."""
    from deltalake import write_deltalake
    from deltalake.transaction import CommitProperties, Transaction

    table = _table(location)
    if table.transaction_version(app_id) is not None:
        return False
    write_deltalake(
        table, data, mode="append", commit_properties=CommitProperties(app_transactions=[Transaction(app_id, 0)])
    )
    return True


def append(location: str, data: pa.Table, user_metadata: str | None = None) -> int:
    """Appends ``data`` in one commit, tagged with ``user_metadata`` (Delta's commitInfo.userMetadata)
    when given. Returns the table's version after it: the commit's own under the table's commit lock."""
    return _write(location, data, user_metadata, mode="append")


def sql_literal(value: str | dt.date | int | bool) -> str:
    """``value`` in delta-rs' SQL (standard quoting: '' inside a string; ``'...'::date`` for a date)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'::date"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(int(value))


def condition(column: str, value: object) -> str:
    """``"column" = value``, or ``value[0] <= "column" <= value[1]`` for a pair, in delta-rs' SQL."""
    if isinstance(value, tuple):
        low, high = value
        return f'"{column}" >= {sql_literal(low)} AND "{column}" <= {sql_literal(high)}'
    return f'"{column}" = {sql_literal(value)}'


def replace_where(location: str, data: pa.Table, predicate: str, user_metadata: str | None = None) -> int:
    """Replaces the rows matching ``predicate`` (SQL, delta-rs' dialect: on partition columns the
    files to remove are found in the log, on others they are rewritten) with ``data``, in one commit,
    tagged with ``user_metadata`` (Delta's commitInfo.userMetadata) when given. Returns the table's
    version after it: the commit's own under the table's commit lock."""
    return _write(location, data, user_metadata, mode="overwrite", predicate=predicate)


def _write(location: str, data: pa.Table, user_metadata: str | None, **how: str) -> int:
    """One ``write_deltalake`` commit of ``data`` (``how``: its mode and predicate), tagged with
    ``user_metadata`` when given. Returns the table's version after it."""
    from deltalake import write_deltalake
    from deltalake.transaction import CommitProperties

    properties = CommitProperties(custom_metadata={"userMetadata": user_metadata}) if user_metadata else None
    table = _table(location)
    write_deltalake(table, data, commit_properties=properties, **how)
    table.update_incremental()
    version = int(table.version())
    if _CHECKPOINT_INTERVAL not in table.metadata().configuration and version % SPARK_CHECKPOINT_INTERVAL == 0:
        # A table made by Spark without the property checkpoints every 10 commits in Spark's hands and
        # every 100 in delta-rs'; where delta-rs makes most of its commits (small slices, metrics),
        # Spark would otherwise replay up to 99 log entries on every read of it.
        table.create_checkpoint()
    return version
