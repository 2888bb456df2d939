"""The Airflow DAG in Airflow's own environment (.venv-airflow), driven through its CLI and interpreter.

Every Airflow command runs as a subprocess with a private AIRFLOW_HOME (SQLite, no examples), the
DAG folder airflow_dags/, Spark's ``spark-submit`` on PATH after Airflow's own bin/ and SPARK_HOME set,
as docs/AIRFLOW.md describes; none of the Spark side's variables (PYSPARK_*, PYTHONPATH) leak in, so
the DAG itself must wire the Spark environment's interpreter.
"""

from __future__ import annotations

import datetime as dt
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

from .conftest import ONE_JOB_JVM, SMALL_SHOP_OVERRIDES

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

# The demo shop of the end-to-end run: enough users for two Horovod ranks' shards. `make e2e` runs
# the DAG for two consecutive days (SHOPLENS_E2E_DAYS=2); `make test` for one, to stay within CI's time.
E2E_DAYS = tuple(
    (dt.date(2024, 1, 1) + dt.timedelta(days=d)).isoformat() for d in range(int(os.environ.get("SHOPLENS_E2E_DAYS", "1")))
)
E2E_EVENTS = 4000
JOBS_IN_ORDER = (
    ("ingest_landing", "build_silver_events", "build_sessions", "build_sequences", "train_next_item",
     "score_next_item"),
    ("build_sessions", "build_user_activity", "build_user_profiles", "build_churn_scores"),
    ("build_user_profiles", "build_customer_value"),
    ("build_sequences", "build_recommendations"),
    ("build_user_profiles", "build_recommendations"),
    ("score_next_item", "publish"), ("build_recommendations", "publish"), ("build_churn_scores", "publish"),
    ("build_customer_value", "publish"), ("build_silver_items", "publish"),
)


def _job_names() -> set[str]:
    return {p.stem for p in (ROOT / "jobs").glob("*.py")}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Landing and warehouse folders for the DAG's runs, and the SubmitSpec JSON that points at them."""
    base = tmp_path_factory.mktemp("airflow_ws")
    _write_spec(base / "submit.json", "cluster", base / "warehouse", base / "landing")
    return base


def _write_spec(spec: Path, env: str, warehouse: Path, landing: Path) -> None:
    """Writes the SubmitSpec the DAG reads: the config environment, these folders, the small-shop settings."""
    subprocess.run(
        [sys.executable, "-m", "shoplens.submit", "ingest_landing", "--run-date", "2024-01-01",
         "--env", env, "--conf-dir", str(CONF_DIR),
         "--set", f"paths.warehouse={warehouse}", "--set", f"paths.landing={landing}",
         *[arg for item in (*SMALL_SHOP_OVERRIDES, ONE_JOB_JVM) for arg in ("--set", item)],
         "--write-spec", str(spec)],
        check=True, cwd=ROOT, env={**os.environ, "SHOPLENS_CONF_DIR": str(CONF_DIR)},
    )


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
    # The training pool the DAG's training task uses (docs/AIRFLOW.md: part of deploying the DAG).
    subprocess.run([str(AIRFLOW_BIN / "airflow"), "pools", "set", "shoplens_training", "1", "ShopLens model training"],
                   env=env, cwd=home, check=True, stdout=subprocess.DEVNULL, timeout=300)
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
        # Retried with growing waits; every failed try is recorded by the callback.
        assert task["retries"] >= 2 and task["retry_exponential_backoff"] >= 2 and task["retry_delay_s"] > 0
        assert task["max_retry_delay_s"] >= task["retry_delay_s"] and task["execution_timeout_s"] > 0
        assert task["on_failure_callback"] == task["on_retry_callback"] == ["record_failure"]
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
    # Airflow's try number is the job's attempt in gold.pipeline_runs.
    assert (scheduled["attempt"], result["third_try"]["attempt"]) == ("1", "3")
    # A manual run (and `airflow dags test`) with that logical date processes the same day.
    assert manual["run_date"] == expected, manual
    if variant is None:
        # Its {{ ds }} would be the logical date itself: the reason the DAG does not use it.
        assert manual["logical_date"].startswith("2024-01-03")
        # A run triggered without a logical date has no data interval: it fails, saying why.
        assert "trigger it with a logical date" in result["no_logical_date"].get("error", ""), result


def test_a_failed_try_is_recorded_by_the_callback_with_its_run_date_and_whether_it_retries(airflow_env, tmp_path):
    log = tmp_path / "failures.jsonl"
    env = {**airflow_env, "SHOPLENS_FAILURE_LOG": str(log)}

    retried = _probe(env, "fail", str(DAGS_FOLDER), DAG_ID, "build_sessions", "2024-01-03T00:00:00+00:00", "1")
    final = _probe(env, "fail", str(DAGS_FOLDER), DAG_ID, "build_sessions", "2024-01-03T00:00:00+00:00", "4")

    assert retried == {"final": False, "called": ["record_failure"]}
    assert final == {"final": True, "called": ["record_failure"]}
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["task_id"], r["run_date"], r["try_number"], r["will_retry"]) for r in records] == [
        ("build_sessions", "2024-01-02", 1, True), ("build_sessions", "2024-01-02", 4, False)
    ]
    assert all(r["dag_id"] == DAG_ID and "spark-submit exited with code 1" in r["error"] for r in records)


