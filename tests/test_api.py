"""The REST API over a real ring, served by a real uvicorn on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from spyglass.api.app import _lost_by_source, _overtaken, create_app, first_events
from spyglass.api.auth import NEEDS_CREDENTIAL
from spyglass.api.serve import serve_in_thread
from spyglass.api.source import RateMeter
from spyglass.collector.filters import FilterError, build_from_query
from spyglass.collector.ring import FlowRing
from spyglass.model.enums import LostEventSource, Protocol, Verdict
from spyglass.model.flow import (
    Endpoint,
    Event,
    Flow,
    LostEvent,
    event_to_response,
)

T0 = 1_764_165_988_576_000_000
NODE = "node-a"


def flow(i: int, *, pod: str = "frontend", verdict: Verdict = Verdict.FORWARDED,
         dport: int = 8080) -> Flow:
    return Flow(time_ns=T0 + i, uuid=f"u{i}", protocol=Protocol.TCP, tcp_flags=0x02,
                source_ip="10.244.0.2", destination_ip="10.244.0.3", source_port=30000 + i,
                destination_port=dport, verdict=verdict, is_reply=False, node_name=NODE,
                source=Endpoint(identity=300, namespace="shop", pod_name=f"{pod}-{i}"),
                destination=Endpoint(identity=301, namespace="shop", pod_name="cart-0"))


class FakeSource:
    """A FlowSource: the ring can be swapped per test while one server runs."""

    def __init__(self) -> None:
        self.ring = FlowRing(63)
        self.node_name = NODE
        self.extra: dict[str, Any] = {}

    def status(self) -> dict[str, Any]:
        return dict(self.extra)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeSource, str]]:
    source = FakeSource()
    with serve_in_thread(create_app(source)) as (_, url):
        yield source, url


@pytest.fixture()
def api(served: tuple[FakeSource, str]) -> Iterator[tuple[FakeSource, httpx.Client]]:
    source, url = served
    source.ring = FlowRing(63)
    source.extra = {}
    with httpx.Client(base_url=url, timeout=10) as client:
        yield source, client


NO_STORE_STATUS = {"kind": None, "dsn": None, "up": None, "queued_rows": None, "lag_s": None,
                   "written": None, "lost": None, "retries": None, "last_error": None}


def responses(events: list[Event]) -> list[dict[str, Any]]:
    return [event_to_response(ev, NODE) for ev in events]


# -- status -------------------------------------------------------------------


def test_status_counts_come_from_the_ring(api: tuple[FakeSource, httpx.Client]) -> None:
    source, client = api
    source.ring.write_many([flow(i) for i in range(100)])
    source.extra = {"flows_rate": 12.5, "uptime_ns": 83_000_000_000, "version": "9.9",
                    "lost_events": {"PERF_EVENT_RING_BUFFER": 3},
                    "decode_errors": {"truncated": 2}, "seen_flows": 98, "num_flows": 5}
    body = client.get("/api/v1/status").json()
    assert body == {
        "num_flows": 63, "max_flows": 63, "seen_flows": 98, "flows_rate": 12.5,
        "uptime_ns": 83_000_000_000, "node_name": NODE, "version": "9.9",
        "lost_events": {"PERF_EVENT_RING_BUFFER": 3}, "connected_clients": 0,
        "decode_errors": {"truncated": 2}, "store": NO_STORE_STATUS,
    }


def test_status_defaults_when_the_source_says_nothing() -> None:
    source = FakeSource()
    source.ring.write_many([flow(i) for i in range(3)])
    with serve_in_thread(create_app(source)) as (_, url):
        body = httpx.get(url + "/api/v1/status").json()
    assert body["num_flows"] == 3 and body["seen_flows"] == 3
    assert body["lost_events"] == {}
    assert body["flows_rate"] == 0.0  # one sample: no rate yet
    assert body["uptime_ns"] > 0
    assert body["version"] == "0.1.0"


@pytest.mark.parametrize(("lost", "expected"), [
    pytest.param({"PERF_EVENT_RING_BUFFER": 3}, {"PERF_EVENT_RING_BUFFER": 3}, id="by-name"),
    pytest.param({1: 4, 3: 1}, {"PERF_EVENT_RING_BUFFER": 4, "HUBBLE_RING_BUFFER": 1},
                 id="by-number"),
    pytest.param({LostEventSource.STORE: 2}, {"STORE": 2}, id="by-enum"),
    pytest.param({"PERF_EVENT_RING_BUFFER": {"0": 2, "1": 5}}, {"PERF_EVENT_RING_BUFFER": 7},
                 id="per-cpu-summed"),
    pytest.param(None, {}, id="none"),
])
def test_lost_events_by_source(lost: Any, expected: dict[str, int]) -> None:
    assert _lost_by_source(lost) == expected


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
    app = create_app(FakeSource(), ui_dir=str(tmp_path))
    with serve_in_thread(app) as (_, url):
        assert httpx.get(url + "/").text == "<h1>spyglass</h1>"
        assert httpx.get(url + "/api/v1/status").status_code == 200
        missing = httpx.get(url + "/missing.js")
        assert missing.status_code == 404 and missing.json()["ok"] is False


def test_missing_ui_dir_is_not_mounted(tmp_path: Any) -> None:
    app = create_app(FakeSource(), ui_dir=os.path.join(str(tmp_path), "absent"))
    assert not any(getattr(r, "name", "") == "ui" for r in app.routes)


# -- first_events over an overwritten ring ------------------------------------


def test_first_events_skip_the_marker_of_their_own_overtaken_scan() -> None:
    ring = FlowRing(7)
    ring.write_many([flow(i) for i in range(20)])
    events, next_seq = ring.read_since(0, 4)
    assert _overtaken(events, 0, next_seq)
    assert first_events(ring, 3, None) == [flow(13), flow(14), flow(15)]


def test_a_stored_lost_event_is_not_taken_for_the_overtake_marker() -> None:
    ring = FlowRing(7)
    stored = LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                       num_events_lost=1, cpu=0)
    ring.write_many([stored, flow(1)])
    events, next_seq = ring.read_since(0, 4)
    assert not _overtaken(events, 0, next_seq)
    assert first_events(ring, 2, None) == [stored, flow(1)]
