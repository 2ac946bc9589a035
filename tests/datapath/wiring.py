"""Pods for datapath tests, wired by the lab's own netlink code (lab/netns.py).

Datapath tests build bare pods without a manifest; they wire them exactly as the lab
does (a /32 on eth0, the 169.254.1.1 gateway pinned to the host veth's MAC, a host /32
route and neighbour, per-device forwarding), so what they test is what `up` runs, and
no test ever toggles the host-wide ip_forward under a running lab.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from spyglass.lab import netns as nl


@dataclass(frozen=True)
class Wired:
    netns: str
    host_ifname: str
    host_ifindex: int
    ip: str
    pod_mac: str
    host_mac: str


def wire_pod(netns: str, host_ifname: str, ip: str) -> Wired:
    nl.create_netns(netns)
    index = nl.create_link(netns, host_ifname)
    link = nl.configure_link(netns, host_ifname, index, ip)
    nl.add_host_route(index, ip)
    nl.add_host_neigh(index, ip, link.pod_mac)
    return Wired(netns, host_ifname, index, ip, link.pod_mac, link.host_mac)


def unwire_pod(netns: str, host_ifname: str) -> None:
    """Remove one test pod by its exact names (routes and neighbours go with the link)."""
    with contextlib.suppress(Exception):
        nl.delete_link(host_ifname)
    with contextlib.suppress(Exception):
        nl.remove_netns(netns)
