"""What importing a job costs: only the jobs that train or score a model import TensorFlow or Horovod."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import shoplens.jobs

from .conftest import ROOT

# The jobs whose run trains or scores a next-item model, or checks Horovod itself.
MODEL_JOBS = frozenset({"train_next_item", "score_next_item", "check_horovod"})
HEAVY = ("tensorflow", "horovod")

# In a fresh interpreter: imports each module in turn and maps each heavy package found in
# sys.modules to the module whose import brought it in.
_PROBE = """
import importlib, json, sys
heavies, found = sys.argv[1].split(","), {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    found.update({h: name for h in heavies if h in sys.modules and h not in found})
print(json.dumps(found))
"""


def test_jobs_that_never_train_import_neither_tensorflow_nor_horovod():
    jobs = sorted(m.name for m in pkgutil.iter_modules(shoplens.jobs.__path__) if m.name not in MODEL_JOBS)
    assert {"ingest_landing", "build_sessions", "publish"} <= set(jobs)
    # The local pipeline and the backfill import every job; a model job imports TensorFlow when it runs.
    modules = [f"shoplens.jobs.{name}" for name in jobs] + ["shoplens.pipeline", "shoplens.backfill"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY), *modules], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == {}, "heavy package: the module that imported it"


def test_a_spark_submitted_driver_imports_the_installed_pyspark_not_its_zip():
    """spark-submit puts pyspark.zip first on the driver's path; importing shoplens takes the zip of
    the installed package out, so pyspark's modules come compiled from the package itself."""
    import pyspark

    from shoplens import _installed_spark_zips

    lib = os.path.join(os.path.dirname(pyspark.__file__), "python", "lib")
    zips = sorted(os.path.join(lib, name) for name in os.listdir(lib) if name.endswith(".zip"))
    assert [os.path.basename(z) for z in zips] == ["py4j-0.10.9.9-src.zip", "pyspark.zip"]
    probe = "import shoplens.jobs.build_user_activity, pyspark, py4j, json; print(json.dumps([pyspark.__file__, py4j.__file__]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*zips, str(ROOT / "lib")])}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert all(".zip" not in f for f in json.loads(run.stdout.strip().splitlines()[-1]))
    # A Spark distribution's own zip (no installed package around it) is what its driver must use.
    assert _installed_spark_zips(["/opt/spark/python/lib/pyspark.zip", *zips, "/opt/py4j-0.10.9.1-src.zip"]) == zips
    assert _installed_spark_zips([os.path.join(lib, "py4j-0.10.9.1-src.zip")]) == []
