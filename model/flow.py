"""The `Flow` record: the one contract every layer speaks.

A flow is frozen once enrichment has built it. JSON (API, `observe -o json`),
CLI lines and, later, ClickHouse rows all derive from it, so field names follow
Hubble's flow JSON wherever a concept exists in both. `to_dict`/`from_dict` are
exact inverses, which lets the CLI rebuild flows from the API's JSON and print
them with the same printer the server-side tests use.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spyglass.model.enums import (
    DROP_REASON_TEXT,
    TCP_FLAG_BITS,
    TCP_FLAG_BY_NAME,
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    PolicyMatchType,
    Protocol,
    TraceReason,
    TrafficDirection,
    Verdict,
)


@dataclass(frozen=True, slots=True)
class Workload:
    """The controller behind a pod (Deployment, StatefulSet …)."""

    name: str
    kind: str = "Deployment"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a flow: Hubble's `flow.Endpoint`."""

    ID: int = 0
    identity: int = 0
    namespace: str = ""
    labels: tuple[str, ...] = ()
    pod_name: str = ""
    workloads: tuple[Workload, ...] = ()

    @property
    def workload(self) -> str:
        """The first workload's name, or "" (the service map's node key)."""
        return self.workloads[0].name if self.workloads else ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ID": self.ID, "identity": self.identity}
        if self.namespace:
            d["namespace"] = self.namespace
        if self.labels:
            d["labels"] = list(self.labels)
        if self.pod_name:
            d["pod_name"] = self.pod_name
        if self.workloads:
            d["workloads"] = [{"name": w.name, "kind": w.kind} for w in self.workloads]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Endpoint:
        if not d:
            return cls()
        return cls(
            ID=int(d.get("ID", 0)),
            identity=int(d.get("identity", 0)),
            namespace=str(d.get("namespace", "")),
            labels=tuple(d.get("labels", ())),
            pod_name=str(d.get("pod_name", "")),
            workloads=tuple(
                Workload(str(w.get("name", "")), str(w.get("kind", "")))
                for w in d.get("workloads", ())
            ),
        )


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """A policy that allowed or denied a flow: Hubble's `flow.Policy`."""

    name: str
    namespace: str = ""
    kind: str = "NetworkPolicy"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "namespace": self.namespace, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyRef:
        return cls(str(d["name"]), str(d.get("namespace", "")), str(d.get("kind", "")))


@dataclass(frozen=True, slots=True)
class Service:
    """A service a flow was addressed to or came from."""

    name: str
    namespace: str = ""


def _policies(items: Any) -> tuple[PolicyRef, ...]:
    return tuple(PolicyRef.from_dict(p) for p in items or ())


