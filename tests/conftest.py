"""Shared fixtures: one local Spark session per test run, a temp warehouse, the standalone cluster."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Tests that use the standalone cluster or Airflow share fixed ports and one cluster: under
# pytest-xdist (`make test` runs two workers with --dist loadgroup) they all run on one worker.
SERIAL_GROUP = "cluster-and-airflow"


def _is_serial(item: pytest.Item) -> bool:
    return item.get_closest_marker("cluster") is not None or item.get_closest_marker("airflow") is not None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups tests for pytest-xdist's loadgroup: the cluster's and Airflow's tests together, every
    other test with its file (so a module's fixtures are built once)."""
    for item in items:
        group = SERIAL_GROUP if _is_serial(item) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not _is_serial(item))


# What each group cost in `make test` (seconds of one worker, the other one busy beside it; the run
# of 2026-12-07 in docs/BENCHMARKS.md). Only the order matters: the scheduler hands out the costliest
# group left, so the long ones start first and the short ones fill in at the end (longest processing
# time first). A group not listed counts DEFAULT_TEST_SECONDS per test.
GROUP_SECONDS = {
    SERIAL_GROUP: 1680,
    "tests/test_runs.py": 490,
    "tests/test_backfill.py": 400,
    "tests/test_pipeline_and_tables.py": 340,
    "tests/test_adapters.py": 250,
    "tests/test_recommendations.py": 190,
    "tests/test_train_next_item.py": 185,
    "tests/test_sequences.py": 155,
    "tests/test_profiles.py": 145,
    "tests/test_silver_events.py": 140,
    "tests/test_demo_reconciliation.py": 130,
    "tests/test_sessions.py": 130,
    "tests/test_churn_value.py": 110,
    "tests/test_bulk_history.py": 75,
}
DEFAULT_TEST_SECONDS = 5


def group_cost(group: str, tests: int) -> float:
    return GROUP_SECONDS.get(group, DEFAULT_TEST_SECONDS * tests)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pytest-xdist's loadgroup, but costliest group first. xdist orders the groups by their number
    of tests, which started the one-day DAG (a few tests, twenty minutes) last, as the run's tail."""
    from xdist.scheduler import LoadGroupScheduling

    class CostliestGroupFirst(LoadGroupScheduling):
        def _assign_work_unit(self, node) -> None:
            costliest = max(self.workqueue, key=lambda group: group_cost(group, len(self.workqueue[group])))
            self.workqueue.move_to_end(costliest, last=False)
            super()._assign_work_unit(node)

    return CostliestGroupFirst(config, log)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# For tests that run whole nights of a shop of a few thousand events on 2 cores (`make run`, the
# DAG): two partitions per shuffle and per Delta snapshot, one ALS grid point, one k for the clusters
# and tiny next-item models (both candidates still train). Such runs prove the wiring, not quality.
# Short leases so that a run after a killed one breaks its locks in seconds, not minutes.
# For JVMs that live for one job on a tiny shop (spark-submitted applications, killed and retried
# jobs): C1 only. A cluster application of the DAG's size took 40 s with the default JIT and 27 s
# with this; the tests' long-lived local session is faster with C2 (docs/BENCHMARKS.md).
ONE_JOB_JVM = "spark.jit=c1"
FAST_RUNS = ("runs.lease_s=2", "runs.heartbeat_s=0.5", "runs.poll_s=0.2", "runs.lock_wait_s=30")
SMALL_SHOP_OVERRIDES = (
    "spark.conf.spark.sql.shuffle.partitions=2", "spark.conf.spark.default.parallelism=2",
    "spark.conf.spark.databricks.delta.snapshotPartitions=2",
    "als.max_iter=3", "als.grid.rank=[8]", "als.grid.alpha=[1.0]", "profiles.clusters.k_max=3",
    "seqrec.epochs=2", "seqrec.gru4rec.embedding_dim=8", "seqrec.gru4rec.hidden_units=[8]",
    "seqrec.sasrec.embedding_dim=8", "seqrec.sasrec.num_blocks=1",
)


@pytest.fixture(scope="session")
def local_overrides(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Config overrides that point the local environment at this test run's own folders."""
    base = tmp_path_factory.mktemp("shoplens")
    return [
        f"paths.warehouse={base / 'warehouse'}",
        f"paths.landing={base / 'landing'}",
        "spark.conf.spark.sql.shuffle.partitions=2",
        "spark.conf.spark.default.parallelism=2",
    ]


@pytest.fixture(scope="session")
def cfg(local_overrides: list[str]):
    from shoplens.config import load_config

    return load_config("local", CONF_DIR, local_overrides)


@pytest.fixture(scope="session")
def spark(cfg):
    from shoplens.session import build_session

    session = build_session(cfg, "shoplens-tests")
    yield session
    session.stop()


@pytest.fixture()
def fresh_cfg(tmp_path: Path, cfg):
    """A config whose warehouse and landing folders are empty and private to one test."""
    import dataclasses

    paths = dataclasses.replace(
        cfg.paths, warehouse=str(tmp_path / "warehouse"), landing=str(tmp_path / "landing")
    )
    return dataclasses.replace(cfg, paths=paths)


@pytest.fixture(scope="session")
def standalone_cluster() -> Iterator[str]:
    """The Spark standalone master URL; starts the cluster unless it runs already, and then stops it."""
    from shoplens import cluster

    layout = cluster.default_layout()
    was_running = cluster.master_state(layout) is not None
    url = cluster.up(layout)
    yield url
    if not was_running:
        cluster.down(layout)


@pytest.fixture()
def fixture_landing(tmp_path: Path) -> Path:
    """A private copy of the embedded fixture landing folder."""
    from shoplens.demo import FIXTURE_LANDING

    target = tmp_path / "landing"
    shutil.copytree(FIXTURE_LANDING, target)
    return target
