"""Helpers for the ShopLens DAGs: the SubmitSpec JSON → SparkSubmitOperator arguments, and the run date.

Runs in Airflow's own environment, which has neither ``shoplens`` nor ``pyspark``: the spec is read
with plain ``json``. Its format is ``dataclasses.asdict(shoplens.submit.SubmitSpec)``, written by
``make package`` (``dist/submit.json``) or by ``python -m shoplens.submit <job> ... --write-spec``,
so Airflow submits exactly the command ``shoplens.submit.command`` builds by hand. See docs/AIRFLOW.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum

SPEC_ENV = "SHOPLENS_SUBMIT_SPEC"
DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "dist" / "submit.json"
SPARK_CONN_ID = "shoplens_spark"
# The pool that bounds concurrent training jobs (GPU capacity); create it with
# `airflow pools set shoplens_training 1 "ShopLens model training"` (docs/AIRFLOW.md).
TRAINING_POOL = "shoplens_training"
# Rendered in each task: the shop's business date this run processes (see business_date_macro).
RUN_DATE = "{{ business_date(data_interval_start | default(None)) }}"
# Rendered in each task: Airflow's try number is the job's attempt in gold.pipeline_runs.
ATTEMPT = "{{ ti.try_number }}"
# Where record_failure appends its JSON lines (default: $AIRFLOW_HOME/logs/shoplens_failures.jsonl).
FAILURE_LOG_ENV = "SHOPLENS_FAILURE_LOG"

_SPEC_KEYS = ("master", "env", "conf_dir", "jobs_dir", "conf", "py_files", "archives", "driver_python", "overrides")


def load_spec(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Returns the SubmitSpec as a dict, from ``path``, else $SHOPLENS_SUBMIT_SPEC, else dist/submit.json."""
    path = Path(path or os.environ.get(SPEC_ENV) or DEFAULT_SPEC)
    if not path.is_file():
        raise FileNotFoundError(
            f"ShopLens submit spec {path} not found: build it with `make package`, or point "
            f"${SPEC_ENV} at one written by `python -m shoplens.submit <job> ... --write-spec <file>`"
        )
    spec = json.loads(path.read_text())
    missing = [key for key in _SPEC_KEYS if key not in spec]
    if missing:
        raise ValueError(f"{path} is not a ShopLens SubmitSpec: missing {', '.join(missing)}")
    return spec


def spark_submit_args(spec: dict[str, Any], job: str) -> dict[str, Any]:
    """Returns SparkSubmitOperator keyword arguments that run ``job`` for the run's business date.

    The same command as ``shoplens.submit.command``, except the master: it comes from the Airflow
    connection ``shoplens_spark``, which must name the spec's master (deploy mode client, so the
    operator follows the driver and env_vars reach it).
    """
    conf = dict(spec["conf"])
    # spark-submit takes these two as their own flags (as shoplens.submit does).
    jars = conf.pop("spark.jars", None)
    driver_memory = conf.pop("spark.driver.memory", None)
    application_args = [
        "--run-date", RUN_DATE, "--attempt", ATTEMPT, "--env", spec["env"], "--conf-dir", spec["conf_dir"]
    ]
    for item in spec["overrides"]:
        application_args += ["--set", item]
    env_vars = {}
    if spec["driver_python"]:
        # The driver (client mode) and the executors' Python workers run under the Spark
        # environment's interpreter, not Airflow's; spark.pyspark.python in conf wins for executors.
        env_vars = {"PYSPARK_DRIVER_PYTHON": spec["driver_python"], "PYSPARK_PYTHON": spec["driver_python"]}
    return {
        "conn_id": SPARK_CONN_ID,
        "deploy_mode": "client",
        "application": str(Path(spec["jobs_dir"]) / f"{job}.py"),
        "application_args": application_args,
        "name": f"shoplens.{job} {RUN_DATE}",
        "conf": conf,
        "jars": jars,
        "driver_memory": driver_memory,
        "py_files": ",".join(spec["py_files"]) or None,
        "archives": ",".join(spec["archives"]) or None,
        "env_vars": env_vars or None,
    }


def business_date_macro(timezone: str) -> Callable[..., str]:
    """Returns the ``business_date`` template macro: the run's data interval start, as a date in
    the shop's time zone. A run made by a data-interval timetable for the interval [D, D+1) fires
    just after D ends and processes D."""

    def business_date(data_interval_start: Any = None) -> str:
        if data_interval_start is None:
            raise ValueError(
                "this run has no data interval (triggered without a logical date), so it has no "
                "business date: trigger it with a logical date, or re-process a day with "
                "`airflow backfill create` (see docs/AIRFLOW.md)"
            )
        return pendulum.instance(data_interval_start).in_timezone(timezone).strftime("%Y-%m-%d")

    return business_date


def failure_log_path() -> Path:
    """Returns the JSON-lines file record_failure appends to: $SHOPLENS_FAILURE_LOG, else
    $AIRFLOW_HOME/logs/shoplens_failures.jsonl."""
    configured = os.environ.get(FAILURE_LOG_ENV)
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "logs" / "shoplens_failures.jsonl"


def record_failure(context: dict[str, Any]) -> None:
    """The tasks' on-failure and on-retry callback: appends one JSON line per failed try (task, run
    date, try number, whether Airflow will retry it, the error, the log URL) to
    :func:`failure_log_path`, and logs it.

    It runs in Airflow's environment, which cannot write Delta tables: the job itself records its
    own failure in gold.pipeline_runs when it can, and a try that died without recording it (killed,
    timed out, driver lost) is marked ``abandoned`` there by the next try (docs/RUNS.md).
    """
    ti = context.get("ti") or context.get("task_instance")
    error = context.get("exception")
    task = getattr(ti, "task", None)
    retries = getattr(task, "retries", 0) or 0
    try_number = getattr(ti, "try_number", None)
    record = {
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "run_date": _rendered_run_date(task),
        "try_number": try_number,
        "will_retry": try_number is not None and try_number <= retries,
        "error": f"{type(error).__name__}: {error}"[:2000] if error is not None else None,
        "log_url": getattr(ti, "log_url", None),
    }
    path = failure_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")
    import logging

    logging.getLogger(__name__).error("ShopLens task failure recorded in %s: %s", path, record)


def _rendered_run_date(task: Any) -> str | None:
    args = list(getattr(task, "application_args", None) or [])
    return args[args.index("--run-date") + 1] if "--run-date" in args[:-1] else None
