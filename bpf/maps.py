"""The byte layout of the datapath's maps, without a kernel.

These ctypes structs mirror `bpf/maps.h` and `bpf/ct.h`. Keeping the packing
here, in pure functions, means the encodings that are easy to get subtly wrong
(network byte order, LPM prefix lengths that count the family byte) are unit
tested without root; the datapath test checks every size against what bcc
compiled from the C.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from spyglass.model.policy import (
    ANY_PROTO,
    CIDR_IDENTITY_BASE,
    PREFIX_ANY_PROTO,
    CompiledPolicy,
    Direction,
    PolicyKey,
)

#: sg_ipcache key families (Cilium's ENDPOINT_KEY_IPV4/IPV6).
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
#: Bits of the LPM key that precede the address (family byte + padding); they
#: are always part of the prefix so an IPv4 entry never matches an IPv6 lookup.
LPM_HEADER_BITS = 32

#: sg_endpoints / sg_ipcache flags.
EPF_LOCAL = 0x0001

#: sg_config.flags
CFG_POLICY_AUDIT = 0x0001
#: sg_policy_selected value flags
POLF_AUDIT = 0x0001
#: Bytes of data in a policy LPM key (after the u32 prefixlen).
POLICY_KEY_BYTES = 12
#: A policy key is a host-order u32 prefixlen, then big-endian data: local u32 | direction u8
#: | remote u32 | proto u8 | dport u16. A policy value: cookie u32 | prefixlen u16 | pad u16.
_PREFIXLEN = struct.Struct("=I")
_POLICY_DATA = struct.Struct(">IBIBH")
_POLICY_VALUE = struct.Struct("=IHH")
_DIRECTIONS = frozenset(int(d) for d in Direction)

#: Cilium's monitor aggregation names and numbers (pkg/option/monitor.go).
AGGREGATION_LEVELS: dict[str, int] = {
    "none": 0,
    "disabled": 0,
    "lowest": 1,
    "low": 2,
    "medium": 3,
    "max": 4,
    "maximum": 4,
}


class EndpointInfo(ct.Structure):
    """struct sg_endpoint_info (value of sg_endpoints, keyed by u32 ifindex)."""

    _fields_ = [
        ("ep_id", ct.c_uint16),
        ("flags", ct.c_uint16),
        ("identity", ct.c_uint32),
        ("ipv4", ct.c_uint32),  # network byte order, as the packet carries it
    ]


class IpcacheKey(ct.Structure):
    """struct sg_ipcache_key (LPM trie key)."""

    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("family", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
        ("addr", ct.c_uint8 * 16),
    ]


class IpcacheValue(ct.Structure):
    """struct sg_ipcache_value."""

    _fields_ = [
        ("identity", ct.c_uint32),
        ("ep_id", ct.c_uint16),
        ("flags", ct.c_uint16),
    ]


class Config(ct.Structure):
    """struct sg_config (sg_config[0])."""

    _fields_ = [
        ("agg_level", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("interval_ns", ct.c_uint64),
    ]


class CtKey(ct.Structure):
    """struct sg_ct_key: the original-direction 5-tuple, ports in host order."""

    _fields_ = [
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
    ]


class CtSlot(ct.Structure):
    """struct sg_ct_slot: one direction at one observation point."""

    _fields_ = [
        ("last_report_ns", ct.c_uint64),
        ("packets", ct.c_uint32),
        ("bytes", ct.c_uint32),
        ("flags_seen", ct.c_uint8),
        ("reported", ct.c_uint8),
        ("pad", ct.c_uint8 * 6),
    ]


class CtEntry(ct.Structure):
    """struct sg_ct_entry; slot index = direction (0 fwd, 1 rev) * 2 + point (0 from, 1 to)."""

    _fields_ = [
        ("created_ns", ct.c_uint64),
        ("last_seen_ns", ct.c_uint64),
        ("slot", CtSlot * 4),
        ("closing", ct.c_uint8),
        ("pad", ct.c_uint8 * 7),
    ]


class LbSvcKey(ct.Structure):
    """struct sg_lb_svc_key: VIP as on the wire, port in host order."""

    _fields_ = [
        ("addr", ct.c_uint8 * 4),
        ("port", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("pad", ct.c_uint8),
    ]


class LbSvcValue(ct.Structure):
    """struct sg_lb_svc_value."""

    _fields_ = [
        ("service_id", ct.c_uint32),
        ("count", ct.c_uint16),
        ("flags", ct.c_uint16),
        ("affinity_s", ct.c_uint32),
    ]


class LbBackendKey(ct.Structure):
    """struct sg_lb_backend_key."""

    _fields_ = [("service_id", ct.c_uint32), ("slot", ct.c_uint32)]


class LbBackend(ct.Structure):
    """struct sg_lb_backend: pod IP as on the wire, target port in host order."""

    _fields_ = [
        ("addr", ct.c_uint8 * 4),
        ("port", ct.c_uint16),
        ("pad", ct.c_uint16),
    ]


class LbCtValue(ct.Structure):
    """struct sg_lb_ct_value (sg_lb_ct is keyed by CtKey)."""

    _fields_ = [
        ("last_seen_ns", ct.c_uint64),
        ("service_id", ct.c_uint32),
        ("slot", ct.c_uint32),
        ("addr", ct.c_uint8 * 4),
        ("port", ct.c_uint16),
        ("kind", ct.c_uint8),
        ("pad", ct.c_uint8),
    ]


class LbAffinityKey(ct.Structure):
    """struct sg_lb_affinity_key."""

    _fields_ = [("service_id", ct.c_uint32), ("client", ct.c_uint8 * 4)]


class LbAffinityValue(ct.Structure):
    """struct sg_lb_affinity_value."""

    _fields_ = [
        ("last_seen_ns", ct.c_uint64),
        ("slot", ct.c_uint32),
        ("addr", ct.c_uint8 * 4),
        ("port", ct.c_uint16),
        ("pad", ct.c_uint16),
        ("pad2", ct.c_uint32),
    ]


#: sg_lb_ct_value.kind
LB_FWD, LB_REV = 1, 2
#: sg_lb_svc_value.flags
SVCF_AFFINITY = 0x0001


@dataclass(frozen=True)
class DatapathEndpoint:
    """A pod as the datapath sees it: the host-side veth and who is behind it."""

    ifindex: int
    ifname: str
    ep_id: int
    identity: int
    ipv4: str

    def __post_init__(self) -> None:
        if not 0 < self.ifindex < 1 << 31:
            raise ValueError(f"endpoint {self.ifname!r}: ifindex {self.ifindex} is not a valid "
                             "interface index; pass the host veth's index (ip -o link)")
        if not 0 <= self.ep_id < 1 << 16:
            raise ValueError(f"endpoint {self.ifname!r}: ep_id {self.ep_id} does not fit in 16 "
                             "bits; endpoint ids must be 0..65535")
        _check_identity(self.identity, f"endpoint {self.ifname!r}")
        try:
            ipaddress.IPv4Address(self.ipv4)
        except ValueError:
            raise ValueError(f"endpoint {self.ifname!r}: {self.ipv4!r} is not an IPv4 address; "
                             "give the pod's address like '10.250.0.10'") from None


def _check_identity(identity: int, what: str) -> None:
    if not 0 <= identity < 1 << 32:
        raise ValueError(f"{what}: identity {identity} does not fit in 32 bits")


def parse_aggregation(level: str) -> int:
    """Cilium's level name to its number. Every non-zero level means active-CT
    aggregation in this datapath for now (Cilium's lowest/low additionally
    suppress some trace points; ours only has the two endpoint points)."""
    key = level.strip().lower() if isinstance(level, str) else level
    if key not in AGGREGATION_LEVELS:
        names = ", ".join(AGGREGATION_LEVELS)
        raise ValueError(f"unknown monitor aggregation level {level!r}: use one of {names}")
    return AGGREGATION_LEVELS[key]


def config_value(level: str, interval_s: float) -> Config:
    """The sg_config entry for an aggregation level and report interval."""
    num = parse_aggregation(level)
    if not interval_s > 0 or interval_s != interval_s or interval_s > 86400 * 365:
        raise ValueError(f"aggregation interval {interval_s!r} s must be a positive number "
                         "of seconds (Cilium's default is 5)")
    return Config(agg_level=num, flags=0, interval_ns=int(interval_s * 1e9))


def ipcache_key(cidr: str) -> IpcacheKey:
    """Pack a CIDR (or a bare address, meaning a host route) into the LPM key.

    The prefix length counts the family byte and its padding, so "10.0.0.0/8"
    is stored with prefixlen 40. Host bits are rejected, as `ip route` does,
    because a key with host bits set silently matches less than intended.
    """
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad ipcache prefix {cidr!r}: {exc}; write it like "
                         "'10.250.0.0/24' or '10.250.0.10'") from None
    key = IpcacheKey()
    key.prefixlen = LPM_HEADER_BITS + net.prefixlen
    key.family = FAMILY_IPV4 if net.version == 4 else FAMILY_IPV6
    raw = net.network_address.packed
    key.addr[: len(raw)] = raw
    return key


def ipcache_value(identity: int, ep_id: int = 0, flags: int = 0) -> IpcacheValue:
    _check_identity(identity, "ipcache entry")
    if not 0 <= ep_id < 1 << 16:
        raise ValueError(f"ipcache entry: ep_id {ep_id} does not fit in 16 bits")
    return IpcacheValue(identity=identity, ep_id=ep_id, flags=flags)


def endpoint_key(ep: DatapathEndpoint) -> ct.c_uint32:
    return ct.c_uint32(ep.ifindex)


def endpoint_value(ep: DatapathEndpoint) -> EndpointInfo:
    # The struct holds the address as the wire has it; ctypes stores the u32 in
    # host order, so read the wire bytes in host order to get the same bytes back.
    wire = int.from_bytes(ipaddress.IPv4Address(ep.ipv4).packed, sys.byteorder)
    return EndpointInfo(ep_id=ep.ep_id, flags=EPF_LOCAL, identity=ep.identity, ipv4=wire)


def ct_key(saddr: str, daddr: str, sport: int, dport: int, proto: int) -> CtKey:
    """A conntrack key as the kernel builds it (for inspection and tests)."""
    key = CtKey(sport=sport, dport=dport, proto=proto)
    src = ipaddress.ip_address(saddr).packed
    dst = ipaddress.ip_address(daddr).packed
    key.saddr[: len(src)] = src
    key.daddr[: len(dst)] = dst
    return key


# -- policy -------------------------------------------------------------------


class PolicyLpmKey(ct.Structure):
    """struct sg_policy_key: prefixlen + local(BE32) dir(8) remote(BE32) proto(8) dport(BE16)."""

    _fields_ = [
        ("prefixlen", ct.c_uint32),
        ("data", ct.c_uint8 * POLICY_KEY_BYTES),
    ]


class PolicyValue(ct.Structure):
    """struct sg_policy_value: the cookie, and the entry's prefix for the match type."""

    _fields_ = [
        ("cookie", ct.c_uint32),
        ("prefixlen", ct.c_uint16),
        ("pad", ct.c_uint16),
    ]


