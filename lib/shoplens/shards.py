"""The files of a pinned version of gold.sequence_examples, for training processes without Spark.

The table is partitioned by (dataset, grain, split, shard). A driver pins a version (the table's
current one, :func:`latest_version`), and each of N training processes reads shards
``rank, rank + N, ...`` with pyarrow from the files that version lists:

    files = shard_files(location, version, "landing", "train", range(rank, num_shards, N))
    table = pyarrow.parquet.read_table(files, columns=["input_items", "target_item", "negatives"])

The file list comes from Delta's transaction log, replayed here with pyarrow only (the last
classic checkpoint at or before the version, then the JSON commits after it): no Spark, no extra
package, and a later rewrite of the table does not change what a pinned version lists. The
partition columns are in the file paths' partition values, not in the Parquet files. Works on any
file system pyarrow reaches (local, HDFS, S3, GCS). Tables written with deletion vectors or v2
checkpoints are refused (ShopLens writes neither).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import unquote

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shoplens import schemas as S

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_V2_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.[0-9a-f-]{36}\.(?:json|parquet)$")


class DeltaLogError(RuntimeError):
    """The transaction log cannot be replayed here (missing commits, unsupported features)."""


def _filesystem(table_path: str) -> tuple[pafs.FileSystem, str]:
    fs, root = pafs.FileSystem.from_uri(table_path)
    return fs, root.rstrip("/")


def _log_entries(fs: pafs.FileSystem, root: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_delta_log", allow_not_found=True))
    if not infos:
        raise DeltaLogError(f"{root} is not a Delta table: no _delta_log")
    return [info.base_name for info in infos]


def latest_version(table_path: str) -> int:
    """Returns the table's current version (its newest commit)."""
    fs, root = _filesystem(table_path)
    versions = [int(m.group(1)) for name in _log_entries(fs, root) if (m := _COMMIT.match(name))]
    if not versions:
        raise DeltaLogError(f"{table_path}: no commits in _delta_log")
    return max(versions)


def live_files(table_path: str, version: int) -> dict[str, dict[str, str | None]]:
    """Replays the log up to ``version``.

    Returns: each live data file's path relative to the table (as the log has it, decoded) →
    its partition values.
    """
    fs, root = _filesystem(table_path)
    names = _log_entries(fs, root)
    if any(_V2_CHECKPOINT.match(name) for name in names):
        raise DeltaLogError(f"{table_path} uses v2 checkpoints: read it with Spark or the deltalake package")
    checkpoints: dict[int, list[str]] = {}
    for name in names:
        m = _CHECKPOINT.match(name)
        if m and int(m.group(1)) <= version:
            checkpoints.setdefault(int(m.group(1)), []).append(name)
    commits = {int(m.group(1)): name for name in names if (m := _COMMIT.match(name))}
    if version not in commits and version not in checkpoints:
        raise DeltaLogError(f"{table_path}: version {version} not in the log")
    live: dict[str, dict[str, str | None]] = {}
    start = 0
    if checkpoints:
        # A multi-part checkpoint counts only when all its parts are there.
        complete = [
            v for v, parts in checkpoints.items()
            if len(parts) == 1 or len(parts) == int(_CHECKPOINT.match(parts[0]).group(3))  # type: ignore[union-attr]
        ]
        if complete:
            at = max(complete)
            for part in sorted(checkpoints[at]):
                rows = pq.read_table(f"{root}/_delta_log/{part}", filesystem=fs, columns=["add"]).column("add")
                for add in rows.to_pylist():
                    if add is not None:
                        _check_add(add, table_path)
                        live[unquote(add["path"])] = dict(add.get("partitionValues") or [])
            start = at + 1
    for v in range(start, version + 1):
        if v not in commits:
            raise DeltaLogError(f"{table_path}: commit {v} missing from the log (cleaned up?)")
        with fs.open_input_stream(f"{root}/_delta_log/{commits[v]}") as stream:
            for line in stream.read().decode("utf-8").splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    _check_add(action["add"], table_path)
                    live[unquote(action["add"]["path"])] = dict(action["add"].get("partitionValues") or {})
                elif "remove" in action:
                    live.pop(unquote(action["remove"]["path"]), None)
    return live


def _check_add(add: dict, table_path: str) -> None:
    if add.get("deletionVector"):
        raise DeltaLogError(f"{table_path} has deletion vectors: its files alone do not give its rows")


def shard_files(
    table_path: str,
    version: int,
    dataset: str,
    split: str,
    shard_ids: Iterable[int],
    grain: str = S.GRAIN_USER,
) -> list[str]:
    """The data files of (dataset, grain, split) and the given shards at ``version`` of the table.

    Returns: full paths (on the table's file system, as pyarrow opens them), sorted.
    """
    wanted = {str(int(s)) for s in shard_ids}
    fs, root = _filesystem(table_path)
    files = []
    for path, values in live_files(table_path, version).items():
        if (
            values.get(S.DATASET) == dataset
            and values.get(S.GRAIN) == grain
            and values.get(S.SPLIT) == split
            and values.get(S.SHARD) in wanted
        ):
            files.append(path if "://" in path else f"{root}/{path}")
    return sorted(files)
