"""Differential test: the real datapath against the reference evaluator, on random policies.

A seeded generator makes scenarios over four fixed pods in two namespaces: random pod and
namespace labels from a small vocabulary and one to four random NetworkPolicies,
CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies (selectors, namespaceSelectors, both
together, ipBlock/CIDR with except, entities, ports with endPort and names, deny rules). Each
scenario re-labels the pods (new identities, endpoints re-upserted), compiles the policies
with the production compiler, loads them by diff, and then probes for real every ordered pod
pair on TCP 8080, TCP 9090 and UDP 9091. The observed allow/deny matrix must equal what
tests/policy_oracle.py says. On a mismatch the seed, the scenario's YAML and each differing
probe with the oracle's reasons are printed: rerun one with SPYGLASS_DIFF_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from policy_lab import (
    NS_PREFIX,
    TCP,
    UDP,
    Pod,
    Probe,
    Servers,
    free_addresses,
    leftovers,
    make_pod,
    remove_pods,
    run_probes,
)
from policy_oracle import Pod as OraclePod
from policy_oracle import World, decide

pytestmark = pytest.mark.datapath

PIN_DIR = f"/sys/fs/bpf/{NS_PREFIX.rstrip('-')}-diff"
SCENARIOS = int(os.environ.get("SPYGLASS_DIFF_SCENARIOS", "24"))
BASE_SEED = int(os.environ.get("SPYGLASS_DIFF_SEED", "20240611"))
NAMESPACES = ("alpha", "beta")
POD_NS = ("alpha", "alpha", "beta", "beta")
PORTS = ((TCP, 8080), (TCP, 9090), (UDP, 9091))
PROTO_NAME = {TCP: "TCP", UDP: "UDP"}
APPS = ("web", "api", "db")
TIERS = ("front", "back")
TEAMS = ("red", "blue")


# -- the generator ------------------------------------------------------------------


@dataclass
class Scenario:
    seed: int
    pod_labels: list[dict[str, str]]
    ns_labels: dict[str, dict[str, str]]
    policies: list[dict[str, Any]]

    def named_ports(self, i: int) -> dict[str, tuple[str, int]]:
        """Named ports follow labels (so pods sharing an identity share them)."""
        ports = {"http": ("TCP", 8080)}
        if self.pod_labels[i].get("app") == "db":
            ports["echo"] = ("UDP", 9091)
        return ports

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.policies, sort_keys=False)


def _selector(r: random.Random, allow_empty: bool = True) -> dict[str, Any]:
    choice = r.randrange(5 if allow_empty else 4)
    if choice == 0:
        return {"matchLabels": {"app": r.choice(APPS)}}
    if choice == 1:
        return {"matchExpressions": [{"key": "tier", "operator": "In",
                                      "values": sorted(r.sample(TIERS, r.randint(1, 2)))}]}
    if choice == 2:
        return {"matchExpressions": [{"key": "tier", "operator": r.choice(
            ["Exists", "DoesNotExist"])}]}
    if choice == 3:
        return {"matchLabels": {"app": r.choice(APPS)},
                "matchExpressions": [{"key": "app", "operator": "NotIn",
                                      "values": [r.choice(APPS)]}]}
    return {}


def _ns_selector(r: random.Random) -> dict[str, Any]:
    if r.random() < 0.2:
        return {}
    if r.random() < 0.5:
        return {"matchLabels": {"team": r.choice(TEAMS)}}
    return {"matchExpressions": [{"key": "env", "operator": r.choice(["Exists",
                                                                       "DoesNotExist"])}]}


def _k8s_ports(r: random.Random) -> list[dict[str, Any]] | None:
    if r.random() < 0.35:
        return None
    options: list[dict[str, Any]] = [
        {"port": 8080}, {"protocol": "TCP", "port": 9090}, {"protocol": "UDP", "port": 9091},
        {"protocol": "TCP", "port": 8000, "endPort": 8999},
        {"protocol": "TCP", "port": 8080, "endPort": 9090}, {"protocol": "UDP"},
        {"port": "http"}, {"protocol": "UDP", "port": "echo"},
        {"protocol": "UDP", "port": 9000, "endPort": 9091},
    ]
    return r.sample(options, r.randint(1, 2))


def _k8s_peer(r: random.Random) -> dict[str, Any]:
    choice = r.randrange(5)
    if choice == 0:
        return {"podSelector": _selector(r)}
    if choice == 1:
        return {"namespaceSelector": _ns_selector(r)}
    if choice == 2:
        return {"namespaceSelector": _ns_selector(r), "podSelector": _selector(r)}
    if choice == 3:  # covers the pods' addresses: must still not match pods
        return {"ipBlock": {"cidr": "10.252.0.0/16", "except": ["10.252.0.0/24"]}}
    return {"ipBlock": {"cidr": "0.0.0.0/0"}}


def _k8s_rules(r: random.Random, peer_key: str) -> list[dict[str, Any]]:
    rules = []
    for _ in range(r.choice([0, 1, 1, 2])):
        rule: dict[str, Any] = {}
        if r.random() < 0.7:
            rule[peer_key] = [_k8s_peer(r) for _ in range(r.randint(1, 2))]
        ports = _k8s_ports(r)
        if ports is not None:
            rule["ports"] = ports
        rules.append(rule)
    return rules


def _network_policy(r: random.Random, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": _selector(r)}
    types = r.choice([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    if types is not None:
        spec["policyTypes"] = types
    if r.random() < 0.8:
        spec["ingress"] = _k8s_rules(r, "from")
    if r.random() < 0.6:
        spec["egress"] = _k8s_rules(r, "to")
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": r.choice(NAMESPACES)}, "spec": spec}


def _cilium_selector(r: random.Random, clusterwide: bool,
                     own_namespace: str | None = None) -> dict[str, Any]:
    """A selector that sometimes names a namespace. A namespaced policy's endpointSelector
    names only its own (`own_namespace`): Cilium overrides any other one with the policy's
    namespace, and the generator keeps to what users legitimately write."""
    sel = _selector(r)
    if (clusterwide or r.random() < 0.3) and r.random() < 0.6:
        labels = dict(sel.get("matchLabels") or {})
        labels["k8s:io.kubernetes.pod.namespace"] = own_namespace or r.choice(NAMESPACES)
        sel = {**sel, "matchLabels": labels}
    return sel


def _cilium_ports(r: random.Random) -> list[dict[str, Any]] | None:
    if r.random() < 0.4:
        return None
    options: list[dict[str, Any]] = [
        {"port": "8080", "protocol": "TCP"}, {"port": "9090"}, {"port": "9091", "protocol": "UDP"},
        {"port": "9000", "endPort": 9100, "protocol": "ANY"}, {"port": "8080", "protocol": "UDP"},
        {"port": "8000", "endPort": 8191, "protocol": "TCP"},
    ]
    return [{"ports": r.sample(options, r.randint(1, 2))}]


def _cilium_rules(r: random.Random, pre: str, clusterwide: bool) -> list[dict[str, Any]]:
    rules = []
    for _ in range(r.choice([1, 1, 2])):
        rule: dict[str, Any] = {}
        choice = r.randrange(6)
        if choice <= 1:
            rule[f"{pre}Endpoints"] = [_cilium_selector(r, clusterwide)
                                       for _ in range(r.randint(1, 2))]
        elif choice == 2:
            rule[f"{pre}Entities"] = r.sample(["world", "cluster", "all", "host"],
                                              r.randint(1, 2))
        elif choice == 3:
            rule[f"{pre}CIDRSet"] = [{"cidr": "10.252.0.0/16", "except": ["10.252.0.0/20"]}]
        elif choice == 4:
            rule[f"{pre}CIDR"] = ["0.0.0.0/0"]
        ports = _cilium_ports(r)
        if ports is not None:
            rule["toPorts"] = ports
        rules.append(rule)
    return rules


def _cilium_policy(r: random.Random, name: str) -> dict[str, Any]:
    clusterwide = r.random() < 0.3
    namespace = None if clusterwide else r.choice(NAMESPACES)
    spec: dict[str, Any] = {"endpointSelector": _cilium_selector(r, clusterwide, namespace)}
    for direction, pre in (("ingress", "from"), ("egress", "to")):
        if r.random() < 0.6:
            spec[direction] = _cilium_rules(r, pre, clusterwide)
        if r.random() < 0.3:
            spec[f"{direction}Deny"] = _cilium_rules(r, pre, clusterwide)[:1]
    if not any(k in spec for k in ("ingress", "egress", "ingressDeny", "egressDeny")):
        spec["ingress"] = _cilium_rules(r, "from", clusterwide)
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    kind = "CiliumClusterwideNetworkPolicy" if clusterwide else "CiliumNetworkPolicy"
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}


def generate(seed: int) -> Scenario:
    r = random.Random(seed)
    pod_labels = []
    for _ in POD_NS:
        labels = {"app": r.choice(APPS)}
        if r.random() < 0.7:
            labels["tier"] = r.choice(TIERS)
        pod_labels.append(labels)
    ns_labels: dict[str, dict[str, str]] = {}
    for ns in NAMESPACES:
        labels = {"team": r.choice(TEAMS)}
        if r.random() < 0.5:
            labels["env"] = "prod"
        ns_labels[ns] = labels
    policies = [(_network_policy if r.random() < 0.55 else _cilium_policy)(r, f"p{i}")
                for i in range(r.randint(1, 4))]
    return Scenario(seed, pod_labels, ns_labels, policies)


# -- running a scenario ----------------------------------------------------------------


@dataclass
class Rig:
    dp: Any
    pods: list[Pod]
    allocator: Any
    previous: Any = None


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    from spyglass.bpf.datapath import Datapath
    from spyglass.model.identity import IdentityAllocator

    addresses = free_addresses(len(POD_NS))
    if addresses is None:
        pytest.skip("no free addresses in 10.252.0.0/24 for the differential test")
    pods: list[Pod] = []
    servers: Servers | None = None
    dp: Datapath | None = None
    try:
        for i, ip in enumerate(addresses):
            pods.append(make_pod(i, ip))
        servers = Servers(pods, (8080, 9090), (9091,))
        servers.start()
        dp = Datapath(pin_dir=PIN_DIR, aggregation="medium")
        for pod in pods:
            dp.attach(pod.host_idx)
        yield Rig(dp, pods, IdentityAllocator())
    finally:
        if dp is not None:
            dp.close()
        if servers is not None:
            servers.stop()
        remove_pods(len(POD_NS))
    assert not leftovers(len(POD_NS))
    assert not os.path.exists(PIN_DIR)


def _identity_labels(sc: Scenario, i: int) -> tuple[str, ...]:
    from spyglass.model.identity import pod_labels

    ns = POD_NS[i]
    extra = [f"k8s:io.cilium.k8s.namespace.labels.{k}={v}" for k, v in sc.ns_labels[ns].items()]
    return tuple(sorted({*pod_labels(ns, sc.pod_labels[i]), *extra}))


def _run(rig: Rig, sc: Scenario) -> tuple[list[str], list[bool], float]:
    """Load the scenario, probe everything; returns the mismatches, what was seen, load time."""
    from spyglass.bpf.datapath import DatapathEndpoint
    from spyglass.policy.compile import compile_policies
    from spyglass.policy.parse import parse_policy_yaml

    identities: dict[int, tuple[str, ...]] = {}
    named: dict[int, dict[str, tuple[str, int]]] = {}
    for i, pod in enumerate(rig.pods):
        labels = _identity_labels(sc, i)
        ident = rig.allocator.allocate(labels)
        identities[ident] = labels
        named[ident] = sc.named_ports(i)
        rig.dp.upsert_endpoint(DatapathEndpoint(pod.host_idx, pod.host_if, pod.ep_id, ident,
                                                pod.ip))
    policies = parse_policy_yaml(sc.yaml(), f"scenario-{sc.seed}")
    compiled = compile_policies(policies, identities, named_ports=named, previous=rig.previous)
    stats = rig.dp.load_policy(compiled)
    rig.previous = compiled

    world = World([OraclePod(POD_NS[i], f"pod{i}", sc.pod_labels[i], pod.ip, sc.named_ports(i))
                   for i, pod in enumerate(rig.pods)], sc.ns_labels, sc.policies)
    probes = [Probe(src, dst.ip, proto, port)
              for src in rig.pods for dst in rig.pods if src is not dst
              for proto, port in PORTS]
    observed = run_probes(probes, timeout=0.3)
    wrong = []
    for probe, seen in zip(probes, observed, strict=True):
        answer = decide(world, probe.src.ip, probe.dst_ip, PROTO_NAME[probe.proto], probe.port)
        if answer.allowed != seen:
            dst = next(p for p in rig.pods if p.ip == probe.dst_ip)
            wrong.append(f"pod{probe.src.index} -> pod{dst.index} {PROTO_NAME[probe.proto]}/"
                         f"{probe.port}: datapath {'ALLOWED' if seen else 'DENIED'}, oracle "
                         f"{'ALLOWED' if answer.allowed else 'DENIED'} ({answer.egress.why}; "
                         f"{answer.ingress.why})")
    return wrong, observed, stats.seconds


def test_generator_is_deterministic_and_varied() -> None:
    assert generate(7) == generate(7)
    kinds = {p["kind"] for s in range(40) for p in generate(s).policies}
    assert kinds == {"NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"}


def test_datapath_agrees_with_the_reference_evaluator(rig: Rig) -> None:
    start = time.monotonic()
    failures: list[str] = []
    seen: list[bool] = []
    load_times: list[float] = []
    for n in range(SCENARIOS):
        sc = generate(BASE_SEED + n)
        wrong, observed, seconds = _run(rig, sc)
        seen += observed
        load_times.append(seconds)
        if wrong:
            failures.append(f"seed {sc.seed} (SPYGLASS_DIFF_SEED={sc.seed} "
                            "SPYGLASS_DIFF_SCENARIOS=1):\n  pod labels "
                            f"{sc.pod_labels}, namespaces {sc.ns_labels}\n"
                            + "\n".join(f"  {w}" for w in wrong)
                            + "\n" + "\n".join(f"    {line}" for line in sc.yaml().splitlines()))
    elapsed = time.monotonic() - start
    print(f"\ndifferential: {SCENARIOS} scenarios, {len(seen)} probes ({sum(seen)} allowed) "
          f"in {elapsed:.1f} s; policy loads median "
          f"{statistics.median(load_times) * 1000:.2f} ms, max {max(load_times) * 1000:.2f} ms; "
          f"seeds {BASE_SEED}.."
          f"{BASE_SEED + SCENARIOS - 1}")
    assert not failures, "\n\n".join(failures)
    # Not vacuous: the scenarios both let traffic through and stopped some.
    assert 0.1 < sum(seen) / len(seen) < 0.95, sum(seen)
