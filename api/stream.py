"""The live flow stream: one WebSocket per client, each with its own cursor and queue.

Every client reads the shared ring from its own sequence number, so the
collector never waits for anyone. Reading and sending are split: a reader task
moves the client's events from the ring into a bounded per-client queue, and
the sender drains that queue into the socket. When the socket is slow, the
queue fills and the reader drops events, and the client gets one `LostEvent`
(CLIENT_QUEUE) in their place, in order. If the reader itself is lapped by
the ring, the ring's own marker (HUBBLE_RING_BUFFER) says so. Either way the
loss is told and counted, and nobody else notices.

`since` streams history from the store first, then switches to the ring with
neither a gap nor a duplicate (see `history_then_ring`).

Close codes: 1000 when the server shuts down (after what was written), 1008
for a bad request or a missing token (the JSON error envelope is sent first,
since a close reason is limited to 123 bytes), 1011 for a server fault or a
store that cannot serve the history. uvicorn pings every 15 s (`serve.py`)
and drops a client that does not answer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeGuard

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from spyglass.api.auth import SUBPROTOCOL, UNAUTHORIZED, AuthConfig, ws_token
from spyglass.api.errors import ApiError, error_body, internal_error
from spyglass.api.gate import HISTORY_SLOTS, Gate
from spyglass.api.history import NO_STORE, RING_DISORDER_NS, store_error
from spyglass.api.params import FlowQuery, parse_flow_query
from spyglass.api.source import FlowSource, HistoryStore, RingReader
from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters import FilterError
from spyglass.collector.lost import LossLedger
from spyglass.collector.ring import Mask
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Event, Flow, LostEvent, event_to_response, responses

log = logging.getLogger("spyglass.api")

POLL_INTERVAL_S = 0.05
#: Events a live reader takes from the ring per step. Columnar reads are cheap (slices and a
#: mask; Flows only for what fits in the queue), so a step takes a whole read's worth: small
#: steps cost a wakeup each and let a fast writer lap the reader.
BATCH = 16384
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_AGAIN = 1000, 1008, 1011, 1013
#: A live stream sends no backlog unless asked (Hubble's `observe -f` without --last).
STREAM_DEFAULT_LAST = 0
#: Events serialised and sent per step of a client's sender.
SEND_BATCH = 256
#: Events one client may have waiting to be sent; past it they become CLIENT_QUEUE losses.
CLIENT_QUEUE_SIZE = 4096
#: The share of one CPU that one client's sender may spend serialising and sending. A
#: client that would take more (one with no filter, under a flood) is held to it: its
#: queue fills and the rest is counted as CLIENT_QUEUE. Without a cap, such a client
#: keeps the interpreter from the collector's thread and the other clients' readers, and
#: they lose events for it (measured in bench/README.md, "Live clients").
CLIENT_CPU_SHARE = 0.25
#: CPU-seconds a client may spend at once before its share applies, so that a burst
#: after a quiet spell goes out at full speed (a quarter second of a whole CPU: about
#: 10k flows; the perf rings hold 0.2 s of a 300k events/s flood).
CLIENT_CPU_BURST_S = 0.25
#: A reader further behind the ring's head than this fraction of its capacity does not
#: wait for its queue to drain: it drops what does not fit, so that it catches up and
#: is never lapped by a client that is merely slow (the loss is then the client's own,
#: CLIENT_QUEUE, not the ring's).
PATIENT_LAG = 0.25
#: History is read in pages of this many flows before the stream switches to live.
HISTORY_PAGE = 5000
#: Uuids remembered to skip ring flows the history already sent (bounds memory).
DEDUPE_MAX = 200_000


class StreamHub:
    """Counts live streams and tells them to close when the server stops.

    Thread-safe on purpose: the agent stops the server from another thread (or a
    signal handler) and streams poll the flag, so no event loop is shared.
    """

    def __init__(self, losses: LossLedger) -> None:
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._active = 0
        self.losses = losses

    @property
    def ring_lost(self) -> int:
        """Events that live clients missed because the ring lapped them (HUBBLE_RING_BUFFER)."""
        return self.losses.totals().get(LostEventSource.HUBBLE_RING_BUFFER, 0)

    def record_ring_lost(self, n: int) -> None:
        """Counted in the ledger, never told in the ring: the lagging client was told."""
        self.losses.add(LostEventSource.HUBBLE_RING_BUFFER, n, tell=False)

    @property
    def client_lost(self) -> int:
        """Events dropped from slow clients' queues (CLIENT_QUEUE)."""
        return self.losses.totals().get(LostEventSource.CLIENT_QUEUE, 0)

    def record_client_lost(self, n: int) -> None:
        self.losses.add(LostEventSource.CLIENT_QUEUE, n, tell=False)

    @property
    def active(self) -> int:
        with self._cond:
            return self._active

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def shutdown(self) -> None:
        """Ask every stream to close with 1000 at its next poll (≤ 50 ms)."""
        self._closing.set()

    def _enter(self) -> None:
        with self._cond:
            self._active += 1

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()


