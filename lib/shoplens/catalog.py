"""The tables ShopLens owns: where each lives and how it is registered into a session's catalog.

Tables are path-based Delta tables at ``<warehouse>/<layer>/<name>``. Each session registers the
ones that exist as ``<layer>.<name>`` in its own in-memory catalog, so SQL works in every process
without a shared (Derby) metastore; on a cluster with a real metastore the same locations apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from shoplens import schemas as S
from shoplens.config import Config


@dataclass(frozen=True)
class TableSpec:
    """One table: its qualified name, schema, partition columns and what one row is."""

    name: str
    schema: T.StructType
    partition_by: tuple[str, ...]
    grain: str

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".")[1]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]

    def location(self, cfg: Config) -> str:
        return f"{cfg.paths.warehouse.rstrip('/')}/{self.layer}/{self.short_name}"

    def conform(self, df: DataFrame) -> DataFrame:
        """Returns ``df`` with exactly this table's columns, in order, cast to its types."""
        return df.select([df[f.name].cast(f.dataType).alias(f.name) for f in self.schema.fields])


BRONZE_EVENTS = TableSpec(
    "bronze.events",
    S.BRONZE_EVENTS,
    (S.RUN_DATE,),
    "one row per well-formed landing line, as landed; key (run_date, source_file, raw_line)",
)
QUARANTINE = TableSpec(
    "silver.quarantine",
    S.QUARANTINE,
    (S.RUN_DATE,),
    "one row per rejected record; (run_date, stage) is the slice a job rewrites",
)
QUALITY_RESULTS = TableSpec(
    "ops.quality_results",
    S.QUALITY_RESULTS,
    (S.RUN_DATE,),
    "one row per (run_date, table_name, suite, expectation, column)",
)

SILVER_EVENTS = TableSpec(
    "silver.events",
    S.SILVER_EVENTS,
    (S.EVENT_DATE,),
    "one row per distinct event (event_id), typed, canonical type, pseudonymised user",
)
SILVER_REVIEWS = TableSpec(
    "silver.reviews",
    S.SILVER_REVIEWS,
    (S.EVENT_DATE,),
    "one row per review event (event_id) with its rating and text",
)
SILVER_ITEMS = TableSpec(
    "silver.items",
    S.SILVER_ITEMS,
    (),
    "one row per item (item_id): its latest catalogue attributes",
)
DUPLICATES = TableSpec(
    "silver.duplicates",
    S.DUPLICATES,
    (S.RUN_DATE,),
    "one row per dropped re-delivery of an event already accepted; key (run_date, dataset, source_file, "
    "raw_line); (run_date, dataset) is the slice a nightly run rewrites",
)

SESSIONS = TableSpec(
    "gold.sessions",
    S.SESSIONS,
    (S.START_DATE,),
    "one row per session (session_id) of an actor in a dataset; key (dataset, session_id)",
)
SESSION_EVENTS = TableSpec(
    "gold.session_events",
    S.SESSION_EVENTS,
    (S.START_DATE,),
    "one row per sessionised event: key (dataset, event_id), its session and position in it",
)
ITEM_VOCAB = TableSpec(
    "gold.item_vocab",
    S.ITEM_VOCAB,
    (),
    "one row per (dataset, item_id) with its stable item_index (>= 2; 0 padding, 1 out of vocabulary)",
)
SEQUENCE_EXAMPLES = TableSpec(
    "gold.sequence_examples",
    S.SEQUENCE_EXAMPLES,
    (S.DATASET, S.GRAIN, S.SPLIT, S.SHARD),
    "one row per example (example_id): an actor's (or session's) input items and target, with its split",
)

