"""Ports to LPM prefixes: what a port rule becomes in the (proto, port) part of a key.

The datapath matches ports by longest prefix, so a range must become a set of aligned
power-of-two blocks. The minimal set is found greedily: at each step take the largest
block that starts at the current port and does not run past the end.
"""

from __future__ import annotations

from collections.abc import Mapping

from spyglass.model.policy import ANY_PROTO
from spyglass.policy.model import PROTO_ANY, PROTO_NUMBERS, PortRule

#: (proto number, port, port_bits); (ANY_PROTO, 0, 0) = any protocol and port.
PortPrefix = tuple[int, int, int]
ANY_PORT_PREFIX: PortPrefix = (ANY_PROTO, 0, 0)
#: Cilium's ANY with a port means these three.
ANY_PROTOS = (PROTO_NUMBERS["TCP"], PROTO_NUMBERS["UDP"], PROTO_NUMBERS["SCTP"])

#: identity -> port name -> (protocol, port); protocol as a number or "TCP"/"UDP"/"SCTP".
NamedPorts = Mapping[int, Mapping[str, tuple[int | str, int]]]


def range_prefixes(first: int, last: int) -> list[tuple[int, int]]:
    """The minimal (port, bits) blocks that cover exactly first..last (inclusive)."""
    if not 0 <= first <= last <= 0xFFFF:
        raise ValueError(f"bad port range {first}..{last}: need 0 <= first <= last <= 65535")
    out: list[tuple[int, int]] = []
    port = first
    while port <= last:
        size = 1
        # Grow while the block stays aligned at `port` and inside the range.
        while size < 0x10000 and port % (size * 2) == 0 and port + size * 2 - 1 <= last:
            size *= 2
        out.append((port, 16 - (size.bit_length() - 1)))
        port += size
    return out


def proto_number(proto: int | str) -> int:
    if isinstance(proto, int):
        return proto
    return int(PROTO_NUMBERS[proto.upper()])


def port_prefixes(rule: PortRule, owner: int | None, named: NamedPorts) -> list[PortPrefix]:
    """A port rule's prefixes; a named port resolves against `owner` (the destination).

    An unresolvable name yields nothing, as in Kubernetes: the rule simply matches no
    port on that pod.
    """
    protos = ANY_PROTOS if rule.protocol == PROTO_ANY else (PROTO_NUMBERS[rule.protocol],)
    if rule.name is not None:
        found = named.get(owner, {}).get(rule.name) if owner is not None else None
        if found is None:
            return []
        proto, port = proto_number(found[0]), int(found[1])
        return [(proto, port, 16)] if proto in protos else []
    if rule.port is None:
        if rule.protocol == PROTO_ANY:
            return [ANY_PORT_PREFIX]
        return [(p, 0, 0) for p in protos]
    blocks = range_prefixes(rule.port, rule.end_port if rule.end_port is not None else rule.port)
    return [(p, port, bits) for p in protos for port, bits in blocks]
