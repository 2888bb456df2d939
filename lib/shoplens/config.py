"""Configuration: YAML under ``conf/`` (a base plus one environment overlay), validated once.

``load_config("local")`` reads ``conf/base.yaml``, merges ``conf/local.yaml`` over it key by key,
applies ``key.path=value`` overrides, and builds frozen dataclasses that reject unknown and missing
keys. Relative paths are resolved against the project root, the parent of the conf folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENVIRONMENTS = ("local", "cluster")
CONF_DIR_ENV_VAR = "SHOPLENS_CONF_DIR"
_REMOTE_SCHEMES = ("hdfs://", "s3a://", "s3://", "gs://", "abfss://", "file:/", "dbfs:/")


class ConfigError(ValueError):
    """A configuration file or override is missing, malformed or names an unknown key."""


@dataclass(frozen=True)
class ShopConfig:
    timezone: str


@dataclass(frozen=True)
class PathsConfig:
    landing: str
    warehouse: str
    jars_dir: str
    # The driver JVM's class-data-sharing archive (shoplens.jvm_archive); "" for none.
    jvm_archive: str = ""


# The JVMs' just-in-time compilers (driver and executors): "tiered" is the JVM's default, C1 then
# C2 for hot code; "c1" stops at C1, which compiles sooner and with a fraction of the CPU, and
# C2's faster code never pays back on small data in a short-lived JVM (docs/BENCHMARKS.md).
JIT_MODES = ("tiered", "c1")


@dataclass(frozen=True)
class SparkConfig:
    master: str
    conf: Mapping[str, str] = field(default_factory=dict)
    jit: str = "tiered"
    # Executors map paths.jvm_archive too: only where they run on the machine that has the file,
    # as on the standalone cluster on 127.0.0.1 (conf/cluster.yaml).
    executor_class_archive: bool = False

    def __post_init__(self) -> None:
        if self.jit not in JIT_MODES:
            raise ConfigError(f"spark.jit: one of {', '.join(JIT_MODES)}, got {self.jit!r}")


@dataclass(frozen=True)
class IngestConfig:
    max_malformed_share: float


@dataclass(frozen=True)
class SilverConfig:
    late_days: int
    future_tolerance_minutes: int
    max_reject_share: float


@dataclass(frozen=True)
class BotsConfig:
    max_events_per_hour: int
    max_events_per_day: int


@dataclass(frozen=True)
class QualityConfig:
    min_valid_share: float


@dataclass(frozen=True)
class SessionsConfig:
    gap_minutes: int
    max_length_hours: float
    exclude_datasets: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.gap_minutes <= 0:
            raise ConfigError(f"sessions.gap_minutes must be positive, got {self.gap_minutes}")
        # The incremental rule (docs/SEQUENCES.md) relies on a session ending within a day of its start.
        if not 0 < self.max_length_hours <= 24:
            raise ConfigError(f"sessions.max_length_hours must be in (0, 24], got {self.max_length_hours}")

    @property
    def gap_us(self) -> int:
        return self.gap_minutes * 60 * 1_000_000

    @property
    def max_length_us(self) -> int:
        return round(self.max_length_hours * 3600 * 1_000_000)

    @property
    def spill_days(self) -> int:
        """Days after its start date on which a session's events may fall: its length, plus an hour
        for a daylight-saving day of 23 hours, in whole days."""
        return math.ceil((self.max_length_hours + 1) / 24)


SPLIT_LEAVE_LAST_OUT = "leave_last_out"
SPLIT_TIME_CUTOFF = "time_cutoff"


@dataclass(frozen=True)
class SequencesConfig:
    event_types: tuple[str, ...]
    max_len: int
    min_item_count: int
    split: str
    validation_start: str
    test_start: str
    num_negatives: int
    seed: int
    num_shards: int

    def __post_init__(self) -> None:
        for name in ("max_len", "min_item_count", "num_negatives", "num_shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sequences.{name} must be at least 1, got {getattr(self, name)}")
        if not self.event_types:
            raise ConfigError("sequences.event_types must name at least one event type")
        if self.split not in (SPLIT_LEAVE_LAST_OUT, SPLIT_TIME_CUTOFF):
            raise ConfigError(
                f"sequences.split must be {SPLIT_LEAVE_LAST_OUT} or {SPLIT_TIME_CUTOFF}, got {self.split!r}"
            )
        if self.split == SPLIT_TIME_CUTOFF:
            validation, test = self.cutoffs
            if not validation < test:
                raise ConfigError("sequences.validation_start must be before sequences.test_start")

    @property
    def cutoffs(self) -> tuple[dt.datetime, dt.datetime]:
        """The (validation_start, test_start) instants of a time-cutoff split; naive values are UTC."""
        return _instant(self.validation_start, "sequences.validation_start"), _instant(
            self.test_start, "sequences.test_start"
        )


def _instant(value: str, path: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise ConfigError(f"{path}: expected an ISO date or date-time, got {value!r}") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class SegmentRule:
    """A named RFM segment: users whose R score is in [r_min, r_max] and whose mean of the F and M
    scores is in [fm_min, fm_max]. Rules are tried in order; the first that matches names the user."""

    name: str
    r_min: int
    r_max: int
    fm_min: float
    fm_max: float


@dataclass(frozen=True)
class ClustersConfig:
    k_min: int
    k_max: int
    # A fitted pipeline is reused for snapshots up to this many days after its fit date.
    refit_every_days: int
    # Fewer (non-bot) users than this: no clustering for the snapshot (cluster stays null).
    min_users: int
    max_iter: int
    seed: int

    def __post_init__(self) -> None:
        if not 2 <= self.k_min <= self.k_max:
            raise ConfigError(f"profiles.clusters: need 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
        if self.min_users <= self.k_max:
            raise ConfigError("profiles.clusters.min_users must exceed k_max")


@dataclass(frozen=True)
class ProfilesConfig:
    windows_days: tuple[int, ...]
    rfm_window_days: int
    affinity_weights: Mapping[str, float]
    affinity_half_life_days: float
    top_categories: int
    segments: tuple[SegmentRule, ...]
    default_segment: str
    no_purchase_segment: str
    high_tier_min_m: int
    mid_tier_min_m: int
    clusters: ClustersConfig

    def __post_init__(self) -> None:
        if not self.windows_days or min(self.windows_days) < 1:
            raise ConfigError("profiles.windows_days must list positive day counts")
        if self.rfm_window_days not in self.windows_days:
            raise ConfigError("profiles.rfm_window_days must be one of profiles.windows_days")

    @property
    def longest_window_days(self) -> int:
        return max(self.windows_days)


@dataclass(frozen=True)
class GbtConfig:
    max_iter: int
    max_depth: int
    step_size: float
    seed: int


@dataclass(frozen=True)
class ChurnConfig:
    """Churn label, snapshots and threshold (docs/CHURN.md). Fixed before any real-data run."""

    # A user churns at snapshot t when they make no purchase in the N days (t, t + N].
    horizon_days: int
    # The snapshot the models are evaluated on: "" means run date - horizon_days (the latest whose
    # labels are complete on the run date); else an ISO date, which must be <= run date - N.
    evaluation_snapshot: str
    # Training snapshots: "" entries derived as evaluation - N - k * snapshot_step_days for
    # k = 0 .. training_snapshots - 1, so every training label ends on or before the evaluation snapshot.
    training_snapshots: int
    snapshot_step_days: int
    # Probability at or above which a user is predicted to churn (precision, recall, F1, risk band high).
    threshold: float
    # Probability at or above which (and below threshold) a user's risk band is medium.
    medium_threshold: float
    # Fewer labelled training examples (or a single class): no fit; the run writes empty slices.
    min_training_examples: int
    gbt: GbtConfig
    logreg_reg_param: float
    # A run date within this many days of the latest fit (same settings) scores with its models
    # instead of fitting again; 0 fits every night (docs/CHURN.md).
    refit_every_days: int

    def __post_init__(self) -> None:
        if self.refit_every_days < 0:
            raise ConfigError(f"churn.refit_every_days must be 0 or more, got {self.refit_every_days}")
        if self.horizon_days < 1 or self.training_snapshots < 1 or self.snapshot_step_days < 1:
            raise ConfigError("churn.horizon_days, training_snapshots and snapshot_step_days must be positive")
        if not 0 < self.medium_threshold <= self.threshold < 1:
            raise ConfigError("churn: need 0 < medium_threshold <= threshold < 1")
        if self.evaluation_snapshot:
            try:
                dt.date.fromisoformat(self.evaluation_snapshot)
            except ValueError as err:
                raise ConfigError(
                    f"churn.evaluation_snapshot: expected YYYY-MM-DD, got {self.evaluation_snapshot!r}"
                ) from err

    def evaluation_date(self, run_date: dt.date) -> dt.date:
        """The evaluation snapshot E of a run on ``run_date``: its labels end on or before it."""
        latest = run_date - dt.timedelta(days=self.horizon_days)
        if not self.evaluation_snapshot:
            return latest
        fixed = dt.date.fromisoformat(self.evaluation_snapshot)
        if fixed > latest:
            raise ConfigError(f"churn.evaluation_snapshot {fixed} + horizon_days is after the run date {run_date}")
        return fixed

    def training_dates(self, run_date: dt.date) -> tuple[dt.date, ...]:
        """Training snapshots t, oldest first, each with t + horizon_days <= the evaluation snapshot."""
        last = self.evaluation_date(run_date) - dt.timedelta(days=self.horizon_days)
        return tuple(
            last - dt.timedelta(days=k * self.snapshot_step_days) for k in reversed(range(self.training_snapshots))
        )


@dataclass(frozen=True)
class ValueConfig:
    """BG/NBD + Gamma-Gamma lifetime value (docs/VALUE.md)."""

    # Expected purchases and value are over this many weeks after the snapshot.
    horizon_weeks: float
    # Fewer customers (users with a purchase) in a dataset: no fit; model columns stay null.
    min_customers: int
    max_iter: int

    def __post_init__(self) -> None:
        if self.horizon_weeks <= 0 or self.min_customers < 1:
            raise ConfigError("value.horizon_weeks and value.min_customers must be positive")


ALS_MODES = ("implicit", "explicit")


@dataclass(frozen=True)
class AlsGrid:
    """The tuning search: every combination is one trial (docs/ALS.md)."""

    rank: tuple[int, ...]
    reg_param: tuple[float, ...]
    alpha: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (self.rank and self.reg_param and self.alpha):
            raise ConfigError("als.grid: rank, reg_param and alpha must each list at least one value")
        if min(self.rank) < 1 or min(self.reg_param) < 0 or min(self.alpha) < 0:
            raise ConfigError("als.grid: ranks must be positive, reg_param and alpha non-negative")


@dataclass(frozen=True)
class AlsConfig:
    """Implicit-feedback ALS recommendations (docs/ALS.md)."""

    # Confidence of a (user, item) pair: sum over its events of weight(type) * 0.5^(age / half-life).
    event_weights: Mapping[str, float]
    half_life_days: float
    # Events with event_date in (run_date - window_days, run_date] train the model.
    window_days: int
    k: int
    # Users with fewer distinct items than this get cold-start recommendations, not ALS ones.
    min_user_items: int
    # Items a user had events of these types with are never recommended to them.
    exclude_event_types: tuple[str, ...]
    max_iter: int
    seed: int
    grid: AlsGrid
    # Re-tune over the grid when the last tuning (gold.als_trials, before the run date) is at least
    # this many days old (0: every night), or when the validation users differ from the last best
    # trial's by more than retune_growth times its count; else reuse its best (docs/ALS.md).
    retune_every_days: int
    retune_growth: float
    # ALS blocks: one per this many users (items), at most max_blocks; also the top-K item blocks.
    rows_per_block: int
    max_blocks: int
    checkpoint_interval: int
    # Test evaluation (ALS against popularity and co-occurrence, explicit ALS) and its quality gate:
    # on the nights that choose the parameters (tuning, or no tuning to reuse), or every night.
    evaluate_nightly: bool
    # Quality gate: the run fails when ALS's nDCG@K on test is below popularity's by more than this,
    # provided at least gate_min_users test users were scored.
    gate_margin: float
    gate_min_users: int
    # Co-occurrence baseline: each user's most recent items that count, at most this many.
    cooccurrence_max_items: int
    # Also fit explicit ALS on review ratings (RMSE, MAE) where a dataset has at least this many.
    explicit_min_ratings: int

    def __post_init__(self) -> None:
        if self.k < 1 or self.window_days < 1 or self.max_iter < 1 or self.rows_per_block < 1 or self.max_blocks < 1:
            raise ConfigError("als: k, window_days, max_iter, rows_per_block and max_blocks must be positive")
        if self.half_life_days <= 0 or self.checkpoint_interval < 1 or self.min_user_items < 1:
            raise ConfigError("als: half_life_days, checkpoint_interval and min_user_items must be positive")
        if not self.event_weights or min(self.event_weights.values()) <= 0:
            raise ConfigError("als.event_weights must give each counted event type a positive weight")
        if self.gate_margin < 0:
            raise ConfigError("als.gate_margin must be non-negative")
        if self.retune_every_days < 0 or self.retune_growth < 0:
            raise ConfigError("als.retune_every_days and als.retune_growth must be non-negative")


SEQREC_MODELS = ("gru4rec", "sasrec")
# seqrec.model: train every seqrec.candidates model and publish the best on validation.
SEQREC_BEST = "best"
# seqrec.select_metric: a validation figure of evaluate() (higher is better).
SEQREC_SELECT_METRICS = tuple(
    f"{name}@{k}_{protocol}" for name in ("hr", "ndcg") for k in (10, 20) for protocol in ("sampled", "full")
) + ("mrr@20_sampled", "mrr@20_full")


@dataclass(frozen=True)
class Gru4RecConfig:
    """GRU4Rec's layers (docs/SEQREC.md)."""

    embedding_dim: int
    # One GRU layer per entry, with that many units; the last one's state scores the next item.
    hidden_units: tuple[int, ...]
    dropout: float

    def __post_init__(self) -> None:
        if self.embedding_dim < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError("seqrec.gru4rec: embedding_dim and every hidden_units entry must be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"seqrec.gru4rec.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class SasrecConfig:
    """SASRec's blocks and its training targets (docs/SEQREC.md, "SASRec")."""

    embedding_dim: int
    num_blocks: int
    num_heads: int
    dropout: float
    # true: every position of a train sequence is trained in one pass (data.sequence_targets);
    # false: one target per example, with seqrec.train_all_prefixes deciding which examples.
    sequence_targets: bool
    # With sequence_targets: only the last this many positions of each sequence carry a loss (0 = all).
    loss_positions: int
    # Train batches of similar lengths, each cut to its longest sequence (data.to_length_batches):
    # the blocks then skip most of the padding.
    batch_by_length: bool

    def __post_init__(self) -> None:
        if min(self.embedding_dim, self.num_blocks, self.num_heads) < 1 or self.embedding_dim % self.num_heads:
            raise ConfigError("seqrec.sasrec: embedding_dim, num_blocks and num_heads must be positive, "
                              "embedding_dim a multiple of num_heads")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"seqrec.sasrec.dropout must be in [0, 1), got {self.dropout}")
        if self.loss_positions < 0:
            raise ConfigError(f"seqrec.sasrec.loss_positions must be non-negative, got {self.loss_positions}")


