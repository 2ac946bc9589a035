"""History through the API: store + ring pages, cursors, since+follow without gap or repeat.

These run in-process with a small list-backed store that keeps FlowStore's
contract (order by (time, uuid), cursor = last of a full page), so the writer
lag can be staged exactly: flows in the ring only, in the store only, or in
both. The real chDB store is exercised in test_api_store.py (its own process,
since chDB admits one store path per process).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import FakeSource, ListStore, flow, flows
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from spyglass.api.app import create_app
from spyglass.api.history import history_page
from spyglass.api.params import decode_cursor, encode_cursor
from spyglass.api.serve import serve_in_thread
from spyglass.api.stream import POLL_INTERVAL_S, ClientQueue, CpuBudget, StreamHub
from spyglass.collector.filters import FilterSet, build_from_query
from spyglass.collector.lost import LossLedger
from spyglass.collector.ring import FlowRing
from spyglass.model.enums import LostEventSource, Verdict
from spyglass.model.flow import Flow, LostEvent

WAIT_S = 10.0
NOW = time.time_ns()
T0 = NOW - 600 * 1_000_000_000  # ten minutes ago: inside since=1h; flows are flow(i, t0=T0)


@pytest.fixture()
def served() -> Iterator[tuple[FakeSource, str]]:
    source = FakeSource(store=ListStore())
    with serve_in_thread(create_app(source)) as (_, url):
        yield source, url


def uuids(body: dict[str, Any]) -> list[str]:
    return [r["flow"]["uuid"] for r in body["flows"]]


# -- GET /flows with a range ---------------------------------------------------------


def test_history_merges_store_and_ring_without_duplicates(served: tuple[FakeSource, str]) -> None:
    source, url = served
    assert source.store is not None
    source.store.add([flow(i, t0=T0) for i in range(0, 8)])          # written
    source.ring.write_many([flow(i, t0=T0) for i in range(4, 12)])   # 4..7 in both, 8..11 not yet
    body = httpx.get(f"{url}/api/v1/flows", params={"since": "1h"}).json()
    assert uuids(body) == [f"u{i:06d}" for i in range(12)]
    assert body["next"] is None


@pytest.mark.parametrize(("selector", "expected"), [
    pytest.param("first", list(range(0, 5)), id="first"),
    pytest.param("last", list(range(7, 12)), id="last"),
])
def test_first_and_last_limit_a_range(served: tuple[FakeSource, str], selector: str,
                                      expected: list[int]) -> None:
    source, url = served
    assert source.store is not None
    source.store.add([flow(i, t0=T0) for i in range(0, 8)])
    source.ring.write_many([flow(i, t0=T0) for i in range(6, 12)])
    body = httpx.get(f"{url}/api/v1/flows", params={"since": "1h", selector: "5"}).json()
    assert uuids(body) == [f"u{i:06d}" for i in expected]  # oldest first either way
    assert body["next"] is not None


@pytest.mark.parametrize("selector", [pytest.param("first", id="forward"),
                                      pytest.param("last", id="backward")])
def test_paging_by_cursor_visits_every_flow_once(served: tuple[FakeSource, str],
                                                 selector: str) -> None:
    source, url = served
    assert source.store is not None
    same_time = T0 + 500
    flows = [flow(i, t=same_time if 20 <= i < 40 else None, t0=T0) for i in range(100)]
    source.store.add(flows[:90])
    source.ring.write_many(flows[80:])
    seen: list[str] = []
    params: dict[str, str] = {"since": "1h", selector: "7", "verdict": "FORWARDED"}
    for _ in range(100):
        body = httpx.get(f"{url}/api/v1/flows", params=params).json()
        got = uuids(body)
        seen += got if selector == "first" else list(reversed(got))
        if body["next"] is None:
            break
        params["after"] = body["next"]
    want = sorted(f.uuid for f in flows)
    assert sorted(seen) == want and len(seen) == len(set(seen))


def test_filters_apply_to_store_and_ring_alike(served: tuple[FakeSource, str]) -> None:
    source, url = served
    assert source.store is not None
    flows = [flow(i, t0=T0, verdict=Verdict.DROPPED if i % 2 else Verdict.FORWARDED)
             for i in range(10)]
    source.store.add(flows[:6])
    source.ring.write_many(flows[6:])
    body = httpx.get(f"{url}/api/v1/flows", params={"since": "1h", "verdict": "DROPPED"}).json()
    assert uuids(body) == [f"u{i:06d}" for i in (1, 3, 5, 7, 9)]


@pytest.mark.parametrize(("params", "status", "message"), [
    pytest.param({"since": "5 minutes"}, 400, "since: '5 minutes' is not a duration; use a "
                 "duration ago like 5m, 1h30m or 2d, or an RFC3339 time like "
                 "2025-11-26T13:00:00Z", id="bad-since"),
    pytest.param({"since": "2025-13-45T00:00:00Z"}, 400, "since: '2025-13-45T00:00:00Z' is "
                 "not a valid RFC3339 time; use a duration ago like 5m, 1h30m or 2d, or an "
                 "RFC3339 time like 2025-11-26T13:00:00Z", id="bad-rfc3339"),
    pytest.param({"since": "1h", "until": "2h"}, 400, "since (1h) is after until (2h); swap "
                 "them, or give since only for everything up to now", id="reversed"),
    pytest.param({"after": "abc"}, 400, "after pages through history: give the same since "
                 "(and until) as the first page, e.g. since=1h&after=<next>", id="after-alone"),
    pytest.param({"since": "1h", "after": "abc"}, 400, "after: 'abc' is not a cursor from "
                 "this API; pass the `next` value of the previous page unchanged",
                 id="bad-cursor"),
    pytest.param({"since": "1h", "last": "3", "after": encode_cursor("asc", (1, "u"))}, 400,
                 "after: this cursor continues a first= query; repeat the same selector "
                 "(first or last) with it", id="cursor-other-direction"),
    pytest.param({"since": "1h", "first": "-1"}, 400, "first: -1 is negative; use 0 or more, "
                 "like first=20", id="negative-first"),
])
def test_bad_history_requests_say_what_to_fix(served: tuple[FakeSource, str],
                                              params: dict[str, str], status: int,
                                              message: str) -> None:
    _, url = served
    resp = httpx.get(f"{url}/api/v1/flows", params=params)
    assert (resp.status_code, resp.json()) == (status, {"ok": False, "error": message,
                                                        "status": status})


def test_history_without_a_store_is_503_with_the_fix() -> None:
    source = FakeSource()
    with serve_in_thread(create_app(source)) as (_, url):
        resp = httpx.get(f"{url}/api/v1/flows", params={"since": "5m"})
    assert resp.status_code == 503
    assert "--store" in resp.json()["error"]


@pytest.mark.parametrize("cursor", [pytest.param((0, ""), id="zero"),
                                    pytest.param((NOW, "a\"b'c"), id="quotes")])
def test_cursor_round_trip(cursor: tuple[int, str]) -> None:
    assert decode_cursor(encode_cursor("desc", cursor), "desc") == cursor


def test_history_page_skips_the_ring_scan_when_the_page_ends_before_it() -> None:
    store = ListStore()
    store.add([flow(i, t0=T0) for i in range(50)])
    ring = FlowRing(63)
    ring.write_many([flow(i, t=NOW + i) for i in range(1000, 1010)])
    page, cursor = history_page(store, ring, FilterSet(), since_ns=T0, until_ns=None, limit=10,
                                order="asc", after=None)
    assert [f.uuid for f in page] == [f"u{i:06d}" for i in range(10)]
    assert cursor == (page[-1].time_ns, page[-1].uuid)


# -- the stream: since + follow ----------------------------------------------------------


def ws_connect(url: str, query: str) -> ClientConnection:
    return connect(url.replace("http://", "ws://") + "/api/v1/flows/stream?" + query,
                   open_timeout=WAIT_S, close_timeout=2)


def recv(ws: ClientConnection) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ws.recv(timeout=WAIT_S))
    return body


def test_since_follow_switches_to_live_without_gap_or_duplicate(
        served: tuple[FakeSource, str]) -> None:
    """Store 0..59, ring 40..79 (the writer's lag), then live 80..99 while switching."""
    source, url = served
    store = source.store
    assert store is not None
    store.add([flow(i, t0=T0) for i in range(60)])
    source.ring.write_many([flow(i, t0=T0) for i in range(40, 80)])
    live_started = threading.Event()

    def writer() -> None:
        live_started.wait(WAIT_S)
        for i in range(80, 100):
            source.ring.write(flow(i, t0=T0))
            if i % 5 == 0:
                store.add([flow(j, t0=T0) for j in range(i - 5, i)])  # the writer catches up

    t = threading.Thread(target=writer)
    t.start()
    try:
        with ws_connect(url, "since=1h") as ws:
            got = []
            while len(got) < 100:
                msg = recv(ws)
                assert "flow" in msg, msg
                got.append(msg["flow"]["uuid"])
                live_started.set()
            assert got == [f"u{i:06d}" for i in range(100)]
            source.ring.write(flow(100, t0=T0))
            assert recv(ws)["flow"]["uuid"] == "u000100"
    finally:
        live_started.set()
        t.join()


def test_since_follow_filters_history_and_live(served: tuple[FakeSource, str]) -> None:
    source, url = served
    assert source.store is not None
    source.store.add([flow(i, pod="cart" if i % 2 else "web", t0=T0) for i in range(10)])
    with ws_connect(url, "since=1h&from-pod=shop/cart") as ws:
        assert [recv(ws)["flow"]["uuid"] for _ in range(5)] == [f"u{i:06d}"
                                                                  for i in (1, 3, 5, 7, 9)]
        source.ring.write_many([flow(20, pod="web", t0=T0), flow(21, pod="cart", t0=T0)])
        assert recv(ws)["flow"]["uuid"] == "u000021"


@pytest.mark.parametrize(("query", "message"), [
    pytest.param("since=1h&until=5m", "until ends a range, and a stream never ends: use GET "
                 "/api/v1/flows?since=…&until=… for a fixed range", id="until"),
    pytest.param("since=1h&last=5", "since and last cannot be combined on the stream: since=T "
                 "already sends every flow from T on", id="since-last"),
    pytest.param("since=yesterday", "since: 'yesterday' is not a duration; use a duration ago "
                 "like 5m, 1h30m or 2d, or an RFC3339 time like 2025-11-26T13:00:00Z",
                 id="bad-since"),
])
def test_stream_refuses_bad_ranges_with_1008(served: tuple[FakeSource, str], query: str,
                                             message: str) -> None:
    _, url = served
    with ws_connect(url, query) as ws:
        assert recv(ws) == {"ok": False, "error": message, "status": 400}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1008


def test_stream_since_without_a_store_closes_1011_with_the_fix() -> None:
    with serve_in_thread(create_app(FakeSource())) as (_, url), \
            ws_connect(url, "since=5m") as ws:
        body = recv(ws)
        assert body["status"] == 503 and "--store" in body["error"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=WAIT_S)
        assert ws.close_code == 1011


# -- slow clients ----------------------------------------------------------------------


def test_client_queue_reports_its_overflow_in_place() -> None:
    import asyncio

    losses = LossLedger()
    hub = StreamHub(losses)

    async def run() -> list[Any]:
        q = ClientQueue(hub, maxsize=3)
        accepted = [q.offer(flow(i)) for i in range(6)]
        assert accepted == [True, True, True, False, False, False]
        out = [await q.get(), await q.get()]
        q.offer(flow(6))  # room again: the marker goes first, then the new flow
        q.close()
        while (ev := await q.get()) is not None:
            out.append(ev)
        return out

    out = asyncio.run(run())
    kinds = [ev.uuid if isinstance(ev, Flow) else (ev.source, ev.num_events_lost) for ev in out]
    assert kinds == ["u000000", "u000001", "u000002",
                     (LostEventSource.CLIENT_QUEUE, 3), "u000006"]
    assert hub.client_lost == 3
    # Counted in the agent's ledger, and told only to the client (the marker above).
    assert losses.totals() == {LostEventSource.CLIENT_QUEUE: 3}
    assert losses.due(0.0, 0, force=True) == []


def test_client_queue_never_drops_the_agents_loss_records() -> None:
    """A full queue drops flows, but a LostEvent from the ring waits (summed by source and
    CPU) and is told right after the CLIENT_QUEUE marker, so a slow client still learns
    what the agent lost, not just that it was behind."""
    import asyncio

    hub = StreamHub(LossLedger())

    def perf(n: int, cpu: int) -> LostEvent:
        return LostEvent(time_ns=T0 + n, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                         num_events_lost=n, cpu=cpu)

    async def run() -> list[Any]:
        q = ClientQueue(hub, maxsize=2)
        for ev in [flow(0), flow(1), flow(2), perf(5, 0), flow(3), perf(7, 0), perf(4, 1)]:
            assert q.offer(ev) is (not isinstance(ev, Flow) or ev.uuid in ("u000000", "u000001"))
        assert q.room() == 0
        out = [await q.get()]  # room for the markers again: they go in, past maxsize
        assert not q.offer(flow(4))  # so the next flow is dropped until the queue drains
        out += [await q.get() for _ in range(4)]
        assert q.offer(flow(5))
        q.close()
        while (ev := await q.get()) is not None:
            out.append(ev)
        return out

    out = asyncio.run(run())
    kinds = [ev.uuid if isinstance(ev, Flow) else (ev.source.name, ev.num_events_lost, ev.cpu)
             for ev in out]
    assert kinds == ["u000000", "u000001", ("CLIENT_QUEUE", 2, None),
                     ("PERF_EVENT_RING_BUFFER", 12, 0), ("PERF_EVENT_RING_BUFFER", 4, 1),
                     ("CLIENT_QUEUE", 1, None), "u000005"]
    assert out[3].time_ns == T0 + 5  # the first record's time
    assert hub.client_lost == 3  # only the flows count as the client's own loss


def _reader_after_flood(capacity: int, written: int, queue_size: int,
                        ) -> tuple[ClientQueue, StreamHub, list[float]]:
    """Run one client's ring reader over `written` flows with nobody draining its queue,
    until it has read them all; (its queue, the hub, every grace wait it asked for)."""
    import asyncio

    from spyglass.api.stream import read_ring

    ring = FlowRing(capacity)
    ring.write_many(flows(written))
    hub = StreamHub(LossLedger())
    waits: list[float] = []

    async def run() -> ClientQueue:
        q = ClientQueue(hub, maxsize=queue_size)

        async def no_drain(timeout_s: float) -> None:  # the sender never takes anything
            waits.append(timeout_s)

        q.wait_room = no_drain  # type: ignore[method-assign]
        task = asyncio.ensure_future(read_ring(ring, hub, q, 0, None, None))
        while len(q) + q.dropped < written:
            await asyncio.sleep(0.001)
        task.cancel()
        return q

    return asyncio.run(run()), hub, waits


def test_a_reader_far_behind_drops_at_once_instead_of_being_lapped() -> None:
    """A quarter of the ring or more behind, a full queue gets no grace: the reader drops
    the rest as CLIENT_QUEUE and catches up, so its client's loss is told as its own."""
    q, hub, waits = _reader_after_flood(capacity=1023, written=1000, queue_size=10)
    assert waits == []
    assert len(q) == 10 and q.dropped == 990
    assert hub.client_lost == 990 and hub.ring_lost == 0


def test_a_reader_near_the_head_gives_a_full_queue_one_grace_wait() -> None:
    q, hub, waits = _reader_after_flood(capacity=(1 << 16) - 1, written=1000, queue_size=10)
    assert waits == [POLL_INTERVAL_S]  # once; then the untold drop takes the rest at once
    assert len(q) == 10 and hub.client_lost == 990 and hub.ring_lost == 0


def test_cpu_budget_holds_a_sender_to_its_share() -> None:
    now = [0.0]
    b = CpuBudget(0.25, burst_s=0.05, clock=lambda: now[0])
    assert b.charge(0.04) == 0.0  # within the saved burst
    pause = b.charge(0.03)  # 0.02 overdrawn at 0.25 CPU-s per second: 80 ms
    assert pause == pytest.approx(0.08)
    now[0] += pause
    assert b.charge(0.0) == pytest.approx(0.0)
    # Long run: whatever it asks for, spent / elapsed tends to the share.
    spent = 0.0
    for _ in range(1000):
        spent += 0.01
        now[0] += 0.001 + b.charge(0.01)
    assert spent / now[0] == pytest.approx(0.25, rel=0.02)
    now[0] += 100  # a quiet spell saves at most the burst
    assert b.charge(0.05) == 0.0 and b.charge(0.001) > 0


@pytest.mark.parametrize(("share", "burst"), [(0, 0.05), (1.5, 0.05), (0.5, -1)])
def test_cpu_budget_rejects_nonsense(share: float, burst: float) -> None:
    with pytest.raises(ValueError, match="CPU budget"):
        CpuBudget(share, burst)


class RawClient:
    """A WebSocket client that reads only when told (websockets' own client reads ahead).

    Its receive buffer is tiny, so the server's socket fills after a few frames,
    as with a real client that stalled.
    """

    def __init__(self, url: str) -> None:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(WAIT_S)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /api/v1/flows/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the server closed the stream")
            self.buf += chunk

    def recv(self) -> dict[str, Any]:
        """The next text frame as JSON (server frames are unmasked and unfragmented)."""
        while True:
            self._need(2)
            opcode, size, pos = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if size == 126:
                self._need(4)
                size, pos = struct.unpack(">H", self.buf[2:4])[0], 4
            elif size == 127:
                self._need(10)
                size, pos = struct.unpack(">Q", self.buf[2:10])[0], 10
            self._need(pos + size)
            payload, self.buf = self.buf[pos:pos + size], self.buf[pos + size:]
            if opcode == 1:
                body: dict[str, Any] = json.loads(payload)
                return body

    def close(self) -> None:
        self.sock.close()


def test_slow_client_gets_client_queue_losses_and_others_get_everything() -> None:
    """A client that stops reading fills its own queue; a reading client loses nothing."""
    source = FakeSource((1 << 20) - 1)  # big enough never to lap anyone
    app = create_app(source)
    hub = app.state.streams
    big = "x" * 2000  # fat flows fill the socket buffers quickly
    total = 20_000
    with serve_in_thread(app) as (_, url), ws_connect(url, "") as fast:
        slow = RawClient(url)
        try:
            deadline = time.monotonic() + WAIT_S
            while hub.active < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert hub.active == 2, "both clients must be connected before the flood"
            fast_got: list[str] = []

            def read_fast() -> None:
                while len(fast_got) < total:
                    msg = recv(fast)
                    assert "flow" in msg, msg
                    fast_got.append(msg["flow"]["uuid"])

            reader = threading.Thread(target=read_fast)
            reader.start()
            # 5k flows/s: within what one client's CPU share sends (CLIENT_CPU_SHARE)
            for i in range(0, total, 500):
                source.ring.write_many([Flow(time_ns=T0 + j, uuid=f"u{j:06d}-{big}")
                                        for j in range(i, i + 500)])
                time.sleep(0.1)
            reader.join(timeout=60)
            assert fast_got == [f"u{j:06d}-{big}" for j in range(total)]
            deadline = time.monotonic() + WAIT_S
            while hub.client_lost == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hub.client_lost > 0
            assert hub.ring_lost == 0
            # Now drain the slow one: every flow is delivered or counted, in order.
            delivered, lost, last = 0, 0, -1
            while delivered + lost < total:
                msg = slow.recv()
                if "lost_events" in msg:
                    assert msg["lost_events"]["source"] == "CLIENT_QUEUE"
                    lost += msg["lost_events"]["num_events_lost"]
                else:
                    j = int(msg["flow"]["uuid"][1:7])
                    assert j > last
                    last = j
                    delivered += 1
            assert lost == hub.client_lost and delivered + lost == total
            status = httpx.get(f"{url}/api/v1/status").json()
            assert status["lost_events"] == {"CLIENT_QUEUE": lost}
            assert source.losses.totals() == {LostEventSource.CLIENT_QUEUE: lost}
            metrics = httpx.get(f"{url}/metrics").text.splitlines()
            assert f'spyglass_lost_events_total{{source="CLIENT_QUEUE"}} {float(lost)}' in metrics
        finally:
            slow.close()


def test_build_from_query_ignores_the_token_parameter() -> None:
    from spyglass.api.params import parse_flow_query

    q = parse_flow_query([("token", "secret"), ("verdict", "DROPPED")], capacity=63)
    assert q.filters == build_from_query([("verdict", "DROPPED")])
