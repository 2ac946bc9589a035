"""The enums of the flow contract, with Hubble's names and numbers.

Keeping Hubble's numbering (flow.proto, pkg/monitor/api) means users' scripts,
dashboards and muscle memory carry over: `--verdict DROPPED`, drop reason 133,
`trace_observation_point: TO_ENDPOINT` all mean what they mean in Hubble.
"""

from __future__ import annotations

import enum

# Cilium's reserved identities belong to the datapath's identity module; re-exported here
# so that the flow layer can name them without reaching further left than it needs to.
from spyglass.model.identity import IDENTITY_HOST as IDENTITY_HOST
from spyglass.model.identity import IDENTITY_UNKNOWN as IDENTITY_UNKNOWN
from spyglass.model.identity import IDENTITY_WORLD as IDENTITY_WORLD
from spyglass.model.identity import RESERVED_IDENTITY_LABELS as RESERVED_IDENTITY_LABELS


class Verdict(enum.IntEnum):
    """flow.Verdict."""

    VERDICT_UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 2
    ERROR = 3
    AUDIT = 4
    REDIRECTED = 5
    TRACED = 6
    TRANSLATED = 7


class DropReason(enum.IntEnum):
    """flow.DropReason: the datapath's drop codes, as Cilium numbers them."""

    DROP_REASON_UNKNOWN = 0
    INVALID_SOURCE_IP = 132
    POLICY_DENIED = 133
    INVALID_PACKET_DROPPED = 134
    CT_TRUNCATED_OR_INVALID_HEADER = 135
    CT_MISSING_TCP_ACK_FLAG = 136
    CT_UNKNOWN_L4_PROTOCOL = 137
    UNSUPPORTED_L3_PROTOCOL = 139
    MISSED_TAIL_CALL = 140
    UNKNOWN_L4_PROTOCOL = 142
    STALE_OR_UNROUTABLE_IP = 151
    CT_MAP_INSERTION_FAILED = 155
    IP_FRAGMENTATION_NOT_SUPPORTED = 157
    SERVICE_BACKEND_NOT_FOUND = 158
    NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT = 160
    UNKNOWN_CONNECTION_TRACKING_STATE = 163
    FIB_LOOKUP_FAILED = 169
    INVALID_IDENTITY = 171
    UNKNOWN_SENDER = 172
    DENIED_BY_LB_SRC_RANGE_CHECK = 177
    POLICY_DENY = 181
    VLAN_FILTERED = 182
    AUTH_REQUIRED = 189
    CT_NO_MAP_FOUND = 190
    TTL_EXCEEDED = 196


#: Human text for a drop reason, as `pkg/monitor/api/drop.go` prints it.
DROP_REASON_TEXT: dict[DropReason, str] = {
    DropReason.POLICY_DENIED: "Policy denied",
    DropReason.POLICY_DENY: "Policy denied by denylist",
    DropReason.INVALID_SOURCE_IP: "Invalid source ip",
    DropReason.STALE_OR_UNROUTABLE_IP: "Stale or unroutable IP",
    DropReason.SERVICE_BACKEND_NOT_FOUND: "Service backend not found",
    DropReason.UNKNOWN_L4_PROTOCOL: "Unknown L4 protocol",
    DropReason.UNSUPPORTED_L3_PROTOCOL: "Unsupported L3 protocol",
    DropReason.CT_MAP_INSERTION_FAILED: "CT: Map insertion failed",
    DropReason.FIB_LOOKUP_FAILED: "FIB lookup failed",
    DropReason.TTL_EXCEEDED: "TTL exceeded",
}


class ObservationPoint(enum.IntEnum):
    """flow.TraceObservationPoint."""

    UNKNOWN_POINT = 0
    TO_PROXY = 1
    TO_HOST = 2
    TO_STACK = 3
    TO_OVERLAY = 4
    FROM_ENDPOINT = 5
    FROM_PROXY = 6
    FROM_HOST = 7
    FROM_STACK = 8
    FROM_OVERLAY = 9
    FROM_NETWORK = 10
    TO_NETWORK = 11
    FROM_CRYPTO = 12
    TO_CRYPTO = 13
    TO_ENDPOINT = 101


