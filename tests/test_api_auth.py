"""Token auth over HTTP and WebSocket, the listen check, TLS, and /metrics."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from support import T0, FakeSource, flows
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from spyglass.api.app import create_app
from spyglass.api.auth import AuthConfig, ListenSecurityError, check_listen_security
from spyglass.api.metrics import FlowMetrics
from spyglass.api.serve import TlsError, check_tls, serve_in_thread
from spyglass.cli.main import main
from spyglass.collector.enriched import EnrichedBatch
from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    PolicyMatchType,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Flow
from spyglass.storage import WriterStats

TOKEN = "s3cret-token-0123456789"


def source() -> FakeSource:
    """Three flows, a perf ring that lost 2, and a store writer that dropped 3."""
    src = FakeSource(63, events=flows(3))
    src.losses.perf_lost({0: 2})
    src.losses.add(LostEventSource.STORE, 3)  # the writer's drops, as the agent counts them
    src.writer = WriterStats(queued_rows=12, lag_s=0.5, written=900, lost=3, retries=1,
                             last_error="", store_up=True)
    return src


@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    app = create_app(source(), auth=AuthConfig(token=TOKEN))
    with serve_in_thread(app) as (_, url):
        yield url


@pytest.mark.parametrize(("host", "token", "ok"), [
    pytest.param("127.0.0.1", None, True, id="loopback"),
    pytest.param("::1", None, True, id="loopback6"),
    pytest.param("localhost", None, True, id="localhost"),
    pytest.param("0.0.0.0", None, False, id="wildcard"),
    pytest.param("10.1.2.3", None, False, id="lan"),
    pytest.param("0.0.0.0", TOKEN, True, id="wildcard-with-token"),
])
def test_check_listen_security(host: str, token: str | None, ok: bool) -> None:
    if ok:
        check_listen_security(host, token)
    else:
        with pytest.raises(ListenSecurityError, match="--token or SPYGLASS_TOKEN"):
            check_listen_security(host, token)


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ListenSecurityError, match="shorter than 16"):
        check_listen_security("0.0.0.0", "abc")


@pytest.mark.parametrize("path", [
    pytest.param("/api/v1/status", id="status"),
    pytest.param("/api/v1/flows", id="flows"),
    pytest.param("/api/v1/nodes", id="nodes"),
    pytest.param("/metrics", id="metrics"),
])
def test_http_needs_the_token(secured: str, path: str) -> None:
    resp = httpx.get(secured + path)
    assert resp.status_code == 401
    assert resp.json()["ok"] is False and "Bearer" in resp.json()["error"]
    wrong = httpx.get(secured + path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(secured + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200


def test_openapi_stays_open(secured: str) -> None:
    assert httpx.get(secured + "/openapi.json").status_code == 200


def test_metrics_can_be_public() -> None:
    app = create_app(source(), auth=AuthConfig(token=TOKEN, metrics_public=True))
    with serve_in_thread(app) as (_, url):
        assert httpx.get(url + "/metrics").status_code == 200
        assert httpx.get(url + "/api/v1/status").status_code == 401


def _ws(url: str, query: str = "", **kw: Any) -> Any:
    return connect(url.replace("http://", "ws://") + "/api/v1/flows/stream" + query,
                   open_timeout=10, close_timeout=2, **kw)


def test_ws_without_token_gets_401_envelope_and_1008(secured: str) -> None:
    with _ws(secured) as ws:
        body = json.loads(ws.recv(timeout=10))
        assert body["status"] == 401
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008


@pytest.mark.parametrize("how", ["header", "query", "subprotocol"])
def test_ws_accepts_the_token_three_ways(secured: str, how: str) -> None:
    kw: dict[str, Any] = {}
    query = "?last=3"
    if how == "header":
        kw["additional_headers"] = {"Authorization": f"Bearer {TOKEN}"}
    elif how == "query":
        query += f"&token={TOKEN}"
    else:
        kw["subprotocols"] = ["spyglass", f"spyglass.bearer.{TOKEN}"]
    with _ws(secured, query, **kw) as ws:
        got = [json.loads(ws.recv(timeout=10))["flow"]["uuid"] for _ in range(3)]
        assert got == [f.uuid for f in flows(3)]
        if how == "subprotocol":
            assert ws.subprotocol == "spyglass"


def test_cli_sends_the_token(secured: str) -> None:
    runner = CliRunner()
    denied = runner.invoke(main, ["observe", "--server", secured])
    assert denied.exit_code == 1
    assert "pass --token or set SPYGLASS_TOKEN" in denied.stderr
    ok = runner.invoke(main, ["observe", "--server", secured], env={"SPYGLASS_TOKEN": TOKEN})
    assert ok.exit_code == 0, ok.output
    assert len(ok.stdout.splitlines()) == 3


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return str(crt), str(key)


def test_tls_serves_https_and_wss(cert: tuple[str, str]) -> None:
    crt, key = cert
    app = create_app(source(), tls=True)
    with serve_in_thread(app, ssl_certfile=crt, ssl_keyfile=key) as (_, url):
        assert url.startswith("https://")
        resp = httpx.get(url + "/api/v1/nodes", verify=ssl.create_default_context(cafile=crt))
        assert resp.json()["nodes"][0]["tls"]["enabled"] is True
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/api/v1/status")  # not trusted without the CA
        result = CliRunner().invoke(main, ["observe", "--server", url, "--tls-ca", crt])
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 3
        untrusted = CliRunner().invoke(main, ["status", "--server", url])
        assert untrusted.exit_code == 1 and "--tls-ca" in untrusted.stderr


@pytest.mark.parametrize(("which", "message"), [
    pytest.param("cert-only", "--tls-key is missing", id="cert-only"),
    pytest.param("missing", "cannot read", id="missing-file"),
    pytest.param("swapped", "must be PEM", id="swapped"),
])
def test_bad_tls_files_say_what_is_wrong(cert: tuple[str, str], tmp_path: Path, which: str,
                                         message: str) -> None:
    crt, key = cert
    args = {"cert-only": (crt, None), "missing": (str(tmp_path / "nope.pem"), key),
            "swapped": (key, crt)}[which]
    with pytest.raises(TlsError, match=message):
        check_tls(*args)


# -- metrics -------------------------------------------------------------------------------


def test_metrics_families_count_flows_and_read_state() -> None:
    metrics = FlowMetrics()
    app = create_app(source(), metrics=metrics)
    metrics.observe(EnrichedBatch.from_flows([
        Flow(time_ns=T0, protocol=Protocol.TCP, tcp_flags=0x02, destination_port=8080,
             is_reply=False, event_type=EventType.TRACE,
             observation_point=ObservationPoint.TO_ENDPOINT),
        Flow(time_ns=T0, protocol=Protocol.TCP, tcp_flags=0x12, destination_port=8080,
             is_reply=False, event_type=EventType.TRACE,
             observation_point=ObservationPoint.TO_ENDPOINT),
        Flow(time_ns=T0, protocol=Protocol.UDP, verdict=Verdict.DROPPED,
             drop_reason=DropReason.POLICY_DENIED, event_type=EventType.POLICY_VERDICT,
             traffic_direction=TrafficDirection.INGRESS,
             policy_match_type=PolicyMatchType.L3_L4),
        Flow(time_ns=T0, protocol=Protocol.TCP, tcp_flags=0x12, destination_port=40000,
             is_reply=True, event_type=EventType.TRACE,
             observation_point=ObservationPoint.TO_ENDPOINT),
    ]))
    with serve_in_thread(app) as (_, url):
        text = httpx.get(url + "/metrics").text
    for line in (
        'spyglass_flows_processed_total{subtype="to-endpoint",type="Trace",verdict="FORWARDED"} '
        '3.0',
        'spyglass_flows_processed_total{subtype="",type="PolicyVerdict",verdict="DROPPED"} 1.0',
        'spyglass_drop_total{protocol="UDP",reason="POLICY_DENIED"} 1.0',
        'spyglass_policy_verdicts_total{action="dropped",direction="ingress",match="l3-l4"} 1.0',
        'spyglass_tcp_flags_total{flag="SYN"} 3.0',
        'spyglass_tcp_flags_total{flag="ACK"} 2.0',
        'spyglass_port_distribution_total{port="8080",protocol="TCP"} 2.0',
        'spyglass_lost_events_total{source="PERF_EVENT_RING_BUFFER"} 2.0',
        'spyglass_lost_events_total{source="STORE"} 3.0',
        "spyglass_store_writer_queue_rows 12.0",
        "spyglass_store_writer_lag_seconds 0.5",
        "spyglass_store_up 1.0",
        "spyglass_store_writer_written_total 900.0",
        "spyglass_store_writer_retries_total 1.0",
    ):
        assert line in text.splitlines(), line


def test_each_app_has_its_own_registry() -> None:
    a, b = FlowMetrics(), FlowMetrics()
    a.observe(EnrichedBatch.from_flows([Flow(time_ns=T0)]))
    assert b"spyglass_flows_processed_total{" not in b.exposition()
    assert b"spyglass_flows_processed_total{" in a.exposition()
