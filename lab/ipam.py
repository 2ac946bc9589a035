"""Pod IPs from the lab's pod CIDR, handed out in manifest order.

Deterministic on purpose: the same manifest gives the same IPs on every run,
so flows, screenshots and muscle memory ("cart is .4") stay stable. The
network address, the first host address (conventionally a gateway's) and the
broadcast address are never handed out.
"""

from __future__ import annotations

import ipaddress

from spyglass.lab.errors import LabError


def parse_cidr(cidr: str) -> ipaddress.IPv4Network:
    """An IPv4 pod CIDR with room for at least one pod, or a LabError saying what to pass."""
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise LabError(
            f"bad pod CIDR {cidr!r}: {e}; pass a network like 10.244.0.0/16"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise LabError(f"pod CIDR {cidr!r} is IPv6; the lab supports IPv4 pod CIDRs only")
    if net.prefixlen > 29:
        raise LabError(f"pod CIDR {cidr!r} is too small; use /29 or larger (e.g. /24)")
    return net


def allocate(cidr: str, count: int) -> list[str]:
    """`count` addresses from `cidr`, skipping network, .1 and broadcast."""
    net = parse_cidr(cidr)
    usable = net.num_addresses - 3
    if count > usable:
        raise LabError(
            f"pod CIDR {cidr} has room for {usable} pods but the manifest has {count}; "
            f"pass a larger --pod-cidr"
        )
    first = int(net.network_address) + 2
    return [str(ipaddress.IPv4Address(first + i)) for i in range(count)]
