"""The demo workloads, on loopback: a service chain, the load generator and UDP metrics."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from spyglass.lab.demoapp import StatsdSender, fetch, main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    """db <- api, both on loopback; stopped by PID."""
    db, api = free_port(), free_port()
    cmd = [sys.executable, "-m", "spyglass.lab.demoapp", "serve", "--bind", "127.0.0.1"]
    procs = [
        subprocess.Popen([*cmd, "--port", str(db), "--name", "db"], stdout=subprocess.DEVNULL),
        subprocess.Popen([*cmd, "--port", str(api), "--name", "api",
                          "--upstream", f"http://127.0.0.1:{db}/q"], stdout=subprocess.DEVNULL),
    ]
    try:
        for port in (db, api):
            for _ in range(200):  # wait for the listener, not for a duration
                if fetch(f"http://127.0.0.1:{port}/healthz", 1.0) == 200:
                    break
                time.sleep(0.05)
        yield db, api
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_chain_answers(servers: tuple[int, int]) -> None:
    db, api = servers
    with socket.create_connection(("127.0.0.1", api)) as s:
        s.sendall(b"GET /api/x HTTP/1.0\r\n\r\n")
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert json.loads(body) == {"service": "api", "path": "/api/x",
                                "upstreams": {f"http://127.0.0.1:{db}/q": 200}}


def test_upstream_down_gives_502() -> None:
    dead = free_port()
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "spyglass.lab.demoapp", "serve", "--bind",
                          "127.0.0.1", "--port", str(port), "--upstream",
                          f"http://127.0.0.1:{dead}/"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if fetch(f"http://127.0.0.1:{port}/healthz", 1.0) == 200:
                break
            time.sleep(0.05)
        assert fetch(f"http://127.0.0.1:{port}/", 2.0) == 502
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_fetch_refused_is_zero() -> None:
    assert fetch(f"http://127.0.0.1:{free_port()}/", 1.0) == 0


def test_loadgen_and_statsd(servers: tuple[int, int]) -> None:
    _, api = servers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        port = sink.getsockname()[1]
        rc = main(["loadgen", "--targets", f"http://127.0.0.1:{api}/", "--interval", "0",
                   "--count", "4", "--statsd", f"127.0.0.1:{port}", "--statsd-every", "2"])
        assert rc == 0
        got = [sink.recv(100), sink.recv(100)]
    assert got == [b"demo.requests:2|c", b"demo.requests:2|c"]


def test_statsd_without_target_is_silent() -> None:
    with StatsdSender(None, 1) as s:
        s.incr("x")
        assert s.count == 1


@pytest.mark.parametrize("bad", [
    pytest.param("nohost", id="no-port"),
    pytest.param("h:99999", id="port-range"),
])
def test_bad_statsd_target_is_a_usage_error(bad: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["loadgen", "--targets", "http://x/", "--statsd", bad])
    assert info.value.code == 2
