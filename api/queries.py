"""History aggregations, read-only SQL, namespaces and import: the store's side of the API.

Every route here needs the store; without one it answers 503 with how to get
one. The store returns DataFrames, sent as typed tables (`api/tables.py`).
Aggregations default to the last hour, since an unbounded range over a week
of flows is rarely what anyone meant. Import is the only write, so it carries
the credential dependency explicitly (see `auth.require_credential`). Every route
runs inside a `gate.Gate`: user SQL in a small one, the others in the history one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from spyglass.api.auth import WRITE
from spyglass.api.errors import ApiError
from spyglass.api.gate import Gate
from spyglass.api.history import NO_STORE, store_error
from spyglass.api.models import (
    ErrorResponse,
    ImportResponse,
    NamespaceModel,
    NamespacesResponse,
    SqlRequest,
    TableResponse,
)
from spyglass.api.source import FlowSource, HistoryStore
from spyglass.collector.filters import build_from_query
from spyglass.model.flow import format_time_ns
from spyglass.model.hubble_json import parse_lines
from spyglass.model.tables import frame_to_table
from spyglass.model.timespec import TimeSpecError, parse_duration_ns, parse_range
from spyglass.storage.redact import public_error
from spyglass.storage.schema import DEFAULT_RETENTION_DAYS, MAX_IMPORT_RETENTION_DAYS

router = APIRouter(tags=["history"])

DEFAULT_SINCE = "1h"
MAX_IMPORT_BYTES = 64 << 20
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad parameter, time or namespace"},
    401: {"model": ErrorResponse, "description": "missing or wrong token"},
    429: {"model": ErrorResponse, "description": "too many at once; retry after Retry-After"},
    503: {"model": ErrorResponse, "description": "no store, or the store is down"},
}

Since = Annotated[str | None, Query(description="start: 5m, 1h30m, 2d ago or RFC3339 "
                                                f"(default {DEFAULT_SINCE})")]
Until = Annotated[str | None, Query(description="end (exclusive), same forms; default now")]
Namespaces = Annotated[list[str], Query(alias="namespace",
                                        description="limit to these namespaces (repeat)")]


def _source(request: Request) -> FlowSource:
    """The app's FlowSource (create_app puts it in app.state)."""
    source: FlowSource = request.app.state.source
    return source


def _store(request: Request) -> HistoryStore:
    store = _source(request).store
    if store is None:
        raise ApiError(503, NO_STORE)
    return store


def _range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    try:
        return parse_range(since if since is not None else DEFAULT_SINCE, until)
    except TimeSpecError as exc:
        raise ApiError(400, str(exc)) from None


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiError:
        raise
    except Exception as exc:
        raise store_error(exc) from exc


def _gate(request: Request) -> contextlib.AbstractContextManager[None]:
    """The history gate: a busy agent answers 429 at once, never with a stalled pool."""
    gate: Gate = request.app.state.history_gate
    return gate.enter()


def namespace_names(result: Any) -> list[str]:
    """Names from whatever `store.namespaces` returns (DataFrame, strings or records)."""
    if isinstance(result, pd.DataFrame):
        if result.empty:
            return []
        col = "namespace" if "namespace" in result.columns else result.columns[0]
        return sorted({str(v) for v in result[col] if v})
    names: set[str] = set()
    for item in result or []:
        value = item.get("namespace") if isinstance(item, dict) else item
        if value:
            names.add(str(value))
    return sorted(names)


def _check_namespaces(request: Request, store: HistoryStore, wanted: Sequence[str],
                      since_ns: int | None, until_ns: int | None) -> None:
    """An unknown namespace is a typo far more often than an empty one: say so."""
    if not wanted:
        return
    known = set(namespace_names(_call(store.namespaces, since_ns=since_ns, until_ns=until_ns)))
    known |= set(_source(request).live_namespaces())
    unknown = [ns for ns in wanted if ns not in known]
    if unknown:
        have = ", ".join(sorted(known)) or "none"
        raise ApiError(400, f"unknown namespace {', '.join(repr(n) for n in unknown)}: no flows "
                            f"in this time range and no live pods there; namespaces with flows "
                            f"or pods: {have} (or widen since)")


