"""Layer 4: ports, protocols and TCP flags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import Clause, Side, ValueProblem, as_text, in_set
from spyglass.collector.filters.sql import Params, Sql, any_of
from spyglass.model.enums import TCP_FLAG_BITS, TCP_FLAG_BY_NAME, Protocol
from spyglass.model.flow import Flow

#: Protocols that carry ports; a port filter never matches ICMP (Hubble does the same).
_PORTED = frozenset({Protocol.TCP, Protocol.UDP, Protocol.SCTP})

#: Filter names → IP protocol numbers. "icmp" is either ICMP version, as in Hubble.
PROTOCOLS: dict[str, frozenset[int]] = {
    "tcp": frozenset({Protocol.TCP}),
    "udp": frozenset({Protocol.UDP}),
    "sctp": frozenset({Protocol.SCTP}),
    "icmp": frozenset({Protocol.ICMP, Protocol.ICMPV6}),
    "icmpv4": frozenset({Protocol.ICMP}),
    "icmpv6": frozenset({Protocol.ICMPV6}),
}


class PortClause(Clause):
    """source_port / destination_port (TCP, UDP and SCTP flows only)."""

    noun = "port"

    def __init__(self, values: Sequence[int], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._set = frozenset(self.values)
        self._attr = "source_port" if side == "source" else "destination_port"

    @staticmethod
    def parse(raw: Any) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            text = str(raw)
        else:
            text = as_text(raw, "port number", "8080")
        if text.isdigit() and int(text) <= 65535:
            return int(text)
        raise ValueProblem(f"{text!r} is not a port number (0-65535)", "use a number", "8080")

    @staticmethod
    def to_json(value: int) -> str:
        return str(value)  # Hubble's FlowFilter carries ports as strings

    def predicate(self, flow: Flow) -> bool:
        return flow.protocol in _PORTED and getattr(flow, self._attr) in self._set

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        out: np.ndarray = in_set(batch.protocol, _PORTED)
        out &= in_set(getattr(batch, self._attr), self._set)
        return out

    def sql(self) -> Sql:
        p = Params()
        return (f"has({p.add(sorted(_PORTED), 'Array(UInt8)')}, protocol) AND "
                f"has({p.add(sorted(self._set), 'Array(UInt16)')}, {self._attr})", p.values)


class ProtocolClause(Clause):
    """protocol: tcp, udp, sctp, icmp (v4 or v6), icmpv4, icmpv6."""

    noun = "protocol"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._set = frozenset().union(*(PROTOCOLS[v] for v in self.values))

    @staticmethod
    def parse(raw: Any) -> str:
        text = as_text(raw, "protocol", "tcp").lower()
        if text in PROTOCOLS:
            return text
        raise ValueProblem(f"{text!r} is not a known protocol",
                           f"use one of {', '.join(PROTOCOLS)}", "tcp")

    def predicate(self, flow: Flow) -> bool:
        return flow.protocol in self._set

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        return in_set(batch.protocol, self._set)

    def sql(self) -> Sql:
        p = Params()
        return f"has({p.add(sorted(self._set), 'Array(UInt8)')}, protocol)", p.values


class TCPFlagsClause(Clause):
    """tcp_flags: each value is a set of flags that must ALL be set; values are ORed."""

    noun = "tcp flags"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._masks = tuple(_mask(v) for v in self.values)

    @staticmethod
    def parse(raw: Any) -> str:
        if isinstance(raw, dict):  # Hubble's JSON form {"SYN": true, "ACK": true}
            names = [str(k) for k, on in raw.items() if on]
        else:
            names = as_text(raw, "TCP flag list", "SYN,ACK").split(",")
        mask = 0
        for name in names:
            bit = TCP_FLAG_BY_NAME.get(name.strip().upper())
            if bit is None:
                raise ValueProblem(f"{name.strip()!r} is not a TCP flag",
                                   f"use a comma list of {', '.join(TCP_FLAG_BY_NAME)}", "SYN,ACK")
            mask |= bit
        if not mask:
            raise ValueProblem("no TCP flags given", "name at least one flag", "SYN")
        return ",".join(name for name, bit in TCP_FLAG_BITS if mask & bit)

    @staticmethod
    def to_json(value: str) -> dict[str, bool]:
        return {name: True for name in value.split(",")}

    def predicate(self, flow: Flow) -> bool:
        if flow.protocol != Protocol.TCP:
            return False
        flags = flow.tcp_flags
        return any(flags & m == m for m in self._masks)

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        flags = batch.tcp_flags
        out = np.zeros(len(batch), dtype=bool)
        for m in self._masks:
            out |= (flags & m) == m
        out &= batch.protocol == int(Protocol.TCP)
        return out

    def sql(self) -> Sql:
        p = Params()
        masks = [p.add(m, "UInt8") for m in self._masks]
        return (f"protocol = {int(Protocol.TCP)} AND "
                + any_of(f"bitAnd(tcp_flags, {m}) = {m}" for m in masks), p.values)

    def verb(self) -> str:
        return "include"


def _mask(value: str) -> int:
    mask = 0
    for name in value.split(","):
        mask |= TCP_FLAG_BY_NAME[name]
    return mask
