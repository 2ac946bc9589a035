"""The hot path into the store: decoded numpy columns -> Arrow rows, no per-row objects.

`batch_to_arrow` builds exactly the rows `flows_to_arrow(enricher.enrich(b))`
would, without building the flows: enum codes go through 256-entry lookup
tables, addresses become 16-byte rows straight from the address columns,
and endpoint, interface and service names are resolved once per distinct
value in the batch (`np.unique` over packed keys) and spread with Arrow
`take`. Policy verdicts and service translation, the minority, go through
the enricher's own row-by-row step, so both paths share one definition of
what a verdict or a translation means. A test holds the two outputs equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from spyglass.collector.abi import (
    EVENT_DROP,
    EVENT_POLICY_VERDICT,
    EVENT_TRACE,
    F_IS_REPLY,
    F_REPLY_KNOWN,
    F_XLATED,
    F_XLATED_REPLY,
)
from spyglass.collector.decoder import DecodedBatch
from spyglass.collector.enrich import _ICMP, _MAX_ROWS, _REPLY_BITS, Enricher, ip_index
from spyglass.model.enums import (
    TRACE_SUBTYPE_TO_POINT,
    DropReason,
    EventType,
    PolicyMatchType,
    TraceReason,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow, Service
from spyglass.storage.rows import _POLICY_KEYS, V4_PREFIX, ip_bytes
from spyglass.storage.schema import FLOW_SCHEMA, as_int8

if TYPE_CHECKING:
    from spyglass.storage.writer import StoreWriter


def _codes(mapping: dict[int, int], default: int = 0, dtype: Any = np.int8) -> np.ndarray:
    """A 256-entry table from a u8 datapath code to the stored enum number."""
    table = np.full(256, default, dtype=dtype)
    for k, v in mapping.items():
        table[k] = v
    return table


_EVENT_TYPE = _codes({int(t): int(t) for t in EventType})
_POINT = _codes({k: int(v) for k, v in TRACE_SUBTYPE_TO_POINT.items()})
_TRACE_REASON = _codes({int(r): int(r) for r in TraceReason})
_DROP_REASON = _codes({int(r): as_int8(int(r)) for r in DropReason})
_DIRECTION = _codes({int(d): int(d) for d in TrafficDirection})
_UNKNOWN = np.uint8(255)  # maps to each table's default


def _ip_column(addr16: np.ndarray, ip4: np.ndarray, is_v6: np.ndarray) -> np.ndarray:
    """(n, 16) bytes as the IPv6 column stores them: v6 as is, v4 as ::ffff:a.b.c.d."""
    out = np.zeros((len(ip4), 16), dtype=np.uint8)
    out[:, :12] = np.frombuffer(V4_PREFIX, dtype=np.uint8)
    out[:, 12:] = ip4.astype(">u4").view(np.uint8).reshape(-1, 4)
    out[is_v6] = addr16[is_v6]
    return out


def _fixed16(rows: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    n = len(rows)
    mask = None if valid is None else pa.array(valid).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), n, [mask, pa.py_buffer(np.ascontiguousarray(rows).tobytes())],
        null_count=-1 if valid is not None else 0)


def _endpoint_columns(enricher: Enricher, codes: np.ndarray, names: list[str], ep: np.ndarray,
                      identity: np.ndarray, cache: dict[tuple[str, int, int], Endpoint],
                      ) -> dict[str, pa.Array]:
    """One side's endpoint columns, each distinct (address, endpoint id, identity) resolved once
    by the enricher's own grouping, so the same endpoint is asked about."""
    eps, inv = enricher.endpoint_groups(codes, names, ep, identity, cache)
    take = pa.array(inv.astype(np.int64))
    small = {
        "ID": pa.array([e.ID for e in eps], pa.uint32()),
        "identity": pa.array([e.identity for e in eps], pa.uint32()),
        "namespace": pa.array([e.namespace for e in eps], pa.string()),
        "pod_name": pa.array([e.pod_name for e in eps], pa.string()),
        "labels": pa.array([list(e.labels) for e in eps], pa.list_(pa.string())),
        "workloads": pa.array([[{"name": w.name, "kind": w.kind} for w in e.workloads]
                               for e in eps], FLOW_SCHEMA.field("source_workloads").type),
    }
    return {k: v.take(take) for k, v in small.items()}


def _sparse_list(n: int, items: dict[int, list[dict[str, str]]], typ: pa.DataType) -> pa.Array:
    """A list column that is empty except on a few rows."""
    counts = np.zeros(n + 1, dtype=np.int32)
    flat: list[dict[str, str]] = []
    for i in sorted(items):
        counts[i + 1] = len(items[i])
        flat.extend(items[i])
    offsets = pa.array(np.cumsum(counts, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat, typ.value_type), type=typ)


