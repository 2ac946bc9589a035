"""The live flow stream: one WebSocket per client, each with its own ring cursor.

Every client reads the shared ring from its own sequence number, so the
collector never waits for anyone: a client that reads too slowly is overtaken
by the writer and gets the ring's `LostEvent` (HUBBLE_RING_BUFFER) inline, and
nobody else notices. Nothing is queued per client beyond one bounded batch, and
`send` awaiting on a slow socket simply stops that client's reads.

Close codes: 1008 for a bad request (the JSON error envelope is sent first,
since a close reason is limited to 123 bytes), 1011 for a server fault, 1000
when the server shuts down through `StreamHub.shutdown()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import TypeGuard

from spyglass.api.errors import ApiError, error_body
from spyglass.api.params import parse_flow_query
from spyglass.api.source import FlowSource
from spyglass.collector.enums import LostEventSource
from spyglass.collector.filters import FilterError
from spyglass.collector.flow import Event, LostEvent, event_to_response
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

log = logging.getLogger("spyglass.api")

POLL_INTERVAL_S = 0.05
BATCH = 512
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR = 1000, 1008, 1011
#: A live stream sends no backlog unless asked (Hubble's `observe -f` without --last).
STREAM_DEFAULT_LAST = 0


class StreamHub:
    """Counts live streams and tells them to close when the server stops.

    Thread-safe on purpose: the agent stops the server from another thread (or a
    signal handler) and streams poll the flag, so no event loop is shared.
    """

    def __init__(self) -> None:
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._active = 0
        self._ring_lost = 0

    @property
    def ring_lost(self) -> int:
        """Events that live clients missed because the ring lapped them (HUBBLE_RING_BUFFER)."""
        with self._cond:
            return self._ring_lost

    def record_ring_lost(self, n: int) -> None:
        with self._cond:
            self._ring_lost += n

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

    def wait_closed(self, timeout: float = 1.0) -> bool:
        """Block until every stream has closed; False if some are still open at the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

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


async def serve_stream(ws: WebSocket, source: FlowSource, hub: StreamHub) -> None:
    """Run one client's stream: backlog, then live events, until either side stops."""
    await ws.accept()
    try:
        await _stream(ws, source, hub)
    except WebSocketDisconnect:
        pass
    except Exception as exc:  # a server fault: say so with 1011, never a silent drop
        log.exception("flow stream failed")
        await _close(ws, CLOSE_ERROR, f"internal error: {type(exc).__name__}: {exc}")


async def _stream(ws: WebSocket, source: FlowSource, hub: StreamHub) -> None:
    ring = source.ring
    try:
        query = parse_flow_query(ws.query_params.multi_items(), capacity=ring.capacity,
                                 default_last=STREAM_DEFAULT_LAST)
        if query.first:
            raise ApiError(400, "first cannot be used on the live stream; use last=N for a "
                                "backlog, or GET /api/v1/flows?first=N")
    except (ApiError, FilterError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        await ws.send_text(json.dumps(error_body(400, message)))
        await _close(ws, CLOSE_POLICY, message)
        return
    predicate = query.predicate()
    node = source.node_name

    async def send(ev: Event) -> None:
        await ws.send_text(json.dumps(event_to_response(ev, node)))

    seq = ring.head
    backlog: list[Event] = []
    if query.number:
        backlog = await run_in_threadpool(ring.last, query.number, predicate)
    # Events written while the backlog was read may appear in both; the ring hands
    # out the same objects, so skip those by identity until the reader passes them.
    dedupe = {id(ev): ev for ev in backlog}
    backlog_head = ring.head
    for ev in backlog:
        await send(ev)
    del backlog

    disconnected = asyncio.ensure_future(_wait_disconnect(ws))
    hub._enter()  # counted once its cursor is set: from here on no event is missed
    try:
        while True:
            # Sampled before the read, so everything written before shutdown is sent.
            closing = hub.closing
            events, next_seq = ring.read_since(seq, BATCH)
            if events and _is_ring_marker(events[0]):
                hub.record_ring_lost(events[0].num_events_lost)
            for ev in events:
                if dedupe and id(ev) in dedupe:
                    continue
                if predicate is None or predicate(ev):
                    await send(ev)
            seq = next_seq
            if dedupe and seq >= backlog_head:
                dedupe = {}
            if disconnected.done():
                return
            if len(events) < BATCH:
                if closing:
                    break
                await asyncio.wait({disconnected}, timeout=POLL_INTERVAL_S)
                if disconnected.done():
                    return
        await _close(ws, CLOSE_NORMAL, "Spyglass is shutting down")
    finally:
        hub._leave()
        disconnected.cancel()


def _is_ring_marker(ev: Event) -> TypeGuard[LostEvent]:
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