def test_a_failed_quality_gate_stops_everything_downstream_and_says_why(airflow_env, tmp_path):
    """A night whose landed events fail ingest's Great Expectations gate, run by `airflow dags test`
    with retries off and a local Spark master: ingest fails naming the expectation, every task
    downstream of it is upstream_failed (publish too), and nothing reaches silver or publication."""
    from shoplens.demo import generate

    shop_day, fires_at = "2024-03-01", "2024-03-02T00:00:00+00:00"
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    generate(landing, shop_day, 1, 1000, seed=5, overwrite=True)
    # Valid JSON without an event id, about 13% of the day's lines: above the gate's tolerance.
    events = {"event_time": f"{shop_day}T10:00:00Z", "event_type": "view", "user_id": "u1", "item_id": "i1"}
    (landing / "events" / shop_day / "part-99999.jsonl").write_text((json.dumps(events) + "\n") * 150)
    spec = tmp_path / "submit.json"
    _write_spec(spec, "local", warehouse, landing)
    failures = tmp_path / "failures.jsonl"
    env = {
        **airflow_env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(_dag_variant(tmp_path, ('"retries": 3,', '"retries": 0,'))),
        "AIRFLOW_CONN_SHOPLENS_SPARK": json.dumps({"conn_type": "spark", "host": "local[2]",
                                                   "extra": {"deploy-mode": "client"}}),
        "SHOPLENS_SUBMIT_SPEC": str(spec),
        "SHOPLENS_FAILURE_LOG": str(failures),
        "SHOPLENS_PSEUDONYM_KEY": "airflow-test-key",
    }

    _, out, aborted = _run_watched([str(AIRFLOW_BIN / "airflow"), "dags", "test", DAG_ID, fires_at], env,
                                   timeout_s=1800, abort_on="up_for_retry")

    assert not aborted, f"{aborted}\n{out[-8000:]}"
    assert "QualityGateFailed" in out and "expect_column_values_to_not_be_null on bronze.events.event_id" in out, out[-8000:]
    result = _probe(env, "states", DAG_ID, fires_at)
    tasks = result["tasks"]
    assert result["run"] == "failed" and tasks.pop("ingest_landing") == "failed", result
    # The items feed does not depend on the events: it ran; everything else waits on ingest.
    assert tasks.pop("build_silver_items") == "success", result
    assert tasks and set(tasks.values()) == {"upstream_failed"}, result
    records = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [(r["task_id"], r["run_date"], r["will_retry"]) for r in records] == [("ingest_landing", shop_day, False)]
    assert not (warehouse / "bronze" / "events").exists() and not (warehouse / "silver" / "events").exists()
    assert not (warehouse / "gold" / "published_runs").exists()


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


def _dag_task_ids(env: dict[str, str]) -> set[str]:
    return set(_probe(env, "integrity", str(DAGS_FOLDER))["dags"][DAG_ID]["tasks"])


