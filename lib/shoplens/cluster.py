"""A Spark standalone cluster on 127.0.0.1 (one master, one worker) from the pip-installed Spark.

``python -m shoplens.cluster up|down|status`` (``make cluster-up`` / ``make cluster-down``). pip's
pyspark ships ``bin/spark-class`` but not ``sbin/start-master.sh``, so the daemons are started with
``spark-class``; every socket binds to loopback (``SPARK_LOCAL_IP``), pid files and logs live under
``var/cluster/``, and ``down`` leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ClusterLayout:
    """Ports and folders of the local cluster; the defaults match ``conf/cluster.yaml``."""

    state_dir: Path
    master_port: int = 7077
    master_ui_port: int = 8080
    worker_ui_port: int = 8081
    worker_cores: int = 2
    worker_memory: str = "6g"

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    def pid_file(self, daemon: str) -> Path:
        return self.state_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.state_dir / f"{daemon}.log"


def default_layout() -> ClusterLayout:
    return ClusterLayout(state_dir=Path(os.environ.get("SHOPLENS_CLUSTER_DIR", "var/cluster")).resolve())


def spark_home() -> Path:
    """Returns SPARK_HOME, else the pip-installed pyspark's folder (which has ``bin/spark-class``)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).parent


def _daemon_env(layout: ClusterLayout) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SPARK_LOCAL_IP=HOST,  # web UIs and RPC bind here, not on 0.0.0.0
        SPARK_LOCAL_HOSTNAME=HOST,
        SPARK_LOG_DIR=str(layout.state_dir),
        SPARK_WORKER_DIR=str(layout.state_dir / "work"),
        SPARK_HOME=str(spark_home()),
        # Executors' Python workers run with the interpreter of this environment by default.
        PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable),
    )
    return env


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        if _reaped(pid):
            return None
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _reaped(pid: int) -> bool:
    """Whether ``pid`` is a child of this process that has exited (now reaped). A daemon that
    :func:`up` started in this process stays a zombie after it stops until it is reaped, and a zombie
    still answers ``kill(pid, 0)``: `down` then waited its whole timeout for each daemon."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not a child of this process: started by another one
        return False
    return done == pid


def _start(layout: ClusterLayout, daemon: str, args: list[str]) -> None:
    if _alive(layout.pid_file(daemon)):
        log.info("%s already running", daemon)
        return
    cmd = [str(spark_home() / "bin" / "spark-class"), *args]
    with open(layout.log_file(daemon), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_daemon_env(layout),
            start_new_session=True,  # its own process group, so `down` can stop its children too
        )
    layout.pid_file(daemon).write_text(str(proc.pid))
    log.info("started %s (pid %d), log %s", daemon, proc.pid, layout.log_file(daemon))


def master_state(layout: ClusterLayout) -> dict | None:
    """Returns the master's JSON status, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{layout.master_ui_port}/json/", timeout=2) as resp:
            return json.load(resp)
    except OSError:
        return None


def up(layout: ClusterLayout | None = None, timeout_s: float = 90) -> str:
    """Starts the master and one worker (no-op for those already running); returns the master URL
    once a worker has registered."""
    layout = layout or default_layout()
    state = master_state(layout)
    if state and state.get("aliveworkers", 0) >= 1:
        # A cluster already answers on these ports (started from another folder): use it rather
        # than start daemons that would fail to bind, or bind to the next free port.
        log.info("using the cluster already running at %s", layout.master_url)
        return layout.master_url
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    (layout.state_dir / "work").mkdir(exist_ok=True)
    _start(
        layout,
        "master",
        ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(layout.master_port),
         "--webui-port", str(layout.master_ui_port)],
    )
    _start(
        layout,
        "worker",
        ["org.apache.spark.deploy.worker.Worker", layout.master_url, "--host", HOST,
         "--cores", str(layout.worker_cores), "--memory", layout.worker_memory,
         "--webui-port", str(layout.worker_ui_port), "--work-dir", str(layout.state_dir / "work")],
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = master_state(layout)
        if state and state.get("aliveworkers", 0) >= 1:
            log.info("cluster up at %s (%s cores)", layout.master_url, state.get("cores"))
            return layout.master_url
        for daemon in ("master", "worker"):
            if not _alive(layout.pid_file(daemon)):
                raise RuntimeError(f"Spark {daemon} exited; see {layout.log_file(daemon)}")
        time.sleep(1)
    raise TimeoutError(f"no worker registered with {layout.master_url} within {timeout_s:.0f}s")


def down(layout: ClusterLayout | None = None, timeout_s: float = 30) -> None:
    """Stops the worker and the master (and their executors); leaves nothing running."""
    layout = layout or default_layout()
    for daemon in ("worker", "master"):
        pid = _alive(layout.pid_file(daemon))
        if pid is None:
            layout.pid_file(daemon).unlink(missing_ok=True)
            continue
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(layout.pid_file(daemon)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(layout.pid_file(daemon)):
            _signal_group(pid, signal.SIGKILL)
        layout.pid_file(daemon).unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", daemon, pid)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    layout = default_layout()
    if args.action == "up":
        print(up(layout))
    elif args.action == "down":
        down(layout)
    else:
        state = master_state(layout)
        print(json.dumps({"master": layout.master_url, "alive": state is not None,
                          "workers": (state or {}).get("aliveworkers", 0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
