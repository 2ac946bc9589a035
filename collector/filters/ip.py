"""IP addresses and CIDRs (v4 and v6) of a flow's source or destination, and its IP version.

Networks are turned into integer ranges once; a flow's address string is turned
into an integer through a small cache, because the same few addresses recur
on every flow of a connection.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import (
    Clause,
    EndpointClause,
    Side,
    ValueProblem,
    as_text,
    in_set,
    table_mask,
)
from spyglass.collector.filters.sql import Params, Sql, any_of
from spyglass.model.flow import Endpoint, Flow


@functools.lru_cache(maxsize=65536)
def _addr(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address, or None for "" and junk (never an exception)."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    return a.version, int(a)


def _v6(version: int, n: int) -> str:
    """An address as the IPv6 column holds it (IPv4 mapped into ::ffff:0:0/96)."""
    if version == 4:
        return str(ipaddress.IPv6Address((0xFFFF << 32) | n))
    return str(ipaddress.IPv6Address(n))


class IPClause(Clause):
    """source_ip / destination_ip: exact addresses and CIDRs, ORed."""

    noun = "ip"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        exact: set[tuple[int, int]] = set()
        ranges: list[tuple[int, int, int]] = []
        for v in self.values:
            if "/" in v:
                net = ipaddress.ip_network(v)
                ranges.append((net.version, int(net.network_address),
                               int(net.broadcast_address)))
            else:
                a = ipaddress.ip_address(v)
                exact.add((a.version, int(a)))
        self._exact = frozenset(exact)
        self._ranges = tuple(ranges)
        self._attr = "source_ip" if side == "source" else "destination_ip"

    @staticmethod
    def parse(raw: Any) -> str:
        text = as_text(raw, "IP address or CIDR", "10.0.0.0/8")
        try:
            if "/" in text:
                net = ipaddress.ip_network(text, strict=False)
                if net.num_addresses == 1:
                    return str(net.network_address)
                return str(net)
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueProblem(f"{text!r} is not an IP address or CIDR",
                               "use an IPv4/IPv6 address or a network", "10.0.0.0/8") from None

    def predicate(self, flow: Flow) -> bool:
        return self._matches_ip(getattr(flow, self._attr))

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        return table_mask(batch.ip_table, getattr(batch, self._attr), self._matches_ip)

    def _matches_ip(self, text: str) -> bool:
        got = _addr(text)
        if got is None:
            return False
        if got in self._exact:
            return True
        version, n = got
        for v, lo, hi in self._ranges:
            if v == version and lo <= n <= hi:
                return True
        return False

    def sql(self) -> Sql:
        """Tests the address family first, as `predicate` compares versions: the
        column holds IPv4 mapped, and an IPv4 flow's address reads back as IPv4
        exactly when it is mapped (storage/rows.py)."""
        p = Params()
        col = self._attr
        mapped = (f"{col} BETWEEN toIPv6('::ffff:0.0.0.0') "
                  f"AND toIPv6('::ffff:255.255.255.255')")
        family = {4: f"(ip_version = 4 AND {mapped})", 6: f"NOT (ip_version = 4 AND {mapped})"}
        parts = []
        for version in (4, 6):
            exact = sorted(_v6(v, n) for v, n in self._exact if v == version)
            tests = [f"has({p.add(exact, 'Array(IPv6)')}, assumeNotNull({col}))"] if exact else []
            tests += [f"{col} BETWEEN {p.add(_v6(v, lo), 'IPv6')} AND {p.add(_v6(v, hi), 'IPv6')}"
                      for v, lo, hi in self._ranges if v == version]
            if tests:
                parts.append(f"{family[version]} AND {any_of(tests)}")
        return f"isNotNull({col}) AND ifNull({any_of(parts)}, 0)", p.values

    def verb(self) -> str:
        return "in" if self._ranges else "is"


class IdentityClause(EndpointClause):
    """source_identity / destination_identity: numbers, or the reserved names."""

    noun = "identity"

    def __init__(self, values: Sequence[int], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._set = frozenset(self.values)

    @staticmethod
    def parse(raw: Any) -> int:
        from spyglass.model.enums import RESERVED_IDENTITY_LABELS

        names = {label.split(":", 1)[1]: num for num, label in RESERVED_IDENTITY_LABELS.items()}
        if isinstance(raw, int) and not isinstance(raw, bool):
            text = str(raw)
        else:
            text = as_text(raw, "security identity", "host").lower()
        if text in names:
            return names[text]
        if text.startswith("reserved:") and text[9:] in names:
            return names[text[9:]]
        if text.isdigit() and int(text) < 2**32:
            return int(text)
        raise ValueProblem(f"{text!r} is not a security identity",
                           f"use a number (0-4294967295) or one of {', '.join(sorted(names))}",
                           "12345")

    def matches_endpoint(self, ep: Endpoint) -> bool:
        return ep.identity in self._set

    def sql(self) -> Sql:
        p = Params()
        return (f"has({p.add(sorted(self._set), 'Array(UInt32)')}, {self.column('identity')})",
                p.values)


#: Hubble's IPVersion enum: name -> number (the FlowFilter's JSON carries either).
IP_VERSIONS: dict[str, int] = {"IP_NOT_USED": 0, "IPv4": 1, "IPv6": 2}
_IP_VERSION_BY_NUM = {num: name for name, num in IP_VERSIONS.items()}
#: What `hubble observe --ip-version` accepts (without regard to case), plus the enum names.
_IP_VERSION_WORDS: dict[str, str] = {
    **{w: "IPv4" for w in ("4", "v4", "ipv4", "ip4")},
    **{w: "IPv6" for w in ("6", "v6", "ipv6", "ip6")},
    **{w: "IP_NOT_USED" for w in ("0", "none", "ip_not_used")},
}
_IP_VERSION_FIX = "use v4, v6 or none (or 4, 6, 0; or IPv4, IPv6, IP_NOT_USED)"


def ip_version_codes(column: np.ndarray) -> np.ndarray:
    """A flow's `ip_version` (4 or 6) as Hubble's enum number; anything else is IP_NOT_USED."""
    return np.where(column == 4, 1, np.where(column == 6, 2, 0))


class IPVersionClause(Clause):
    """ip_version: IPv4, IPv6 or IP_NOT_USED (flows without an IP layer; Spyglass's datapath
    reports only IP flows, so in practice none)."""

    noun = "ip version"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._codes = frozenset(IP_VERSIONS[v] for v in self.values)

    @staticmethod
    def parse(raw: Any) -> str:
        if isinstance(raw, int) and not isinstance(raw, bool):
            # A number is the enum's (protojson may send 2 for IPv6), not the version's.
            if raw in _IP_VERSION_BY_NUM:
                return _IP_VERSION_BY_NUM[raw]
            raise ValueProblem(f"{raw} is not an IPVersion number (0 IP_NOT_USED, 1 IPv4, "
                               "2 IPv6)", _IP_VERSION_FIX, "v6")
        if not isinstance(raw, str):
            raise ValueProblem(f"{raw!r} is not an IP version", _IP_VERSION_FIX, "v6")
        text = raw.strip()
        if not text:
            raise ValueProblem("the IP version is empty", _IP_VERSION_FIX, "v6")
        name = _IP_VERSION_WORDS.get(text.lower())
        if name is None:
            raise ValueProblem(f"{text!r} is not an IP version", _IP_VERSION_FIX, "v6")
        return name

    def predicate(self, flow: Flow) -> bool:
        v = flow.ip_version
        return (1 if v == 4 else 2 if v == 6 else 0) in self._codes

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        return in_set(ip_version_codes(batch.ip_version), self._codes)

    def sql(self) -> Sql:
        p = Params()
        code = "multiIf(ip_version = 4, 1, ip_version = 6, 2, 0)"
        return f"has({p.add(sorted(self._codes), 'Array(UInt8)')}, {code})", p.values
