"""The FastAPI app: status, nodes, flows (ring and history), the live stream and /metrics.

`create_app` takes a `FlowSource` instead of building one, so the agent, tests
and a future multi-node relay can all serve the same endpoints. Blocking ring
scans and store queries run in the thread pool, never on the event loop that
feeds live streams. Aggregations and import live in `api/queries.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from importlib import metadata
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from spyglass.api.auth import AuthConfig
from spyglass.api.errors import ApiError, install_error_handlers
from spyglass.api.gate import HISTORY_SLOTS, SQL_SLOTS, Gate
from spyglass.api.guard import HostPolicy, RequestGuard
from spyglass.api.history import NO_STORE, events_in_order, history_page
from spyglass.api.metrics import CONTENT_TYPE, FlowMetrics
from spyglass.api.models import (
    CollectorModel,
    ErrorResponse,
    FlowsResponse,
    NodeModel,
    NodesResponse,
    PerfLossModel,
    RestartModel,
    StatusResponse,
    StoreStatus,
)
from spyglass.api.params import encode_cursor, parse_flow_query
from spyglass.api.queries import router as queries_router
from spyglass.api.source import FlowSource, RateMeter, redacted_dsn
from spyglass.api.stream import StreamHub, serve_stream
from spyglass.collector.collector import CollectorStats
from spyglass.model.flow import Event, event_to_response

API = "/api/v1"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad parameter or filter"},
    401: {"model": ErrorResponse, "description": "missing or wrong token"},
    403: {"model": ErrorResponse, "description": "a foreign Origin or a cross-site request"},
    421: {"model": ErrorResponse, "description": "a Host this server does not answer to"},
    500: {"model": ErrorResponse, "description": "server fault (the agent's log has it)"},
}
_HISTORY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 503: {"model": ErrorResponse, "description": "no store, or the store is down"}}


def package_version() -> str:
    try:
        return metadata.version("spyglass")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(source: FlowSource, *, ui_dir: str | None = None,
               auth: AuthConfig | None = None, metrics: FlowMetrics | None = None,
               tls: bool = False, routers: Sequence[APIRouter] = (),
               hosts: HostPolicy | None = None) -> FastAPI:
    """Build the API over `source`; serve the static UI at `/` when `ui_dir` exists.

    `app.state.streams` is the `StreamHub`: call its `shutdown()` before stopping
    the server so that live clients get a normal close (1000), not uvicorn's 1012.
    `app.state.metrics` is the `FlowMetrics` whose `observe(flows)` the agent
    calls per enriched batch (pass your own to wire it before the app exists).
    `routers` (e.g. policy routes) are included before the UI is mounted at `/`,
    which would otherwise shadow anything added later. `hosts` names what the
    server answers to (default: loopback only); see `guard.RequestGuard` for the
    checks every request passes first.
    """
    hub = StreamHub(source.losses)
    auth = auth or AuthConfig()
    metrics = metrics or FlowMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        hub.shutdown()  # streams still open (e.g. in-process test clients) end with 1000

    app = FastAPI(
        title="Spyglass",
        version=package_version(),
        description="Flow observability for Linux: live flows, history, aggregations and "
                    "status. With a token set, send `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    rate = RateMeter()
    app.state.source = source
    app.state.streams = hub
    app.state.auth = auth
    app.state.metrics = metrics
    app.state.sql_gate = Gate(SQL_SLOTS, "SQL queries")
    app.state.history_gate = history_gate = Gate(HISTORY_SLOTS, "history requests")
    hosts = hosts or HostPolicy()
    app.add_middleware(RequestGuard, auth=auth, hosts=hosts, tls=tls)
    install_error_handlers(app)
    metrics.add_state(source.losses, source.writer_stats)

    @app.get(f"{API}/status", response_model=StatusResponse, responses=_ERRORS,
             tags=["status"])
    def status() -> StatusResponse:
        """Ring occupancy, flow rate, lost events, the store and the agent's own counters."""
        return build_status(source, hub, rate)

    @app.get(f"{API}/nodes", response_model=NodesResponse, responses=_ERRORS, tags=["status"])
    def nodes(request: Request) -> NodesResponse:
        """This node as `hubble list nodes` shows nodes (one agent serves one node).

        The address is the socket's own, never the request's Host header.
        """
        st = build_status(source, hub, rate)
        host, port = (request.scope.get("server") or (hosts.listen_host, 0))[:2]
        address = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        return NodesResponse(nodes=[NodeModel(
            name=st.node_name, version=st.version, address=address,
            tls={"enabled": tls, "server_name": st.node_name if tls else ""},
            uptime_ns=st.uptime_ns, num_flows=st.num_flows, max_flows=st.max_flows,
            seen_flows=st.seen_flows, flows_rate=st.flows_rate)])

    @app.get(f"{API}/flows", response_model=FlowsResponse, responses=_HISTORY_ERRORS,
             tags=["flows"])
    def flows(request: Request) -> JSONResponse:
        """Flows that match, oldest first: from the ring, or with `since`/`until` from history.

        Without a range: the newest `last` (default 20) or oldest `first` flows
        in memory. With `since` (`5m`, `1h30m`, RFC3339) and/or `until`: the
        store's flows merged with the newest in memory, `first` (the default,
        1000 per page) or `last` N of the range, and `next` to pass as `after`
        for the following page. Every other query parameter is a filter with the
        CLI's flag names, in order (`from-pod=shop/frontend`,
        `not-verdict=FORWARDED`, `allowlist={...}`). Lost events in memory are
        never filtered out.
        """
        ring = source.ring
        query = parse_flow_query(request.query_params.multi_items(), capacity=ring.capacity)
        node = source.node_name
        if query.history:
            store = source.store
            if store is None:
                raise ApiError(503, NO_STORE)
            with history_gate.enter():
                page, cursor = history_page(store, ring, query.filters,
                                            since_ns=query.since_ns, until_ns=query.until_ns,
                                            limit=query.number, order=query.order,
                                            after=query.after)
            events: list[Event] = events_in_order(page, query.order)
            nxt = encode_cursor(query.order, cursor) if cursor is not None else None
            return JSONResponse({"flows": [event_to_response(ev, node) for ev in events],
                                 "next": nxt})
        if query.first:
            events = ring.first(query.number, query.mask())
        else:
            events = ring.last(query.number, query.mask()) if query.number else []
        return JSONResponse({"flows": [event_to_response(ev, node) for ev in events],
                             "next": None})

    @app.websocket(f"{API}/flows/stream")
    async def stream(ws: WebSocket) -> None:
        """Backlog (`last`) or history (`since`), then live events; filters as GET /flows."""
        await serve_stream(ws, source, hub, auth, history_gate)

    @app.get("/metrics", tags=["status"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}},
                              "description": "Prometheus text exposition"}, **_ERRORS})
    def prometheus() -> Response:
        """Hubble's flow metrics under `spyglass_`, losses and the store writer."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app.include_router(queries_router, prefix=API)
    for extra in routers:
        app.include_router(extra)
    if ui_dir and os.path.isdir(ui_dir):
        app.mount("/", StaticFiles(directory=ui_dir, html=True), name="ui")
    return app


def lost_totals(source: FlowSource) -> dict[str, int]:
    """Every loss by LostEventSource name, from the agent's one ledger."""
    return {k.name: n for k, n in sorted(source.losses.totals().items(),
                                         key=lambda kv: kv[0].name)}


