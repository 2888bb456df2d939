"""Model versions of the next-item models: one SavedModel per (dataset, run date), with its meta.

Layout, under the warehouse (written by ``train_next_item``, read by the batch scorer)::

    {paths.warehouse}/models/next_item/dataset={dataset}/run_date={YYYY-MM-DD}/
        model/       the Keras model, ``model.save(path)`` in TF SavedModel format: called on int32 item
                     indices (batch, max_len), left-padded with 0, most recent item last, it returns
                     scores (batch, vocab_size), one per item index (0 padding, 1 out of vocabulary)
        meta.json    model name, config, Delta versions, vocab_size, max_len, metrics, ... (:data:`META_KEYS`);
                     from train_next_item also ``selection`` (the candidates' validation figures
                     and the chosen model) and ``processes`` (each rank's host, pid and JVM)

``train_next_item`` exports each candidate model into its run folder (:func:`write_folder`) and
publishes the chosen one as the version (:func:`publish`).

A version is written whole into a temporary folder beside it (``_tmp-...``) and renamed into place:
a reader sees the previous version or the new one, never half of one (a re-run of the same date
replaces it). Folders whose name starts with ``_`` or ``.`` are never versions. On an object store
without renames (S3) the rename is a copy: the readers' rule "a version is a folder with meta.json"
still holds, since meta.json is written inside the temporary folder last.

File system work goes through pyarrow (local, HDFS, S3, GCS), so :func:`read_meta` and
:func:`latest_version` need no TensorFlow; only :func:`write_version` (saving) and :func:`load_model`
import it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs

from shoplens.config import Config

log = logging.getLogger(__name__)

MODEL_KIND = "next_item"
MODEL_DIR = "model"
META_FILE = "meta.json"
# What meta.json holds (write_version refuses a meta without them).
META_KEYS = (
    "model",             # "gru4rec", "sasrec", ...
    "dataset",
    "run_date",          # YYYY-MM-DD
    "config",            # the seqrec config section, as a dict
    "sequence_examples_version",  # Delta version of gold.sequence_examples trained and evaluated on
    "item_vocab_version",         # Delta version of gold.item_vocab the vocabulary size comes from
    "vocab_size",        # scores per row: item indices 0 .. vocab_size - 1
    "max_len",           # input width
    "metrics",           # {"validation": {...}, "test": {...}, "popularity_test": {...}}: names end in _sampled / _full
    "hvd_size",          # Horovod processes that trained it
    "epochs",            # epochs completed; best_epoch is the one exported
    "best_epoch",
    "created_at",        # UTC, ISO 8601
)
_RUN_DATE_DIR = re.compile(r"^run_date=(\d{4}-\d{2}-\d{2})$")


def versions_root(cfg: Config, dataset: str) -> str:
    """Returns the folder holding every version of ``dataset``'s next-item model."""
    return f"{cfg.paths.warehouse.rstrip('/')}/models/{MODEL_KIND}/dataset={dataset}"


def version_dir(cfg: Config, dataset: str, run_date: dt.date) -> str:
    """Returns the folder of the (dataset, run date) version: ``model/`` and ``meta.json``."""
    return f"{versions_root(cfg, dataset)}/run_date={run_date.isoformat()}"


def model_dir(cfg: Config, dataset: str, run_date: dt.date) -> str:
    """Returns the SavedModel folder of the (dataset, run date) version (``tf.keras.models.load_model``)."""
    return f"{version_dir(cfg, dataset, run_date)}/{MODEL_DIR}"


def meta_path(cfg: Config, dataset: str, run_date: dt.date) -> str:
    """Returns the path of the (dataset, run date) version's meta.json."""
    return f"{version_dir(cfg, dataset, run_date)}/{META_FILE}"


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    fs, inner = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)
    return fs, inner.rstrip("/")


def write_version(cfg: Config, dataset: str, run_date: dt.date, model: Any, meta: Mapping[str, Any]) -> str:
    """Saves ``model`` (a Keras model) and ``meta`` as the (dataset, run date) version, replacing any.

    Returns: the version's folder. Raises: ValueError when ``meta`` lacks a key of :data:`META_KEYS`.
    """
    return write_folder(version_dir(cfg, dataset, run_date), model, meta)


def write_folder(final: str, model: Any, meta: Mapping[str, Any]) -> str:
    """Saves ``model`` and ``meta`` as the folder ``final`` (``model/`` and ``meta.json``), replacing
    any: both are written into a temporary folder beside it, which is renamed into place.

    Returns: ``final``. Raises: ValueError when ``meta`` lacks a key of :data:`META_KEYS`.
    """

    def fill(fs: pafs.FileSystem, tmp: str, tmp_inner: str) -> None:
        # Without the optimizer: a scorer needs none, and a Horovod one would not load elsewhere.
        model.save(f"{tmp}/{MODEL_DIR}", save_format="tf", include_optimizer=False)
        _write_meta(fs, tmp_inner, meta)

    return _replace_folder(final, meta, fill)