@dataclass(frozen=True, slots=True)
class Flow:
    """One observed flow event, enriched.

    `time_ns` is wall-clock nanoseconds since the epoch. `tcp_flags` is the TCP
    header's flag byte. `packets`/`bytes` count what monitor aggregation folded
    into this report (1 and the packet length when aggregation is off).
    """

    time_ns: int
    uuid: str = ""
    verdict: Verdict = Verdict.FORWARDED
    drop_reason: DropReason = DropReason.DROP_REASON_UNKNOWN
    event_type: EventType = EventType.TRACE
    event_subtype: int = 0
    observation_point: ObservationPoint = ObservationPoint.UNKNOWN_POINT
    trace_reason: TraceReason = TraceReason.TRACE_REASON_UNKNOWN
    traffic_direction: TrafficDirection = TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN
    ip_version: int = 4
    source_ip: str = ""
    destination_ip: str = ""
    protocol: int = 0
    source_port: int = 0
    destination_port: int = 0
    tcp_flags: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    source: Endpoint = field(default_factory=Endpoint)
    destination: Endpoint = field(default_factory=Endpoint)
    is_reply: bool | None = None
    node_name: str = ""
    interface_index: int = 0
    interface_name: str = ""
    packets: int = 1
    bytes: int = 0
    policy_match_type: PolicyMatchType = PolicyMatchType.NONE
    ingress_allowed_by: tuple[PolicyRef, ...] = ()
    egress_allowed_by: tuple[PolicyRef, ...] = ()
    ingress_denied_by: tuple[PolicyRef, ...] = ()
    egress_denied_by: tuple[PolicyRef, ...] = ()
    source_service: Service | None = None
    destination_service: Service | None = None
    #: Spyglass's own: the service address (the ClusterIP) and port the client asked for,
    #: on every event of a translated connection, either way. The flow's addresses are what
    #: the packet carries where it was seen, the backend's as Cilium's socket LB reports
    #: them, and `destination_service`/`source_service` name the service; Hubble's schema
    #: has no field for the VIP, so Hubble JSON leaves this out.
    service_ip: str = ""
    service_port: int = 0

    # -- derived views -------------------------------------------------------

    @property
    def tcp_flag_names(self) -> tuple[str, ...]:
        return tcp_flag_names(self.tcp_flags)

    @property
    def protocol_name(self) -> str:
        """Hubble's L4 oneof name: TCP, UDP, ICMPv4, ICMPv6, SCTP."""
        return protocol_name(self.protocol)

    @property
    def drop_reason_text(self) -> str:
        return DROP_REASON_TEXT.get(self.drop_reason, self.drop_reason.name.replace("_", " "))

    @property
    def summary(self) -> str:
        """Hubble's `Summary`: what the compact line shows in parentheses."""
        if self.protocol == Protocol.TCP:
            return _tcp_summary(self.tcp_flags)
        if self.protocol in (Protocol.ICMP, Protocol.ICMPV6):
            return _icmp_summary(self.protocol, self.icmp_type, self.icmp_code)
        return self.protocol_name

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time_ns / 1e9, tz=dt.UTC)

    # -- JSON ----------------------------------------------------------------

    def to_dict(self, endpoints: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Hubble-style flow JSON (the `flow` object of a GetFlowsResponse).

        `endpoints` memoises endpoint JSON by object identity across the flows of one
        batch, whose rows share their Endpoint objects (see `responses`).
        """
        d: dict[str, Any] = {
            "time": format_time_ns(self.time_ns),
            "uuid": self.uuid,
            "verdict": self.verdict._name_,
        }
        if self.drop_reason:
            d["drop_reason"] = int(self.drop_reason)
            d["drop_reason_desc"] = self.drop_reason._name_
        d["IP"] = {
            "source": self.source_ip,
            "destination": self.destination_ip,
            "ipVersion": f"IPv{self.ip_version}",
        }
        d["l4"] = self._l4_dict()
        if endpoints is None:
            d["source"] = self.source.to_dict()
            d["destination"] = self.destination.to_dict()
        else:
            for key, ep in (("source", self.source), ("destination", self.destination)):
                ej = endpoints.get(id(ep))
                if ej is None:
                    ej = endpoints[id(ep)] = ep.to_dict()
                d[key] = ej
        d["Type"] = "L3_L4"
        d["node_name"] = self.node_name
        d["event_type"] = {"type": int(self.event_type), "sub_type": self.event_subtype}
        d["traffic_direction"] = self.traffic_direction._name_
        if self.observation_point:
            d["trace_observation_point"] = self.observation_point._name_
        if self.trace_reason:
            d["trace_reason"] = self.trace_reason._name_
        if self.is_reply is not None:
            d["is_reply"] = self.is_reply
        if self.interface_index:
            d["interface"] = {"index": self.interface_index, "name": self.interface_name}
        if self.policy_match_type:
            d["policy_match_type"] = int(self.policy_match_type)
        for key in ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by",
                    "egress_denied_by"):
            refs: tuple[PolicyRef, ...] = getattr(self, key)
            if refs:
                d[key] = [p.to_dict() for p in refs]
        for key in ("source_service", "destination_service"):
            svc: Service | None = getattr(self, key)
            if svc is not None:
                d[key] = {"name": svc.name, "namespace": svc.namespace}
        d["Summary"] = self.summary
        if self.service_ip:
            d["service_address"] = {"ip": self.service_ip, "port": self.service_port}
        d["packets"] = self.packets
        d["bytes"] = self.bytes
        return d

    def _l4_dict(self) -> dict[str, Any]:
        if self.protocol in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            inner: dict[str, Any] = {
                "source_port": self.source_port,
                "destination_port": self.destination_port,
            }
            if self.protocol == Protocol.TCP:
                inner["flags"] = dict.fromkeys(tcp_flag_names(self.tcp_flags), True)
            return {self.protocol_name: inner}
        if self.protocol in (Protocol.ICMP, Protocol.ICMPV6):
            return {self.protocol_name: {"type": self.icmp_type, "code": self.icmp_code}}
        return {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Flow:
        """Rebuild a flow from `to_dict` output (or a Hubble flow JSON object)."""
        ip = d.get("IP") or {}
        svc_addr = d.get("service_address") or {}
        l4 = d.get("l4") or {}
        proto, sport, dport, flags, itype, icode = 0, 0, 0, 0, 0, 0
        for name, body in l4.items():
            proto = _PROTO_BY_NAME.get(name, 0)
            sport = int(body.get("source_port", 0))
            dport = int(body.get("destination_port", 0))
            itype, icode = int(body.get("type", 0)), int(body.get("code", 0))
            for fname, on in (body.get("flags") or {}).items():
                if on and fname in TCP_FLAG_BY_NAME:
                    flags |= TCP_FLAG_BY_NAME[fname]
        et = d.get("event_type") or {}
        iface = d.get("interface") or {}
        reason = d.get("drop_reason_desc")
        return cls(
            time_ns=parse_time_ns(str(d["time"])),
            uuid=str(d.get("uuid", "")),
            verdict=Verdict[d.get("verdict", "VERDICT_UNKNOWN")],
            drop_reason=DropReason[reason] if reason else DropReason.DROP_REASON_UNKNOWN,
            event_type=EventType(int(et.get("type", 0))),
            event_subtype=int(et.get("sub_type", 0)),
            observation_point=ObservationPoint[d.get("trace_observation_point", "UNKNOWN_POINT")],
            trace_reason=TraceReason[d.get("trace_reason", "TRACE_REASON_UNKNOWN")],
            traffic_direction=TrafficDirection[
                d.get("traffic_direction", "TRAFFIC_DIRECTION_UNKNOWN")
            ],
            ip_version=6 if ip.get("ipVersion") == "IPv6" else 4,
            source_ip=str(ip.get("source", "")),
            destination_ip=str(ip.get("destination", "")),
            service_ip=str(svc_addr.get("ip", "")),
            service_port=int(svc_addr.get("port", 0)),
            protocol=proto,
            source_port=sport,
            destination_port=dport,
            tcp_flags=flags,
            icmp_type=itype,
            icmp_code=icode,
            source=Endpoint.from_dict(d.get("source")),
            destination=Endpoint.from_dict(d.get("destination")),
            is_reply=d.get("is_reply"),
            node_name=str(d.get("node_name", "")),
            interface_index=int(iface.get("index", 0)),
            interface_name=str(iface.get("name", "")),
            packets=int(d.get("packets", 1)),
            bytes=int(d.get("bytes", 0)),
            policy_match_type=PolicyMatchType(int(d.get("policy_match_type", 0))),
            ingress_allowed_by=_policies(d.get("ingress_allowed_by")),
            egress_allowed_by=_policies(d.get("egress_allowed_by")),
            ingress_denied_by=_policies(d.get("ingress_denied_by")),
            egress_denied_by=_policies(d.get("egress_denied_by")),
            source_service=_service(d.get("source_service")),
            destination_service=_service(d.get("destination_service")),
        )


@dataclass(frozen=True, slots=True)
class LostEvent:
    """Events that never became flows, said out loud instead of left as a gap."""

    time_ns: int
    source: LostEventSource
    num_events_lost: int
    cpu: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source.name,
            "num_events_lost": self.num_events_lost,
        }
        if self.cpu is not None:
            d["cpu"] = self.cpu  # an Int32Value, whose JSON is the bare number
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], time_ns: int) -> LostEvent:
        """Read `to_dict` output or Hubble's JSON (a numeric source, a string count, and
        the `{"value": n}` cpu that Spyglass wrote before it wrote the bare number)."""
        cpu = d.get("cpu")
        if isinstance(cpu, dict):
            cpu = cpu.get("value")
        source = d["source"]
        return cls(
            time_ns=time_ns,
            source=LostEventSource(int(source)) if isinstance(source, int)
            or str(source).isdigit() else LostEventSource[source],
            num_events_lost=int(d["num_events_lost"]),
            cpu=None if cpu is None else int(cpu),
        )


#: What the ring, the API stream and the printer carry.
Event = Flow | LostEvent


def event_to_response(ev: Event, node_name: str) -> dict[str, Any]:
    """Wrap an event as Hubble's GetFlowsResponse JSON.

    The shape is `{"flow"|"lost_events": …, "node_name": …, "time": …}`.
    """
    key = "flow" if isinstance(ev, Flow) else "lost_events"
    return {key: ev.to_dict(), "node_name": node_name, "time": format_time_ns(ev.time_ns)}


def responses(events: Sequence[Event], node_name: str) -> list[dict[str, Any]]:
    """`event_to_response` of a batch of events at once: the endpoints the flows share (one
    batch's rows share their Endpoint objects) are turned into JSON once, not per flow.
    The dicts share those parts, so they are for serialising, not for changing."""
    memo: dict[int, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, Flow):
            body = ev.to_dict(memo)
            out.append({"flow": body, "node_name": node_name, "time": body["time"]})
        else:
            out.append(event_to_response(ev, node_name))
    return out


def event_from_response(d: dict[str, Any]) -> Event:
    """Inverse of `event_to_response`."""
    if "flow" in d:
        return Flow.from_dict(d["flow"])
    if "lost_events" in d:
        return LostEvent.from_dict(d["lost_events"], parse_time_ns(str(d["time"])))
    raise ValueError("not a flow response: expected a 'flow' or 'lost_events' key, "
                     f"got {sorted(d)}")


def format_time_ns(ns: int) -> str:
    """RFC3339 with nanoseconds in UTC, as protojson prints a Timestamp."""
    secs, frac = divmod(ns, 1_000_000_000)
    return f"{_second_text(secs)}.{frac:09d}Z"


@functools.lru_cache(maxsize=1024)
def _second_text(secs: int) -> str:
    """The whole-second part; a stream's flows share a few seconds, and strftime was a
    third of the cost of a flow's JSON."""
    return dt.datetime.fromtimestamp(secs, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time_ns(text: str) -> int:
    """Parse RFC3339 (any fraction length, Z or offset) into epoch nanoseconds."""
    s = text.strip()
    frac_ns = 0
    if "." in s:
        head, rest = s.split(".", 1)
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        tail = rest[len(digits):]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        s = head + tail
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    base = dt.datetime.fromisoformat(s)
    if base.tzinfo is None:
        base = base.replace(tzinfo=dt.UTC)
    return int(base.timestamp()) * 1_000_000_000 + frac_ns


def _service(d: dict[str, Any] | None) -> Service | None:
    return Service(str(d["name"]), str(d.get("namespace", ""))) if d else None


_PROTO_NAME: dict[int, str] = {
    Protocol.TCP: "TCP",
    Protocol.UDP: "UDP",
    Protocol.ICMP: "ICMPv4",
    Protocol.ICMPV6: "ICMPv6",
    Protocol.SCTP: "SCTP",
}
_PROTO_BY_NAME = {v: int(k) for k, v in _PROTO_NAME.items()}


@functools.lru_cache(maxsize=256)
def tcp_flag_names(flags: int) -> tuple[str, ...]:
    """The names of the bits set in a TCP flag byte, in Hubble's order."""
    return tuple(name for name, bit in TCP_FLAG_BITS if flags & bit)


@functools.lru_cache(maxsize=256)
def _tcp_summary(flags: int) -> str:
    return "TCP Flags: " + ", ".join(tcp_flag_names(flags))


@functools.lru_cache(maxsize=1024)
def _icmp_summary(proto: int, icmp_type: int, icmp_code: int) -> str:
    return f"{protocol_name(proto)} {_icmp_name(proto, icmp_type, icmp_code)}"


def protocol_name(proto: int) -> str:
    """Hubble's L4 oneof name of an IP protocol number (the number itself when it has none)."""
    return _PROTO_NAME.get(proto, str(proto))

_ICMP4_NAMES = {
    (0, 0): "EchoReply",
    (8, 0): "EchoRequest",
    (3, 0): "DestinationUnreachable(Net)",
    (3, 1): "DestinationUnreachable(Host)",
    (3, 3): "DestinationUnreachable(Port)",
    (11, 0): "TimeExceeded(TTLExceeded)",
}
_ICMP6_NAMES = {(128, 0): "EchoRequest", (129, 0): "EchoReply"}


def _icmp_name(proto: int, itype: int, code: int) -> str:
    names = _ICMP4_NAMES if proto == Protocol.ICMP else _ICMP6_NAMES
    return names.get((itype, code), f"Type({itype}) Code({code})")
