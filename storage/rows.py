"""`Flow` <-> Arrow rows of the flows table, one Python object at a time.

This is the exact, slow path: imports, tests and reading query results back
into flows. The collector's hot path builds the same Arrow columns from numpy
in `storage.batch`; a test holds the two to producing identical tables.
`table_to_flows(flows_to_arrow(flows))` gives back equal flows, with two
documented exceptions: an address that does not parse is stored as NULL
(read back as ""), and an address whose family disagrees with `ip_version`
reads back in the flow's family (IPv4 in an IPv6 flow as ::ffff:a.b.c.d).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    PolicyMatchType,
    TraceReason,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow, LostEvent, PolicyRef, Service, Workload
from spyglass.storage.schema import FLOW_SCHEMA, IMPORT_SCHEMA, KEEP_UNTIL, LOST_SCHEMA, as_int8

V4_PREFIX = b"\x00" * 10 + b"\xff\xff"
_POLICY_KEYS = ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by",
                "egress_denied_by")


@functools.lru_cache(maxsize=65536)
def ip_bytes(text: str) -> bytes | None:
    """16 bytes for the IPv6 column (IPv4 mapped), or None for "" and junk."""
    if not text:
        return None
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    return V4_PREFIX + a.packed if a.version == 4 else a.packed


@functools.lru_cache(maxsize=65536)
def ip_text(raw: bytes | None, ip_version: int) -> str:
    """Inverse of `ip_bytes` for a flow of `ip_version`."""
    if raw is None:
        return ""
    if ip_version == 4 and raw[:12] == V4_PREFIX:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def _refs(refs: Iterable[PolicyRef]) -> list[dict[str, str]]:
    return [{"namespace": p.namespace, "name": p.name, "kind": p.kind} for p in refs]


def _endpoint_cols(cols: dict[str, list[Any]], side: str, ep: Endpoint) -> None:
    cols[f"{side}_ID"].append(ep.ID)
    cols[f"{side}_identity"].append(ep.identity)
    cols[f"{side}_namespace"].append(ep.namespace)
    cols[f"{side}_pod_name"].append(ep.pod_name)
    cols[f"{side}_labels"].append(list(ep.labels))
    cols[f"{side}_workloads"].append([{"name": w.name, "kind": w.kind} for w in ep.workloads])


def _service_cols(cols: dict[str, list[Any]], side: str, svc: Service | None) -> None:
    cols[f"{side}_service_namespace"].append(svc.namespace if svc else "")
    cols[f"{side}_service_name"].append(svc.name if svc else None)


def flows_to_arrow(flows: Sequence[Flow]) -> pa.Table:
    """Rows of the flows table for `flows` (any source: imports, tests, the ring)."""
    cols: dict[str, list[Any]] = {f.name: [] for f in FLOW_SCHEMA}
    for f in flows:
        cols["time"].append(f.time_ns)
        cols["uuid"].append(f.uuid)
        cols["node_name"].append(f.node_name)
        cols["verdict"].append(int(f.verdict))
        cols["drop_reason"].append(as_int8(int(f.drop_reason)))
        cols["event_type"].append(int(f.event_type))
        cols["event_subtype"].append(f.event_subtype)
        cols["observation_point"].append(int(f.observation_point))
        cols["trace_reason"].append(int(f.trace_reason))
        cols["traffic_direction"].append(int(f.traffic_direction))
        cols["is_reply"].append(f.is_reply)
        cols["ip_version"].append(f.ip_version)
        cols["source_ip"].append(ip_bytes(f.source_ip))
        cols["destination_ip"].append(ip_bytes(f.destination_ip))
        cols["service_ip"].append(ip_bytes(f.service_ip))
        cols["protocol"].append(f.protocol)
        cols["source_port"].append(f.source_port)
        cols["destination_port"].append(f.destination_port)
        cols["service_port"].append(f.service_port)
        cols["tcp_flags"].append(f.tcp_flags)
        cols["icmp_type"].append(f.icmp_type)
        cols["icmp_code"].append(f.icmp_code)
        _endpoint_cols(cols, "source", f.source)
        _endpoint_cols(cols, "destination", f.destination)
        _service_cols(cols, "source", f.source_service)
        _service_cols(cols, "destination", f.destination_service)
        cols["interface_index"].append(f.interface_index)
        cols["interface_name"].append(f.interface_name)
        cols["packets"].append(f.packets)
        cols["bytes"].append(f.bytes)
        cols["policy_match_type"].append(int(f.policy_match_type))
        for key in _POLICY_KEYS:
            cols[key].append(_refs(getattr(f, key)))
    try:
        return pa.Table.from_pydict(cols, schema=FLOW_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise ValueError(f"a flow has a value the store cannot hold ({e}); numbers must fit "
                         "their columns (ports 0-65535, protocol and ICMP fields 0-255)") from e


def with_keep_until(table: pa.Table, keep_until_s: int) -> pa.Table:
    """Imported rows (`flows_to_arrow`'s) with `keep_until` set, for `insert_imported`.

    Only imports carry the column: the live writer's batches leave it out and the
    table's default fills it, so the hot path pays nothing for it.
    """
    column = pa.array(np.full(table.num_rows, keep_until_s, dtype="datetime64[s]"),
                      type=KEEP_UNTIL.arrow)
    return pa.Table.from_arrays([*table.columns, column], schema=IMPORT_SCHEMA)


def _enum_table(cls: type[Any], *, signed_bytes: bool = False) -> list[Any]:
    """Index by the stored int8 (+128) -> member."""
    table: list[Any] = [None] * 256
    for m in cls:
        table[(as_int8(int(m)) if signed_bytes else int(m)) + 128] = m
    return table


_VERDICTS = _enum_table(Verdict)
_DROPS = _enum_table(DropReason, signed_bytes=True)
_TYPES = _enum_table(EventType)
_POINTS = _enum_table(ObservationPoint)
_REASONS = _enum_table(TraceReason)
_DIRECTIONS = _enum_table(TrafficDirection)
_MATCHES = _enum_table(PolicyMatchType)
_LOST_SOURCES = _enum_table(LostEventSource)


def _members(col: pa.ChunkedArray, table: list[Any]) -> list[Any]:
    """An Enum8 column as members (enum columns come back as their int8 numbers)."""
    if pa.types.is_dictionary(col.type) or pa.types.is_string(col.type):
        by_name = {m.name: m for m in table if m is not None}
        return [by_name[v] for v in col.to_pylist()]
    codes = col.to_numpy(zero_copy_only=False).astype(np.int16) + 128
    arr = np.empty(256, dtype=object)
    arr[:] = table
    return arr[codes].tolist()  # type: ignore[no-any-return]


def _workloads(items: list[dict[str, str]] | None) -> tuple[Workload, ...]:
    return tuple(Workload(w["name"], w["kind"]) for w in items or ())


def _policies(items: list[dict[str, str]] | None) -> tuple[PolicyRef, ...]:
    return tuple(PolicyRef(p["name"], p["namespace"], p["kind"]) for p in items or ())


def _endpoints(c: dict[str, list[Any]], side: str) -> list[Endpoint]:
    return [
        Endpoint(ID=ep_id, identity=ident, namespace=ns, labels=tuple(labels or ()),
                 pod_name=pod, workloads=_workloads(wl))
        for ep_id, ident, ns, labels, pod, wl in zip(
            c[f"{side}_ID"], c[f"{side}_identity"], c[f"{side}_namespace"],
            c[f"{side}_labels"], c[f"{side}_pod_name"], c[f"{side}_workloads"], strict=True)
    ]


def _services(c: dict[str, list[Any]], side: str) -> list[Service | None]:
    return [None if name is None else Service(name, ns or "")
            for ns, name in zip(c[f"{side}_service_namespace"], c[f"{side}_service_name"],
                                strict=True)]


def table_to_flows(table: pa.Table) -> list[Flow]:
    """Flows from rows of the flows table (as `query_arrow` returns them)."""
    if table.num_rows == 0:
        return []
    enums = {"verdict": _VERDICTS, "drop_reason": _DROPS, "event_type": _TYPES,
             "observation_point": _POINTS, "trace_reason": _REASONS,
             "traffic_direction": _DIRECTIONS, "policy_match_type": _MATCHES}
    c: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in enums:
            c[name] = _members(col, enums[name])
        elif name == "time":
            c[name] = col.cast(pa.int64()).to_pylist()
        else:
            c[name] = col.to_pylist()
    versions = c["ip_version"]
    ips = {k: [ip_text(raw, v) for raw, v in zip(c[k], versions, strict=True)]
           for k in ("source_ip", "destination_ip", "service_ip")}
    src, dst = _endpoints(c, "source"), _endpoints(c, "destination")
    src_svc, dst_svc = _services(c, "source"), _services(c, "destination")
    pols = {k: [_policies(p) for p in c[k]] for k in _POLICY_KEYS}
    return [
        Flow(time_ns=c["time"][i], uuid=c["uuid"][i], verdict=c["verdict"][i],
             drop_reason=c["drop_reason"][i], event_type=c["event_type"][i],
             event_subtype=c["event_subtype"][i], observation_point=c["observation_point"][i],
             trace_reason=c["trace_reason"][i], traffic_direction=c["traffic_direction"][i],
             ip_version=versions[i], source_ip=ips["source_ip"][i],
             destination_ip=ips["destination_ip"][i], protocol=c["protocol"][i],
             source_port=c["source_port"][i], destination_port=c["destination_port"][i],
             tcp_flags=c["tcp_flags"][i], icmp_type=c["icmp_type"][i],
             icmp_code=c["icmp_code"][i], source=src[i], destination=dst[i],
             is_reply=c["is_reply"][i], node_name=c["node_name"][i],
             interface_index=c["interface_index"][i], interface_name=c["interface_name"][i],
             packets=c["packets"][i], bytes=c["bytes"][i],
             policy_match_type=c["policy_match_type"][i],
             ingress_allowed_by=pols["ingress_allowed_by"][i],
             egress_allowed_by=pols["egress_allowed_by"][i],
             ingress_denied_by=pols["ingress_denied_by"][i],
             egress_denied_by=pols["egress_denied_by"][i],
             source_service=src_svc[i], destination_service=dst_svc[i],
             service_ip=ips["service_ip"][i],
             service_port=c["service_port"][i])
        for i in range(table.num_rows)
    ]


def lost_to_arrow(events: Sequence[LostEvent], node_name: str = "") -> pa.Table:
    return pa.Table.from_pydict({
        "time": [e.time_ns for e in events],
        "source": [int(e.source) for e in events],
        "num_events_lost": [e.num_events_lost for e in events],
        "cpu": [e.cpu for e in events],
        "node_name": [node_name] * len(events),
    }, schema=LOST_SCHEMA)


def table_to_lost(table: pa.Table) -> list[LostEvent]:
    times = table.column("time").cast(pa.int64()).to_pylist()
    sources = _members(table.column("source"), _LOST_SOURCES)
    return [LostEvent(time_ns=t, source=s, num_events_lost=n, cpu=cpu)
            for t, s, n, cpu in zip(times, sources, table.column("num_events_lost").to_pylist(),
                                    table.column("cpu").to_pylist(), strict=True)]
