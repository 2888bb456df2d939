"""Run by Airflow's own interpreter (.venv-airflow), never imported by pytest: parses a DAG folder as
Airflow's DAG processor does and prints what tests/test_airflow.py checks, as one JSON line after
``PROBE-RESULT``.

    python tests/airflow_probe.py integrity <dag_folder>
    python tests/airflow_probe.py render <dag_folder> <dag_id> <task_id> <fires_at ISO>
    python tests/airflow_probe.py fail <dag_folder> <dag_id> <task_id> <fires_at ISO> <try_number>
    python tests/airflow_probe.py states <dag_id> <logical_date ISO>

``render`` renders the task's templated arguments, with the context Airflow's task runner builds,
for the scheduled run that fires at ``fires_at``, for a manual run (and ``airflow dags test``) with
that logical date, and for a manual run without a logical date. ``fail`` calls the task's failure
callbacks as the task runner does for a try that raised, with that try number. ``states`` reads the
state of the DAG run with that logical date, and of each of its task instances, from Airflow's database.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pendulum
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import DataInterval, TimeRestriction


def _bag(folder: str) -> BundleDagBag:
    # BundleDagBag puts the folder on sys.path, as the DAG processor and the task runner do.
    return BundleDagBag(dag_folder=folder, bundle_path=Path(folder))


def integrity(folder: str) -> dict:
    bag = _bag(folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "file": Path(dag.fileloc).name,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "start_date": dag.start_date.isoformat() if dag.start_date else None,
            "start_date_tz": str(dag.start_date.tzinfo) if dag.start_date else None,
            "timetable": type(dag.timetable).__name__,
            "timetable_args": coerce_to_core_timetable(dag.timetable).serialize(),
            "tasks": {
                task.task_id: {
                    "operator": type(task).__name__,
                    "retries": task.retries,
                    "retry_delay_s": task.retry_delay.total_seconds(),
                    "retry_exponential_backoff": task.retry_exponential_backoff,
                    "max_retry_delay_s": task.max_retry_delay.total_seconds() if task.max_retry_delay else None,
                    "execution_timeout_s": task.execution_timeout.total_seconds() if task.execution_timeout else None,
                    "pool": task.pool,
                    "on_failure_callback": [f.__name__ for f in task.on_failure_callback],
                    "on_retry_callback": [f.__name__ for f in task.on_retry_callback],
                    "application": getattr(task, "application", None),
                    "conn_id": getattr(task, "_conn_id", None),
                    "deploy_mode": getattr(task, "_deploy_mode", None),
                    "env_vars": getattr(task, "env_vars", None),
                }
                for task in dag.tasks
            },
        }
    return {
        "import_errors": {Path(k).name: v for k, v in bag.import_errors.items()},
        "dags": dags,
        "spark_side_modules_loaded": sorted(m for m in ("shoplens", "pyspark") if m in sys.modules),
    }


def _context(folder: str, dag_id: str, task_id: str, logical_date, interval: DataInterval | None, run_after,
             try_number: int = 1):
    # Rendering changes the task in place: every run renders a freshly parsed one, as a worker does.
    dag = _bag(folder).dags[dag_id]
    task = dag.get_task(task_id)
    dag_run = DagRun(
        dag_id=dag.dag_id,
        run_id="probe",
        logical_date=logical_date,
        data_interval_start=interval.start if interval else None,
        data_interval_end=interval.end if interval else None,
        run_after=run_after,
        start_date=run_after,
        end_date=None,
        run_type="scheduled",
        state="running",
        consumed_asset_events=[],
        partition_key=None,
    )
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task_id,
        dag_id=dag.dag_id,
        run_id="probe",
        try_number=try_number,
        map_index=-1,
        dag_version_id=uuid.uuid4(),
        task=task,
        start_date=run_after,
        _ti_context_from_server=TIRunContext(dag_run=dag_run, max_tries=task.retries),
    )
    return ti.get_template_context()


def _render(folder: str, dag_id: str, task_id: str, logical_date, interval: DataInterval | None, run_after,
            try_number: int = 1) -> dict:
    context = _context(folder, dag_id, task_id, logical_date, interval, run_after, try_number)
    try:
        context["task"].render_template_fields(context)
    except Exception as err:  # reported, and checked by the test
        return {"error": f"{type(err).__name__}: {err}"}
    args = context["task"].application_args
    return {
        "logical_date": logical_date.isoformat() if logical_date else None,
        "data_interval": [interval.start.isoformat(), interval.end.isoformat()] if interval else None,
        "run_after": run_after.isoformat(),
        "run_date": args[args.index("--run-date") + 1],
        "attempt": args[args.index("--attempt") + 1],
        "name": context["task"].name,
    }


def render(folder: str, dag_id: str, task_id: str, fires_at: str) -> dict:
    bag = _bag(folder)
    if dag_id not in bag.dags:
        return {"import_errors": bag.import_errors}
    dag = bag.dags[dag_id]
    fires = pendulum.parse(fires_at)
    timetable = coerce_to_core_timetable(dag.timetable)  # the scheduler's view of the timetable
    # The scheduler's runs from the start date on, up to the one that fires at `fires`.
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    last, info = None, None
    for _ in range(100_000):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.run_after >= fires:
            break
        last = info.data_interval
    scheduled = _render(folder, dag_id, task_id, info.logical_date, info.data_interval, info.run_after)
    # A manual run with logical date L (UI, REST API, `airflow dags test <L>`): data interval
    # inferred from L as run_after.
    manual_interval = timetable.infer_manual_data_interval(run_after=fires)
    manual = _render(folder, dag_id, task_id, fires, manual_interval, fires)
    no_logical_date = _render(folder, dag_id, task_id, None, None, fires)
    third_try = _render(folder, dag_id, task_id, info.logical_date, info.data_interval, info.run_after, try_number=3)
    return {"scheduled": scheduled, "manual": manual, "no_logical_date": no_logical_date, "third_try": third_try}


def fail(folder: str, dag_id: str, task_id: str, fires_at: str, try_number: str) -> dict:
    """Calls the task's on-retry or on-failure callbacks (as the task runner picks them for this try)
    for a try that raised, after rendering its fields as the runner does."""
    fires = pendulum.parse(fires_at)
    timetable = coerce_to_core_timetable(_bag(folder).dags[dag_id].timetable)
    interval = timetable.infer_manual_data_interval(run_after=fires)
    context = _context(folder, dag_id, task_id, fires, interval, fires, int(try_number))
    task = context["task"]
    task.render_template_fields(context)
    context["exception"] = RuntimeError("spark-submit exited with code 1 (probe)")
    final = int(try_number) > task.retries
    callbacks = task.on_failure_callback if final else task.on_retry_callback
    for callback in callbacks:
        callback(context)
    return {"final": final, "called": [f.__name__ for f in callbacks]}


def states(dag_id: str, logical_date: str) -> dict:
    from airflow.models import DagRun as DagRunRow
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (
            session.query(DagRunRow)
            .filter(DagRunRow.dag_id == dag_id, DagRunRow.logical_date == pendulum.parse(logical_date))
            .one()
        )
        tasks = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        return {"run": _state(run.state), "tasks": {ti.task_id: _state(ti.state) for ti in tasks}}


def _state(state) -> str | None:
    return getattr(state, "value", state)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    result = {"integrity": integrity, "render": render, "fail": fail, "states": states}[command](*args)
    print("PROBE-RESULT " + json.dumps(result, default=str))