USER_DAILY_ACTIVITY = TableSpec(
    "gold.user_daily_activity",
    S.USER_DAILY_ACTIVITY,
    (S.EVENT_DATE,),
    "one row per (dataset, user_id, event_date) with any event of that known user that day",
)
USER_PROFILES = TableSpec(
    "gold.user_profiles",
    S.USER_PROFILES,
    (S.SNAPSHOT_DATE,),
    "one row per (snapshot_date, dataset, user_id): features up to the snapshot, RFM, segment, cluster",
)
SEGMENT_SUMMARY = TableSpec(
    "gold.segment_summary",
    S.SEGMENT_SUMMARY,
    (),
    "one row per (snapshot_date, dataset, kind, segment): an RFM segment, a cluster, or the bots",
)
CLUSTER_MODELS = TableSpec(
    "gold.cluster_models",
    S.CLUSTER_MODELS,
    (),
    "one row per (dataset, fit_date): a fitted clustering pipeline, its k, silhouette and location",
)
MODEL_METRICS = TableSpec(
    "gold.model_metrics",
    S.MODEL_METRICS,
    (S.JOB,),
    "one row per (run_date, job, dataset, model, split, protocol, metric); MERGEd by shoplens.metrics only",
)
CHURN_SCORES = TableSpec(
    "gold.churn_scores",
    S.CHURN_SCORES,
    (S.RUN_DATE,),
    "one row per (run_date, dataset, user_id): a buyer's churn probability and risk band",
)
CHURN_FEATURE_IMPORTANCE = TableSpec(
    "gold.churn_feature_importance",
    S.CHURN_FEATURE_IMPORTANCE,
    (),
    "one row per (run_date, dataset, model, feature)",
)
CHURN_MODELS = TableSpec(
    "gold.churn_models",
    S.CHURN_MODELS,
    (),
    "one row per (dataset, fit_date): the churn models a run fitted, where they are, and on what",
)
CUSTOMER_VALUE = TableSpec(
    "gold.customer_value",
    S.CUSTOMER_VALUE,
    (S.SNAPSHOT_DATE,),
    "one row per (snapshot_date, dataset, user_id): BG/NBD p_alive, expected purchases, expected value",
)
USER_INDEX = TableSpec(
    "gold.user_index",
    S.USER_INDEX_TABLE,
    (),
    "one row per (dataset, user_id) with its stable ALS user_index; new ids appended, known ids never rewritten",
)
ITEM_INDEX = TableSpec(
    "gold.item_index",
    S.ITEM_INDEX_TABLE,
    (),
    "one row per (dataset, item_id) with its stable ALS item_index; new ids appended, known ids never rewritten",
)
RECOMMENDATIONS = TableSpec(
    "gold.recommendations",
    S.RECOMMENDATIONS,
    (S.RUN_DATE,),
    "one row per (run_date, dataset, user_id, rank): the top-K items for the user and their source",
)
SIMILAR_ITEMS = TableSpec(
    "gold.similar_items",
    S.SIMILAR_ITEMS,
    (S.RUN_DATE,),
    "one row per (run_date, dataset, item_id, rank): the most similar items by ALS factors",
)
ALS_TRIALS = TableSpec(
    "gold.als_trials",
    S.ALS_TRIALS,
    (S.RUN_DATE,),
    "one row per (run_date, dataset, trial, metric): an ALS tuning trial scored on validation rows",
)
NEXT_ITEM_PREDICTIONS = TableSpec(
    "gold.next_item_predictions",
    S.NEXT_ITEM_PREDICTIONS,
    (S.RUN_DATE,),
    "one row per (run_date, dataset, user_id, rank): a next-item model's top-K items for the user",
)
PIPELINE_RUNS = TableSpec(
    "gold.pipeline_runs",
    S.PIPELINE_RUNS,
    # One partition per run: its end replaces its start's row from the log alone (shoplens.runs).
    (S.JOB, S.RUN_DATE, S.ATTEMPT),
    "one row per (job, run_date, attempt) of a job started through its main; written by shoplens.runs only",
)
PUBLISHED_RUNS = TableSpec(
    "gold.published_runs",
    S.PUBLISHED_RUNS,
    (),
    "one row per published run date: every table's Delta version and rows for the date; replaced per date by publish",
)

TABLES: tuple[TableSpec, ...] = (
    BRONZE_EVENTS, SILVER_EVENTS, SILVER_REVIEWS, SILVER_ITEMS, QUARANTINE, DUPLICATES, QUALITY_RESULTS,
    SESSIONS, SESSION_EVENTS, ITEM_VOCAB, SEQUENCE_EXAMPLES,
    USER_DAILY_ACTIVITY, USER_PROFILES, SEGMENT_SUMMARY, CLUSTER_MODELS,
    MODEL_METRICS, CHURN_SCORES, CHURN_FEATURE_IMPORTANCE, CHURN_MODELS, CUSTOMER_VALUE,
    USER_INDEX, ITEM_INDEX, RECOMMENDATIONS, SIMILAR_ITEMS, ALS_TRIALS,
    NEXT_ITEM_PREDICTIONS, PIPELINE_RUNS, PUBLISHED_RUNS,
)
LAYERS = ("bronze", "silver", "gold", "ops")


def table_spec(name: str) -> TableSpec:
    """Returns the spec of a qualified table name such as ``bronze.events``."""
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown table {name!r}; known: {', '.join(t.name for t in TABLES)}")


def table_exists(spark: SparkSession, location: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, location))


def table_version(spark: SparkSession, location: str) -> int:
    """The current version of the Delta table at ``location`` (its log listed once, no Spark job);
    -1 when there is no table there."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, location)  # type: ignore[attr-defined]
    # DeltaLog.update(stalenessAcceptable, checkIfUpdatedSinceTs, catalogTableOpt) with Scala's defaults.
    defaults = [getattr(delta_log, f"update$default${n}")() for n in (1, 2, 3)]
    return int(delta_log.update(*defaults).version())


def register_table(spark: SparkSession, spec: TableSpec, cfg: Config) -> None:
    """Registers one existing table as ``<layer>.<name>``; a no-op when already registered there.

    A registration pointing elsewhere (another warehouse in the same session) is replaced; dropping
    a table registered with a LOCATION removes only the catalog entry, never the data.
    """
    location = spec.location(cfg)
    key = f"shoplens.registered.{spec.name}"
    if spark.conf.get(key, None) == location:
        return
    quoted = location.replace("'", "\\'")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {spec.layer}")
    spark.sql(f"DROP TABLE IF EXISTS {spec.name}")
    spark.sql(f"CREATE TABLE {spec.name} USING DELTA LOCATION '{quoted}'")
    spark.conf.set(key, location)


def register_tables(spark: SparkSession, cfg: Config) -> list[TableSpec]:
    """Registers every known table that exists under the warehouse; returns those registered."""
    registered = []
    for spec in TABLES:
        if table_exists(spark, spec.location(cfg)):
            register_table(spark, spec, cfg)
            registered.append(spec)
    return registered