def close_reason(message: str) -> str:
    """A WebSocket close reason must fit in 123 bytes of UTF-8."""
    data = message.encode()
    if len(data) <= 123:
        return message
    return data[:120].decode(errors="ignore") + "..."




class ClientQueue:
    """A bounded FIFO of one client's events that reports its own overflow in line.

    Only the event loop touches it (the reader task and the sender), so it
    needs no lock. Flows past `maxsize` are dropped and counted; loss records (the
    agent's own LostEvents) never are: while the queue is full they are summed by
    source and CPU, and told, with the CLIENT_QUEUE marker, as soon as there is
    room. Those few records may go past `maxsize`, so a gap is always reported
    where it happened, with what the agent lost in it, even when the queue is full.
    """

    def __init__(self, hub: StreamHub, maxsize: int = CLIENT_QUEUE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError(f"a client queue needs room for at least 1 event, got {maxsize}")
        self.hub = hub
        self.maxsize = maxsize
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()  # set whenever the sender takes events out
        self.dropped = 0  # dropped since the last marker
        #: Loss records that arrived while the queue was full: (source, cpu) -> (first
        #: time, events lost), told with the next marker.
        self._untold: dict[tuple[LostEventSource, int | None], tuple[int, int]] = {}
        self.closed = False
        self.error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, ev: Event) -> bool:
        """Queue `ev`, or drop and count it when the client is too far behind (a loss
        record is never dropped: it waits for room, summed with others of its kind)."""
        self.flush_marker()
        if isinstance(ev, LostEvent) and (self.dropped or self._untold
                                          or len(self._items) >= self.maxsize):
            key = (ev.source, ev.cpu)
            first, n = self._untold.get(key, (ev.time_ns, 0))
            self._untold[key] = (first, n + ev.num_events_lost)
            return True
        if self.dropped or len(self._items) >= self.maxsize:
            self.dropped += 1
            self.hub.record_client_lost(1)
            return False
        self._items.append(ev)
        self._ready.set()
        return True

    def room(self) -> int:
        """How many events fit before the queue starts dropping (0 while a loss is untold)."""
        return 0 if self.dropped or self._untold else max(0, self.maxsize - len(self._items))

    def drop(self, n: int) -> None:
        """Count `n` events this client will not get, told by one marker when there is room."""
        if n > 0:
            self.dropped += n
            self.hub.record_client_lost(n)

    def flush_marker(self) -> None:
        """Put the CLIENT_QUEUE marker, and the loss records that waited, in as soon as
        there is room again."""
        if not (self.dropped or self._untold) or len(self._items) >= self.maxsize:
            return
        if self.dropped:
            self._items.append(LostEvent(time_ns=time.time_ns(),
                                         source=LostEventSource.CLIENT_QUEUE,
                                         num_events_lost=self.dropped))
            self.dropped = 0
        for (source, cpu), (first, n) in self._untold.items():
            self._items.append(LostEvent(time_ns=first, source=source, num_events_lost=n,
                                         cpu=cpu))
        self._untold.clear()
        self._ready.set()

    def close(self, error: BaseException | None = None) -> None:
        """No more events: the sender drains what is queued, then stops (raising `error`)."""
        self.closed = True
        if error is not None and self.error is None:
            self.error = error
        self._ready.set()

    async def get(self) -> Event | None:
        """The next event, or None once closed and drained."""
        evs = await self.get_many(1)
        return evs[0] if evs else None

    async def get_many(self, n: int) -> list[Event]:
        """Up to `n` queued events (at least one), or [] once closed and drained."""
        while not self._items:
            if self.closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        items = self._items
        taken = [items.popleft() for _ in range(min(n, len(items)))]
        self._space.set()
        return taken

    async def wait_room(self, timeout_s: float) -> None:
        """Give the sender up to `timeout_s` to make room (a client that keeps up on average
        may still fall a burst behind)."""
        self.flush_marker()
        if self.room() or self.closed:
            return
        self._space.clear()
        try:
            await asyncio.wait_for(self._space.wait(), timeout_s)
        except TimeoutError:
            pass