def publish(cfg: Config, dataset: str, run_date: dt.date, source: str, extra_meta: Mapping[str, Any]) -> str:
    """Copies the folder ``source`` (written by :func:`write_folder`, e.g. a training candidate's
    export) as the (dataset, run date) version, its meta.json updated with ``extra_meta`` (e.g. the
    model selection), replacing any version of that date.

    Returns: the version's folder.
    """
    fs, source_inner = _fs(source)
    with fs.open_input_stream(f"{source_inner}/{META_FILE}") as stream:
        meta = {**json.loads(stream.read().decode("utf-8")), **extra_meta}

    def fill(fs: pafs.FileSystem, tmp: str, tmp_inner: str) -> None:
        pafs.copy_files(f"{source_inner}/{MODEL_DIR}", f"{tmp_inner}/{MODEL_DIR}", source_filesystem=fs,
                        destination_filesystem=fs)
        _write_meta(fs, tmp_inner, meta)

    return _replace_folder(version_dir(cfg, dataset, run_date), meta, fill)


def _write_meta(fs: pafs.FileSystem, folder: str, meta: Mapping[str, Any]) -> None:
    with fs.open_output_stream(f"{folder}/{META_FILE}") as out:
        out.write(json.dumps(dict(meta), indent=1, sort_keys=True, default=str).encode("utf-8"))


def _replace_folder(final: str, meta: Mapping[str, Any], fill: Any) -> str:
    """Calls ``fill(fs, tmp, tmp_inner)`` on a new temporary folder beside ``final`` (meta.json last),
    then renames it into place (module doc); the temporary folder is removed if anything fails."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"meta.json of a model version needs {', '.join(missing)}")
    parent, name = final.rstrip("/").rsplit("/", 1)
    tmp = f"{parent}/_tmp-{name}-{uuid.uuid4().hex[:8]}"
    fs, tmp_inner = _fs(tmp)
    _, final_inner = _fs(final)
    fs.create_dir(tmp_inner, recursive=True)
    try:
        fill(fs, tmp, tmp_inner)
        old = None
        if fs.get_file_info(final_inner).type != pafs.FileType.NotFound:
            old = f"{_fs(parent)[1]}/_old-{name}-{uuid.uuid4().hex[:8]}"
            fs.move(final_inner, old)
        fs.move(tmp_inner, final_inner)
        if old is not None:
            fs.delete_dir(old)
    except BaseException:
        if fs.get_file_info(tmp_inner).type != pafs.FileType.NotFound:
            fs.delete_dir(tmp_inner)
        raise
    log.info("model folder %s written", final)
    return final


def read_meta(cfg: Config, dataset: str, run_date: dt.date) -> dict[str, Any]:
    """Returns the (dataset, run date) version's meta.json.

    Raises: FileNotFoundError when there is no such version.
    """
    fs, inner = _fs(meta_path(cfg, dataset, run_date))
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no next-item model version for dataset {dataset!r} on {run_date}: {inner} is missing")
    with fs.open_input_stream(inner) as stream:
        return json.loads(stream.read().decode("utf-8"))


def list_versions(cfg: Config, dataset: str) -> list[dt.date]:
    """Returns the run dates of ``dataset``'s complete versions (a folder with meta.json), ascending."""
    fs, root = _fs(versions_root(cfg, dataset))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    dates = []
    for info in infos:
        m = _RUN_DATE_DIR.match(info.base_name)
        if m and info.type == pafs.FileType.Directory:
            if fs.get_file_info(f"{info.path}/{META_FILE}").type == pafs.FileType.File:
                dates.append(dt.date.fromisoformat(m.group(1)))
    return sorted(dates)


def latest_version(cfg: Config, dataset: str, up_to_run_date: dt.date) -> dt.date | None:
    """Returns the run date of ``dataset``'s newest complete version on or before ``up_to_run_date``
    (never a later one: re-running an old date scores with the model of that time), None if none."""
    dates = [d for d in list_versions(cfg, dataset) if d <= up_to_run_date]
    return dates[-1] if dates else None


def load_model(cfg: Config, dataset: str, run_date: dt.date) -> Any:
    """Loads the (dataset, run date) version's Keras model (for scoring: not compiled)."""
    import tensorflow as tf

    return tf.keras.models.load_model(model_dir(cfg, dataset, run_date), compile=False)
