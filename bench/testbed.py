"""The kube-proxy benchmark's testbed: a client pod and backend pods as network namespaces.

Pods are wired like the lab wires them (tests/datapath/test_datapath_bpf.py):
a /32 on eth0, a default route via 169.254.1.1 with a static neighbour, and on
the host a /32 route and a static neighbour per pod address, with forwarding
on. So a packet from the client leaves through its host-side veth, where the
load balancer under test translates it (netfilter PREROUTING or Spyglass's TC
program), and the host routes it to the backend pod that owns the address.

Backends: 10 endpoints per service are what kube-proxy's rules are about, and
the cost under test is the lookup and the DNAT, not how many pods answer. So a
few backend pods carry many addresses each on eth0 (by default 2 pods x 10
addresses), one C server per pod listens on 0.0.0.0 and answers on all of them,
and service i uses 10 distinct addresses of that pool.

Addresses come from one /16 (default 172.29.0.0/16) that no host route may
already use: VIPs from its first /18, pods from its upper /17. The VIP range
gets an `unreachable` route on the host for the testbed's lifetime, so a packet
that a load balancer failed to translate fails fast instead of leaving the
machine. Everything is named sgtK-<tag>-* (netns) or sgtK<tag>* (links) and is
removed by exact name; server processes are stopped by PID.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATEWAY = "169.254.1.1"
CLIENT_SOURCE = Path(__file__).with_name("kube_proxy_client.c")
SERVER_PORT = 8080


class TestbedError(RuntimeError):
    """The testbed cannot be built or used; the message says what to do."""


@dataclass(frozen=True)
class Pod:
    ns: str
    host_if: str
    host_idx: int
    ips: tuple[str, ...]
    mac: str


@dataclass(frozen=True)
class ClientResult:
    """One run of the C client (see kube_proxy_client.c for the fields)."""

    count: int
    errors: int
    first_error: str
    elapsed_s: float
    p50_us: float
    p99_us: float
    client_cpu_s: float
    busy_cpu_s: float  # every CPU of the machine, from /proc/stat, over the run
    replies: dict[str, int]

    @property
    def rate(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_us_per_conn(self) -> float:
        return 1e6 * self.busy_cpu_s / self.count if self.count else float("nan")


def build_tool(workdir: str) -> str:
    """Compile the client/server with gcc into `workdir`; returns the binary's path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise TestbedError("gcc not found: apt-get install gcc (the bench compiles "
                           "bench/kube_proxy_client.c at run time)")
    out = os.path.join(workdir, "kpbench")
    proc = subprocess.run([gcc, "-O2", "-Wall", "-o", out, str(CLIENT_SOURCE)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise TestbedError(f"compiling {CLIENT_SOURCE} failed:\n{proc.stderr}")
    return out


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole machine. Softirq work (where netfilter
    and TC run for these veths) is charged here whatever task it interrupts."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / hz


@dataclass
class Plan:
    """Names and addresses of one testbed, computed before anything is made."""

    tag: str
    prefix: str = "172.29.0.0/16"
    backend_pods: int = 2
    ips_per_backend: int = 10

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.prefix)
        if net.version != 4 or net.prefixlen > 16:
            raise TestbedError(f"prefix {self.prefix} must be an IPv4 network of /16 or wider")
        if not 1 <= self.backend_pods <= 16 or not 1 <= self.ips_per_backend <= 200:
            raise TestbedError("backend_pods must be 1..16 and ips_per_backend 1..200")
        self.net = net
        self.vip_net = list(net.subnets(new_prefix=net.prefixlen + 2))[0]
        self.pod_net = list(net.subnets(new_prefix=net.prefixlen + 1))[1]

    @property
    def client_ns(self) -> str:
        return f"sgtK-{self.tag}-c0"

    @property
    def client_if(self) -> str:
        return f"sgtK{self.tag}c0"

    @property
    def client_ip(self) -> str:
        return str(self.pod_net.broadcast_address - 254)  # x.y.255.1 for a /17 upper half

    def backend_ns(self, i: int) -> str:
        return f"sgtK-{self.tag}-b{i}"

    def backend_if(self, i: int) -> str:
        return f"sgtK{self.tag}b{i}"

    def backend_ips(self, i: int) -> tuple[str, ...]:
        base = self.pod_net.network_address + 1 + i * self.ips_per_backend
        return tuple(str(base + k) for k in range(self.ips_per_backend))

    def vip(self, index: int) -> str:
        if not 0 <= index < self.vip_net.num_addresses - 2:
            raise TestbedError(f"service {index} does not fit in the VIP range {self.vip_net}: "
                               "use a wider --prefix")
        return str(self.vip_net.network_address + 1 + index)

    def all_names(self) -> tuple[list[str], list[str]]:
        """(netns names, link names) this plan may create: what cleanup removes."""
        ns = [self.client_ns] + [self.backend_ns(i) for i in range(self.backend_pods)]
        links = [self.client_if, f"sgtK{self.tag}pc0"]
        for i in range(self.backend_pods):
            links += [self.backend_if(i), f"sgtK{self.tag}pb{i}"]
        return ns, links


@dataclass
class Testbed:
    """Build with `Testbed.create(plan, tool)`; `close()` removes all of it."""

    plan: Plan
    tool: str
    client: Pod | None = None
    backends: list[Pod] = field(default_factory=list)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    _forward_before: str | None = None

    @classmethod
    def create(cls, plan: Plan, tool: str) -> Testbed:
        bed = cls(plan, tool)
        try:
            bed._check_free()
            bed._ensure_forwarding()
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                bed.client = bed._make_pod(ipr, plan.client_ns, plan.client_if,
                                           f"sgtK{plan.tag}pc0", (plan.client_ip,))
                for i in range(plan.backend_pods):
                    bed.backends.append(bed._make_pod(ipr, plan.backend_ns(i), plan.backend_if(i),
                                                      f"sgtK{plan.tag}pb{i}", plan.backend_ips(i)))
                ipr.route("add", dst=str(plan.vip_net), type="unreachable")
            subprocess.run(["ip", "netns", "exec", plan.client_ns, "sh", "-c",
                            "echo 1024 65000 > /proc/sys/net/ipv4/ip_local_port_range"],
                           check=True)
            for pod in bed.backends:
                bed._start_server(pod)
        except BaseException:
            bed.close()
            raise
        return bed

    @property
    def backend_ips(self) -> list[str]:
        return [ip for pod in self.backends for ip in pod.ips]

    def _check_free(self) -> None:
        from pyroute2 import IPRoute, netns

        ours, _ = self.plan.all_names()
        taken = [n for n in ours if n in netns.listnetns()]
        if taken:
            raise TestbedError(f"netns {', '.join(taken)} already exist: another run with tag "
                               f"{self.plan.tag} is active or crashed; remove them with "
                               f"`python bench/kube_proxy.py --cleanup {self.plan.tag}`")
        with IPRoute() as ipr:
            for route in ipr.get_routes(family=2):
                dst = route.get_attr("RTA_DST")
                if dst is None:
                    continue
                net = ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)
                if net.overlaps(self.plan.net):
                    raise TestbedError(f"the host already routes {net}, which overlaps the "
                                       f"testbed's {self.plan.net}: pass another --prefix")

    def _ensure_forwarding(self) -> None:
        """Forwarding on; remembered once so that close() can put it back."""
        path = Path("/proc/sys/net/ipv4/ip_forward")
        if self._forward_before is None:
            self._forward_before = path.read_text().strip()
        path.write_text("1")

    def _make_pod(self, ipr: Any, ns: str, host: str, peer: str,
                  ips: tuple[str, ...]) -> Pod:
        from pyroute2 import NetNS, netns
        from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT

        netns.create(ns)
        ipr.link("add", ifname=host, kind="veth", peer=peer)
        host_idx = ipr.link_lookup(ifname=host)[0]
        peer_idx = ipr.link_lookup(ifname=peer)[0]
        host_mac = ipr.get_links(host_idx)[0].get_attr("IFLA_ADDRESS")
        ipr.link("set", index=peer_idx, net_ns_fd=ns)
        with NetNS(ns) as nsr:
            idx = nsr.link_lookup(ifname=peer)[0]
            nsr.link("set", index=idx, ifname="eth0")
            nsr.link("set", index=idx, state="up")
            nsr.link("set", index=nsr.link_lookup(ifname="lo")[0], state="up")
            for ip in ips:
                nsr.addr("add", index=idx, address=ip, prefixlen=32)
            nsr.route("add", dst=f"{GATEWAY}/32", oif=idx, scope=253)
            nsr.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=idx)
            nsr.neigh("add", dst=GATEWAY, lladdr=host_mac, ifindex=idx, state=NUD_PERMANENT)
            mac = nsr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
        ipr.link("set", index=host_idx, state="up")
        for ip in ips:
            ipr.route("add", dst=f"{ip}/32", oif=host_idx)
            ipr.neigh("add", dst=ip, lladdr=mac, ifindex=host_idx, state=NUD_PERMANENT)
        return Pod(ns, host, host_idx, ips, mac)

    def _start_server(self, pod: Pod) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", pod.ns, self.tool, "server",
                                 str(SERVER_PORT)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            proc.kill()
            raise TestbedError(f"the backend server in {pod.ns} did not start: "
                               f"{line or proc.stderr.read() if proc.stderr else line}")

    def run_client(self, ip: str, port: int, seconds: float, kind: str) -> ClientResult:
        """One sequential client loop from the client pod (kind: connect | rr)."""
        if self.client is None:
            raise TestbedError("the testbed is closed")
        self._ensure_forwarding()  # another test on this host may have turned it off
        argv = ["ip", "netns", "exec", self.client.ns, self.tool, "client", ip, str(port),
                f"{seconds:.3f}", kind]
        busy0 = busy_cpu_seconds()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        busy = busy_cpu_seconds() - busy0
        if proc.returncode != 0:
            raise TestbedError(f"client failed ({proc.returncode}): {proc.stderr.strip()}")
        raw = json.loads(proc.stdout)
        return ClientResult(raw["count"], raw["errors"], raw["first_error"], raw["elapsed_s"],
                            raw["p50_us"], raw["p99_us"], raw["user_s"] + raw["sys_s"], busy,
                            {str(k): int(v) for k, v in raw["replies"].items()})

    def close(self) -> list[str]:
        """Stop our servers by PID and remove our netns, links and route. Idempotent."""
        done: list[str] = []
        for proc in self.servers:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
            done.append(f"stopped server pid {proc.pid}")
        self.servers.clear()
        done += remove_leftovers(self.plan)
        self.client, self.backends = None, []
        if self._forward_before is not None:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self._forward_before)
            self._forward_before = None
        return done

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_leftovers(plan: Plan) -> list[str]:
    """Delete the plan's links (with their routes and neighbours), netns and VIP route."""
    from pyroute2 import IPRoute, netns
    from pyroute2.netlink.exceptions import NetlinkError

    done: list[str] = []
    ns_names, links = plan.all_names()
    with IPRoute() as ipr:
        for name in links:
            for idx in ipr.link_lookup(ifname=name):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=idx)
                    done.append(f"deleted link {name}")
        with contextlib.suppress(NetlinkError):
            ipr.route("del", dst=str(plan.vip_net), type="unreachable")
            done.append(f"deleted route unreachable {plan.vip_net}")
    present = set(netns.listnetns())
    for name in ns_names:
        if name in present:
            netns.remove(name)
            done.append(f"deleted netns {name}")
    return done


def leftovers(plan: Plan) -> list[str]:
    """What of the plan still exists (empty after a clean close)."""
    from pyroute2 import IPRoute, netns

    ns_names, links = plan.all_names()
    present = set(netns.listnetns())
    found = [f"netns {n}" for n in ns_names if n in present]
    with IPRoute() as ipr:
        found += [f"link {n}" for n in links if ipr.link_lookup(ifname=n)]
        for route in ipr.get_routes(family=2):
            if (route.get_attr("RTA_DST") == str(plan.vip_net.network_address)
                    and route["dst_len"] == plan.vip_net.prefixlen):
                found.append(f"route {plan.vip_net}")
    return found


@contextlib.contextmanager
def tool_dir() -> Any:
    """A temp dir for the compiled tool, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sgtK-") as tmp:
        yield tmp


def settle(seconds: float = 0.2) -> None:
    """Let the last run's RSTs and server accepts drain before the next timing."""
    time.sleep(seconds)