class PolicySelKey(ct.Structure):
    """struct sg_policy_sel_key."""

    _fields_ = [
        ("identity", ct.c_uint32),
        ("direction", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
    ]


class PolicySelValue(ct.Structure):
    """struct sg_policy_sel_value."""

    _fields_ = [
        ("cookie", ct.c_uint32),
        ("flags", ct.c_uint32),
    ]


def _check_cookie(cookie: int, what: str) -> None:
    if not isinstance(cookie, int) or not 0 < cookie < 1 << 32:
        raise ValueError(f"{what}: cookie {cookie!r} must be a u32 other than 0 (0 means "
                         "'no rule' in events); the policy compiler allocates them")


def _check_direction(direction: int, what: str) -> Direction:
    try:
        return Direction(direction)
    except ValueError:
        raise ValueError(f"{what}: direction {direction!r} is neither INGRESS (1) nor "
                         "EGRESS (2)") from None


def policy_key_bytes(key: PolicyKey) -> bytes:
    """Pack a PolicyKey big-endian, so that an LPM prefix over the bytes is the
    prefix semantics of types.py (the port's leading bits are its high bits).

    struct rather than ctypes: a policy load packs every entry, and this is ~10x cheaper.
    """
    local, remote, proto, port, bits = (key.local_identity, key.remote_identity, key.proto,
                                        key.port, key.port_bits)
    if not (0 <= local < 1 << 32 and 0 <= remote < 1 << 32 and 0 <= proto < 256
            and 0 <= port < 1 << 16 and 0 <= bits <= 16 and key.direction in _DIRECTIONS
            and (proto != ANY_PROTO or not (port or bits))
            and not port & ((1 << (16 - bits)) - 1)):
        _explain_bad_key(key)
    prefixlen = PREFIX_ANY_PROTO if proto == ANY_PROTO else PREFIX_ANY_PROTO + 8 + bits
    return _PREFIXLEN.pack(prefixlen) + _POLICY_DATA.pack(local, key.direction, remote, proto,
                                                          port)


def _explain_bad_key(key: PolicyKey) -> None:
    what = f"policy key {key}"
    _check_identity(key.local_identity, what)
    _check_identity(key.remote_identity, what)
    _check_direction(key.direction, what)
    if not 0 <= key.proto < 256:
        raise ValueError(f"{what}: proto {key.proto} is not an IP protocol number (0..255)")
    if not 0 <= key.port < 1 << 16 or not 0 <= key.port_bits <= 16:
        raise ValueError(f"{what}: port {key.port} / port_bits {key.port_bits} must be "
                         "0..65535 / 0..16")
    if key.proto == ANY_PROTO:
        raise ValueError(f"{what}: an any-protocol entry cannot name a port; give the "
                         "protocol (TCP 6, UDP 17, SCTP 132) with the port")
    raise ValueError(f"{what}: port {key.port} has bits set beyond its {key.port_bits}-bit "
                     "prefix; a range prefix must start at a multiple of its size")


def policy_key(key: PolicyKey) -> PolicyLpmKey:
    return PolicyLpmKey.from_buffer_copy(policy_key_bytes(key))


def policy_value_bytes(cookie: int, key: PolicyKey) -> bytes:
    if not 0 < cookie < 1 << 32:
        _check_cookie(cookie, f"policy entry {key}")
    return _POLICY_VALUE.pack(cookie, key.prefixlen, 0)


def policy_value(cookie: int, key: PolicyKey) -> PolicyValue:
    return PolicyValue.from_buffer_copy(policy_value_bytes(cookie, key))


def policy_selected_key(identity: int, direction: int) -> PolicySelKey:
    what = f"selected record ({identity}, {direction})"
    _check_identity(identity, what)
    return PolicySelKey(identity=identity, direction=int(_check_direction(direction, what)))


def policy_selected_value(cookie: int, audit: bool) -> PolicySelValue:
    _check_cookie(cookie, "selected record")
    return PolicySelValue(cookie=cookie, flags=POLF_AUDIT if audit else 0)


#: The policy maps and the ipcache's CIDR entries, in the order a load writes them.
POLICY_MAPS: tuple[str, ...] = ("sg_policy_allow", "sg_policy_deny", "sg_policy_selected",
                                "sg_ipcache")


def policy_entries(compiled: CompiledPolicy,
                   pod_ipcache_keys: frozenset[bytes] = frozenset()
                   ) -> dict[str, dict[bytes, bytes]]:
    """What the maps must hold for `compiled`: map name -> {key bytes: value bytes}.

    The ipcache part holds only CIDR entries; a CIDR that is exactly a pod's
    /32 is left out, because the pod's own entry (its identity) must win, as
    in Cilium, where CIDR rules do not select cluster endpoints.
    """
    allow = {policy_key_bytes(k): policy_value_bytes(c, k) for k, c in compiled.allow.items()}
    deny = {policy_key_bytes(k): policy_value_bytes(c, k) for k, c in compiled.deny.items()}
    selected = {
        bytes(policy_selected_key(ident, direction)):
            bytes(policy_selected_value(cookie, ident in compiled.audit))
        for (ident, direction), cookie in compiled.selected.items()
    }
    cidrs: dict[bytes, bytes] = {}
    for cidr, ident in compiled.cidr_identities.items():
        if ident < CIDR_IDENTITY_BASE:
            raise ValueError(f"CIDR {cidr}: identity {ident} is below {CIDR_IDENTITY_BASE} "
                             "(1 << 24), the start of the CIDR identity range")
        key = bytes(ipcache_key(cidr))
        if key not in pod_ipcache_keys:
            cidrs[key] = bytes(ipcache_value(ident))
    return {"sg_policy_allow": allow, "sg_policy_deny": deny,
            "sg_policy_selected": selected, "sg_ipcache": cidrs}


@dataclass(frozen=True)
class MapOp:
    """One batch of writes to one map: upserts (keys + values) or deletes (keys)."""

    map: str
    delete: bool
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...] = ()


