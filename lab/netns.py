"""Netlink plumbing for lab pods: netns, the veth pair, addresses, routes, neighbours.

The wiring is Cilium's: each pod has a /32 on `eth0` and reaches everything
through a link-local next hop 169.254.1.1 that is pinned, by a permanent
neighbour entry, to the host-side veth's MAC. The host routes each pod's /32
to its `lxc…` device, with a permanent neighbour entry for the pod's MAC. No
ARP, no bridge, and every packet crosses the host-side veth, which is where
the datapath attaches its TC programs.

Forwarding is enabled per `lxc` device (`net.ipv4.conf.<lxc>.forwarding`),
not with the global `net.ipv4.ip_forward`: for IPv4 the kernel checks the
*receiving* device's forwarding flag, so this is enough for pod-to-pod
traffic and leaves no host-wide state to restore; the setting vanishes with
the link. IPv6 is switched off on both ends so that router solicitations
and MLD reports do not show up as noise flows.

Everything goes through pyroute2; `ip` output is never parsed. Deletions
check names and indexes against what we recorded, so nothing that is not
ours is removed.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute, NetlinkError, netns

from spyglass.lab.errors import LabError

NETNS_DIR = "/var/run/netns"
GATEWAY = "169.254.1.1"  # the pods' next hop, as in Cilium
POD_IFNAME = "eth0"
MAIN_TABLE = 254
SO_NETNS_COOKIE = 71  # linux/asm-generic/socket.h, kernel >= 5.14


@dataclass(frozen=True)
class LinkInfo:
    host_ifindex: int
    host_mac: str
    pod_mac: str


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread that has entered the named netns.

    pyroute2's own netns helpers fork a child, and forking a process that already
    runs other threads (the collector, chDB's engine) can deadlock the child on a
    lock one of those threads held. A thread's network namespace is its own
    (setns applies to the calling thread), and sockets keep the namespace they were
    made in, so a thread that enters the netns, does its netlink work and exits
    needs no fork at all.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into netns {name!r}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    worker = threading.Thread(target=run, name=f"netns:{name}")
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return result[0]


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def netns_cookie(name: str) -> int:
    """The namespace's cookie (SO_NETNS_COOKIE); 0 if there is no such netns, -1 if the
    netns exists but the kernel cannot tell (before 5.14), which then means "trust the name".

    Recorded at creation so teardown never removes a same-named netns that a
    later lab created after ours was cleaned up from another shell. The cookie
    is never reused while the system runs; the nsfs inode is (measured: a new
    netns got the inode of the one just deleted).
    """
    if not netns_exists(name):
        return 0
    def cookie() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return int(struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0])

    try:
        return in_netns(name, cookie)
    except OSError:
        return -1


def link_index(ifname: str) -> int:
    """The host link's ifindex, 0 if there is no such link."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else 0


def create_netns(name: str) -> None:
    if netns_exists(name):
        raise LabError(f"network namespace {name!r} already exists: is another lab up? "
                       f"Run `spyglass down`, or `ip netns del {name}` if it is stale")
    # `ip netns add` (fork + exec, safe with threads) rather than pyroute2's forked helper
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          check=False, timeout=10)
    if done.returncode != 0:
        raise LabError(f"cannot create network namespace {name!r}: {done.stderr.strip()}")


def remove_netns(name: str) -> bool:
    """Remove a named netns; False if it was already gone."""
    if not netns_exists(name):
        return False
    netns.remove(name)
    return True


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is this named netns (found by inode, not name)."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            pst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(entry))
    return found


