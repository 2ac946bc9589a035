"""`spyglass status`: Hubble's status text, and the raw JSON for scripts."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from support import FakeSource, collector_stats, flows

from spyglass.api.app import create_app
from spyglass.api.serve import serve_in_thread
from spyglass.api.source import AgentStatus, RestartGap
from spyglass.cli.main import main
from spyglass.cli.status import format_status, format_uptime


@pytest.mark.parametrize(("ns", "text"), [
    pytest.param(0, "0s", id="zero"),
    pytest.param(45_900_000_000, "45s", id="seconds"),
    pytest.param(83_000_000_000, "1m23s", id="minutes"),
    pytest.param(3_600_000_000_000, "1h0m0s", id="hours"),
    pytest.param(273_906_000_000_000, "3d4h5m6s", id="days"),
])
def test_format_uptime(ns: int, text: str) -> None:
    assert format_uptime(ns) == text


BASE: dict[str, Any] = {"num_flows": 1234, "max_flows": 65535, "seen_flows": 9999,
                        "flows_rate": 12.345, "uptime_ns": 83_000_000_000, "node_name": "n1",
                        "version": "0.1.0", "lost_events": {}}


@pytest.mark.parametrize(("extra", "text"), [
    pytest.param({}, "Healthcheck (via http://h:1): Ok\n"
                     "Current/Max Flows: 1,234/65,535 (1.88%)\n"
                     "Flows/s: 12.35\n"
                     "Lost events: none\n"
                     "Node: n1   Uptime: 1m23s", id="healthy"),
    pytest.param({"lost_events": {"PERF_EVENT_RING_BUFFER": 3, "STORE": 0,
                                  "HUBBLE_RING_BUFFER": 1200}},
                 "Healthcheck (via http://h:1): Ok\n"
                 "Current/Max Flows: 1,234/65,535 (1.88%)\n"
                 "Flows/s: 12.35\n"
                 "Lost events:\n"
                 "  HUBBLE_RING_BUFFER: 1,200\n"
                 "  PERF_EVENT_RING_BUFFER: 3\n"
                 "Node: n1   Uptime: 1m23s", id="lost-by-source"),
    pytest.param({"num_flows": 0, "max_flows": 0}, "Healthcheck (via http://h:1): Ok\n"
                 "Current/Max Flows: 0/0 (0.00%)\n"
                 "Flows/s: 12.35\n"
                 "Lost events: none\n"
                 "Node: n1   Uptime: 1m23s", id="zero-capacity"),
])
def test_format_status(extra: dict[str, Any], text: str) -> None:
    assert format_status("http://h:1", {**BASE, **extra}) == text


GAP_JSON: dict[str, Any] = {
    "generation": 3, "restarts": 2, "previous_pid": 1234, "adopted_rings": True,
    "waiting_in_rings": 310, "lost_in_rings": 0, "failures_untold": 0, "unstored": 0,
    "endpoints_written": 1, "endpoints_deleted": 0, "programs_replaced": 4}


@pytest.mark.parametrize(("gap", "line"), [
    pytest.param({}, "Restarts: 2 (this agent adopted the datapath of pid 1234: 310 events read "
                 "from the kept rings, 0 lost)", id="nothing-lost"),
    pytest.param({"lost_in_rings": 1200, "failures_untold": 34, "unstored": 5},
                 "Restarts: 2 (this agent adopted the datapath of pid 1234: 310 events read "
                 "from the kept rings, 1,234 lost, 5 flows not stored)", id="lost-and-unstored"),
    pytest.param({"adopted_rings": False, "waiting_in_rings": 0, "lost_in_rings": 77},
                 "Restarts: 2 (this agent adopted the datapath of pid 1234: the rings were not "
                 "kept, 77 lost)", id="rings-not-kept"),
])
def test_format_status_shows_the_restart(gap: dict[str, Any], line: str) -> None:
    text = format_status("http://h:1", {**BASE, "restart": {**GAP_JSON, **gap}})
    assert text.splitlines() == [
        "Healthcheck (via http://h:1): Ok", "Current/Max Flows: 1,234/65,535 (1.88%)",
        "Flows/s: 12.35", "Lost events: none", "Node: n1   Uptime: 1m23s", line]


def test_format_status_without_a_restart_has_no_restart_line() -> None:
    assert "Restarts" not in format_status("http://h:1", {**BASE, "restart": None})


GAP = RestartGap(generation=3, restarts=2, previous_pid=1234, adopted_rings=True,
                 waiting_in_rings=310, lost_in_rings=0, failures_untold=0, unstored=0,
                 endpoints_written=1, endpoints_deleted=0, programs_replaced=4)


def agent(restart: RestartGap | None = None) -> AgentStatus:
    """Up 1h2m3s, with a collector at 2.5 flows/s that could not decode one event."""
    return AgentStatus(version="0.1.0", uptime_ns=3_723_000_000_000, restart=restart,
                       collector=collector_stats(seen_flows=10, flows_rate=2.5,
                                                 decode_errors={"truncated": 1}))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeSource, str]]:
    """Ten flows in the ring and 4 events lost in the perf ring."""
    src = FakeSource(1023, events=flows(10))
    src.losses.perf_lost({0: 4})
    with serve_in_thread(create_app(src)) as (_, base):
        yield src, base


@pytest.fixture()
def url(served: tuple[FakeSource, str]) -> Iterator[str]:
    src, base = served
    src.agent = agent()
    yield base
    src.agent = agent()  # a test that changed the agent's status leaves it as it was


def test_status_command(url: str) -> None:
    result = CliRunner().invoke(main, ["status", "--server", url])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Healthcheck (via {url}): Ok\n"
        "Current/Max Flows: 10/1,023 (0.98%)\n"
        "Flows/s: 2.50\n"
        "Lost events:\n"
        "  PERF_EVENT_RING_BUFFER: 4\n"
        "Node: node-a   Uptime: 1h2m3s\n"
        "Store: none (history needs `spyglass up --store ...`)\n")


def test_status_command_shows_the_restart(served: tuple[FakeSource, str], url: str) -> None:
    src, _ = served
    src.agent = agent(restart=GAP)
    result = CliRunner().invoke(main, ["status", "--server", url])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Healthcheck (via {url}): Ok\n"
        "Current/Max Flows: 10/1,023 (0.98%)\n"
        "Flows/s: 2.50\n"
        "Lost events:\n"
        "  PERF_EVENT_RING_BUFFER: 4\n"
        "Node: node-a   Uptime: 1h2m3s\n"
        "Restarts: 2 (this agent adopted the datapath of pid 1234: 310 events read from the "
        "kept rings, 0 lost)\n"
        "Store: none (history needs `spyglass up --store ...`)\n")


def test_status_json(url: str) -> None:
    result = CliRunner().invoke(main, ["status", "--server", url, "-o", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["num_flows"] == 10 and body["max_flows"] == 1023
    assert body["lost_events"] == {"PERF_EVENT_RING_BUFFER": 4}
    assert body["collector"]["decode_errors"] == {"truncated": 1}
    assert body["collector"]["running"] is True and body["restart"] is None
    assert "decode_errors" not in body  # the collector's counters live under "collector"


def test_status_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(main, ["status", "--server", server])
    assert result.exit_code == 1
    assert result.stderr == (f"cannot reach the Spyglass API at {server}: is `spyglass up` "
                             "running? (use --server to point elsewhere)\n")


def test_status_of_something_that_is_not_spyglass(tmp_path: Any) -> None:
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        """A plain file server (404 for everything), silent so stderr holds only our line."""

        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        server = f"http://127.0.0.1:{httpd.server_address[1]}"
        result = CliRunner().invoke(main, ["status", "--server", server])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert result.exit_code == 1
    assert result.stderr == (f"{server} does not look like a Spyglass API (got HTTP 404 that "
                             "is not JSON): check --server\n")


@pytest.mark.parametrize(("store", "lines"), [
    pytest.param({"kind": None}, ["Store: none (history needs `spyglass up --store ...`)"],
                 id="none"),
    pytest.param({"kind": "chdb", "dsn": "chdb:///var/lib/spyglass/flows", "up": True,
                  "queued_rows": 1200, "lag_s": 0.4, "written": 98765, "lost": 0},
                 ["Store: chdb:///var/lib/spyglass/flows (up)",
                  "Writer: 1,200 queued, lag 0.4s, 98,765 written, 0 lost"], id="up"),
    pytest.param({"kind": "http", "dsn": "http://u:***@ch:8123/db", "up": False,
                  "queued_rows": 5, "lag_s": 30.0, "written": 1, "lost": 7,
                  "last_error": "connection refused"},
                 ["Store: http://u:***@ch:8123/db (DOWN)",
                  "Writer: 5 queued, lag 30.0s, 1 written, 7 lost",
                  "Store error: connection refused"], id="down"),
])
def test_format_store(store: dict[str, Any], lines: list[str]) -> None:
    from spyglass.cli.status import format_store

    assert format_store(store) == lines
