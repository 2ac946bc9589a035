"""The live WebSocket stream, against a real uvicorn on loopback.

Writes come from the test thread while the server's event loop runs in
another, as in the agent (collector thread + API loop). Each test first syncs
on a marker flow so that the server's ring cursor is known to be set.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support import NODE, T0, FakeSource, flow
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from spyglass.api.app import create_app
from spyglass.api.serve import serve_in_thread
from spyglass.collector.filters import FilterError, build_from_query
from spyglass.collector.ring import Chunk, FlowRing
from spyglass.model.enums import LostEventSource, Verdict
from spyglass.model.flow import Flow, LostEvent, event_to_response

WAIT_S = 10.0


class Served:
    def __init__(self, source: FakeSource, url: str, server: Any, app: Any) -> None:
        self.source, self.url, self.server, self.app = source, url, server, app

    def ws(self, query: str = "") -> ClientConnection:
        base = self.url.replace("http://", "ws://") + "/api/v1/flows/stream"
        return connect(base + (f"?{query}" if query else ""), open_timeout=WAIT_S,
                       close_timeout=2)


@pytest.fixture()
def served() -> Iterator[Served]:
    source = FakeSource(63)
    app = create_app(source)
    with serve_in_thread(app) as (server, url):
        yield Served(source, url, server, app)


def recv(ws: ClientConnection) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ws.recv(timeout=WAIT_S))
    return body


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def sync(served: Served, ws: ClientConnection, marker: Flow) -> None:
    """Write `marker` and read up to it: afterwards the server's cursor is past it.

    The stream is counted as active only once its cursor is set, so a marker
    written after that is certain to be read.
    """
    wait_until(lambda: served.app.state.streams.active >= 1, "the stream to start")
    served.source.ring.write(marker)
    want = event_to_response(marker, NODE)
    while recv(ws) != want:
        pass


def test_backlog_then_live_filtered(served: Served) -> None:
    ring = served.source.ring
    ring.write_many([flow(0), flow(1, pod="cart"), flow(2), flow(3, pod="cart"), flow(4)])
    with served.ws("last=2&from-pod=shop/frontend-") as ws:
        assert [recv(ws) for _ in range(2)] == [event_to_response(flow(i), NODE) for i in (2, 4)]
        sync(served, ws, flow(5))
        live = [flow(6, pod="cart"), flow(7), flow(8, pod="db"), flow(9)]
        writer = threading.Thread(target=lambda: [ring.write(f) for f in live])
        writer.start()
        writer.join()
        assert [recv(ws) for _ in range(2)] == [event_to_response(flow(i), NODE) for i in (7, 9)]


def test_no_backlog_by_default(served: Served) -> None:
    served.source.ring.write_many([flow(i) for i in range(5)])
    with served.ws() as ws:
        wait_until(lambda: served.app.state.streams.active == 1, "the stream to start")
        served.source.ring.write(flow(10))
        assert recv(ws) == event_to_response(flow(10), NODE)


def test_overtaken_reader_gets_the_exact_loss_inline_even_when_filtered(served: Served) -> None:
    ring = served.source.ring  # capacity 63
    with served.ws("verdict=DROPPED") as ws:
        sync(served, ws, flow(0, verdict=Verdict.DROPPED))
        # One atomic write of 100 events laps the reader: exactly 100 - 63 are lost.
        ring.write_many([flow(i, verdict=Verdict.DROPPED) for i in range(1, 101)])
        first = recv(ws)
        assert first["lost_events"] == {"source": "HUBBLE_RING_BUFFER", "num_events_lost": 37}
        assert [recv(ws)["flow"]["uuid"] for _ in range(63)] == [flow(i).uuid
                                                                 for i in range(38, 101)]
    status = httpx.get(served.url + "/api/v1/status").json()
    assert status["lost_events"] == {"HUBBLE_RING_BUFFER": 37}
    # The stream counted it in the agent's ledger, which /metrics reads too; the client
    # was told inline, so the ledger never tells it again in the ring.
    assert served.source.losses.totals() == {LostEventSource.HUBBLE_RING_BUFFER: 37}
    assert served.source.losses.due(0.0, T0, force=True) == []
    metrics = httpx.get(served.url + "/metrics").text.splitlines()
    assert 'spyglass_lost_events_total{source="HUBBLE_RING_BUFFER"} 37.0' in metrics


def test_lost_events_in_the_ring_pass_any_filter(served: Served) -> None:
    lost = LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                     num_events_lost=4, cpu=1)
    with served.ws("verdict=DROPPED") as ws:
        sync(served, ws, flow(0, verdict=Verdict.DROPPED))
        served.source.ring.write_many([flow(1), lost, flow(2)])
        assert recv(ws) == event_to_response(lost, NODE)


def test_slow_client_loses_flows_but_never_silently(served: Served) -> None:
    """A client that stops reading is lapped; every flow is either delivered or counted."""
    ring = served.source.ring = FlowRing(1023)
    batch = [flow(i) for i in range(1000)]
    with served.ws() as ws:
        sync(served, ws, flow(-1))
        total = 0
        for _ in range(300):  # 300k events, far more than the socket buffers hold
            ring.write_many(batch)
            total += len(batch)
        end = flow(99_999, pod="end")
        ring.write(end)
        want_end = event_to_response(end, NODE)
        delivered, lost = 0, 0
        while True:
            msg = recv(ws)
            if msg == want_end:
                break
            if "lost_events" in msg:
                # Lapped by the ring while it did not run, or dropping to catch up.
                assert msg["lost_events"]["source"] in ("HUBBLE_RING_BUFFER", "CLIENT_QUEUE")
                lost += msg["lost_events"]["num_events_lost"]
            else:
                delivered += 1
        assert lost > 0
        assert delivered + lost == total


@pytest.mark.parametrize("query", [
    pytest.param("port=http", id="bad-value"),
    pytest.param("colour=red", id="unknown-filter"),
])
def test_bad_filter_closes_with_1008_and_the_message(served: Served, query: str) -> None:
    with pytest.raises(FilterError) as err:
        key, value = query.split("=", 1)
        build_from_query([(key, value)])
    message = str(err.value)
    with served.ws(query) as ws:
        assert recv(ws) == {"ok": False, "error": message, "status": 400}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1008
        assert ws.close_reason == (message if len(message.encode()) <= 123
                                   else message.encode()[:120].decode(errors="ignore") + "...")


@pytest.mark.parametrize(("query", "message"), [
    pytest.param("last=x", "last: 'x' is not a number; use a whole number like last=20",
                 id="bad-last"),
    pytest.param("first=3", "first cannot be used on the live stream; use last=N for a "
                 "backlog, or GET /api/v1/flows?first=N", id="first"),
])
def test_bad_selector_closes_with_1008(served: Served, query: str, message: str) -> None:
    with served.ws(query) as ws:
        assert recv(ws) == {"ok": False, "error": message, "status": 400}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1008


def test_shutdown_sends_what_was_written_then_closes_with_1000(served: Served) -> None:
    with served.ws() as ws:
        sync(served, ws, flow(0))
        served.source.ring.write_many([flow(1), flow(2)])
        served.server.should_exit = True
        assert [recv(ws)["flow"]["uuid"] for _ in range(2)] == [flow(1).uuid, flow(2).uuid]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert (ws.close_code, ws.close_reason) == (1000, "Spyglass is shutting down")


class BrokenRing(FlowRing):  # type: ignore[misc,unused-ignore]
    def read_chunks(self, seq: int, max_n: int = 1024) -> tuple[list[Chunk], int]:
        raise RuntimeError("ring exploded")


def test_server_fault_closes_with_1011(served: Served) -> None:
    served.source.ring = BrokenRing(63)
    with served.ws() as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1011
        assert ws.close_reason.startswith("internal error (reference ")
        assert "exploded" not in ws.close_reason and "RuntimeError" not in ws.close_reason


def test_connected_clients_are_counted_in_status(served: Served) -> None:
    hub = served.app.state.streams
    with served.ws(), served.ws():
        wait_until(lambda: hub.active == 2, "two live streams")
        assert httpx.get(served.url + "/api/v1/status").json()["connected_clients"] == 2
    wait_until(lambda: hub.active == 0, "the streams to end after the clients left")