def store_status(source: FlowSource) -> StoreStatus:
    """The store part of status: kind and address, then the writer's counters."""
    dsn = redacted_dsn(source.store_dsn)
    has_store = source.store is not None
    kind = dsn.split("://", 1)[0] if dsn and "://" in dsn else ("unknown" if has_store else None)
    w = source.writer_stats()
    if w is None:
        return StoreStatus(kind=kind, dsn=dsn)
    return StoreStatus(kind=kind, dsn=dsn, up=w.store_up, queued_rows=w.queued_rows,
                       lag_s=w.lag_s, written=w.written, lost=w.lost, retries=w.retries,
                       last_error=w.last_error)


def build_status(source: FlowSource, hub: StreamHub, rate: RateMeter) -> StatusResponse:
    """What the ring knows, with what the agent reports about itself.

    Occupancy and capacity come from the ring; seen flows and the rate from the
    collector when there is one (its counts exclude lost-event records), else from
    the ring and a rate measured here.
    """
    ring = source.ring
    st = source.status()
    coll = st.collector
    seen = coll.seen_flows if coll is not None else ring.seen
    measured = rate.sample(seen)
    return StatusResponse(
        num_flows=len(ring), max_flows=ring.capacity, seen_flows=seen,
        flows_rate=coll.flows_rate if coll is not None else measured,
        uptime_ns=st.uptime_ns, node_name=source.node_name, version=st.version,
        lost_events=lost_totals(source), connected_clients=hub.active,
        store=store_status(source), pods=st.pods, monitor_aggregation=st.monitor_aggregation,
        collector=_collector_model(coll) if coll is not None else None,
        restart=RestartModel(**dataclasses.asdict(st.restart)) if st.restart else None)


def _collector_model(c: CollectorStats) -> CollectorModel:
    return CollectorModel(
        reads=c.reads, running=c.running,
        lost_by_cpu={str(cpu): PerfLossModel(kernel_counted=p.kernel_counted,
                                             perf_reported=p.perf_reported)
                     for cpu, p in c.lost_by_cpu.items()},
        perf_kernel_counted=c.perf_kernel_counted, perf_reported=c.perf_reported,
        decode_errors=dict(c.decode_errors), perf_malformed=c.perf_malformed,
        getter_errors=c.getter_errors, failed_batches=c.failed_batches,
        hook_errors=c.hook_errors)
