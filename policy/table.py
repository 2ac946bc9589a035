"""The lookup rule of types.py, in Python, over a CompiledPolicy.

The datapath implements the same rule in C over the same entries; `explain`, tests and
the API use this one. Keep the two readings identical: selected? -> deny (exact remote,
then any remote; longest port prefix) -> allow (likewise) -> default deny.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from spyglass.model.enums import DropReason, PolicyMatchType
from spyglass.model.identity import IDENTITY_WORLD
from spyglass.model.policy import (
    ANY_IDENTITY,
    ANY_PROTO,
    CompiledPolicy,
    Direction,
    PolicyKey,
    RuleRef,
)


@dataclass(frozen=True, slots=True)
class Decision:
    """One direction's verdict. In audit mode `allowed` is True, `audited` True, and
    `reason` says what enforcement would have done."""

    allowed: bool
    reason: DropReason | None
    match_type: PolicyMatchType
    cookie: int
    key: PolicyKey | None
    audited: bool = False

    @property
    def enforced(self) -> bool:
        """False when no policy selects the endpoint in this direction (cookie 0)."""
        return self.cookie != 0


def match_type(key: PolicyKey) -> PolicyMatchType:
    """L3 = a specific remote identity; L4 = a specific protocol (with or without port)."""
    l3 = key.remote_identity != ANY_IDENTITY
    l4 = key.proto != ANY_PROTO
    if l3:
        return PolicyMatchType.L3_L4 if l4 else PolicyMatchType.L3_ONLY
    return PolicyMatchType.L4_ONLY if l4 else PolicyMatchType.ALL


_Index = dict[tuple[int, int, int, int, int, int], tuple[PolicyKey, int]]


def _index(entries: Mapping[PolicyKey, int]) -> _Index:
    for k in entries:
        check_key(k)
    return {(k.local_identity, int(k.direction), k.remote_identity, k.proto, k.port,
             k.port_bits): (k, c) for k, c in entries.items()}


def check_key(k: PolicyKey) -> None:
    """A key the LPM could never match as written (bits beyond the prefix) is a bug."""
    ok = 0 <= k.port_bits <= 16 and 0 <= k.port <= 0xFFFF
    if ok and k.proto == ANY_PROTO:
        ok = k.port == 0 and k.port_bits == 0
    elif ok:
        ok = k.port & ~(0xFFFF << (16 - k.port_bits)) & 0xFFFF == 0
    if not ok:
        raise ValueError(f"malformed policy key {k}: the port must be masked to its "
                         f"port_bits, and any-protocol keys carry no port")


class PolicyTable:
    """Answers lookups and resolves remote addresses exactly as the datapath does."""

    def __init__(self, compiled: CompiledPolicy) -> None:
        self.compiled = compiled
        self._allow = _index(compiled.allow)
        self._deny = _index(compiled.deny)
        self._cidrs = sorted(
            ((ipaddress.ip_network(c), num) for c, num in compiled.cidr_identities.items()),
            key=lambda x: -x[0].prefixlen)

    def refs(self, cookie: int) -> tuple[RuleRef, ...]:
        """What a cookie names (empty for 0 or an unknown cookie)."""
        found: tuple[RuleRef, ...] = self.compiled.cookies.get(cookie, ())
        return found

    def lookup(self, local_identity: int, direction: Direction | int, remote_identity: int,
               proto: int, dport: int) -> Decision:
        direction = Direction(direction)
        selected = self.compiled.selected.get((local_identity, direction))
        if selected is None:
            return Decision(True, None, PolicyMatchType.NONE, 0, None)
        audited = local_identity in self.compiled.audit
        hit = self._lpm(self._deny, local_identity, direction, remote_identity, proto, dport)
        if hit is not None:
            key, cookie = hit
            return Decision(audited, DropReason.POLICY_DENY, match_type(key), cookie, key,
                            audited)
        hit = self._lpm(self._allow, local_identity, direction, remote_identity, proto, dport)
        if hit is not None:
            key, cookie = hit
            return Decision(True, None, match_type(key), cookie, key)
        return Decision(audited, DropReason.POLICY_DENIED, PolicyMatchType.NONE, selected,
                        None, audited)

    @staticmethod
    def _lpm(index: _Index, local: int, direction: Direction, remote: int, proto: int,
             dport: int) -> tuple[PolicyKey, int] | None:
        d = int(direction)
        for r in (remote, ANY_IDENTITY) if remote != ANY_IDENTITY else (ANY_IDENTITY,):
            if proto != ANY_PROTO:
                for bits in range(16, -1, -1):
                    port = dport & ((0xFFFF << (16 - bits)) & 0xFFFF)
                    hit = index.get((local, d, r, proto, port, bits))
                    if hit is not None:
                        return hit
            hit = index.get((local, d, r, ANY_PROTO, 0, 0))
            if hit is not None:
                return hit
        return None

    def resolve_remote(self, ip: str, pod_identities_by_ip: Mapping[str, int]) -> int:
        """An address's identity as the ipcache gives it: a pod's /32 first, then the
        longest CIDR identity prefix, else world (2)."""
        addr = ipaddress.ip_address(ip)
        pod = pod_identities_by_ip.get(str(addr))
        if pod is not None:
            return int(pod)
        for net, num in self._cidrs:
            if addr.version == net.version and addr in net:
                return int(num)
        return int(IDENTITY_WORLD)
