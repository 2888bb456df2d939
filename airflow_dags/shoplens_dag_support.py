"""Helpers for the ShopLens DAGs: the SubmitSpec JSON → SparkSubmitOperator arguments, and the run date.

Runs in Airflow's own environment, which has neither ``shoplens`` nor ``pyspark``: the spec is read
with plain ``json``. Its format is ``dataclasses.asdict(shoplens.submit.SubmitSpec)``, written by
``make package`` (``dist/submit.json``) or by ``python -m shoplens.submit <job> ... --write-spec``,
so Airflow submits exactly the command ``shoplens.submit.command`` builds by hand. See docs/AIRFLOW.md.
"""

from __future__ import annotations

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
    application_args = ["--run-date", RUN_DATE, "--env", spec["env"], "--conf-dir", spec["conf_dir"]]
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