def batch_to_arrow(b: DecodedBatch, enricher: Enricher, *,
                   uuids: Sequence[str] | None = None) -> pa.RecordBatch:
    """Rows of the flows table for a decoded batch.

    `uuids` are the ids of the flows the enricher already made for this batch
    (so the store and the live ring name each flow alike); without them,
    fresh ones are taken from the enricher.
    """
    n = len(b)
    if n >= _MAX_ROWS:
        raise ValueError(f"a batch of {n} events is too large; convert reads of under "
                         f"{_MAX_ROWS} events")
    if uuids is None:
        uuids = enricher.uuids.take(n) if n else []
    elif len(uuids) != n:
        raise ValueError(f"{len(uuids)} uuids for a batch of {n} events; pass one per event")
    is_trace = b.type == EVENT_TRACE
    is_drop = b.type == EVENT_DROP
    verdict = np.where(is_drop, np.int8(Verdict.DROPPED), np.int8(Verdict.FORWARDED))
    drop = _DROP_REASON[np.where(is_drop, b.subtype, _UNKNOWN)]
    icmp = np.isin(b.proto, _ICMP)
    zero16 = np.uint16(0)
    sport = np.where(icmp, zero16, b.sport).astype(np.uint16)
    dport = np.where(icmp, zero16, b.dport).astype(np.uint16)
    aggregated = b.agg_packets > 0
    packets = np.where(aggregated, b.agg_packets, np.uint32(1)).astype(np.uint64)
    nbytes = np.where(aggregated, b.agg_bytes, b.orig_len).astype(np.uint64)
    replied = ((b.flags & _REPLY_BITS) == _REPLY_BITS) & is_trace
    direction = np.where(replied & (b.direction >= 1) & (b.direction <= 2),
                         3 - b.direction, b.direction).astype(np.uint8)
    reply_known = (b.flags & F_REPLY_KNOWN) != 0
    src_codes, src_names = ip_index(b.saddr, b.src_ip4, b.is_ipv6)
    dst_codes, dst_names = ip_index(b.daddr, b.dst_ip4, b.is_ipv6)
    src_ip = _ip_column(b.saddr, b.src_ip4, b.is_ipv6)
    dst_ip = _ip_column(b.daddr, b.dst_ip4, b.is_ipv6)
    ep_cache: dict[tuple[str, int, int], Endpoint] = {}
    src = _endpoint_columns(enricher, src_codes, src_names, b.src_ep, b.src_identity, ep_cache)
    dst = _endpoint_columns(enricher, dst_codes, dst_names, b.dst_ep, b.dst_identity, ep_cache)
    if_uniq, if_inv = np.unique(b.ifindex, return_inverse=True)
    ifnames = pa.array([(enricher._ask(enricher.interfaces.ifname, i) or "") if i else ""
                        for i in if_uniq.tolist()], pa.string()).take(
        pa.array(if_inv.reshape(-1).astype(np.int64)))

    match_type = np.zeros(n, dtype=np.int8)
    xlated_ip = np.zeros((n, 16), dtype=np.uint8)
    xlated_valid = np.zeros(n, dtype=bool)
    xlated_port = np.zeros(n, dtype=np.uint16)
    policies: dict[str, dict[int, list[dict[str, str]]]] = {k: {} for k in _POLICY_KEYS}
    services: dict[str, dict[int, Service]] = {"source": {}, "destination": {}}
    # the same rows the enricher treats as rare (enrich.py), replies of NAT included
    rare = np.flatnonzero((b.type == EVENT_POLICY_VERDICT) | (b.policy_cookie != 0)
                          | ((b.flags & (F_XLATED | F_XLATED_REPLY)) != 0)
                          | (b.service_id != 0))
    if len(rare):
        rows = rare.tolist()
        verdicts = {i: Verdict(int(verdict[i])) for i in rows}
        drops = {i: DropReason(int(drop[i]) & 0xFF) for i in rows}
        dst_ips = {i: dst_names[int(dst_codes[i])] for i in rows}
        dports = {i: int(dport[i]) for i in rows}
        extras: dict[int, dict[str, Any]] = {}
        # The enricher's own step for these rows: one definition of verdicts and NAT.
        enricher._rare(b, rare, verdicts, drops, dst_ips, dports, extras)
        for i in rows:
            verdict[i] = int(verdicts[i])
            drop[i] = as_int8(int(drops[i]))
            dport[i] = dports[i]
            raw = ip_bytes(dst_ips[i])
            dst_ip[i] = np.frombuffer(raw or bytes(16), dtype=np.uint8)
            kw = extras.get(i, {})
            match_type[i] = int(kw.get("policy_match_type", PolicyMatchType.NONE))
            if kw.get("destination_xlated_ip"):
                x = ip_bytes(kw["destination_xlated_ip"])
                if x is not None:
                    xlated_ip[i] = np.frombuffer(x, dtype=np.uint8)
                    xlated_valid[i] = True
            xlated_port[i] = int(kw.get("destination_xlated_port", 0))
            for key in _POLICY_KEYS:
                if kw.get(key):
                    policies[key][i] = [{"namespace": p.namespace, "name": p.name,
                                         "kind": p.kind} for p in kw[key]]
            for side in ("source", "destination"):
                svc = kw.get(f"{side}_service")
                if svc is not None:
                    services[side][i] = svc

    src_svc_ns, src_svc_name = _service_columns(n, services["source"])
    dst_svc_ns, dst_svc_name = _service_columns(n, services["destination"])

    cols: dict[str, pa.Array] = {
        "time": pa.array(b.time_ns.astype(np.int64), pa.timestamp("ns", tz="UTC")),
        "uuid": pa.array(uuids, pa.string()),
        "node_name": pa.array([enricher.node_name], pa.string()).take(
            pa.array(np.zeros(n, dtype=np.int64))),
        "verdict": pa.array(verdict, pa.int8()),
        "drop_reason": pa.array(drop, pa.int8()),
        "event_type": pa.array(_EVENT_TYPE[b.type], pa.int8()),
        "event_subtype": pa.array(b.subtype, pa.uint8()),
        "observation_point": pa.array(_POINT[np.where(is_trace, b.subtype, _UNKNOWN)], pa.int8()),
        "trace_reason": pa.array(_TRACE_REASON[np.where(is_trace, b.reason, _UNKNOWN)],
                                 pa.int8()),
        "traffic_direction": pa.array(_DIRECTION[direction], pa.int8()),
        "is_reply": pa.array((b.flags & F_IS_REPLY) != 0, pa.bool_(), mask=~reply_known),
        "ip_version": pa.array(np.where(b.is_ipv6, np.uint8(6), np.uint8(4)), pa.uint8()),
        "source_ip": _fixed16(src_ip),
        "destination_ip": _fixed16(dst_ip),
        "destination_xlated_ip": _fixed16(xlated_ip, xlated_valid),
        "protocol": pa.array(b.proto, pa.uint8()),
        "source_port": pa.array(sport, pa.uint16()),
        "destination_port": pa.array(dport, pa.uint16()),
        "destination_xlated_port": pa.array(xlated_port, pa.uint16()),
        "tcp_flags": pa.array(b.tcp_flags, pa.uint8()),
        "icmp_type": pa.array(np.where(icmp, b.sport >> 8, zero16).astype(np.uint8), pa.uint8()),
        "icmp_code": pa.array(np.where(icmp, b.sport & 0xFF, zero16).astype(np.uint8),
                              pa.uint8()),
        **{f"source_{k}": v for k, v in src.items()},
        **{f"destination_{k}": v for k, v in dst.items()},
        "source_service_namespace": src_svc_ns,
        "source_service_name": src_svc_name,
        "destination_service_namespace": dst_svc_ns,
        "destination_service_name": dst_svc_name,
        "interface_index": pa.array(b.ifindex, pa.uint32()),
        "interface_name": ifnames,
        "packets": pa.array(packets, pa.uint64()),
        "bytes": pa.array(nbytes, pa.uint64()),
        "policy_match_type": pa.array(match_type, pa.int8()),
        **{k: _sparse_list(n, policies[k], FLOW_SCHEMA.field(k).type) for k in _POLICY_KEYS},
    }
    return pa.RecordBatch.from_arrays([cols[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)


def _service_columns(n: int, by_row: dict[int, Service]) -> tuple[pa.Array, pa.Array]:
    """Namespace ("" when none) and name (NULL when none) columns of one side's service."""
    if not by_row:
        empty = pa.array([""], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64)))
        return empty, pa.nulls(n, pa.string())
    rows = np.array(sorted(by_row), dtype=np.int64)
    names = np.full(n, None, dtype=object)
    nss = np.full(n, "", dtype=object)
    names[rows] = [by_row[i].name for i in rows.tolist()]
    nss[rows] = [by_row[i].namespace for i in rows.tolist()]
    return pa.array(nss, pa.string()), pa.array(names, pa.string())


def store_hook(writer: StoreWriter, enricher: Enricher,
               ) -> Callable[[DecodedBatch, Sequence[Flow]], None]:
    """The collector's `on_batch` hook that feeds the store: rows keep the ring's uuids."""
    def hook(batch: DecodedBatch, flows: Sequence[Flow]) -> None:
        if len(batch):
            writer.submit(batch_to_arrow(batch, enricher, uuids=[f.uuid for f in flows]))
    return hook
