"""Pods in network namespaces for the policy datapath tests, with in-process servers and probes.

Shared by test_policy_datapath.py and test_policy_differential.py. Pods are wired as the lab
wires them (/32 address, default route via 169.254.1.1 with a static neighbour, host /32 route
and static neighbour). Instead of a process per connection, sockets are opened *inside* a pod's
namespace from this process: setns() switches only the calling thread, and a socket keeps the
namespace it was created in. One selector loop then serves every pod's ports, and one more runs
all probes of a scenario at once, so a 36-probe matrix costs one timeout, not 36.

Names: netns `sgtP-<tag>-<n>`, host veth `sgtP<tag>h<n>`, peer `sgtP<tag>p<n>`; everything is
removed by these exact names.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wiring import unwire_pod, wire_pod

TAG = f"{os.getpid() % 100000}"
NS_PREFIX = f"sgtP-{TAG}-"
LINK_PREFIX = f"sgtP{TAG}h"
PEER_PREFIX = f"sgtP{TAG}p"
GATEWAY = "169.254.1.1"
SUBNET = "10.252.0"
TCP, UDP = 6, 17
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Pod:
    index: int
    ns: str
    host_if: str
    host_idx: int
    ip: str
    ep_id: int


@contextlib.contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Run the block with this thread in `ns` (only this thread)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - would be fatal
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
    finally:
        os.close(target)
        os.close(home)


def free_addresses(n: int) -> list[str] | None:
    """Addresses in SUBNET.10-250 that no route in the root netns uses yet."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        used = {r.get_attr("RTA_DST") for r in ipr.get_routes(family=2)}
    start = 10 + int(TAG) % 120
    free = [f"{SUBNET}.{i}" for i in range(start, 251) if f"{SUBNET}.{i}" not in used]
    return free[:n] if len(free) >= n else None


def make_pod(index: int, ip: str) -> Pod:
    w = wire_pod(f"{NS_PREFIX}{index}", f"{LINK_PREFIX}{index}", ip)
    return Pod(index, w.netns, w.host_ifname, w.host_ifindex, ip, ep_id=100 + index)


def remove_pods(count: int) -> None:
    """Delete every netns and link this run may have made, by exact name."""
    for i in range(count):
        unwire_pod(f"{NS_PREFIX}{i}", f"{LINK_PREFIX}{i}")


def leftovers(count: int) -> list[str]:
    """Anything of ours still on the host (for the tests' final check)."""
    from pyroute2 import IPRoute, netns

    found = [n for n in netns.listnetns() if n.startswith(NS_PREFIX)]
    with IPRoute() as ipr:
        for i in range(count):
            for name in (f"{LINK_PREFIX}{i}", f"{PEER_PREFIX}{i}"):
                if ipr.link_lookup(ifname=name):
                    found.append(name)
    return found


@dataclass
class Servers:
    """TCP (accept, send b"ok", close) and UDP (echo) on every pod, one thread for all."""

    pods: Sequence[Pod]
    tcp_ports: Sequence[int]
    udp_ports: Sequence[int]
    _sel: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _socks: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        for pod in self.pods:
            with in_netns(pod.ns):
                for port in self.tcp_ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", port))
                    s.listen(128)
                    self._add(s, "tcp")
                for port in self.udp_ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind(("0.0.0.0", port))
                    self._add(s, "udp")
        self._thread = threading.Thread(target=self._run, name="sgtP-servers", daemon=True)
        self._thread.start()

    def _add(self, s: socket.socket, kind: str) -> None:
        s.setblocking(False)
        self._socks.append(s)
        self._sel.register(s, selectors.EVENT_READ, kind)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(OSError):
                    if key.data == "tcp":
                        conn, _ = sock.accept()
                        with conn:
                            conn.setblocking(True)
                            conn.settimeout(0.5)
                            conn.sendall(b"ok")
                    else:
                        data, peer = sock.recvfrom(2048)
                        sock.sendto(data, peer)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for s in self._socks:
            s.close()
        self._sel.close()


@dataclass(frozen=True)
class Probe:
    src: Pod
    dst_ip: str
    proto: int  # TCP or UDP
    port: int


def run_probes(probes: Sequence[Probe], timeout: float = 0.3) -> list[bool]:
    """Try every probe at once; True where a real round trip completed in time.

    TCP: the handshake completes and the server's b"ok" arrives (the SYN passed the source's
    egress and the destination's ingress; the reply came back through conntrack). UDP: the
    echo of a unique payload comes back.
    """
    sel = selectors.DefaultSelector()
    result = [False] * len(probes)
    socks: list[socket.socket] = []
    try:
        for i, probe in enumerate(probes):
            kind = socket.SOCK_STREAM if probe.proto == TCP else socket.SOCK_DGRAM
            with in_netns(probe.src.ns):
                s = socket.socket(socket.AF_INET, kind)
            socks.append(s)
            s.setblocking(False)
            if probe.proto == TCP:
                err = s.connect_ex((probe.dst_ip, probe.port))
                if err not in (0, errno.EINPROGRESS):
                    continue
                sel.register(s, selectors.EVENT_READ, (i, b"ok"))
            else:
                payload = f"probe-{i}".encode()
                s.sendto(payload, (probe.dst_ip, probe.port))
                sel.register(s, selectors.EVENT_READ, (i, payload))
        deadline = time.monotonic() + timeout
        pending = len(sel.get_map())
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=left):
                i, want = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(2048)
                except OSError:
                    data = b""
                result[i] = data == want
                sel.unregister(sock)
                pending -= 1
    finally:
        for s in socks:
            s.close()
        sel.close()
    return result