class CpuBudget:
    """A token bucket of CPU time: `share` CPU-seconds per second, at most `burst_s` saved.

    The sender charges what each batch cost and pauses for as long as it overdrew, so a
    client's long-run cost is bounded by `share` whatever it asks for.
    """

    def __init__(self, share: float, burst_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < share <= 1 or burst_s < 0:
            raise ValueError(f"a CPU budget needs 0 < share <= 1 and burst >= 0, got "
                             f"share={share}, burst={burst_s}")
        self.share = share
        self.burst_s = burst_s
        self._clock = clock
        self._credit = burst_s
        self._at = clock()

    def charge(self, cpu_s: float) -> float:
        """Spend `cpu_s`; the seconds to pause before spending again (0 within budget)."""
        now = self._clock()
        self._credit = min(self.burst_s, self._credit + (now - self._at) * self.share) - cpu_s
        self._at = now
        return -self._credit / self.share if self._credit < 0 else 0.0


class RingSkip:
    """Which ring events a new reader must not send again, until it passes `until_seq`."""

    def __init__(self, until_seq: int, test: Callable[[Event], bool]) -> None:
        self.until_seq = until_seq
        self.test = test


async def serve_stream(ws: WebSocket, source: FlowSource, hub: StreamHub,
                       auth: AuthConfig | None = None, history_gate: Gate | None = None) -> None:
    """Run one client's stream: optional history or backlog, then live events."""
    config = auth or AuthConfig()
    token, via_protocol = ws_token({k.lower(): v for k, v in ws.headers.items()},
                                   dict(ws.query_params))
    await ws.accept(subprotocol=SUBPROTOCOL if via_protocol else None)
    try:
        if config.protects(ws.url.path) and not config.allows(token):
            await _refuse(ws, 401, UNAUTHORIZED, CLOSE_POLICY)
            return
        await _stream(ws, source, hub, history_gate or Gate(HISTORY_SLOTS, "history requests"))
    except WebSocketDisconnect:
        pass
    except Exception:  # a server fault: say so with 1011, never a silent drop
        ref = secrets.token_hex(4)
        log.exception("flow stream failed (reference %s)", ref)
        await _close(ws, CLOSE_ERROR, internal_error(ref))


async def _refuse(ws: WebSocket, status: int, message: str, code: int) -> None:
    await ws.send_text(json.dumps(error_body(status, message)))
    await _close(ws, code, message)


def _parse(ws: WebSocket, source: FlowSource) -> FlowQuery:
    query = parse_flow_query(ws.query_params.multi_items(), capacity=source.ring.capacity,
                             default_last=STREAM_DEFAULT_LAST)
    if query.first and query.counted:
        raise ApiError(400, "first cannot be used on the live stream; use last=N for a "
                            "backlog, or GET /api/v1/flows?first=N")
    if query.until_ns is not None:
        raise ApiError(400, "until ends a range, and a stream never ends: use GET "
                            "/api/v1/flows?since=…&until=… for a fixed range")
    if query.after is not None:
        raise ApiError(400, "after pages GET /api/v1/flows; a stream resumes with since=<time>")
    if query.since_ns is not None and query.counted:
        raise ApiError(400, "since and last cannot be combined on the stream: since=T "
                            "already sends every flow from T on")
    return query


async def _stream(ws: WebSocket, source: FlowSource, hub: StreamHub, gate: Gate) -> None:
    ring = source.ring
    try:
        query = _parse(ws, source)
    except (ApiError, FilterError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        await _refuse(ws, 400, message, CLOSE_POLICY)
        return
    mask = query.mask()
    node = source.node_name

    async def send(ev: Event) -> None:
        await ws.send_text(json.dumps(event_to_response(ev, node)))

    skip: RingSkip | None
    if query.since_ns is not None:
        store = source.store
        if store is None:
            await _refuse(ws, 503, NO_STORE, CLOSE_ERROR)
            return
        try:
            seq, skip = await history_then_ring(store, ring, query, send, gate)
        except ApiError as exc:
            await _refuse(ws, exc.status, exc.message,
                          CLOSE_TRY_AGAIN if exc.status == 429 else CLOSE_ERROR)
            return
    else:
        seq, skip = await backlog(ring, query, mask, send), None
    await _live(ws, ring, hub, seq, skip, mask, node)


async def backlog(ring: RingReader, query: FlowQuery, mask: Mask | None,
                   send: Callable[[Event], Awaitable[None]]) -> int:
    """`last=N`: the newest matching events before the head, then live from that head,
    so that an event written while the backlog is read is sent once, live."""
    seq = ring.head
    if not query.number:
        return seq
    backlog: list[Event] = await run_in_threadpool(
        lambda: ring.last(query.number, mask, before=seq))
    for ev in backlog:
        await send(ev)
    return seq


async def history_then_ring(store: HistoryStore, ring: RingReader, query: FlowQuery,
                             send: Callable[[Event], Awaitable[None]], gate: Gate
                             ) -> tuple[int, RingSkip]:
    """Send the store's flows from `since`, then hand over to the ring without gap or repeat.

    The store lags the ring by the writer's flush interval, so the ring is read
    from its oldest event, not from its head: whatever the store did not have
    yet comes from there. Ring flows the history already sent are skipped by
    uuid. Only flows as new as the ring's oldest can be in both, so only their
    uuids are kept (at most DEDUPE_MAX; past that, everything at or before the
    oldest forgotten uuid counts as sent). Once the reader passes the ring head
    noted after the last store page, nothing it reads can be in the store's
    answer, and the skipping stops.
    """
    since = query.since_ns
    assert since is not None
    bounds = ring.time_bounds()
    keep_from = bounds[0] - RING_DISORDER_NS if bounds else since
    started = time.time_ns()
    sent: OrderedDict[str, int] = OrderedDict()
    floor = since  # ring flows older than this are never sent
    after = None
    while True:
        try:
            with gate.enter():  # a slot per page, not while the client reads it
                page, after = await run_in_threadpool(
                    store.query_flows, query.filters, since_ns=since, until_ns=None,
                    limit=HISTORY_PAGE, order="asc", after=after)
        except ApiError:
            raise
        except Exception as exc:
            raise store_error(exc) from exc
        for flow in page:
            await send(flow)
            if flow.time_ns >= keep_from:
                sent[flow.uuid] = flow.time_ns
                if len(sent) > DEDUPE_MAX:
                    _, t = sent.popitem(last=False)
                    floor = max(floor, t + 1)
        if after is None or not page or page[-1].time_ns >= started:
            break
    until_seq = ring.head
    start = max(0, ring.head - len(ring))

    def already_sent(ev: Event) -> bool:
        if isinstance(ev, Flow):
            return ev.time_ns < floor or ev.uuid in sent
        return ev.time_ns < since  # old lost-event records belong to the past

    return start, RingSkip(until_seq, already_sent)


async def live_batches(ring: RingReader, hub: StreamHub, queue: ClientQueue, seq: int,
                       skip: RingSkip | None, mask: Mask | None,
                       ) -> AsyncIterator[list[Event]]:
    """One live client's events from `seq` on, in batches, until `queue` is closed and
    drained: the reader task fills the queue, and the consumer's work on each batch
    (serialising, sending) is charged to the client's CPU budget when it asks for the
    next one. The WebSocket and the gRPC stream both send from here. A reader's error is
    left in `queue.error` for the caller to raise."""
    hub._enter()  # counted once its cursor is set: from here on no event is missed
    reader = asyncio.ensure_future(read_ring(ring, hub, queue, seq, skip, mask))
    budget = CpuBudget(CLIENT_CPU_SHARE, CLIENT_CPU_BURST_S)
    try:
        while True:
            evs = await queue.get_many(SEND_BATCH)
            if not evs:
                break
            spent = time.thread_time()
            yield evs
            # A send into a socket with room does not suspend: yield once per batch (or
            # for as long as the budget says), or a busy client's sender would keep the
            # collector and every other stream's reader off the interpreter.
            await asyncio.sleep(budget.charge(time.thread_time() - spent))
    finally:
        hub._leave()
        reader.cancel()


async def _live(ws: WebSocket, ring: RingReader, hub: StreamHub, seq: int,
                skip: RingSkip | None, mask: Mask | None, node: str) -> None:
    queue = ClientQueue(hub)
    disconnected = asyncio.ensure_future(_wait_disconnect(ws))
    disconnected.add_done_callback(lambda _: queue.close())
    try:
        async for evs in live_batches(ring, hub, queue, seq, skip, mask):
            for text in _texts(evs, node):
                await ws.send_text(text)
        if disconnected.done():
            return
        if queue.error is not None:
            raise queue.error
        await _close(ws, CLOSE_NORMAL, "Spyglass is shutting down")
    finally:
        disconnected.cancel()


async def read_ring(ring: RingReader, hub: StreamHub, queue: ClientQueue, seq: int,
                     skip_first: RingSkip | None, mask: Mask | None) -> None:
    """Move this client's events from the ring into its queue until shutdown or error.

    The ring hands out column batches: the filter runs as a mask over each, and a Flow
    is built only for a selected row that fits in the queue. Rows past the queue's room
    are counted as CLIENT_QUEUE losses without being built, so a client that cannot
    keep up costs the agent little more than one that can.
    """
    skip = skip_first
    patience = int(ring.capacity * PATIENT_LAG)
    try:
        while not queue.closed:
            # Sampled before the read, so everything written before shutdown is sent.
            closing = hub.closing
            chunks, next_seq = ring.read_chunks(seq, BATCH)
            if chunks and _is_ring_marker(chunks[0]):
                hub.record_ring_lost(chunks[0].num_events_lost)
            read = 0
            for chunk in chunks:
                if isinstance(chunk, LostEvent):
                    read += 1
                    if skip is None or not skip.test(chunk):
                        queue.offer(chunk)
                    continue
                await _offer_rows(queue, chunk, mask, skip,
                                  functools.partial(_near_head, ring, seq + read, patience))
                read += len(chunk)
            queue.flush_marker()
            seq = next_seq
            if skip is not None and seq >= skip.until_seq:
                skip = None
            if read < BATCH:
                if closing:
                    break
                await asyncio.sleep(POLL_INTERVAL_S)
            else:
                await asyncio.sleep(0)  # let the sender run between batches
        queue.close()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        queue.close(exc)


def _near_head(ring: RingReader, chunk_seq: int, patience: int, row: int) -> bool:
    """Whether row `row` of the chunk that starts at `chunk_seq` is near the ring's head."""
    return ring.head - (chunk_seq + row) < patience


def _texts(events: list[Event], node: str) -> list[str]:
    """The messages of a batch of events, serialised together (`responses` shares the
    endpoints' JSON across the batch)."""
    return [json.dumps(r) for r in responses(events, node)]


async def _offer_rows(queue: ClientQueue, chunk: EnrichedBatch, mask: Mask | None,
                      skip: RingSkip | None, patient: Callable[[int], bool]) -> None:
    """Queue the rows of one batch slice that the filter selects, as Flows, building only
    as many as the queue has room for. When the queue fills, a reader that is still
    `patient(row)` (near the ring's head) gives the sender one poll interval to drain it; what
    still does not fit is counted as dropped, in line, without being built (and while a
    drop is untold, the next rows are dropped at once). Once the reader has fallen behind,
    it drops at once, so a slow client never gets its reader lapped."""
    rows = np.flatnonzero(mask(chunk)) if mask is not None else np.arange(len(chunk))
    while len(rows):
        queue.flush_marker()  # a drop told as soon as there is room, so room is real
        room = queue.room()
        if not room and not queue.dropped and patient(int(rows[0])):
            await queue.wait_room(POLL_INTERVAL_S)
            queue.flush_marker()
            room = queue.room()
        if not room:
            queue.drop(len(rows))
            return
        for ev in chunk.take(rows[:room]).to_flows():
            if skip is None or not skip.test(ev):
                queue.offer(ev)
        rows = rows[room:]


def _is_ring_marker(ev: object) -> TypeGuard[LostEvent]:
    """The ring's own "you were lapped" event (it never stores this source)."""
    return isinstance(ev, LostEvent) and ev.source == LostEventSource.HUBBLE_RING_BUFFER


async def _wait_disconnect(ws: WebSocket) -> None:
    """Return when the client goes away; anything it sends is ignored."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    try:
        await ws.close(code=code, reason=close_reason(reason))
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass  # the client is already gone
