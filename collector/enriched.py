"""One enriched batch as columns: the single result that flows and store rows derive from.

Enrichment used to be done twice, once into `Flow` objects for the ring and
once more into Arrow rows for the store. `EnrichedBatch` is the one result
both now read: numpy columns (one value per event) whose every value is the
number the matching `Flow` field holds (`int(flow.verdict)`, the flipped
`traffic_direction`, ICMP type/code taken from the port, aggregated packet
counts, the policy-verdict and NAT patches), plus small per-batch tables for
what repeats (addresses, endpoints, interface names, services, policy lists),
which the columns index. The tables are what makes both consumers cheap: a
distinct endpoint is resolved, converted and formatted once per batch, and the
store spreads it with Arrow `take` instead of looking anything up again.

Column names are the `Flow` field names; a `*_table` is a lookup table.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from spyglass.collector.uuids import UuidColumn
from spyglass.model.enums import (
    DropReason,
    EventType,
    ObservationPoint,
    PolicyMatchType,
    TraceReason,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow, PolicyRef, Service

#: The four policy-ref columns, in the order of the flows table.
POLICY_KEYS = ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by",
               "egress_denied_by")
#: A code in `service_ip` that means "not translated" ("" in the Flow). Negative,
#: so that a consumer spreading the table with a NULL for negative codes needs no special case.
NO_IP = -1
#: `is_reply` codes: the datapath did not know / not a reply / a reply.
REPLY_UNKNOWN, REPLY_NO, REPLY_YES = -1, 0, 1


def _members(cls: type[enum.IntEnum]) -> np.ndarray:
    """code -> member, for a u8 code column of `cls` (codes are the members' own numbers)."""
    table = np.full(256, None, dtype=object)
    for m in cls:
        table[int(m)] = m
    return table


_VERDICT = _members(Verdict)
_DROP_REASON = _members(DropReason)
_EVENT_TYPE = _members(EventType)
_POINT = _members(ObservationPoint)
_TRACE_REASON = _members(TraceReason)
_DIRECTION = _members(TrafficDirection)
_MATCH_TYPE = _members(PolicyMatchType)
_IS_REPLY = np.array([None, False, True], dtype=object)  # indexed by an is_reply code + 1


class _Interner:
    """Distinct values -> codes, in first-seen order (a `from_flows` table)."""

    def __init__(self, first: list[Any] | None = None) -> None:
        self.table: list[Any] = list(first or [])
        self._codes: dict[Any, int] = {v: i for i, v in enumerate(self.table)}

    def code(self, value: Any) -> int:
        c = self._codes.get(value)
        if c is None:
            c = self._codes[value] = len(self.table)
            self.table.append(value)
        return c


def batches_from_flows(flows: Sequence[Flow]) -> list[EnrichedBatch]:
    """Flows as batches, one per run of flows from the same node, in order."""
    out: list[EnrichedBatch] = []
    start = 0
    for i in range(1, len(flows) + 1):
        if i == len(flows) or flows[i].node_name != flows[start].node_name:
            out.append(EnrichedBatch.from_flows(flows[start:i]))
            start = i
    return out


def _spread(table: list[Any], codes: np.ndarray) -> list[Any]:
    """table[codes[i]] for every row, without a Python loop."""
    arr = np.empty(len(table), dtype=object)
    arr[:] = table
    return arr[codes].tolist()  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, eq=False)
