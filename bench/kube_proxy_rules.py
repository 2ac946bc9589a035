"""The kube-proxy benchmark's rule generators: services in, rule text out.

bench/kube_proxy.py loads what these functions return (iptables-restore input,
`nft -f` transactions) and times it; this module only builds the text. It is
kept apart, with no side effects and no imports beyond the standard library,
so that tests/test_bench_kube_proxy.py can check, without root or a kernel,
the exact text the benchmark loads: kube-proxy's shape (the service list,
statistic-random or numgen endpoint picks, DNAT per endpoint), our own names
only (SGTK-* chains, table sgtk_kp), and the partial updates and the removal.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

SERVICE_PORT = 80
ENDPOINTS_PER_SERVICE = 10
NAMESPACE = "sgtk"
MASQ_MARK = "0x4000"
IPT_SERVICES, IPT_NODEPORTS, IPT_MARK_MASQ = "SGTK-SERVICES", "SGTK-NODEPORTS", "SGTK-MARK-MASQ"
IPT_COMMENT = "sgtK kube-proxy bench"  # marks our PREROUTING jump, so leftovers are found
NAT_BUILTIN_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
NFT_TABLE = "sgtk_kp"

Endpoint = tuple[str, int]


class BenchError(RuntimeError):
    """A mode could not be set up or left something behind; the message says what."""


@dataclass(frozen=True)
class Service:
    """One ClusterIP service port, as kube-proxy sees it."""

    index: int
    vip: str
    endpoints: tuple[Endpoint, ...]
    port: int = SERVICE_PORT
    namespace: str = NAMESPACE
    port_name: str = "http"

    @property
    def name(self) -> str:
        return f"svc-{self.index:05d}"

    @property
    def port_key(self) -> str:
        """kube-proxy's ServicePortName string: ns/name:port."""
        return f"{self.namespace}/{self.name}:{self.port_name}"


def make_services(n: int, vips: Sequence[str], pool: Sequence[str],
                  target_port: int) -> list[Service]:
    """N services, each with 10 distinct endpoints from the pool (service i
    takes pool[i..i+9], wrapping), so neighbouring services share backends.
    target_port is where the testbed's servers listen (testbed.SERVER_PORT):
    the caller passes it so that this module needs nothing of the testbed."""
    if len(pool) < ENDPOINTS_PER_SERVICE:
        raise BenchError(f"the backend pool has {len(pool)} addresses; a service needs "
                         f"{ENDPOINTS_PER_SERVICE}: give the testbed more backend addresses")
    if len(vips) < n:
        raise BenchError(f"{len(vips)} VIPs for {n} services")
    return [Service(i, vips[i], tuple((pool[(i + j) % len(pool)], target_port)
                                      for j in range(ENDPOINTS_PER_SERVICE)))
            for i in range(n)]


def with_one_endpoint_changed(svc: Service, pool: Sequence[str]) -> Service:
    """The service with its last endpoint swapped for a pool address it does not use."""
    used = {ip for ip, _ in svc.endpoints}
    spare = next((ip for ip in pool if ip not in used), None)
    if spare is None:
        raise BenchError("no spare backend address to change an endpoint to: the pool must "
                         f"hold more than {ENDPOINTS_PER_SERVICE} addresses")
    return replace(svc, endpoints=svc.endpoints[:-1] + ((spare, svc.endpoints[-1][1]),))


# -- kube-proxy iptables mode -------------------------------------------------------------

def _hash(text: str, length: int) -> str:
    """kube-proxy's chain-name hash: base32 of sha256, truncated."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def svc_chain(svc: Service) -> str:
    """The service's chain, named as kube-proxy names KUBE-SVC-* (stable per service port)."""
    return f"SGTK-SVC-{_hash(svc.port_key + 'tcp', 16)}"


def sep_chain(svc: Service, ep: Endpoint) -> str:
    """The endpoint's chain, named as kube-proxy names KUBE-SEP-* (per service and endpoint)."""
    return f"SGTK-SEP-{_hash(svc.port_key + 'tcp' + f'{ep[0]}:{ep[1]}', 16)}"


def sep_chains_changed(old: Service, new: Service) -> tuple[list[str], list[str]]:
    """(added, gone): the endpoint chains an update from old to new creates and deletes.
    Both the change text and the mode's record of its chains need the same answer."""
    added = [sep_chain(new, ep) for ep in new.endpoints if ep not in old.endpoints]
    gone = [sep_chain(old, ep) for ep in old.endpoints if ep not in new.endpoints]
    return added, gone


