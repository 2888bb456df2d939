"""shoplens_nightly: the nightly ShopLens pipeline; each task spark-submits one job of the same name.

Which day a run processes: the timetable makes one data interval per shop day, [D 00:00, D+1 00:00)
in the shop's time zone, and runs it just after D ends; every job gets ``--run-date D`` (the interval's
start as a date in the shop's time zone). Not ``@daily``: in Airflow 3 that is a trigger timetable
whose run at D+1 00:00 has ``{{ ds }}`` = D+1. How to run it, the connection and the environment:
docs/AIRFLOW.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronDataIntervalTimetable
from shoplens_dag_support import TRAINING_POOL, business_date_macro, load_spec, record_failure, spark_submit_args

# Must equal shop.timezone in conf/base.yaml (tests/test_airflow.py checks it).
SHOP_TIMEZONE = "UTC"

spec = load_spec()

with DAG(
    dag_id="shoplens_nightly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=SHOP_TIMEZONE),
    start_date=pendulum.datetime(2024, 1, 1, tz=SHOP_TIMEZONE),
    catchup=False,
    max_active_runs=1,  # two runs must not write the same tables at once
    default_args={
        # A retry re-submits the job as the next attempt (--attempt is the try number); every job
        # replaces its run date's slice, so that is safe. Waits 2, 4, 8 min: a lost executor or a
        # busy cluster gets time to recover, and a real bug still fails within the night.
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_retry_callback": record_failure,
        "on_failure_callback": record_failure,
    },
    user_defined_macros={"business_date": business_date_macro(SHOP_TIMEZONE)},
    doc_md=__doc__,
    tags=["shoplens"],
):
    ingest_landing = SparkSubmitOperator(task_id="ingest_landing", **spark_submit_args(spec, "ingest_landing"))
    # The pseudonymisation key reaches the job through the worker's environment
    # (SHOPLENS_PSEUDONYM_KEY or SHOPLENS_PSEUDONYM_KEY_FILE), never through the DAG.
    build_silver_events = SparkSubmitOperator(
        task_id="build_silver_events", **spark_submit_args(spec, "build_silver_events")
    )

    # Sessions continue from the previous night's final sessions: runs stay in date order
    # (max_active_runs=1); sequence examples need tonight's sessions.
    build_sessions = SparkSubmitOperator(task_id="build_sessions", **spark_submit_args(spec, "build_sessions"))
    build_sequences = SparkSubmitOperator(task_id="build_sequences", **spark_submit_args(spec, "build_sequences"))

    # The catalogue lands on its own: independent of the events chain.
    build_silver_items = SparkSubmitOperator(
        task_id="build_silver_items", **spark_submit_args(spec, "build_silver_items")
    )

    # Profiles roll up tonight's daily activity, which counts tonight's sessions.
    build_user_activity = SparkSubmitOperator(
        task_id="build_user_activity", **spark_submit_args(spec, "build_user_activity")
    )
    build_user_profiles = SparkSubmitOperator(
        task_id="build_user_profiles", **spark_submit_args(spec, "build_user_profiles")
    )
    # Churn reads tonight's and past profile snapshots; lifetime value reads the daily activity and
    # follows the profiles so that both describe the same night.
    build_churn_scores = SparkSubmitOperator(
        task_id="build_churn_scores", **spark_submit_args(spec, "build_churn_scores")
    )
    build_customer_value = SparkSubmitOperator(
        task_id="build_customer_value", **spark_submit_args(spec, "build_customer_value")
    )

    # ALS is tuned and evaluated on tonight's sequence examples; cold start reads tonight's profiles.
    build_recommendations = SparkSubmitOperator(
        task_id="build_recommendations", **spark_submit_args(spec, "build_recommendations")
    )

    # Next-item model: Horovod processes on the executors (GPUs on a GPU cluster), one slot of the
    # training pool at a time; it resumes from its checkpoints when retried. Scoring needs its version.
    train_next_item = SparkSubmitOperator(
        task_id="train_next_item",
        pool=TRAINING_POOL,
        execution_timeout=timedelta(hours=6),
        **spark_submit_args(spec, "train_next_item"),
    )
    score_next_item = SparkSubmitOperator(task_id="score_next_item", **spark_submit_args(spec, "score_next_item"))

    # Last: records the night's consistent cut of every table in gold.published_runs, only when every
    # job of the night succeeded and the required tables hold the night's rows.
    publish = SparkSubmitOperator(task_id="publish", **spark_submit_args(spec, "publish"))

    ingest_landing >> build_silver_events >> build_sessions >> build_sequences
    build_sessions >> build_user_activity >> build_user_profiles >> [build_churn_scores, build_customer_value]
    [build_sequences, build_user_profiles] >> build_recommendations
    build_sequences >> train_next_item >> score_next_item
    [build_silver_items, build_churn_scores, build_customer_value, build_recommendations, score_next_item] >> publish
