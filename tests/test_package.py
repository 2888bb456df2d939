"""The packaged job (`make package`) runs on the standalone cluster like the job from the clone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import subprocess
import urllib.request
import zipfile
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shoplens import catalog, package, submit
from shoplens import schemas as S
from shoplens.demo import FIXTURE_LANDING

from .conftest import ONE_JOB_JVM, ROOT
from .test_horovod import assert_ranks_agree_after_training

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> submit.SubmitSpec:
    dist = tmp_path_factory.mktemp("dist")
    python = package._base_interpreter(str(ROOT / ".venv" / "bin" / "python"))
    return package.build(dist, ROOT / "build", python, [ONE_JOB_JVM])


def test_package_holds_what_a_cluster_needs(packaged):
    spec_on_disk = submit.load_package_spec(Path(packaged.conf_dir).parent)
    assert spec_on_disk == packaged
    assert packaged.archives[0].endswith("shoplens-env.tar.gz#environment")
    assert packaged.conf["spark.pyspark.python"] == "./environment/bin/python"
    assert packaged.conf["spark.executor.extraJavaOptions"].endswith("-XX:TieredStopAtLevel=1")  # the override
    assert all(Path(j).is_file() for j in packaged.conf["spark.jars"].split(","))
    listing = subprocess.run(["tar", "tzf", packaged.archives[0].split("#")[0]], capture_output=True, text=True, check=True).stdout
    assert "lib/python3.11/site-packages/tensorflow/__init__.py" in listing
    assert "lib/python3.11/site-packages/horovod/spark/__init__.py" in listing
    assert "shoplens" not in listing  # the project itself travels in shoplens.zip
    with zipfile.ZipFile(packaged.py_files[0]) as zf:
        assert "shoplens/jobs/ingest_landing.py" in zf.namelist()


def test_packaged_ingest_runs_on_the_cluster(packaged, standalone_cluster, tmp_path, spark):
    shutil.copytree(FIXTURE_LANDING, tmp_path / "landing")
    spec = dataclasses.replace(
        packaged,
        master=standalone_cluster,
        # The job's own session sets the executors' options from its configuration: C1 there too.
        overrides=(f"paths.warehouse={tmp_path / 'wh'}", f"paths.landing={tmp_path / 'landing'}", ONE_JOB_JVM),
    )
    argv = submit.command(spec, "ingest_landing", "2024-01-02", submit.spark_submit_path())
    result = subprocess.run(argv, env=submit.submit_env(spec), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    # spark-submit's PythonRunner merges the driver's stderr (our logging) into its stdout.
    assert "ingested 2024-01-02: 37 lines landed, 36 accepted, 1 quarantined" in result.stdout

    bronze = spark.read.format("delta").load(str(tmp_path / "wh" / "bronze" / "events"))
    assert bronze.groupBy(S.RUN_DATE).count().collect() == [(dt.date(2024, 1, 2), 36)]
    assert {r[S.SOURCE_FILE].rsplit("/", 1)[-1] for r in bronze.select(S.SOURCE_FILE).distinct().collect()} == {
        "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"
    }
    quarantine = spark.read.format("delta").load(str(tmp_path / "wh" / "silver" / "quarantine"))
    assert quarantine.where(F.col(S.REASON) == "malformed_json").count() == 1
    assert catalog.table_exists(spark, str(tmp_path / "wh" / "ops" / "quality_results"))
    apps = json.loads(urllib.request.urlopen("http://127.0.0.1:8080/json/", timeout=5).read())
    assert any(a["name"] == "shoplens.ingest_landing 2024-01-02" for a in apps["completedapps"])


@pytest.mark.horovod
def test_packaged_horovod_trains_in_the_shipped_environment_on_the_executors(packaged, standalone_cluster, tmp_path):
    spec = dataclasses.replace(packaged, master=standalone_cluster, overrides=(f"paths.warehouse={tmp_path / 'wh'}", ONE_JOB_JVM))
    argv = submit.command(spec, "check_horovod", "2024-01-02", submit.spark_submit_path())
    result = subprocess.run(argv, env=submit.submit_env(spec), capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    driver_pid = report["driver_pid"]
    ranks = assert_ranks_agree_after_training(report, driver_pid)
    # Both ranks in the one executor (2 cores).
    assert len({r["ancestors"][-1]["pid"] for r in ranks}) == 1
    for rank in ranks:
        # In the executor's JVM, which is neither the driver's nor its child.
        assert driver_pid not in {p["pid"] for p in rank["ancestors"]} and rank["ancestors"][-1]["ppid"] != driver_pid
        # TensorFlow and Horovod came from the archive Spark unpacked for the executor, not from
        # the driver's environment.
        assert rank["python"].endswith("/environment/bin/python"), rank["python"]
        assert "/work/main/.venv/" not in rank["tensorflow_file"] and "/environment/" in rank["tensorflow_file"]
        assert "CoarseGrainedExecutorBackend" in rank["ancestors"][-1]["cmdline"]
