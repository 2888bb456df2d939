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