@dataclass(frozen=True)
class SeqrecConfig:
    """Next-item sequence models trained on gold.sequence_examples (docs/SEQREC.md)."""

    # A model of SEQREC_MODELS, or "best": train each of ``candidates`` and publish the one with the
    # highest validation ``select_metric`` as the model version (docs/SEQREC.md, "Model selection").
    model: str
    candidates: tuple[str, ...]
    select_metric: str
    # 0: full softmax cross-entropy over the whole vocabulary; N > 0: sampled softmax with N sampled
    # items per batch in training (scoring and evaluation always use the full vocabulary).
    num_sampled: int
    # Each train example also yields one example per earlier eligible position of its sequence.
    train_all_prefixes: bool
    batch_size: int
    eval_batch_size: int
    epochs: int
    # Per process; multiplied by the number of Horovod processes, reached linearly over warmup_epochs.
    learning_rate: float
    warmup_epochs: float
    # Early stopping on validation NDCG@10 (sampled candidates): stop after this many epochs without
    # an improvement of more than min_delta.
    patience: int
    min_delta: float
    seed: int
    gru4rec: Gru4RecConfig
    sasrec: SasrecConfig

    def __post_init__(self) -> None:
        if self.model not in (*SEQREC_MODELS, SEQREC_BEST):
            raise ConfigError(
                f"seqrec.model must be one of {', '.join(SEQREC_MODELS)} or {SEQREC_BEST}, got {self.model!r}"
            )
        unknown = [m for m in self.candidates if m not in SEQREC_MODELS]
        if unknown or not self.candidates or len(set(self.candidates)) != len(self.candidates):
            raise ConfigError(
                f"seqrec.candidates must list distinct models of {', '.join(SEQREC_MODELS)}, "
                f"got {list(self.candidates)}"
            )
        if self.select_metric not in SEQREC_SELECT_METRICS:
            raise ConfigError(
                f"seqrec.select_metric must be one of {', '.join(SEQREC_SELECT_METRICS)}, got {self.select_metric!r}"
            )
        for name in ("batch_size", "eval_batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"seqrec.{name} must be at least 1, got {getattr(self, name)}")
        if self.num_sampled < 0 or self.learning_rate <= 0 or self.warmup_epochs < 0 or self.min_delta < 0:
            raise ConfigError(
                "seqrec: num_sampled, warmup_epochs and min_delta must be non-negative, learning_rate positive"
            )

    @property
    def models_to_train(self) -> tuple[str, ...]:
        """The models a training run trains: the candidates for "best", else the one model."""
        return self.candidates if self.model == SEQREC_BEST else (self.model,)


@dataclass(frozen=True)
class HorovodConfig:
    num_proc: int
    start_timeout_s: int
    nics: tuple[str, ...]
    use_gpu: bool
    threads_per_proc: int


@dataclass(frozen=True)
class ScoringConfig:
    """Batch scoring of the next-item models into gold.next_item_predictions (docs/SEQREC.md)."""

    # Predictions per user.
    top_k: int
    # Rows per model call on an executor: the scores of one call take batch_size x vocab_size x 4 bytes.
    batch_size: int
    # Never predict an item the user already bought (non-bot purchase events up to the run date).
    exclude_purchased: bool

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.batch_size < 1:
            raise ConfigError(f"scoring: top_k and batch_size must be positive, got {self.top_k}, {self.batch_size}")


RECORD_WRITERS = ("auto", "deltalake", "spark")


@dataclass(frozen=True)
class RunsConfig:
    """The run machinery of every job's main (docs/RUNS.md): run lock, table commit locks, run record."""

    # A second run of the same (run date, job) waits this long for the first, then fails naming it.
    lock_wait_s: float
    # A commit waits this long for another driver's commit to the same table (table locks).
    table_lock_wait_s: float
    # A lock whose holder has not renewed it for lease_s is broken (its holder was killed).
    lease_s: float
    # The holder renews its locks this often; well under lease_s.
    heartbeat_s: float
    # How often a waiting run looks at the lock again.
    poll_s: float
    # Serialise commits to one table across drivers: needed where the file system has no atomic
    # put-if-absent for Delta's log (local file systems, S3 without a LogStore); see docs/RUNS.md.
    table_locks: bool
    # The publish job refuses a run date unless each of these tables holds rows for it (docs/RUNS.md).
    publish_required_tables: tuple[str, ...]
    # Where the lock files live; empty: <warehouse>/_locks. A warehouse on S3 (no exclusive create)
    # keeps its locks on a file system that has one, shared by every driver (HDFS, NFS).
    lock_dir: str
    # Who writes and reads gold.pipeline_runs (and counts publish's rows): deltalake (delta-rs,
    # milliseconds, no Spark job), spark, or auto: delta-rs on a local warehouse, Spark elsewhere.
    record_writer: str

    def __post_init__(self) -> None:
        if self.record_writer not in RECORD_WRITERS:
            raise ConfigError(f"runs.record_writer: one of {', '.join(RECORD_WRITERS)}, got {self.record_writer!r}")
        if min(self.lock_wait_s, self.table_lock_wait_s) < 0 or min(self.lease_s, self.heartbeat_s, self.poll_s) <= 0:
            raise ConfigError("runs: waits must be non-negative; lease_s, heartbeat_s and poll_s positive")
        if self.heartbeat_s >= self.lease_s:
            raise ConfigError(f"runs: heartbeat_s ({self.heartbeat_s}) must be below lease_s ({self.lease_s})")


@dataclass(frozen=True)
class Config:
    env: str
    shop: ShopConfig
    paths: PathsConfig
    spark: SparkConfig
    ingest: IngestConfig
    silver: SilverConfig
    bots: BotsConfig
    quality: QualityConfig
    sessions: SessionsConfig
    sequences: SequencesConfig
    profiles: ProfilesConfig
    churn: ChurnConfig
    value: ValueConfig
    als: AlsConfig
    seqrec: SeqrecConfig
    horovod: HorovodConfig
    scoring: ScoringConfig
    runs: RunsConfig


def default_conf_dir() -> Path:
    """Returns ``$SHOPLENS_CONF_DIR`` if set, else ``./conf``."""
    return Path(os.environ.get(CONF_DIR_ENV_VAR, "conf")).resolve()


def load_config(
    env: str,
    conf_dir: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Loads and validates ``base.yaml`` merged with ``<env>.yaml`` and ``key.path=value`` overrides."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}; expected one of {', '.join(ENVIRONMENTS)}")
    conf_path = Path(conf_dir).resolve() if conf_dir else default_conf_dir()
    raw = _read_yaml(conf_path / "base.yaml")
    raw = _deep_merge(raw, _read_yaml(conf_path / f"{env}.yaml"))
    for item in overrides:
        raw = _deep_merge(raw, _parse_override(item))
    raw["env"] = env
    cfg = _build(Config, raw, "")
    return _resolve_paths(cfg, conf_path.parent)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"configuration file not found: {path} (pass --conf-dir or set {CONF_DIR_ENV_VAR})"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_override(item: str) -> dict[str, Any]:
    """``spark.conf.spark.driver.memory=4g`` style: the first two dotted parts of a spark.conf key
    name the section, the rest is the Spark setting."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    parts = key.split(".")
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        parts = ["spark", "conf", ".".join(parts[2:])]
    nested: dict[str, Any] = {parts[-1]: yaml.safe_load(value) if value else ""}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}")
    values = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
                continue
            raise ConfigError(f"missing configuration key {path}")
        values[f.name] = _coerce(hints[f.name], data[f.name], path)
    return cls(**values)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping")
        args = typing.get_args(hint)
        if args and args[1] is not str:
            return types.MappingProxyType({str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()})
        # Spark settings are strings; YAML may have parsed "8" as 8 or "true" as True.
        return types.MappingProxyType(
            {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if hint is int and not float(value).is_integer():
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return hint(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported configuration type {hint}")


def resolve_path(path: str, root: Path) -> str:
    """Returns ``path`` unchanged if it is empty or a URI, else absolute against ``root``."""
    if not path or path.startswith(_REMOTE_SCHEMES):
        return path
    return str((root / path).resolve())


def _resolve_paths(cfg: Config, root: Path) -> Config:
    paths = cfg.paths
    resolved = PathsConfig(
        landing=resolve_path(paths.landing, root),
        warehouse=resolve_path(paths.warehouse, root),
        jars_dir=resolve_path(paths.jars_dir, root),
        jvm_archive=resolve_path(paths.jvm_archive, root),
    )
    return dataclasses.replace(cfg, paths=resolved)
