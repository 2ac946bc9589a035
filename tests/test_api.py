"""The REST API over a real ring, served by a real uvicorn on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from support import NODE, T0, FakeSource, collector_stats, flow

from spyglass.api.app import create_app
from spyglass.api.auth import NEEDS_CREDENTIAL
from spyglass.api.models import (
    CollectorModel,
    PerfLossModel,
    RestartModel,
    StatusResponse,
    StoreStatus,
)
from spyglass.api.serve import serve_in_thread
from spyglass.api.source import AgentStatus, RateMeter, RestartGap
from spyglass.collector.filters import FilterError, build_from_query
from spyglass.collector.lost import PerfLoss
from spyglass.collector.ring import FlowRing
from spyglass.model.enums import LostEventSource, Verdict
from spyglass.model.flow import Event, LostEvent, event_to_response
from spyglass.storage import WriterStats


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeSource, str]]:
    source = FakeSource(63)
    with serve_in_thread(create_app(source)) as (_, url):
        yield source, url


@pytest.fixture()
def api(served: tuple[FakeSource, str]) -> Iterator[tuple[FakeSource, httpx.Client]]:
    source, url = served
    source.reset(63)
    with httpx.Client(base_url=url, timeout=10) as client:
        yield source, client


NO_STORE_STATUS = {"kind": None, "dsn": None, "up": None, "queued_rows": None, "lag_s": None,
                   "written": None, "lost": None, "retries": None, "last_error": None}


def responses(events: list[Event]) -> list[dict[str, Any]]:
    return [event_to_response(ev, NODE) for ev in events]


# -- status -------------------------------------------------------------------


def test_status_counts_come_from_the_ring_and_the_collector() -> None:
    source = FakeSource(63)
    source.ring.write_many([flow(i) for i in range(100)])
    source.losses.kernel_counters([0, 0])  # the baseline, then 3 failed submits on CPU 1
    source.losses.kernel_counters([0, 3])
    source.losses.perf_lost({1: 2})  # the ring reported 2 of them: the ledger counts 3
    source.agent = AgentStatus(
        version="9.9", uptime_ns=83_000_000_000, pods=4, monitor_aggregation="medium",
        collector=collector_stats(
            seen_flows=98, flows_rate=12.5, reads=40, decode_errors={"truncated": 2},
            perf_malformed=1, getter_errors=6, failed_batches=2, hook_errors=5,
            lost_by_cpu=source.losses.by_cpu(), perf_kernel_counted=3, perf_reported=2))
    assert source.losses.by_cpu() == {0: PerfLoss(0, 0), 1: PerfLoss(3, 2)}
    with serve_in_thread(create_app(source)) as (_, url):
        body = httpx.get(url + "/api/v1/status", timeout=10).json()
    assert body == {
        "num_flows": 63, "max_flows": 63, "seen_flows": 98, "flows_rate": 12.5,
        "uptime_ns": 83_000_000_000, "node_name": NODE, "version": "9.9",
        "lost_events": {"PERF_EVENT_RING_BUFFER": 3}, "connected_clients": 0,
        "store": NO_STORE_STATUS, "pods": 4, "monitor_aggregation": "medium",
        "collector": {
            "reads": 40, "running": True,
            "lost_by_cpu": {"0": {"kernel_counted": 0, "perf_reported": 0},
                            "1": {"kernel_counted": 3, "perf_reported": 2}},
            "perf_kernel_counted": 3, "perf_reported": 2, "decode_errors": {"truncated": 2},
            "perf_malformed": 1, "getter_errors": 6, "failed_batches": 2, "hook_errors": 5,
        },
        "restart": None,
    }


def test_status_without_a_collector_counts_the_ring() -> None:
    source = FakeSource(63)
    source.ring.write_many([flow(i) for i in range(3)])
    with serve_in_thread(create_app(source)) as (_, url):
        body = httpx.get(url + "/api/v1/status").json()
    assert body["num_flows"] == 3 and body["seen_flows"] == 3
    assert body["lost_events"] == {}
    assert body["flows_rate"] == 0.0  # one sample: no rate yet
    assert body["uptime_ns"] > 0
    assert body["version"] == "test"  # what the source says, as the agent says its own
    assert (body["collector"], body["pods"], body["monitor_aggregation"], body["restart"]) == (
        None, None, None, None)


GAP = RestartGap(generation=3, restarts=2, previous_pid=1234, adopted_rings=True,
                 waiting_in_rings=310, lost_in_rings=0, failures_untold=0, unstored=5,
                 endpoints_written=1, endpoints_deleted=2, programs_replaced=4)


def test_status_shows_the_restart_gap_the_agent_found(
        api: tuple[FakeSource, httpx.Client]) -> None:
    source, client = api
    source.agent = AgentStatus(version="9.9", uptime_ns=1, restart=GAP)
    assert client.get("/api/v1/status").json()["restart"] == {
        "generation": 3, "restarts": 2, "previous_pid": 1234, "adopted_rings": True,
        "waiting_in_rings": 310, "lost_in_rings": 0, "failures_untold": 0, "unstored": 5,
        "endpoints_written": 1, "endpoints_deleted": 2, "programs_replaced": 4}
    source.agent = AgentStatus(version="9.9", uptime_ns=1)
    assert client.get("/api/v1/status").json()["restart"] is None


def test_status_shows_the_store_writer_without_the_password(
        api: tuple[FakeSource, httpx.Client]) -> None:
    source, client = api
    source.store_dsn = "http://u:hunter2@ch:8123/db"
    source.writer = WriterStats(queued_rows=5, lag_s=30.0, written=1, lost=7, retries=2,
                                last_error="connection refused", store_up=False)
    try:
        body = client.get("/api/v1/status").json()
    finally:
        source.store_dsn = None
    assert body["store"] == {"kind": "http", "dsn": "http://u:***@ch:8123/db", "up": False,
                             "queued_rows": 5, "lag_s": 30.0, "written": 1, "lost": 7,
                             "retries": 2, "last_error": "connection refused"}
    assert "hunter2" not in str(body)


def test_status_and_metrics_report_exactly_the_ledger() -> None:
    """One ledger: what the agent counted and what the streams recorded, nothing else."""
    source = FakeSource(63)
    source.losses.kernel_counters([0])
    source.losses.kernel_counters([4])
    source.losses.add(LostEventSource.STORE, 7)
    source.losses.add(LostEventSource.AGENT_RESTART, 5)
    app = create_app(source)
    hub = app.state.streams
    hub.record_ring_lost(11)  # a live client lapped by the ring
    hub.record_client_lost(3)  # a slow client's queue
    want = {"PERF_EVENT_RING_BUFFER": 4, "STORE": 7, "AGENT_RESTART": 5,
            "HUBBLE_RING_BUFFER": 11, "CLIENT_QUEUE": 3}
    assert {k.name: n for k, n in source.losses.totals().items()} == want
    assert (hub.ring_lost, hub.client_lost) == (11, 3)
    with serve_in_thread(app) as (_, url):
        status = httpx.get(url + "/api/v1/status", timeout=10).json()
        metrics = httpx.get(url + "/metrics", timeout=10).text.splitlines()
    assert status["lost_events"] == want
    got = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics
           if line.startswith("spyglass_lost_events_total{")}
    assert got == {name: float(n) for name, n in want.items()}
    # The streams' own losses were told to the clients that suffered them, never in the ring.
    told = {ev.source for ev in source.losses.due(0.0, T0, force=True)}
    assert told == {LostEventSource.PERF_EVENT_RING_BUFFER, LostEventSource.STORE,
                    LostEventSource.AGENT_RESTART}


@pytest.mark.parametrize("model", [StatusResponse, StoreStatus, CollectorModel, RestartModel,
                                   PerfLossModel])
def test_status_models_forbid_unknown_keys(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"


def test_an_unknown_key_cannot_leak_into_status(api: tuple[FakeSource, httpx.Client]) -> None:
    _, client = api
    body = client.get("/api/v1/status").json()
    assert set(body) == set(StatusResponse.model_fields)
    with pytest.raises(ValidationError, match="secret"):
        StatusResponse.model_validate({**body, "secret": "/var/lib/spyglass/state.bin"})
    with pytest.raises(ValidationError, match="decode_errors"):  # now under "collector"
        StatusResponse.model_validate({**body, "decode_errors": {"truncated": 1}})
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("StatusResponse", "StoreStatus", "CollectorModel", "RestartModel",
                 "PerfLossModel"):
        assert schema[name]["additionalProperties"] is False, name


@pytest.mark.parametrize(("samples", "rate"), [
    pytest.param([(0.0, 0)], 0.0, id="one-sample"),
    pytest.param([(0.0, 0), (2.0, 50)], 25.0, id="two-samples"),
    pytest.param([(0.0, 0), (30.0, 300), (90.0, 1500)], 20.0, id="window-slides"),
    pytest.param([(0.0, 100), (1.0, 50)], 0.0, id="counter-reset"),
])
def test_rate_meter(samples: list[tuple[float, int]], rate: float) -> None:
    clock = iter(t for t, _ in samples)
    meter = RateMeter(window_s=60.0, clock=lambda: next(clock))
    got = [meter.sample(seen) for _, seen in samples]
    assert got[-1] == pytest.approx(rate)


# -- flows --------------------------------------------------------------------


def test_flows_default_is_the_newest_20_oldest_first(
        api: tuple[FakeSource, httpx.Client]) -> None:
    source, client = api
    events = [flow(i) for i in range(30)]
    source.ring.write_many(events)
    assert client.get("/api/v1/flows").json() == {"flows": responses(events[-20:]), "next": None}


@pytest.mark.parametrize(("params", "picked"), [
    pytest.param([("last", "3")], [7, 8, 9], id="last"),
    pytest.param([("first", "2")], [0, 1], id="first"),
    pytest.param([("last", "0")], [], id="last-zero"),
    pytest.param([("last", "1000")], list(range(10)), id="last-clamped"),
    pytest.param([("to-port", "80")], [1, 3, 5, 7, 9], id="filter"),
    pytest.param([("first", "2"), ("to-port", "80")], [1, 3], id="first-with-filter"),
    pytest.param([("not-verdict", "FORWARDED")], [2, 5, 8], id="negated"),
    pytest.param([("from-pod", "shop/frontend-1")], [1], id="from-pod"),
    pytest.param([("verdict", "DROPPED"), ("last", "1"), ("to-port", "80")], [5],
                 id="selector-between-filters"),
])
def test_flows_selectors_and_filters(api: tuple[FakeSource, httpx.Client],
                                     params: list[tuple[str, str]], picked: list[int]) -> None:
    source, client = api
    events = [flow(i, dport=80 if i % 2 else 8080,
                   verdict=Verdict.DROPPED if i % 3 == 2 else Verdict.FORWARDED)
              for i in range(10)]
    source.ring.write_many(events)
    body = client.get("/api/v1/flows", params=httpx.QueryParams(tuple(params))).json()
    assert body == {"flows": responses([events[i] for i in picked]), "next": None}


def test_lost_events_are_never_filtered_out(api: tuple[FakeSource, httpx.Client]) -> None:
    source, client = api
    lost = LostEvent(time_ns=T0 + 5, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                     num_events_lost=9, cpu=1)
    events: list[Event] = [flow(0), lost, flow(1, verdict=Verdict.DROPPED)]
    source.ring.write_many(events)
    body = client.get("/api/v1/flows", params={"verdict": "DROPPED"}).json()
    assert body == {"flows": responses([lost, events[2]]), "next": None}


def filter_message(params: list[tuple[str, str]]) -> str:
    with pytest.raises(FilterError) as err:
        build_from_query(params)
    return str(err.value)


@pytest.mark.parametrize(("params", "message"), [
    pytest.param([("last", "x")], "last: 'x' is not a number; use a whole number like last=20",
                 id="last-not-a-number"),
    pytest.param([("last", "-1")], "last: -1 is negative; use 0 or more, like last=20",
                 id="last-negative"),
    pytest.param([("first", "1.5")], "first: '1.5' is not a number; use a whole number like "
                 "first=20", id="first-not-a-number"),
    pytest.param([("last", "1"), ("last", "2")], "last is given more than once; give it "
                 "once, like last=20", id="last-twice"),
    pytest.param([("last", "1"), ("first", "1")], "last and first cannot be combined; ask "
                 "for the newest flows with last=N or the oldest with first=N",
                 id="last-and-first"),
    pytest.param([("port", "http")], None, id="bad-filter-value"),
    pytest.param([("colour", "red")], None, id="unknown-filter"),
])
def test_bad_requests_get_the_error_envelope(api: tuple[FakeSource, httpx.Client],
                                             params: list[tuple[str, str]],
                                             message: str | None) -> None:
    _, client = api
    resp = client.get("/api/v1/flows", params=httpx.QueryParams(tuple(params)))
    expected = message if message is not None else filter_message(params)
    assert resp.status_code == 400
    assert resp.json() == {"ok": False, "error": expected, "status": 400}


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    pytest.param("GET", "/api/v1/nope", 404, "not found: /api/v1/nope; the API lives under "
                 "/api/v1 (see /docs for the endpoints)", id="unknown-path"),
    pytest.param("OPTIONS", "/api/v1/status", 405, "method OPTIONS is not allowed on "
                 "/api/v1/status", id="wrong-method"),
    pytest.param("POST", "/api/v1/status", 401, NEEDS_CREDENTIAL, id="post-without-credential"),
])
def test_http_errors_use_the_envelope(api: tuple[FakeSource, httpx.Client], method: str,
                                      path: str, status: int, message: str) -> None:
    _, client = api
    resp = client.request(method, path)
    assert resp.status_code == status
    assert resp.json() == {"ok": False, "error": message, "status": status}


def test_openapi_documents_typed_responses(api: tuple[FakeSource, httpx.Client]) -> None:
    _, client = api
    schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/api/v1/status"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/StatusResponse")
    flows = schema["paths"]["/api/v1/flows"]["get"]["responses"]
    assert flows["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/FlowsResponse")
    assert flows["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse")


# -- static UI ----------------------------------------------------------------


def test_ui_dir_is_served_at_root(tmp_path: Any) -> None:
    (tmp_path / "index.html").write_text("<h1>spyglass</h1>")
    app = create_app(FakeSource(63), ui_dir=str(tmp_path))
    with serve_in_thread(app) as (_, url):
        assert httpx.get(url + "/").text == "<h1>spyglass</h1>"
        assert httpx.get(url + "/api/v1/status").status_code == 200
        missing = httpx.get(url + "/missing.js")
        assert missing.status_code == 404 and missing.json()["ok"] is False


def test_missing_ui_dir_is_not_mounted(tmp_path: Any) -> None:
    app = create_app(FakeSource(63), ui_dir=os.path.join(str(tmp_path), "absent"))
    assert not any(getattr(r, "name", "") == "ui" for r in app.routes)


# -- first over an overwritten ring ---------------------------------------------


def test_first_skips_what_is_gone_without_a_marker() -> None:
    ring = FlowRing(7)
    ring.write_many([flow(i) for i in range(20)])
    events, _ = ring.read_since(0, 4)
    assert isinstance(events[0], LostEvent)  # a reader from 0 is told it was lapped
    assert ring.first(3) == [flow(13), flow(14), flow(15)]  # the oldest held are just first


def test_a_stored_lost_event_is_kept_by_first() -> None:
    ring = FlowRing(7)
    stored = LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                       num_events_lost=1, cpu=0)
    ring.write_many([stored, flow(1)])
    assert ring.first(2) == [stored, flow(1)]
