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
import sys
from dataclasses import dataclass

#: sg_ipcache key families (Cilium's ENDPOINT_KEY_IPV4/IPV6).
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
#: Bits of the LPM key that precede the address (family byte + padding); they
#: are always part of the prefix so an IPv4 entry never matches an IPv6 lookup.
LPM_HEADER_BITS = 32

#: sg_endpoints / sg_ipcache flags.
EPF_LOCAL = 0x0001

#: Pin names, in creation order. Every map the datapath owns.
MAP_NAMES: tuple[str, ...] = (
    "sg_events",
    "sg_submit_fail",
    "sg_endpoints",
    "sg_ipcache",
    "sg_config",
    "sg_ct",
)

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