@pytest.mark.cluster
def test_the_nightly_dag_runs_consecutive_days_on_the_standalone_cluster(
    airflow_env: dict[str, str], workspace: Path, standalone_cluster: str, request: pytest.FixtureRequest
) -> None:
    """`make e2e`: the whole DAG with `airflow dags test`, day after day, every task a cluster application.

    Churn needs labelled history (``churn.horizon_days`` after a snapshot): with a few days of data its
    tables exist but stay empty, as in `make run` (tests/test_pipeline_and_tables.py)."""
    from shoplens import catalog, cluster
    from shoplens import schemas as S
    from shoplens.config import load_config
    from shoplens.demo import generate

    generate(workspace / "landing", E2E_DAYS[0], len(E2E_DAYS), E2E_EVENTS, seed=11, overwrite=True)
    env = {
        **airflow_env,
        "AIRFLOW_CONN_SHOPLENS_SPARK": f"{standalone_cluster}?deploy-mode=client",
        # The worker's secret reaches the silver job through spark-submit's environment.
        "SHOPLENS_PSEUDONYM_KEY": "airflow-test-key",
    }
    tasks = _dag_task_ids(env)
    app_names: dict[str, list[str]] = {}
    for day in E2E_DAYS:
        # `dags test <T>` makes a manual run with logical date T; it processes the shop day that ended at T.
        fires_at = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat() + "T00:00:00+00:00"
        code, out, aborted = _run_watched(
            [str(AIRFLOW_BIN / "airflow"), "dags", "test", DAG_ID, fires_at],
            # A dozen cluster applications (about a minute each on a quiet 2-core machine): the timeout
            # only guards against a hang. A failed try would wait retry_delay: stop instead.
            env, timeout_s=3600, abort_on="up_for_retry",
        )
        # Kept beside the warehouse: each task's log lines and times, for a run that passed too.
        (workspace / f"airflow-dags-test-{day}.log").write_text(out)
        assert code == 0 and not aborted, f"{day}: {aborted}\n{out[-8000:]}"
        app_ids = re.findall(r"Connected to Spark cluster with app ID (app-[0-9-]+)", out)
        apps = {app["id"]: app for app in cluster.master_state(cluster.default_layout())["completedapps"]}
        app_names[day] = [apps[app_id]["name"] for app_id in app_ids]

    for day, names in app_names.items():
        # Every task ran once, as an application of the standalone cluster, for its day, in order.
        assert sorted(names) == sorted(f"shoplens.{task} {day}" for task in tasks), names
        for chain in JOBS_IN_ORDER:
            positions = [names.index(f"shoplens.{job} {day}") for job in chain]
            assert positions == sorted(positions), (day, chain, names)

    spark = request.getfixturevalue("spark")  # only now: no local JVM while the cluster jobs run
    cfg = load_config("cluster", CONF_DIR, [f"paths.warehouse={workspace / 'warehouse'}"])
    days = {dt.date.fromisoformat(d) for d in E2E_DAYS}
    # Written only when there is labelled history (churn) or when the clusters are refitted
    # (clustering.refit_every_days): existence is all a few days can show.
    not_nightly = {"gold.churn_scores", "gold.churn_feature_importance", "gold.churn_models", "gold.cluster_models"}
    for spec in catalog.TABLES:
        location = spec.location(cfg)
        assert catalog.table_exists(spark, location), f"{spec.name} missing at {location}"
        table = spark.read.format("delta").load(location)
        if spec.name in not_nightly:
            continue
        if spec.name.startswith("gold.") and S.RUN_DATE in table.columns:
            dates = {r[0] for r in table.select(S.RUN_DATE).distinct().collect()}
            assert days <= dates, f"{spec.name} has rows for {sorted(dates)}, not both of {sorted(days)}"
        elif spec.name.startswith("gold.") and S.SNAPSHOT_DATE in table.columns:
            dates = {r[0] for r in table.select(S.SNAPSHOT_DATE).distinct().collect()}
            assert days <= dates, f"{spec.name} has rows for {sorted(dates)}, not both of {sorted(days)}"
        elif spec.name.startswith("gold."):
            assert table.limit(1).count() == 1, f"{spec.name} is empty"
    _assert_runs_were_cluster_applications(spark, cfg, tasks)
    silver = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg))
    users = {r[0] for r in silver.select(S.USER_ID).distinct().limit(50).collect() if r[0]}
    # Pseudonymised with the worker's key: hex HMAC-SHA256 digests, never the landed ids.
    assert users and all(re.fullmatch(r"[0-9a-f]{64}", u) for u in users), sorted(users)[:3]


def _assert_runs_were_cluster_applications(spark, cfg, tasks: set[str]) -> None:
    """gold.pipeline_runs holds every task of every day, succeeded, as the application of the
    standalone master that ran it; next-item training ran its Horovod ranks on the executor."""
    import urllib.request

    from pyspark.sql import functions as F

    from shoplens import catalog, cluster
    from shoplens import schemas as S
    from shoplens.models import registry

    layout = cluster.default_layout()
    finished = {app["id"]: app["name"] for app in cluster.master_state(layout)["completedapps"]}
    with urllib.request.urlopen(f"http://127.0.0.1:{layout.worker_ui_port}/json/", timeout=5) as response:
        worker = json.load(response)
    executor_apps = {e["appid"] for e in worker["finishedexecutors"] + worker["executors"]}
    runs = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(cfg))
    for day in E2E_DAYS:
        rows = runs.where(F.col(S.RUN_DATE) == dt.date.fromisoformat(day)).collect()
        assert {r[S.JOB]: r[S.STATUS] for r in rows} == {task: S.STATUS_SUCCEEDED for task in tasks}, rows
        for row in rows:
            assert finished.get(row[S.APP_ID]) == f"shoplens.{row[S.JOB]} {day}", (row, finished)
            assert row[S.APP_ID] in executor_apps, (row[S.JOB], row[S.APP_ID])
        train = next(r for r in rows if r[S.JOB] == "train_next_item")
        driver_pid = int(train[S.DRIVER].rsplit(":", 1)[1])
        meta = registry.read_meta(cfg, S.DATASET_LANDING, dt.date.fromisoformat(day))
        processes = meta["processes"]
        # Two ranks in two processes under the executor's JVM, neither of them the driver.
        assert [p["rank"] for p in processes] == [0, 1] and meta["hvd_size"] == 2, processes
        assert len({p["pid"] for p in processes}) == 2 and driver_pid not in {p["pid"] for p in processes}
        for process in processes:
            assert "org.apache.spark.executor.CoarseGrainedExecutorBackend" in process["jvm_command"], process
            assert process["jvm_pid"] != driver_pid
