"""The Airflow DAG in Airflow's own environment (.venv-airflow), driven through its CLI and interpreter.

Every Airflow command runs as a subprocess with a private AIRFLOW_HOME (SQLite, no examples), the
DAG folder airflow_dags/, Spark's ``spark-submit`` on PATH after Airflow's own bin/ and SPARK_HOME set,
as docs/AIRFLOW.md describes; none of the Spark side's variables (PYSPARK_*, PYTHONPATH) leak in, so
the DAG itself must wire the Spark environment's interpreter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
DAGS_FOLDER = ROOT / "airflow_dags"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
PROBE = Path(__file__).with_name("airflow_probe.py")
DAG_ID = "shoplens_nightly"
DAG_TIMETABLE_LINE = 'schedule=CronDataIntervalTimetable("0 0 * * *", timezone=SHOP_TIMEZONE),'
# Variables of the Spark side (or of another Airflow) that must not reach Airflow's processes.
_NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                  "SHOPLENS_CONF_DIR", "SHOPLENS_SUBMIT_SPEC")

pytestmark = pytest.mark.airflow


def _job_names() -> set[str]:
    return {p.stem for p in (ROOT / "jobs").glob("*.py")}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Landing and warehouse folders for the DAG's runs, and the SubmitSpec JSON that points at them."""
    base = tmp_path_factory.mktemp("airflow_ws")
    spec = base / "submit.json"
    subprocess.run(
        [sys.executable, "-m", "shoplens.submit", "ingest_landing", "--run-date", "2024-01-01",
         "--env", "cluster", "--conf-dir", str(CONF_DIR),
         "--set", f"paths.warehouse={base / 'warehouse'}", "--set", f"paths.landing={base / 'landing'}",
         "--write-spec", str(spec)],
        check=True, cwd=ROOT, env={**os.environ, "SHOPLENS_CONF_DIR": str(CONF_DIR)},
    )
    return base


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, workspace: Path) -> dict[str, str]:
    """The environment of every Airflow process; runs ``airflow db migrate`` once."""
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.fail(f"{AIRFLOW_BIN / 'airflow'} not found: run `make setup` (it creates .venv-airflow)")
    from shoplens.cluster import spark_home

    home = tmp_path_factory.mktemp("airflow_home")
    spark = spark_home()
    inherited_path = [p for p in os.environ["PATH"].split(os.pathsep) if p != str(ROOT / ".venv" / "bin")]
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED and not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        SHOPLENS_SUBMIT_SPEC=str(workspace / "submit.json"),
        SPARK_HOME=str(spark),
        # Airflow's own bin first; the Spark environment's spark-submit after everything else.
        PATH=os.pathsep.join([str(AIRFLOW_BIN), *inherited_path, str(spark / "bin")]),
    )
    subprocess.run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], env=env, cwd=home, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    return env