def _table(df: Any, since_ns: int | None, until_ns: int | None) -> dict[str, Any]:
    body = frame_to_table(df)
    body["since"] = format_time_ns(since_ns) if since_ns is not None else None
    body["until"] = format_time_ns(until_ns) if until_ns is not None else None
    return body


@router.get("/namespaces", response_model=NamespacesResponse, responses=_ERRORS)
def namespaces(request: Request, since: Since = None, until: Until = None
               ) -> NamespacesResponse:
    """Namespaces with flows in the store over the range, and those with live pods now."""
    live = set(_source(request).live_namespaces())
    store = _source(request).store
    stored: set[str] = set()
    if store is not None:
        lo, hi = _range(since, until)
        with _gate(request):
            stored = set(namespace_names(_call(store.namespaces, since_ns=lo, until_ns=hi)))
    elif since is not None or until is not None:
        raise ApiError(503, NO_STORE)
    return NamespacesResponse(namespaces=[
        NamespaceModel(namespace=ns, stored=ns in stored, live=ns in live)
        for ns in sorted(stored | live)])


@router.get("/service-map", response_model=TableResponse, responses=_ERRORS)
def service_map(request: Request, since: Since = None, until: Until = None,
                namespace: Namespaces = []) -> dict[str, Any]:  # noqa: B006 - FastAPI default
    """Edges from source workload to destination workload:port/protocol over the range.

    Each edge has its connections, counted by their final verdict (a denied connection
    is dropped, though its SYN left the client FORWARDED), its event count, bytes and
    first/last seen. Give
    several `namespace` to see them on one map (edges touching any of them).
    """
    store = _store(request)
    lo, hi = _range(since, until)
    with _gate(request):
        _check_namespaces(request, store, namespace, lo, hi)
        df = _call(store.service_map, since_ns=lo, until_ns=hi, namespaces=tuple(namespace))
    return _table(df, lo, hi)