class EnrichedBatch:
    """The enriched columns of one batch, in time order, one row per event.

    Enum columns are u8 codes holding the enum member's number; `*_ip`,
    `source`/`destination`, `interface_name`, `*_service` and the policy
    columns are int64 codes into their tables. Tables hold their "none" value
    at code 0 where a column can be empty (`service_table[0]` is None,
    `policy_table[0]` is ()); `service_ip` uses NO_IP instead.
    The enricher builds it; after that it is read, never changed.
    """

    node_name: str
    time_ns: np.ndarray  # int64, wall clock
    uuid: UuidColumn  # one per row, from the enricher's UuidSource (formatted when read)
    verdict: np.ndarray  # uint8, Verdict
    drop_reason: np.ndarray  # uint8, DropReason
    event_type: np.ndarray  # uint8, EventType
    event_subtype: np.ndarray  # uint8, as the datapath sent it
    observation_point: np.ndarray  # uint8, ObservationPoint
    trace_reason: np.ndarray  # uint8, TraceReason
    traffic_direction: np.ndarray  # uint8, TrafficDirection (replies already flipped)
    policy_match_type: np.ndarray  # uint8, PolicyMatchType
    ip_version: np.ndarray  # uint8, 4 or 6
    ip_table: list[str]  # formatted addresses (may repeat; each is one address)
    source_ip: np.ndarray  # int64 -> ip_table
    destination_ip: np.ndarray  # int64 -> ip_table (the service address when translated)
    service_ip: np.ndarray  # int64 -> ip_table, NO_IP when not translated
    protocol: np.ndarray  # uint8
    source_port: np.ndarray  # uint16 (0 for ICMP)
    destination_port: np.ndarray  # uint16 (0 for ICMP)
    service_port: np.ndarray  # uint16
    tcp_flags: np.ndarray  # uint8
    icmp_type: np.ndarray  # uint8
    icmp_code: np.ndarray  # uint8
    endpoint_table: list[Endpoint]  # each distinct (address, endpoint id, identity) once
    source: np.ndarray  # int64 -> endpoint_table
    destination: np.ndarray  # int64 -> endpoint_table
    is_reply: np.ndarray  # int8: REPLY_UNKNOWN, REPLY_NO or REPLY_YES
    interface_index: np.ndarray  # uint32
    ifname_table: list[str]
    interface_name: np.ndarray  # int64 -> ifname_table
    packets: np.ndarray  # uint64
    bytes: np.ndarray  # uint64
    service_table: list[Service | None]  # [0] is None
    source_service: np.ndarray  # int64 -> service_table
    destination_service: np.ndarray  # int64 -> service_table
    policy_table: list[tuple[PolicyRef, ...]]  # [0] is ()
    ingress_allowed_by: np.ndarray  # int64 -> policy_table
    egress_allowed_by: np.ndarray  # int64 -> policy_table
    ingress_denied_by: np.ndarray  # int64 -> policy_table
    egress_denied_by: np.ndarray  # int64 -> policy_table

    def __post_init__(self) -> None:
        n = len(self.time_ns)
        wrong = [f.name for f in fields(self)
                 if isinstance(v := getattr(self, f.name), np.ndarray | list | UuidColumn)
                 and not f.name.endswith("_table") and len(v) != n]
        if wrong:
            raise ValueError(f"columns {wrong} do not have the batch's {n} rows; "
                             "every column holds one value per event")

    def __len__(self) -> int:
        return len(self.time_ns)

    @property
    def uuids(self) -> list[str]:
        """The rows' ids as text (formatted now, in one pass)."""
        return self.uuid.tolist()

    @classmethod
    def empty(cls, node_name: str = "") -> EnrichedBatch:
        """A batch of no events (what an empty read enriches to)."""
        def col(dtype: type[np.generic]) -> np.ndarray:
            return np.zeros(0, dtype=dtype)
        u8, u16, i64 = np.uint8, np.uint16, np.int64
        return cls(
            node_name=node_name, time_ns=col(i64), uuid=UuidColumn.of([]), verdict=col(u8),
            drop_reason=col(u8), event_type=col(u8), event_subtype=col(u8),
            observation_point=col(u8), trace_reason=col(u8), traffic_direction=col(u8),
            policy_match_type=col(u8), ip_version=col(u8), ip_table=[], source_ip=col(i64),
            destination_ip=col(i64), service_ip=col(i64), protocol=col(u8),
            source_port=col(u16), destination_port=col(u16), service_port=col(u16),
            tcp_flags=col(u8), icmp_type=col(u8), icmp_code=col(u8), endpoint_table=[],
            source=col(i64), destination=col(i64), is_reply=col(np.int8),
            interface_index=col(np.uint32), ifname_table=[], interface_name=col(i64),
            packets=col(np.uint64), bytes=col(np.uint64), service_table=[None],
            source_service=col(i64), destination_service=col(i64), policy_table=[()],
            ingress_allowed_by=col(i64), egress_allowed_by=col(i64),
            ingress_denied_by=col(i64), egress_denied_by=col(i64))

    @classmethod
    def from_flows(cls, flows: Sequence[Flow], node_name: str | None = None) -> EnrichedBatch:
        """The batch whose `to_flows()` gives these flows back (equal, field by field).

        For everything that holds Flows rather than perf samples: tests, imported
        history, a relay's merged streams. One batch has one node name, so the flows
        must share theirs (`node_name` overrides it when given).
        """
        if not flows:
            return cls.empty(node_name or "")
        node = flows[0].node_name if node_name is None else node_name
        if node_name is None and any(f.node_name != node for f in flows):
            raise ValueError("one batch holds one node's flows: split them by node_name "
                             "(see batches_from_flows)")
        ips, eps, ifnames = _Interner(), _Interner(), _Interner()
        svcs: _Interner = _Interner([None])
        pols: _Interner = _Interner([()])

        def col(values: Iterable[Any], dtype: type[np.generic]) -> np.ndarray:
            return np.fromiter(values, dtype=dtype, count=len(flows))

        i64, u8 = np.int64, np.uint8
        return cls(
            node_name=node, time_ns=col((f.time_ns for f in flows), i64),
            uuid=UuidColumn.of([f.uuid for f in flows]),
            verdict=col((f.verdict for f in flows), u8),
            drop_reason=col((f.drop_reason for f in flows), u8),
            event_type=col((f.event_type for f in flows), u8),
            event_subtype=col((f.event_subtype for f in flows), u8),
            observation_point=col((f.observation_point for f in flows), u8),
            trace_reason=col((f.trace_reason for f in flows), u8),
            traffic_direction=col((f.traffic_direction for f in flows), u8),
            policy_match_type=col((f.policy_match_type for f in flows), u8),
            ip_version=col((f.ip_version for f in flows), u8),
            source_ip=col((ips.code(f.source_ip) for f in flows), i64),
            destination_ip=col((ips.code(f.destination_ip) for f in flows), i64),
            service_ip=col((ips.code(f.service_ip)
                                       if f.service_ip else NO_IP
                                       for f in flows), i64),
            ip_table=ips.table,
            protocol=col((f.protocol for f in flows), u8),
            source_port=col((f.source_port for f in flows), np.uint16),
            destination_port=col((f.destination_port for f in flows), np.uint16),
            service_port=col((f.service_port for f in flows), np.uint16),
            tcp_flags=col((f.tcp_flags for f in flows), u8),
            icmp_type=col((f.icmp_type for f in flows), u8),
            icmp_code=col((f.icmp_code for f in flows), u8),
            source=col((eps.code(f.source) for f in flows), i64),
            destination=col((eps.code(f.destination) for f in flows), i64),
            endpoint_table=eps.table,
            is_reply=col((REPLY_UNKNOWN if f.is_reply is None else int(f.is_reply)
                          for f in flows), np.int8),
            interface_index=col((f.interface_index for f in flows), np.uint32),
            interface_name=col((ifnames.code(f.interface_name) for f in flows), i64),
            ifname_table=ifnames.table,
            packets=col((f.packets for f in flows), np.uint64),
            bytes=col((f.bytes for f in flows), np.uint64),
            source_service=col((svcs.code(f.source_service) for f in flows), i64),
            destination_service=col((svcs.code(f.destination_service) for f in flows), i64),
            service_table=svcs.table,
            ingress_allowed_by=col((pols.code(f.ingress_allowed_by) for f in flows), i64),
            egress_allowed_by=col((pols.code(f.egress_allowed_by) for f in flows), i64),
            ingress_denied_by=col((pols.code(f.ingress_denied_by) for f in flows), i64),
            egress_denied_by=col((pols.code(f.egress_denied_by) for f in flows), i64),
            policy_table=pols.table)

    def take(self, rows: np.ndarray) -> EnrichedBatch:
        """The rows at `rows` (indices or a boolean mask), in that order, sharing the
        tables: what a filtered or sliced read hands on without building any Flow."""
        return self._select(rows)

    def slice(self, lo: int, hi: int) -> EnrichedBatch:
        """Rows [lo, hi) as views of these columns."""
        return self._select(slice(lo, hi))

    def _select(self, rows: np.ndarray | builtins.slice) -> EnrichedBatch:
        picked: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            v = getattr(self, name)
            if name in _SHARED:
                picked[name] = v
            elif isinstance(v, UuidColumn):
                picked[name] = v.select(rows)
            else:
                picked[name] = v[rows]
        return EnrichedBatch(**picked)

    def policy_columns(self) -> dict[str, np.ndarray]:
        """The four policy-ref code columns by their Flow field names."""
        return {"ingress_allowed_by": self.ingress_allowed_by,
                "egress_allowed_by": self.egress_allowed_by,
                "ingress_denied_by": self.ingress_denied_by,
                "egress_denied_by": self.egress_denied_by}

    def rare_rows(self) -> np.ndarray:
        """Rows with a policy match type, a translation, a service or a policy ref: the
        minority that needs more than the common Flow fields."""
        some = ((self.policy_match_type != 0) | (self.service_ip != NO_IP)
                | (self.service_port != 0) | (self.source_service != 0)
                | (self.destination_service != 0))
        for codes in self.policy_columns().values():
            some |= codes != 0
        return np.flatnonzero(some)

    def to_flows(self) -> list[Flow]:
        """The batch as Flows, in row order: the one Python object per event.

        Everything is decoded per column (enum members and shared endpoints
        come from tables), so the loop only calls the constructor; the rare
        rows get their extra fields as keywords, the rest pass none.
        """
        n = len(self)
        if n == 0:
            return []
        no_kw: dict[str, Any] = {}
        extras: list[dict[str, Any]] = [no_kw] * n
        for i, kw in self._extras().items():
            extras[i] = kw
        ips = self.ip_table
        return [
            Flow(time_ns=ts, uuid=uid, verdict=verdict, drop_reason=drop,
                 event_type=etype, event_subtype=sub, observation_point=point,
                 trace_reason=reason, traffic_direction=tdir, ip_version=version,
                 source_ip=sip, destination_ip=dip, protocol=proto, source_port=sport,
                 destination_port=dport, tcp_flags=tcpf, icmp_type=itype, icmp_code=icode,
                 source=s, destination=d, is_reply=reply, node_name=self.node_name,
                 interface_index=ifindex, interface_name=ifname, packets=pk, bytes=nb,
                 **extra)
            for (ts, uid, verdict, drop, etype, sub, point, reason, tdir, version, sip, dip,
                 proto, sport, dport, tcpf, itype, icode, s, d, reply, ifindex, ifname, pk, nb,
                 extra) in zip(
                self.time_ns.tolist(), self.uuids, _VERDICT[self.verdict].tolist(),
                _DROP_REASON[self.drop_reason].tolist(), _EVENT_TYPE[self.event_type].tolist(),
                self.event_subtype.tolist(), _POINT[self.observation_point].tolist(),
                _TRACE_REASON[self.trace_reason].tolist(),
                _DIRECTION[self.traffic_direction].tolist(), self.ip_version.tolist(),
                _spread(ips, self.source_ip), _spread(ips, self.destination_ip),
                self.protocol.tolist(), self.source_port.tolist(),
                self.destination_port.tolist(), self.tcp_flags.tolist(),
                self.icmp_type.tolist(), self.icmp_code.tolist(),
                _spread(self.endpoint_table, self.source),
                _spread(self.endpoint_table, self.destination),
                _IS_REPLY[self.is_reply.astype(np.int64) + 1].tolist(),
                self.interface_index.tolist(), _spread(self.ifname_table, self.interface_name),
                self.packets.tolist(), self.bytes.tolist(), extras, strict=True)
        ]

    def _extras(self) -> dict[int, dict[str, Any]]:
        """The Flow keywords of the rare rows: match type, translation, services, policies."""
        rows = self.rare_rows()
        out: dict[int, dict[str, Any]] = {}
        if not len(rows):
            return out
        policies = {k: v[rows].tolist() for k, v in self.policy_columns().items()}
        for j, (i, match, xip, xport, ssvc, dsvc) in enumerate(zip(
                rows.tolist(), _MATCH_TYPE[self.policy_match_type[rows]].tolist(),
                self.service_ip[rows].tolist(),
                self.service_port[rows].tolist(),
                self.source_service[rows].tolist(), self.destination_service[rows].tolist(),
                strict=True)):
            kw: dict[str, Any] = {
                "policy_match_type": match,
                "service_ip": self.ip_table[xip] if xip != NO_IP else "",
                "service_port": xport,
                "source_service": self.service_table[ssvc],
                "destination_service": self.service_table[dsvc],
            }
            for key, codes in policies.items():
                kw[key] = self.policy_table[codes[j]]
            out[i] = kw
        return out


_FIELD_NAMES = tuple(f.name for f in fields(EnrichedBatch))
#: What every selection of rows shares with the whole batch: the node and the tables.
_SHARED = frozenset(n for n in _FIELD_NAMES if n.endswith("_table") or n == "node_name")
