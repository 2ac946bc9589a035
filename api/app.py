"""The FastAPI app: status, flow history from the ring, and the live stream.

`create_app` takes a `FlowSource` instead of building one, so the agent, tests
and a future multi-node relay can all serve the same endpoints. Blocking ring
scans run in the thread pool, never on the event loop that feeds live streams.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from spyglass.api.errors import install_error_handlers
from spyglass.api.models import ErrorResponse, FlowsResponse, StatusResponse
from spyglass.api.params import parse_flow_query
from spyglass.api.source import FlowSource, RateMeter, RingReader
from spyglass.api.stream import StreamHub, serve_stream
from spyglass.collector.enums import LostEventSource
from spyglass.collector.flow import Event, LostEvent, event_to_response

API = "/api/v1"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad parameter or filter"},
    500: {"model": ErrorResponse, "description": "server fault"},
}
_FIRST_CHUNK = 4096


def package_version() -> str:
    try:
        return metadata.version("spyglass")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(source: FlowSource, *, ui_dir: str | None = None) -> FastAPI:
    """Build the API over `source`; serve the static UI at `/` when `ui_dir` exists.

    `app.state.streams` is the `StreamHub`: call its `shutdown()` before stopping
    the server so that live clients get a normal close (1000), not uvicorn's 1012.
    """
    hub = StreamHub()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        hub.shutdown()  # streams still open (e.g. in-process test clients) end with 1000

    app = FastAPI(
        title="Spyglass",
        version=package_version(),
        description="Flow observability for Linux: live flows, history and status.",
        lifespan=lifespan,
    )
    rate = RateMeter()
    started_ns = time.time_ns()
    app.state.source = source
    app.state.streams = hub
    install_error_handlers(app)

    @app.get(f"{API}/status", response_model=StatusResponse, responses=_ERRORS,
             tags=["status"])
    def status() -> StatusResponse:
        """Ring occupancy, flow rate, lost events and the agent's own counters."""
        return build_status(source, hub, rate, started_ns)

    @app.get(f"{API}/flows", response_model=FlowsResponse, responses=_ERRORS, tags=["flows"])
    def flows(request: Request) -> JSONResponse:
        """The newest `last` (default 20) or oldest `first` flows in the ring that match.

        Every other query parameter is a filter with the CLI's flag names, in
        order (`from-pod=shop/frontend`, `not-verdict=FORWARDED`, `allowlist={...}`).
        Lost events are never filtered out.
        """
        ring = source.ring
        query = parse_flow_query(request.query_params.multi_items(), capacity=ring.capacity)
        if query.first:
            events = first_events(ring, query.number, query.predicate())
        else:
            events = ring.last(query.number, query.predicate()) if query.number else []
        node = source.node_name
        return JSONResponse({"flows": [event_to_response(ev, node) for ev in events]})

    @app.websocket(f"{API}/flows/stream")
    async def stream(ws: WebSocket) -> None:
        """Backlog (`last`, default 0) then live events; same filters as GET /flows."""
        await serve_stream(ws, source, hub)

    if ui_dir and os.path.isdir(ui_dir):
        app.mount("/", StaticFiles(directory=ui_dir, html=True), name="ui")
    return app


def build_status(source: FlowSource, hub: StreamHub, rate: RateMeter,
                 started_ns: int) -> StatusResponse:
    """Merge what the ring knows with what the agent reports.

    Occupancy and capacity come from the ring; seen flows and the rate from the
    agent when it reports them (its counts exclude lost-event records); lost
    events add the ring laps that live clients suffered.
    """
    ring = source.ring
    extra: dict[str, Any] = dict(source.status())
    # The agent counts flows only; the ring also counts the lost-event records in it.
    seen = int(extra.pop("seen_flows", ring.seen))
    measured = rate.sample(seen)
    flows_rate = extra.pop("flows_rate", None)
    lost = _lost_by_source(extra.pop("lost_events", None))
    if hub.ring_lost:
        name = LostEventSource.HUBBLE_RING_BUFFER.name
        lost[name] = lost.get(name, 0) + hub.ring_lost
    fields: dict[str, Any] = {
        "num_flows": len(ring),
        "max_flows": ring.capacity,
        "seen_flows": seen,
        "flows_rate": float(flows_rate) if flows_rate is not None else measured,
        "uptime_ns": int(extra.pop("uptime_ns", time.time_ns() - started_ns)),
        "node_name": source.node_name,
        "version": str(extra.pop("version", package_version())),
        "lost_events": lost,
        "connected_clients": hub.active,
    }
    for key in ("num_flows", "max_flows", "node_name", "connected_clients"):
        extra.pop(key, None)
    return StatusResponse(**fields, **extra)


def _lost_by_source(lost: Any) -> dict[str, int]:
    """Accept {name: n}, {int source: n} or {name: {cpu: n}} and sum to {name: n}."""
    out: dict[str, int] = {}
    if not isinstance(lost, dict):
        return out
    for key, value in lost.items():
        name = key.name if isinstance(key, LostEventSource) else str(key)
        if isinstance(key, int) and not isinstance(key, LostEventSource):
            try:
                name = LostEventSource(key).name
            except ValueError:
                name = str(key)
        count = sum(int(v) for v in value.values()) if isinstance(value, dict) else int(value)
        out[name] = out.get(name, 0) + count
    return out


def _overtaken(events: list[Event], seq: int, next_seq: int) -> bool:
    """Whether `events` starts with the ring's marker for a reader that fell behind.

    The marker is the only HUBBLE_RING_BUFFER event a ring holds (the collector
    stores perf and queue losses, never this source), and its count matches
    exactly how far the read jumped.
    """
    head = events[0]
    return (isinstance(head, LostEvent) and head.source == LostEventSource.HUBBLE_RING_BUFFER
            and next_seq - (len(events) - 1) == seq + head.num_events_lost)


def first_events(ring: RingReader, n: int, predicate: Any) -> list[Event]:
    """The oldest `n` matching events, read forward from the ring's tail.

    The scan stops at the head as it was when the request came, so a busy writer
    cannot keep the request running. A lost-event marker that says the scan
    itself was overtaken is dropped: those flows are simply no longer the oldest.
    """
    out: list[Event] = []
    end = ring.head
    seq = max(0, end - len(ring))
    while len(out) < n and seq < end:
        seq = max(seq, ring.head - len(ring))  # skip what is already gone, without a marker
        if seq >= end:
            break
        events, next_seq = ring.read_since(seq, min(_FIRST_CHUNK, end - seq))
        if not events:
            break
        if _overtaken(events, seq, next_seq):
            events = events[1:]
        for ev in events:
            if predicate is None or predicate(ev):
                out.append(ev)
                if len(out) == n:
                    break
        seq = next_seq
    return out
