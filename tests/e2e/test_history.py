"""History end to end: flows survive an `up` restart in the store; queries and metrics.

The same chDB path is given to two `up` runs in a row (one process at a time, as chDB
requires); flows seen by the first must be answered by the second.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from harness import start_up, stop_up

pytestmark = pytest.mark.e2e


def test_flows_persist_across_restart_and_queries_work(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'store'}"
    first = start_up(tmp_path / "run1", "sgh", store=store)
    try:
        server = first.pods()["e2e-a/server-0"]["ip"]
        sport = first.client("tcp", server, "5000")["sport"]
        before = first.wait_flows(
            lambda fl: any(f["l4"].get("TCP", {}).get("source_port") == sport for f in fl),
            "--from-pod", "e2e-a/client-0")
        uuids = {f["uuid"] for f in before if f["l4"].get("TCP", {}).get("source_port") == sport}
        assert uuids
    finally:
        stop_up(first)

    second = start_up(tmp_path / "run2", "sgh", store=store)
    try:
        out = second.cli("observe", "--server", second.url, "--since", "10m", "--last", "5000",
                         "-o", "json", "--from-pod", "e2e-a/client-0")
        assert out.returncode == 0, out.stderr
        seen = {json.loads(line)["flow"]["uuid"] for line in out.stdout.splitlines()
                if line.startswith('{"flow"')}
        assert uuids <= seen, "flows from before the restart are missing from history"

        smap = second.cli("query", "service-map", "--server", second.url, "--since", "1h",
                          "-o", "json")
        assert smap.returncode == 0, smap.stderr
        edges = json.loads(smap.stdout)
        assert any(e["src_workload"] == "client" and e["dst_workload"] == "server"
                   and e["dst_port"] == 8080 for e in edges), edges

        table = second.cli("query", "service-map", "--server", second.url, "--since", "1h")
        assert table.returncode == 0 and "client" in table.stdout

        metrics = httpx.get(second.url + "/metrics", timeout=5).text
        for family in ("spyglass_flows_processed_total", "spyglass_lost_events_total",
                       "spyglass_tcp_flags_total", "spyglass_port_distribution_total"):
            assert family in metrics, family
    finally:
        stop_up(second)