def _svc_rules(svc: Service, pod_cidr: str) -> list[str]:
    chain, n = svc_chain(svc), len(svc.endpoints)
    lines = [f'-A {chain} ! -s {pod_cidr} -d {svc.vip}/32 -p tcp -m comment --comment '
             f'"{svc.port_key} cluster IP" -m tcp --dport {svc.port} -j {IPT_MARK_MASQ}']
    for i, ep in enumerate(svc.endpoints):
        pick = (f" -m statistic --mode random --probability {1.0 / (n - i):0.10f}"
                if i < n - 1 else "")
        lines.append(f'-A {chain} -m comment --comment "{svc.port_key} -> {ep[0]}:{ep[1]}"'
                     f"{pick} -j {sep_chain(svc, ep)}")
    for ep in svc.endpoints:
        sep = sep_chain(svc, ep)
        lines.append(f'-A {sep} -s {ep[0]}/32 -m comment --comment {svc.port_key} '
                     f"-j {IPT_MARK_MASQ}")
        lines.append(f"-A {sep} -p tcp -m comment --comment {svc.port_key} -m tcp "
                     f"-j DNAT --to-destination {ep[0]}:{ep[1]}")
    return lines


def iptables_restore_text(services: Sequence[Service], pod_cidr: str) -> str:
    """All N services as one `iptables-restore --noflush` input, in kube-proxy's
    shape: SGTK-SERVICES holds one rule per ClusterIP:port in the given order
    (so services[0] is matched first and services[-1] last), then the
    nodeports rule that kube-proxy keeps last."""
    chains = [IPT_SERVICES, IPT_NODEPORTS, IPT_MARK_MASQ]
    for svc in services:
        chains.append(svc_chain(svc))
        chains += [sep_chain(svc, ep) for ep in svc.endpoints]
    lines = ["*nat"] + [f":{c} - [0:0]" for c in chains]
    lines.append(f"-A {IPT_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}")
    for svc in services:
        lines.append(f'-A {IPT_SERVICES} -d {svc.vip}/32 -p tcp -m comment --comment '
                     f'"{svc.port_key} cluster IP" -m tcp --dport {svc.port} -j {svc_chain(svc)}')
    lines.append(f'-A {IPT_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: '
                 f'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                 f"-j {IPT_NODEPORTS}")
    for svc in services:
        lines += _svc_rules(svc, pod_cidr)
    return "\n".join(lines + ["COMMIT", ""])


def iptables_jump_args(client_if: str) -> list[str]:
    """The one PREROUTING rule (chain first, as iptables -I/-C/-D take it): only
    the client veth's traffic enters our rules, and the comment lets a cleanup
    recognise the rule as ours."""
    return ["PREROUTING", "-i", client_if, "-m", "comment", "--comment", IPT_COMMENT,
            "-j", IPT_SERVICES]


def iptables_flush_restore_text(restore_text: str, client_if: str) -> str:
    """iptables_restore_text's rules as a plain (flushing) restore of the whole
    nat table, for the iptables-nft variant above its --noflush limit (see
    IptablesMode in kube_proxy.py): the built-in chains are declared, since a
    flushing restore empties the table, and the PREROUTING jump is added in the
    same transaction, since nothing else would put it back."""
    head = [f":{c} ACCEPT [0:0]" for c in NAT_BUILTIN_CHAINS]
    jump = "-A " + " ".join(f'"{w}"' if " " in w else w for w in iptables_jump_args(client_if))
    full = restore_text.replace("*nat\n", "*nat\n" + "\n".join(head) + "\n", 1)
    return full.replace("COMMIT\n", jump + "\nCOMMIT\n")


def iptables_change_text(old: Service, new: Service, pod_cidr: str) -> str:
    """kube-proxy's partial sync for one endpoint change: rewrite the service
    chain, add the new endpoint's chain, flush and delete the old one."""
    added, gone = sep_chains_changed(old, new)
    lines = ["*nat", f":{svc_chain(new)} - [0:0]"] + [f":{c} - [0:0]" for c in added + gone]
    rules = _svc_rules(new, pod_cidr)
    keep_sep = {svc_chain(new)} | set(added)
    lines += [r for r in rules if r.split()[1] in keep_sep]
    lines += [f"-X {c}" for c in gone]
    return "\n".join(lines + ["COMMIT", ""])


def iptables_remove_text(chains: Sequence[str]) -> str:
    """Flush, then delete, exactly these chains (ours, by name)."""
    lines = ["*nat"] + [f":{c} - [0:0]" for c in chains] + [f"-X {c}" for c in chains]
    return "\n".join(lines + ["COMMIT", ""])


def declared_chains(restore_text: str) -> list[str]:
    """Every chain a restore input declares: what loading it makes, so what removal deletes."""
    return [line[1:].split()[0] for line in restore_text.splitlines() if line[:1] == ":"]


def our_iptables_chains(save_text: str) -> list[str]:
    """The SGTK-* chains in iptables-save output: ours, and nobody else's."""
    return [line[1:].split()[0] for line in save_text.splitlines()
            if line.startswith(":SGTK-")]


# -- kube-proxy nftables mode -------------------------------------------------------------

def nft_service_chain(svc: Service) -> str:
    """The service's chain, named as kube-proxy's nftables mode names it."""
    key = f"{svc.namespace}/{svc.name}/tcp/{svc.port_name}"
    return f"service-{_hash(key, 8)}-{key}"


def nft_endpoint_chain(svc: Service, ep: Endpoint) -> str:
    """The endpoint's chain, named as kube-proxy's nftables mode names it."""
    key = f"{svc.namespace}/{svc.name}/tcp/{svc.port_name}__{ep[0]}/{ep[1]}"
    return f"endpoint-{_hash(key, 8)}-{key}"


def _nft_service_rules(svc: Service, table: str, pod_cidr: str) -> list[str]:
    chain = nft_service_chain(svc)
    picks = ", ".join(f"{i} : goto {nft_endpoint_chain(svc, ep)}"
                      for i, ep in enumerate(svc.endpoints))
    return [f"add rule ip {table} {chain} ip daddr {svc.vip} tcp dport {svc.port} "
            f"ip saddr != {pod_cidr} jump mark-for-masquerade",
            f"add rule ip {table} {chain} numgen random mod {len(svc.endpoints)} "
            f"vmap {{ {picks} }}"]


def _nft_endpoint(svc: Service, ep: Endpoint, table: str) -> list[str]:
    chain = nft_endpoint_chain(svc, ep)
    return [f"add chain ip {table} {chain}",
            f"add rule ip {table} {chain} ip saddr {ep[0]} jump mark-for-masquerade",
            f"add rule ip {table} {chain} meta l4proto tcp dnat to {ep[0]}:{ep[1]}"]


def nft_ruleset_text(services: Sequence[Service], client_if: str, pod_cidr: str,
                     table: str = NFT_TABLE) -> str:
    """All N services as one `nft -f` transaction in kube-proxy's nftables shape.
    Only packets arriving on the testbed's client interface enter `services`."""
    lines = [f'add table ip {table} {{ comment "sgtK kube-proxy bench" ; }}',
             f"add chain ip {table} mark-for-masquerade",
             f"add rule ip {table} mark-for-masquerade mark set mark or {MASQ_MARK}",
             f"add chain ip {table} services",
             f"add chain ip {table} nat-prerouting {{ type nat hook prerouting priority dstnat ; "
             "policy accept ; }",
             f'add rule ip {table} nat-prerouting iifname "{client_if}" jump services',
             f"add map ip {table} service-ips {{ type ipv4_addr . inet_proto . inet_service : "
             'verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
             f"add rule ip {table} services ip daddr . meta l4proto . th dport "
             "vmap @service-ips"]
    for svc in services:
        for ep in svc.endpoints:
            lines += _nft_endpoint(svc, ep, table)
        lines.append(f"add chain ip {table} {nft_service_chain(svc)}")
        lines += _nft_service_rules(svc, table, pod_cidr)
        lines.append(f"add element ip {table} service-ips {{ {svc.vip} . tcp . {svc.port} : "
                     f"goto {nft_service_chain(svc)} }}")
    return "\n".join(lines + [""])


def nft_change_text(old: Service, new: Service, pod_cidr: str, table: str = NFT_TABLE) -> str:
    """kube-proxy's nftables update for one endpoint: new endpoint chain, the
    service chain rewritten, the old endpoint chain deleted, in one transaction."""
    lines: list[str] = []
    for ep in new.endpoints:
        if ep not in old.endpoints:
            lines += _nft_endpoint(new, ep, table)
    lines.append(f"flush chain ip {table} {nft_service_chain(new)}")
    lines += _nft_service_rules(new, table, pod_cidr)
    for ep in old.endpoints:
        if ep not in new.endpoints:
            lines.append(f"flush chain ip {table} {nft_endpoint_chain(old, ep)}")
            lines.append(f"delete chain ip {table} {nft_endpoint_chain(old, ep)}")
    return "\n".join(lines + [""])