@router.get("/drops", response_model=TableResponse, responses=_ERRORS)
def drops(request: Request, since: Since = None, until: Until = None,
          by: Literal["reason", "policy", "pod_pair"] = "reason",
          namespace: Namespaces = [],  # noqa: B006 - FastAPI default
          limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
    """Dropped flows summarised by drop reason, by denying policy, or by pod pair."""
    store = _store(request)
    lo, hi = _range(since, until)
    with _gate(request):
        _check_namespaces(request, store, namespace, lo, hi)
        df = _call(store.drops, since_ns=lo, until_ns=hi, by=by, namespaces=tuple(namespace),
                   limit=limit)
    return _table(df, lo, hi)


@router.get("/top", response_model=TableResponse, responses=_ERRORS)
def top(request: Request, since: Since = None, until: Until = None,
        by: Literal["source", "destination", "pair"] = "source",
        metric: Literal["flows", "bytes"] = "flows",
        limit: Annotated[int, Query(ge=1, le=10000)] = 20) -> dict[str, Any]:
    """Top talkers by flows or bytes: sources, destinations, or source-destination pairs."""
    store = _store(request)
    lo, hi = _range(since, until)
    with _gate(request):
        df = _call(store.top, since_ns=lo, until_ns=hi, by=by, metric=metric, limit=limit)
    return _table(df, lo, hi)


_TIMESERIES_OWN = ("since", "until", "bucket")


@router.get("/timeseries", response_model=TableResponse, responses=_ERRORS)
def timeseries(request: Request, since: Since = None, until: Until = None,
               bucket: Annotated[str, Query(description="bucket width: 10s, 1m, 1h…")] = "1m"
               ) -> dict[str, Any]:
    """Flow counts per time bucket; every other parameter is a flow filter, as on /flows."""
    store = _store(request)
    lo, hi = _range(since, until)
    try:
        bucket_ns = parse_duration_ns(bucket, what="bucket")
    except TimeSpecError as exc:
        raise ApiError(400, str(exc)) from None
    if bucket_ns < 1_000_000_000 or bucket_ns % 1_000_000_000:
        raise ApiError(400, f"bucket: {bucket!r} is not a whole number of seconds; use 1s or "
                            "more, like 10s, 1m or 1h")
    span = (hi if hi is not None else time.time_ns()) - (lo or 0)
    if span // bucket_ns > 100_000:
        raise ApiError(400, f"bucket {bucket} over this range makes more than 100000 buckets; "
                            "use a wider bucket or a shorter range")
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in _TIMESERIES_OWN]
    filters = build_from_query(items)
    with _gate(request):
        df = _call(store.timeseries, filters, since_ns=lo, until_ns=hi,
                   bucket_s=bucket_ns // 1_000_000_000)
    return _table(df, lo, hi)


async def _run_sql(request: Request, req: SqlRequest) -> dict[str, Any]:
    """The gate is checked on the event loop: a refusal costs no thread and no store call."""
    store = _store(request)
    gate: Gate = request.app.state.sql_gate
    with gate.enter():
        return await run_in_threadpool(_sql_table, store, req)


def _sql_table(store: HistoryStore, req: SqlRequest) -> dict[str, Any]:
    try:
        df = store.sql(req.sql, limit=req.limit, timeout_s=req.timeout_s)
    except RuntimeError as exc:  # StoreError: "query refused: …" or "query failed: …"
        text = str(exc)
        raise ApiError(400, text if text.startswith("query ") else
                       f"query failed: {public_error(text)}") from None
    return _table(df, None, None)


@router.get("/query/sql", response_model=TableResponse, responses=_ERRORS)
async def sql_get(request: Request,
                  sql: Annotated[str, Query(min_length=1, max_length=20000,
                                            description="one SELECT on the flows tables")],
                  limit: Annotated[int, Query(ge=1, le=100000)] = 1000,
                  timeout_s: Annotated[float, Query(gt=0, le=300)] = 10.0) -> dict[str, Any]:
    """Read-only SQL for power users: a single SELECT on flows or lost_events, bounded."""
    return await _run_sql(request, SqlRequest(sql=sql, limit=limit, timeout_s=timeout_s))


@router.post("/query/sql", response_model=TableResponse, responses=_ERRORS)
async def sql_post(request: Request, body: SqlRequest) -> dict[str, Any]:
    """The same as GET, with the SQL in a JSON body (no URL length limits)."""
    return await _run_sql(request, body)


@router.post("/flows/import", response_model=ImportResponse, responses={
    **_ERRORS, 413: {"model": ErrorResponse, "description": "body too large"},
    500: {"model": ErrorResponse, "description": "the store did not keep every flow"}},
    dependencies=[WRITE], tags=["flows"],
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-ndjson": {"schema": {"type": "string"}}}}})
async def import_flows(
        request: Request, first_line: Annotated[int, Query(ge=1, le=2**40)] = 1,
        retention_days: Annotated[int, Query(
            ge=1, le=MAX_IMPORT_RETENTION_DAYS,
            description="keep the imported flows this many days from now, however old "
                        "they are")] = DEFAULT_RETENTION_DAYS) -> ImportResponse:
    """Store Hubble JSON lines (the exporter's or `hubble observe -o json`).

    All or nothing: a body with any bad line is refused with each bad line's
    number (counted from `first_line`, for clients that upload in parts).
    Imported history has its own retention: a flow from years ago stays
    `retention_days` from now, and the store counts the rows again after the
    insert, so `imported` is what a query then finds (or the answer is an error).
    """
    store = _store(request)
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise ApiError(413, f"the body is {len(body)} bytes, over {MAX_IMPORT_BYTES}; send the "
                            "file in parts (`spyglass import` does)")
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 (byte {exc.start}); Hubble writes UTF-8 "
                            "JSON lines") from None
    result = await run_in_threadpool(parse_lines, text.splitlines(), first_line=first_line)
    if result.error_count:
        raise ApiError(400, result.error_text())
    kept_until, imported = None, 0
    if result.flows:
        from spyglass.storage.rows import flows_to_arrow
        from spyglass.storage.store import ImportNotKept

        try:
            table = await run_in_threadpool(flows_to_arrow, result.flows)
        except ValueError as exc:
            raise ApiError(400, f"nothing was imported: {exc}") from None
        try:
            stored = await run_in_threadpool(store.insert_imported, table,
                                             retention_days=retention_days)
        except ImportNotKept as exc:
            raise ApiError(500, str(exc)) from None
        except Exception as exc:
            raise store_error(exc) from exc
        imported, kept_until = int(stored.rows), format_time_ns(int(stored.kept_until_s) * 10**9)
    return ImportResponse(imported=imported, skipped=result.skipped,
                          approximated=result.approximated, lines=result.lines,
                          kept_until=kept_until)