def _probe(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run([str(AIRFLOW_BIN / "python"), str(PROBE), *args], env=env, cwd=env["AIRFLOW_HOME"],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE-RESULT ")]
    assert proc.returncode == 0 and lines, f"probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1].removeprefix("PROBE-RESULT "))


def test_dag_imports_in_airflow_env_and_is_configured(airflow_env: dict[str, str]) -> None:
    from shoplens.config import load_config

    result = _probe(airflow_env, "integrity", str(DAGS_FOLDER))

    assert result["import_errors"] == {}
    assert list(result["dags"]) == [DAG_ID]
    dag = result["dags"][DAG_ID]
    assert dag["file"] == f"{DAG_ID}.py"
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert dag["start_date_tz"] is not None
    # The timetable's time zone is the shop's (it decides which calendar day a run processes).
    assert dag["timetable"] == "CronDataIntervalTimetable"
    assert dag["timetable_args"]["timezone"] == load_config("cluster", CONF_DIR).shop.timezone
    tasks = dag["tasks"]
    # Each task is named after the job it submits (not every job need be in the nightly DAG).
    assert "ingest_landing" in tasks
    assert set(tasks) <= _job_names()
    for task_id, task in tasks.items():
        assert task["operator"] == "SparkSubmitOperator"
        assert task["retries"] >= 1
        assert task["application"] == str(ROOT / "jobs" / f"{task_id}.py")
        assert task["conn_id"] == "shoplens_spark"
        assert task["deploy_mode"] == "client"
        assert task["env_vars"]["PYSPARK_DRIVER_PYTHON"] == sys.executable  # the spec's driver_python
    # Parsing the DAG must not touch the Spark side.
    assert result["spark_side_modules_loaded"] == []


def test_dag_without_submit_spec_is_an_import_error_naming_the_fix(airflow_env, tmp_path: Path) -> None:
    env = {**airflow_env, "SHOPLENS_SUBMIT_SPEC": str(tmp_path / "missing.json")}

    result = _probe(env, "integrity", str(DAGS_FOLDER))

    assert result["dags"] == {}
    assert "make package" in result["import_errors"][f"{DAG_ID}.py"]


def _dag_variant(tmp_path: Path, replace: tuple[str, str] | None) -> Path:
    folder = tmp_path / "dags"
    shutil.copytree(DAGS_FOLDER, folder)
    if replace:
        source = (folder / f"{DAG_ID}.py").read_text()
        assert replace[0] in source, f"{replace[0]!r} no longer in the DAG: update this test"
        (folder / f"{DAG_ID}.py").write_text(source.replace(*replace))
    return folder


@pytest.mark.parametrize(
    ("variant", "fires_at", "expected"),
    [
        pytest.param(None, "2024-01-03T00:00:00+00:00", "2024-01-02", id="as-committed"),
        # The check has teeth: with Airflow 3's `@daily` (a trigger timetable) the same run would
        # process the day it fires.
        pytest.param((DAG_TIMETABLE_LINE, 'schedule="@daily",'), "2024-01-03T00:00:00+00:00", "2024-01-03",
                     id="daily-trigger-control"),
        # A shop east of UTC: its day 2024-01-02 ends at 23:00 UTC.
        pytest.param(('SHOP_TIMEZONE = "UTC"', 'SHOP_TIMEZONE = "Europe/Berlin"'), "2024-01-02T23:00:00+00:00",
                     "2024-01-02", id="shop-in-berlin"),
    ],
)
def test_run_processes_the_shop_day_that_just_ended(airflow_env, tmp_path: Path, variant, fires_at, expected):
    folder = _dag_variant(tmp_path, variant)

    result = _probe(airflow_env, "render", str(folder), DAG_ID, "ingest_landing", fires_at)

    scheduled, manual = result["scheduled"], result["manual"]
    assert dt.datetime.fromisoformat(scheduled["run_after"]) == dt.datetime.fromisoformat(fires_at), scheduled
    assert scheduled["run_date"] == expected, scheduled
    assert scheduled["name"] == f"shoplens.ingest_landing {expected}"
    # A manual run (and `airflow dags test`) with that logical date processes the same day.
    assert manual["run_date"] == expected, manual
    if variant is None:
        # Its {{ ds }} would be the logical date itself: the reason the DAG does not use it.
        assert manual["logical_date"].startswith("2024-01-03")
        # A run triggered without a logical date has no data interval: it fails, saying why.
        assert "trigger it with a logical date" in result["no_logical_date"].get("error", ""), result


def _run_watched(argv: list[str], env: dict[str, str], timeout_s: float, abort_on: str) -> tuple[int, str, str]:
    """Runs argv, streaming its output; kills its process group on timeout or when a line contains
    ``abort_on``. Returns (exit code, output, why it was aborted or "")."""
    proc = subprocess.Popen(argv, env=env, cwd=env["AIRFLOW_HOME"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline, seen, aborted = time.monotonic() + timeout_s, 0, ""
    while proc.poll() is None:
        new, seen = lines[seen:], len(lines)
        if any(abort_on in line for line in new):
            aborted = f"aborted: output contained {abort_on!r}"
        elif time.monotonic() > deadline:
            aborted = f"timed out after {timeout_s:.0f}s"
        if aborted:
            os.killpg(proc.pid, signal.SIGKILL)  # airflow, spark-submit and the driver it started
            proc.wait()
            break
        time.sleep(0.5)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines), aborted


@pytest.mark.cluster
def test_dags_test_ingests_the_previous_day_on_the_standalone_cluster(
    airflow_env: dict[str, str], workspace: Path, standalone_cluster: str, request: pytest.FixtureRequest
) -> None:
    from shoplens import cluster
    from shoplens import schemas as S
    from shoplens.catalog import BRONZE_EVENTS, QUARANTINE, SILVER_EVENTS
    from shoplens.config import load_config
    from shoplens.demo import seed_landing

    assert seed_landing(str(workspace / "landing")) == ["2024-01-01", "2024-01-02"]
    env = {
        **airflow_env,
        "AIRFLOW_CONN_SHOPLENS_SPARK": f"{standalone_cluster}?deploy-mode=client",
        # The worker's secret reaches the silver job through spark-submit's environment.
        "SHOPLENS_PSEUDONYM_KEY": "airflow-test-key",
    }

    # `dags test <T>` makes a manual run with logical date T; its data interval is the last shop day
    # that ended at or before T, here 2024-01-02.
    code, out, aborted = _run_watched(
        [str(AIRFLOW_BIN / "airflow"), "dags", "test", DAG_ID, "2024-01-03T00:00:00+00:00"],
        # Ten jobs, each a cluster application (about a minute on a quiet 2-core machine, 2-3 under
        # load): the timeout only guards against a hang. A failed try would wait retry_delay: stop instead.
        env, timeout_s=2400, abort_on="up_for_retry",
    )

    assert code == 0 and not aborted, f"{aborted}\n{out[-8000:]}"
    # Each job ran as an application of the standalone cluster, for 2024-01-02; silver after ingest.
    app_ids = re.findall(r"Connected to Spark cluster with app ID (app-[0-9-]+)", out)
    apps = {app["id"]: app for app in cluster.master_state(cluster.default_layout())["completedapps"]}
    names = [apps[app_id]["name"] for app_id in app_ids]
    assert sorted(names) == [
        "shoplens.build_churn_scores 2024-01-02",
        "shoplens.build_customer_value 2024-01-02",
        "shoplens.build_recommendations 2024-01-02",
        "shoplens.build_sequences 2024-01-02",
        "shoplens.build_sessions 2024-01-02",
        "shoplens.build_silver_events 2024-01-02",
        "shoplens.build_silver_items 2024-01-02",
        "shoplens.build_user_activity 2024-01-02",
        "shoplens.build_user_profiles 2024-01-02",
        "shoplens.ingest_landing 2024-01-02",
    ], out[-8000:]
    for chain in (
        ["ingest_landing", "build_silver_events", "build_sessions", "build_sequences"],
        ["build_sessions", "build_user_activity", "build_user_profiles", "build_churn_scores"],
        ["build_user_profiles", "build_customer_value"],
        ["build_sequences", "build_recommendations"],
        ["build_user_profiles", "build_recommendations"],
    ):
        positions = [names.index(f"shoplens.{job} 2024-01-02") for job in chain]
        assert positions == sorted(positions)

    spark = request.getfixturevalue("spark")  # only now: no local JVM while the cluster job runs
    cfg = load_config("cluster", CONF_DIR, [f"paths.warehouse={workspace / 'warehouse'}"])
    bronze = spark.read.format("delta").load(BRONZE_EVENTS.location(cfg))
    counts = {row[S.RUN_DATE]: row["count"] for row in bronze.groupBy(S.RUN_DATE).count().collect()}
    assert counts == {dt.date(2024, 1, 2): 36}
    quarantine = spark.read.format("delta").load(QUARANTINE.location(cfg))
    assert [(r[S.RUN_DATE], r[S.REASON]) for r in quarantine.select(S.RUN_DATE, S.REASON).collect()] == [
        (dt.date(2024, 1, 2), "malformed_json")
    ]
    silver = spark.read.format("delta").load(SILVER_EVENTS.location(cfg))
    assert silver.count() == 36
    pseudonym = hmac.new(b"airflow-test-key", b"u1", hashlib.sha256).hexdigest()
    assert pseudonym in {r[S.USER_ID] for r in silver.select(S.USER_ID).distinct().collect()}