def plan_policy_update(current: Mapping[str, Mapping[bytes, bytes]],
                       desired: Mapping[str, Mapping[bytes, bytes]]) -> list[MapOp]:
    """The writes that turn `current` into `desired`, ordered so that traffic
    allowed before and after is not denied in between (with stable identities):

    allows in, stale denies out, new CIDRs in, newly selected in, denies in,
    stale allows out, stale CIDRs out, deselected out.

    Unchanged entries are not touched, so live connections never see a gap.
    """
    upserts: dict[str, MapOp] = {}
    deletes: dict[str, MapOp] = {}
    for name in POLICY_MAPS:
        have, want = current.get(name, {}), desired.get(name, {})
        changed = [(k, v) for k, v in want.items() if have.get(k) != v]
        stale = tuple(k for k in have if k not in want)
        if changed:
            upserts[name] = MapOp(name, False, tuple(k for k, _ in changed),
                                  tuple(v for _, v in changed))
        if stale:
            deletes[name] = MapOp(name, True, stale)
    order = [(upserts, "sg_policy_allow"), (deletes, "sg_policy_deny"),
             (upserts, "sg_ipcache"), (upserts, "sg_policy_selected"),
             (upserts, "sg_policy_deny"), (deletes, "sg_policy_allow"),
             (deletes, "sg_ipcache"), (deletes, "sg_policy_selected")]
    return [ops[name] for ops, name in order if name in ops]


def decode_policy_key(raw: bytes) -> PolicyKey:
    """The inverse of policy_key (for reading maps back, and for tests)."""
    key = PolicyLpmKey.from_buffer_copy(raw)
    data = bytes(key.data)
    proto = data[9]
    bits = 0 if key.prefixlen == PREFIX_ANY_PROTO else key.prefixlen - PREFIX_ANY_PROTO - 8
    return PolicyKey(int.from_bytes(data[0:4], "big"), Direction(data[4]),
                     int.from_bytes(data[5:9], "big"),
                     proto, int.from_bytes(data[10:12], "big"), bits)