#: The monitor's trace subtypes (TRACE_TO_LXC = 0 …) as observation points.
#: The datapath emits the monitor numbering; only TO_LXC differs from Hubble's.
TRACE_SUBTYPE_TO_POINT: dict[int, ObservationPoint] = {
    0: ObservationPoint.TO_ENDPOINT,
    1: ObservationPoint.TO_PROXY,
    2: ObservationPoint.TO_HOST,
    3: ObservationPoint.TO_STACK,
    4: ObservationPoint.TO_OVERLAY,
    5: ObservationPoint.FROM_ENDPOINT,
    6: ObservationPoint.FROM_PROXY,
    7: ObservationPoint.FROM_HOST,
    8: ObservationPoint.FROM_STACK,
    9: ObservationPoint.FROM_OVERLAY,
    10: ObservationPoint.FROM_NETWORK,
    11: ObservationPoint.TO_NETWORK,
    12: ObservationPoint.FROM_CRYPTO,
    13: ObservationPoint.TO_CRYPTO,
}


class TraceReason(enum.IntEnum):
    """flow.TraceReason (the conntrack state that made the datapath report)."""

    TRACE_REASON_UNKNOWN = 0
    NEW = 1
    ESTABLISHED = 2
    REPLY = 3


class TrafficDirection(enum.IntEnum):
    """flow.TrafficDirection, seen from the local endpoint."""

    TRAFFIC_DIRECTION_UNKNOWN = 0
    INGRESS = 1
    EGRESS = 2


class EventType(enum.IntEnum):
    """Monitor message types (CILIUM_NOTIFY_*), Hubble's `event_type.type`."""

    UNSPEC = 0
    DROP = 1
    TRACE = 4
    POLICY_VERDICT = 5


class PolicyMatchType(enum.IntEnum):
    """Policy verdict match types, printed as Hubble prints them."""

    NONE = 0
    L3_ONLY = 1
    L3_L4 = 2
    L4_ONLY = 3
    ALL = 4


POLICY_MATCH_TEXT: dict[PolicyMatchType, str] = {
    PolicyMatchType.NONE: "none",
    PolicyMatchType.L3_ONLY: "L3-Only",
    PolicyMatchType.L3_L4: "L3-L4",
    PolicyMatchType.L4_ONLY: "L4-Only",
    PolicyMatchType.ALL: "all",
}


class LostEventSource(enum.IntEnum):
    """Where events were lost. The first three are Hubble's; the rest are Spyglass's."""

    UNKNOWN_LOST_EVENT_SOURCE = 0
    PERF_EVENT_RING_BUFFER = 1
    OBSERVER_EVENTS_QUEUE = 2
    HUBBLE_RING_BUFFER = 3
    STORE = 100
    CLIENT_QUEUE = 101
    #: Written by the datapath, never delivered, and gone with the rings of an agent that
    #: stopped while no ring keeper held them (counted when the next agent adopts).
    AGENT_RESTART = 102


class Protocol(enum.IntEnum):
    """IP protocol numbers of the L4 protocols the datapath parses."""

    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132


#: TCP flag bits as in the TCP header byte, with Hubble's names, in Hubble's print order.
TCP_FLAG_BITS: tuple[tuple[str, int], ...] = (
    ("SYN", 0x02),
    ("ACK", 0x10),
    ("RST", 0x04),
    ("FIN", 0x01),
    ("PSH", 0x08),
    ("URG", 0x20),
    ("ECE", 0x40),
    ("CWR", 0x80),
)
TCP_FLAG_BY_NAME: dict[str, int] = dict(TCP_FLAG_BITS)
