"""Backfills: a night processed late, asked for out of order, ends as running every night in order."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from shoplens import backfill, catalog, demo, pipeline, runs, submit
from shoplens import schemas as S
from shoplens.config import load_config

from .conftest import CONF_DIR, FAST_RUNS, ONE_JOB_JVM, ROOT, SMALL_SHOP_OVERRIDES

D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)
# The nightly chain whose tables carry state from night to night: silver (late events), sessions
# (continued), the item vocabulary (indices by first night), daily activity and profiles (rolled
# up). Training, ALS and scoring read these and add minutes per night without adding order.
STEPS = {name: pipeline.STEPS[name] for name in (
    "ingest_landing", "build_silver_events", "build_silver_items", "build_sessions", "build_sequences",
    "build_user_activity", "build_user_profiles",
)}
# make test's chain stops at the item vocabulary and sequences (the rolled-up activity and profiles
# cost a third of a night more), and nothing is killed in its rewind: about 4 minutes on 2 cores.
# make e2e runs the whole chain with the kill.
CHAINS = {
    "nightly": STEPS,
    "silver-to-sequences": {name: STEPS[name] for name in list(STEPS)[:5]},
}
# The run record is not rewound; the published nights are not written by these steps.
NOT_COMPARED = (catalog.PIPELINE_RUNS, catalog.PUBLISHED_RUNS)


def _overrides(warehouse: Path, landing: Path) -> list[str]:
    # Short leases: the re-run of a killed backfill breaks its locks in seconds.
    return [f"paths.warehouse={warehouse}", f"paths.landing={landing}", *SMALL_SHOP_OVERRIDES, *FAST_RUNS, ONE_JOB_JVM]


def _args(warehouse: Path, landing: Path) -> argparse.Namespace:
    return argparse.Namespace(env="local", conf_dir=str(CONF_DIR), overrides=_overrides(warehouse, landing), demo=True)


def _night(warehouse: Path, landing: Path, run_date: dt.date, steps=STEPS) -> None:
    for name, main_of_job in steps.items():
        assert main_of_job(pipeline.job_argv(name, run_date, _args(warehouse, landing))) == 0, name


def _versions(spark, cfg) -> dict[str, int]:
    from delta.tables import DeltaTable

    return {
        spec.name: DeltaTable.forPath(spark, spec.location(cfg)).history(1).first()["version"]
        for spec in catalog.TABLES
        if spec not in NOT_COMPARED and catalog.table_exists(spark, spec.location(cfg))
    }


def _last_operation(spark, cfg, spec) -> str:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, spec.location(cfg)).history(1).first()["operation"]


def _table(spark, cfg, spec):
    table = spark.read.format("delta").load(spec.location(cfg))
    # The KMeans model's folder names its warehouse.
    table = table.drop(S.MODEL_PATH) if S.MODEL_PATH in table.columns else table
    # Maps as sorted entries, so rows compare and sort.
    return table.select([
        F.array_sort(F.map_entries(f.name)).alias(f.name) if isinstance(f.dataType, T.MapType) else F.col(f.name)
        for f in table.schema.fields
    ])


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("backfill") / "landing"
    demo.generate(folder, D1, 3, 1500, 11)
    return folder


@pytest.mark.parametrize("chain", [
    # Six nights of the chain, a killed rewind and its re-run: about 7 minutes on 2 cores, make e2e's.
    pytest.param("nightly", marks=pytest.mark.slow),
    "silver-to-sequences",
])
def test_a_missed_night_is_refused_then_backfilled_out_of_order_to_the_in_order_tables(spark, tmp_path, landing, chain):
    steps = CHAINS[chain]
    kill = chain == "nightly"
    in_order, late = tmp_path / "in_order", tmp_path / "late"
    cfg_in_order = load_config("local", str(CONF_DIR), _overrides(in_order, landing))
    cfg_late = load_config("local", str(CONF_DIR), _overrides(late, landing))

    _night(in_order, landing, D1, steps)
    shutil.copytree(in_order, late)  # both warehouses share night D1
    _night(in_order, landing, D2, steps)
    _night(in_order, landing, D3, steps)

    # The late warehouse missed D2: D3 ran first. D2 on its own now is refused, recorded, and writes nothing.
    _night(late, landing, D3, steps)
    before = _versions(spark, cfg_late)
    missed = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg_late)).where(F.col(S.EVENT_DATE) == D2)
    assert missed.count() < _table(spark, cfg_in_order, catalog.SILVER_EVENTS).where(F.col(S.EVENT_DATE) == D2).count()
    with pytest.raises(runs.OutOfOrderRun, match=r"ingest_landing already succeeded for later run dates \(2024-01-03\).*"
                       r"python -m shoplens\.backfill --dates 2024-01-02"):
        STEPS["ingest_landing"](pipeline.job_argv("ingest_landing", D2, _args(late, landing)))
    assert _versions(spark, cfg_late) == before
    record = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(cfg_late))
    refused = record.where((F.col(S.JOB) == "ingest_landing") & (F.col(S.RUN_DATE) == F.lit(D2))).collect()
    assert [(r[S.STATUS], r[S.ERROR].split(":")[0]) for r in refused] == [("failed", "OutOfOrderRun")]

    # Asked for out of order (D3 before D2): the plan is D2 then D3, from the end of D1. A dry run changes nothing.
    argv = ["--dates", "2024-01-03,2024-01-02", "--demo", "--conf-dir", str(CONF_DIR)]
    for item in _overrides(late, landing):
        argv += ["--set", item]
    dry = backfill.backfill(spark, cfg_late, backfill.parse_args([*argv, "--dry-run"]), steps, pipeline.job_argv)
    assert (dry["dates"], dry["base"]) == (["2024-01-02", "2024-01-03"], "2024-01-01")
    assert dry["rewind"]["silver.events"] < before["silver.events"]
    assert _versions(spark, cfg_late) == before

    if kill:
        # Killed in its rewind right after gold.sessions went back: every table still reads, some rewound.
        env = {**os.environ, runs.FAULT_ENV_VAR: "backfill:after_commit:gold.sessions", "PYTHONPATH": str(ROOT / "lib")}
        killed = subprocess.run(
            [sys.executable, "-m", "shoplens.backfill", *argv, "--rewind-only"],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert "fault hook: after_commit of gold.sessions" in killed.stderr
        assert _last_operation(spark, cfg_late, catalog.SESSIONS) == "RESTORE"
        assert _last_operation(spark, cfg_late, catalog.USER_PROFILES) != "RESTORE"
        for spec in catalog.TABLES:
            if catalog.table_exists(spark, spec.location(cfg_late)):
                spark.read.format("delta").load(spec.location(cfg_late)).count()

    # The backfill (after a kill: its re-run, breaking the dead run's locks, leaves the tables the
    # dead run had rewound as they are) rewinds to the versions the dry run named, and replays D2, D3.
    done = backfill.backfill(spark, cfg_late, backfill.parse_args(argv), steps, pipeline.job_argv)
    assert done["dates"] == ["2024-01-02", "2024-01-03"]
    if kill:
        assert "gold.sessions" not in done["rewind"] and "silver.events" not in done["rewind"]
        assert done["rewind"]["gold.user_profiles"] == dry["rewind"]["gold.user_profiles"]
    else:
        assert done["rewind"] == dry["rewind"]

    compared = []
    for spec in catalog.TABLES:
        if spec in NOT_COMPARED:
            continue
        exists = catalog.table_exists(spark, spec.location(cfg_in_order))
        assert catalog.table_exists(spark, spec.location(cfg_late)) == exists, spec.name
        if exists:
            assertDataFrameEqual(_table(spark, cfg_late, spec), _table(spark, cfg_in_order, spec))
            compared.append(spec.name)
    assert {"silver.events", "silver.items", "gold.sessions", "gold.item_vocab", "gold.sequence_examples"} <= set(compared)
    assert ("gold.user_profiles" in compared) == ("build_user_profiles" in steps)

    # The record tells the story: D3's first run rewound, the backfill, then D2 and D3 succeeded in order.
    record = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(cfg_late))
    sessions = record.where(F.col(S.JOB) == "build_sessions").orderBy(S.STARTED_AT).collect()
    assert [(str(r[S.RUN_DATE]), r[S.STATUS]) for r in sessions] == [
        ("2024-01-01", "succeeded"), ("2024-01-03", "rewound"), ("2024-01-02", "succeeded"), ("2024-01-03", "succeeded"),
    ]
    assert "rewound to the end of 2024-01-01 by a backfill of 2024-01-02, 2024-01-03" in sessions[1][S.ERROR]
    rewind_run = record.where(F.col(S.JOB) == backfill.JOB).orderBy(S.ATTEMPT).collect()
    assert [(str(r[S.RUN_DATE]), r[S.ATTEMPT], r[S.STATUS]) for r in rewind_run] == [
        *([("2024-01-02", 1, "abandoned")] if kill else []), ("2024-01-02", 1 + kill, "succeeded"),
    ]
    # The last attempt committed the rewinds the killed one (if any) had not reached.
    assert set(rewind_run[-1][S.TABLE_VERSIONS]) == set(done["rewind"])
    later = "gold.user_profiles" if kill else "gold.sequence_examples"
    assert rewind_run[-1][S.TABLE_VERSIONS][later] > before[later]

    # The pipeline asked for D2 again on this warehouse (`--run-date 2024-01-02`) reads the backfill's
    # own commits back: the same rewind to the end of D1, then D2 and D3 to run.
    assert pipeline._rewind_if_run_before(spark, cfg_late, [D2], [], False) == [D2, D3]
    events = spark.read.format("delta").load(catalog.SILVER_EVENTS.location(cfg_late))
    assert events.where(F.col(S.EVENT_DATE) > D1).count() == 0 < events.count()
    record = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(cfg_late))
    sessions = record.where(F.col(S.JOB) == "build_sessions").orderBy(S.STARTED_AT).collect()
    assert [(str(r[S.RUN_DATE]), r[S.STATUS]) for r in sessions][-2:] == [("2024-01-02", "rewound"), ("2024-01-03", "rewound")]


def test_the_rewind_restores_each_table_to_the_end_of_the_night_before_and_empties_later_ones(spark, tmp_path):
    # Small commits through the runs' own machinery (run lock, commit tags, records), so make test
    # exercises the rewind on real Delta tables: sessions gets one row per night, profiles appear on D2.
    cfg = load_config("local", str(CONF_DIR), [f"paths.warehouse={tmp_path}", *FAST_RUNS])
    sessions, profiles = catalog.SESSIONS.location(cfg), catalog.USER_PROFILES.location(cfg)

    def append(location: str, day: dt.date) -> None:
        spark.createDataFrame([(day.isoformat(),)], "night string").write.format("delta").mode("append").save(location)

    for day in (D1, D2, D3):
        with runs.job_run(spark, cfg, "build_sessions", day):
            runs.commit(spark, catalog.SESSIONS, cfg, lambda d=day: append(sessions, d))
            if day > D1:
                runs.commit(spark, catalog.USER_PROFILES, cfg, lambda d=day: append(profiles, d))
    p = backfill.plan(spark, cfg, [D2], ["build_sessions"])
    assert (p.dates, p.base) == ((D2, D3), D1)

    done, folders = backfill.rewind_as_run(spark, cfg, p, ["build_sessions"])
    assert {(r.table, r.to_version) for r in done} == {("gold.sessions", 0), ("gold.user_profiles", None)}
    assert folders == []
    assert [r[0] for r in spark.read.format("delta").load(sessions).collect()] == ["2024-01-01"]
    assert spark.read.format("delta").load(profiles).count() == 0
    assert _last_operation(spark, cfg, catalog.SESSIONS) == "RESTORE"
    record = spark.read.format("delta").load(catalog.PIPELINE_RUNS.location(cfg)).orderBy(S.STARTED_AT).collect()
    assert [(r[S.JOB], str(r[S.RUN_DATE]), r[S.STATUS]) for r in record] == [
        ("build_sessions", "2024-01-01", "succeeded"), ("build_sessions", "2024-01-02", "rewound"),
        ("build_sessions", "2024-01-03", "rewound"), ("backfill", "2024-01-02", "succeeded"),
    ]
    # The rewound nights still count as planned; nothing is left to undo once they are.
    assert backfill.plan(spark, cfg, [D2], ["build_sessions"]).dates == (D2, D3)
    assert backfill.rewinds(spark, cfg, D1, ["build_sessions"]) == []
    # A commit by a job the replay does not run is never undone: refused, nothing changed.
    with runs.job_run(spark, cfg, "load_history", D3):
        runs.commit(spark, catalog.SESSIONS, cfg, lambda: append(sessions, D3))
    with pytest.raises(backfill.BackfillError, match=r"gold\.sessions would lose load_history 2024-01-03"):
        backfill.rewinds(spark, cfg, D1, ["build_sessions"])


def test_the_rewind_finds_the_model_folders_made_after_its_base(tmp_path):
    cfg = load_config("local", str(CONF_DIR), [f"paths.warehouse={tmp_path}"])
    assert backfill.model_folders_after(cfg, D1) == []
    models = tmp_path / "models"
    kept = [
        "next_item_runs/dataset=landing/grain=user/run_date=2024-01-01/model=sasrec",
        "next_item/dataset=landing/run_date=2024-01-01/model",
        "user_clusters/dataset=landing/fit_date=2023-12-25",
    ]
    after = [
        "next_item_runs/dataset=landing/grain=user/run_date=2024-01-02",
        "next_item_runs/dataset=taobao/grain=session/run_date=2024-01-03",
        "next_item/dataset=landing/run_date=2024-01-03",
        "user_clusters/dataset=landing/fit_date=2024-01-02",
    ]
    for folder in [*kept, *[f"{a}/model" for a in after], "next_item/dataset=landing/_tmp-2024-01-05-abc/model"]:
        (models / folder).mkdir(parents=True)
    assert backfill.model_folders_after(cfg, D1) == sorted(str(models / a) for a in after)


def test_the_backfill_is_submitted_like_a_job_with_its_own_arguments(capsys):
    assert submit.main([
        "backfill", "--run-date", "2024-01-02", "--env", "cluster", "--conf-dir", str(CONF_DIR),
        "--set", "paths.warehouse=/tmp/wh", "--print", "--", "--rewind-only",
    ]) == 0
    argv = capsys.readouterr().out.split()
    application = argv.index(str(CONF_DIR.parent / "jobs" / "backfill.py"))
    args = backfill.parse_args(argv[application + 1:])
    assert (args.dates, args.rewind_only, args.env, args.overrides) == ([D2], True, "cluster", ["paths.warehouse=/tmp/wh"])
    with pytest.raises(SystemExit):
        backfill.parse_args(["--dates", "2024-01-02", "--run-date", "2024-01-03"])
    assert backfill.parse_args(["--dates", "2024-01-05,2024-01-02"]).dates == [dt.date(2024, 1, 5), D2]


def _commit(version: int, tag: str | None, operation: str = "WRITE", restored: int | None = None) -> dict:
    metadata = None if tag is None else f"shoplens {tag} attempt 1 commit 1 ab12cd34"
    return {"version": version, "userMetadata": metadata, "operation": operation,
            "operationParameters": None if restored is None else {"version": str(restored)}}


def test_the_end_of_a_night_is_read_back_through_earlier_backfills():
    end = backfill.end_of_base
    # D1, then D3 (D2 missed), then a backfill of D2 (RESTORE to the end of D1) and its replay of D2, D3.
    history = [
        _commit(0, "ingest_landing 2024-01-01"), _commit(1, "ingest_landing 2024-01-01"),
        _commit(2, "ingest_landing 2024-01-03"), _commit(3, "backfill 2024-01-02", "RESTORE", 1),
        _commit(4, "ingest_landing 2024-01-02"), _commit(5, "ingest_landing 2024-01-03"),
    ]
    # A second backfill from D3 keeps the replayed D2; one from D2 again goes back to the first's RESTORE.
    assert end(history, D2) == backfill.EndOfBase(4, ("ingest_landing 2024-01-03",))
    assert end(history, D1).version == 3
    # Before the first night the table did not exist: every row goes.
    assert end(history, D1 - dt.timedelta(days=1)).version is None
    # A bulk load dated before the base but committed after a later night cannot be kept while undoing that night.
    loaded = [*history[:3], _commit(3, "load_history 2011-12-09")]
    assert end(loaded, D1).blocked == ("load_history 2011-12-09 (version 3)",)
    # A log cleaned up before the base's version: refused rather than guessed.
    assert end([_commit(7, "ingest_landing 2024-01-03")], D1).version == backfill.BEFORE_HISTORY
    assert end([_commit(0, None), _commit(1, "ingest_landing 2024-01-01")], D1) == backfill.EndOfBase(1)
