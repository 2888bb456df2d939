"""`make cluster-up` / `make cluster-down`: a real standalone cluster that listens on loopback only
and leaves nothing behind."""

from __future__ import annotations

import ipaddress

import psutil
import pytest

from shoplens import cluster

pytestmark = pytest.mark.cluster


def _listening(pid: int) -> set[tuple[str, int]]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        (c.laddr.ip, c.laddr.port)
        for p in procs
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def test_cluster_up_listens_on_loopback_only_and_down_leaves_nothing(tmp_path):
    # Ports of its own, so the shared test cluster (if running) is not touched.
    layout = cluster.ClusterLayout(
        state_dir=tmp_path, master_port=7177, master_ui_port=8180, worker_ui_port=8181, worker_memory="1g"
    )
    # A master left answering on these ports (a killed earlier test run) would be taken as this one.
    assert cluster.master_state(layout) is None, "a Spark master already answers on port 8180: stop it first"
    assert cluster.up(layout) == "spark://127.0.0.1:7177"
    pids = [int(layout.pid_file(d).read_text()) for d in ("master", "worker")]
    try:
        sockets = set().union(*(_listening(pid) for pid in pids))
        assert {7177, 8180, 8181} <= {port for _, port in sockets}
        for ip, port in sockets:
            address = ipaddress.ip_address(ip)
            loopback = address.is_loopback or (address.version == 6 and address.ipv4_mapped and address.ipv4_mapped.is_loopback)
            assert loopback, f"port {port} listens on {ip}"
        assert cluster.up(layout) == "spark://127.0.0.1:7177"  # idempotent: nothing new started
        assert [int(layout.pid_file(d).read_text()) for d in ("master", "worker")] == pids
    finally:
        cluster.down(layout)
    # Stopped and reaped: no zombie left behind (a zombie also made `down` wait out its timeout).
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert cluster.master_state(layout) is None
    assert not layout.pid_file("master").exists()