def overlapping_routes(cidr: str) -> list[str]:
    """Host routes and addresses in the main/local tables that overlap the pod CIDR."""
    net = ipaddress.ip_network(cidr)
    clashes = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for r in ipr.get_routes(family=socket.AF_INET):
            dst = r.get_attr("RTA_DST")
            if dst is None or r.get_attr("RTA_TABLE") not in (MAIN_TABLE, 255):
                continue
            rnet = ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False)
            if rnet.overlaps(net) and not rnet.is_loopback and r["dst_len"] > 0:
                dev = names.get(r.get_attr("RTA_OIF"), "?")
                clashes.append(f"{rnet} dev {dev}")
    return sorted(set(clashes))


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _pod_sysctls(name: str) -> None:
    """Switch IPv6 off inside the pod before eth0 arrives, so it never sends RS/MLD noise."""
    subprocess.run(
        ["ip", "netns", "exec", name, "sysctl", "-q", "-w",
         "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        check=False, timeout=10,
    )


def create_link(name: str, host_ifname: str) -> int:
    """Create the veth pair, host end `host_ifname`, pod end `eth0` inside netns `name`."""
    if link_index(host_ifname):
        raise LabError(f"link {host_ifname!r} already exists on the host: is another lab up? "
                       f"Run `spyglass down`")
    _pod_sysctls(name)
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_ifname, kind="veth",
                 peer={"ifname": POD_IFNAME, "net_ns_fd": name})
        return int(ipr.link_lookup(ifname=host_ifname)[0])


def configure_link(name: str, host_ifname: str, host_ifindex: int, ip: str) -> LinkInfo:
    """Addresses, routes and neighbours on both ends; returns the MACs for the state file."""
    conf = f"/proc/sys/net/ipv4/conf/{host_ifname}/forwarding"
    _sysctl(conf, "1")
    v6 = f"/proc/sys/net/ipv6/conf/{host_ifname}/disable_ipv6"
    if os.path.exists(v6):
        _sysctl(v6, "1")
    with IPRoute() as ipr:
        host_mac = str(ipr.get_links(host_ifindex)[0].get_attr("IFLA_ADDRESS"))
        ipr.link("set", index=host_ifindex, state="up")

    def inside() -> str:
        with IPRoute() as pod:
            lo = pod.link_lookup(ifname="lo")[0]
            pod.link("set", index=lo, state="up")
            eth0 = pod.link_lookup(ifname=POD_IFNAME)[0]
            mac = str(pod.get_links(eth0)[0].get_attr("IFLA_ADDRESS"))
            pod.addr("add", index=eth0, address=ip, prefixlen=32)
            pod.link("set", index=eth0, state="up")
            pod.route("add", dst=f"{GATEWAY}/32", oif=eth0, scope="link")
            pod.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth0)
            pod.neigh("add", dst=GATEWAY, lladdr=host_mac, ifindex=eth0, state="permanent")
            return mac

    pod_mac = in_netns(name, inside)
    return LinkInfo(host_ifindex, host_mac, pod_mac)


def add_host_route(host_ifindex: int, ip: str) -> None:
    try:
        with IPRoute() as ipr:
            ipr.route("add", dst=f"{ip}/32", oif=host_ifindex)
    except NetlinkError as e:
        if e.code == errno.EEXIST:
            raise LabError(f"the host already has a route to {ip}: the pod CIDR overlaps "
                           f"another network; pass a different --pod-cidr") from None
        raise


def add_host_neigh(host_ifindex: int, ip: str, pod_mac: str) -> None:
    with IPRoute() as ipr:
        ipr.neigh("add", dst=ip, lladdr=pod_mac, ifindex=host_ifindex, state="permanent")


def our_link(host_ifname: str, host_ifindex: int) -> bool:
    """True if the host link with this name still has the index we recorded."""
    return host_ifindex != 0 and link_index(host_ifname) == host_ifindex


def delete_host_route(host_ifindex: int, ip: str) -> bool:
    return _ignore_gone(lambda ipr: ipr.route("del", dst=f"{ip}/32", oif=host_ifindex))


def delete_host_neigh(host_ifindex: int, ip: str) -> bool:
    return _ignore_gone(lambda ipr: ipr.neigh("del", dst=ip, ifindex=host_ifindex))


def delete_link(host_ifname: str) -> bool:
    """Delete the host veth by name (its pod end goes with it); False if already gone."""
    return _ignore_gone(lambda ipr: ipr.link("del", ifname=host_ifname))


def _ignore_gone(op: Callable[[IPRoute], object]) -> bool:
    try:
        with IPRoute() as ipr:
            op(ipr)
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL):
            return False
        raise
    return True
