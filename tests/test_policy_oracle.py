"""The reference evaluator (tests/policy_oracle.py) on the issue's named policy cases.

Each case is policy YAML as a user writes it plus probes with the answer the Kubernetes and
Cilium docs give. The same oracle then judges the real datapath in the differential test, so
these cases are what make its verdicts trustworthy.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml
from policy_oracle import Pod, World, allowed, decide

NAMESPACES = {
    "shop": {"team": "shop", "env": "prod"},
    "ops": {"team": "ops", "env": "prod"},
    "dev": {"env": "dev"},
}
PODS = [
    Pod("shop", "web", {"app": "web", "role": "frontend"}, "10.0.0.1",
        {"http": ("TCP", 8080)}),
    Pod("shop", "api", {"app": "api"}, "10.0.0.2", {"http": ("TCP", 9090)}),
    Pod("shop", "db", {"app": "db"}, "10.0.0.3"),
    Pod("ops", "monitor", {"app": "monitor", "role": "frontend"}, "10.0.1.1"),
    Pod("dev", "tester", {"app": "tester"}, "10.0.2.1"),
]
EXTERNAL = "203.0.113.10"
EXTERNAL_EXCEPTED = "203.0.113.200"
HOST = "192.168.1.1"

Probe = tuple[str, str, str, int, bool]  # src, dst, proto, port, allowed


def _world(text: str) -> World:
    docs = [d for d in yaml.safe_load_all(textwrap.dedent(text)) if d]
    return World(PODS, NAMESPACES, docs, host_ips=frozenset({HOST}))


CASES = [
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: deny-ingress, namespace: shop}
        spec: {podSelector: {}, policyTypes: [Ingress]}
        """, [
        ("shop/web", "shop/api", "TCP", 8080, False),
        ("ops/monitor", "shop/db", "UDP", 53, False),
        ("shop/api", "ops/monitor", "TCP", 80, True),   # egress untouched
        ("shop/web", EXTERNAL, "TCP", 443, True),
        ("dev/tester", "ops/monitor", "TCP", 80, True),  # other namespace open
    ], id="deny-all-ingress-in-a-namespace"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: only-ops, namespace: shop}
        spec:
          podSelector: {}
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {team: ops}}
        """, [
        ("ops/monitor", "shop/db", "TCP", 5432, True),
        ("shop/web", "shop/db", "TCP", 5432, False),  # not even its own namespace
        ("dev/tester", "shop/api", "TCP", 9090, False),
    ], id="allow-only-from-one-namespace"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: and-form, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: api}}
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {env: prod}}
              podSelector: {matchLabels: {role: frontend}}
        """, [
        ("shop/web", "shop/api", "TCP", 9090, True),
        ("ops/monitor", "shop/api", "TCP", 9090, True),
        ("shop/db", "shop/api", "TCP", 9090, False),      # prod, but not a frontend
        ("dev/tester", "shop/api", "TCP", 9090, False),
    ], id="label-in-labelled-namespaces-and-form"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: or-form, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: api}}
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {env: dev}}
            - podSelector: {matchLabels: {role: frontend}}
        """, [
        ("shop/web", "shop/api", "TCP", 9090, True),       # frontend in the policy's ns
        ("dev/tester", "shop/api", "TCP", 9090, True),     # any pod of a dev namespace
        ("ops/monitor", "shop/api", "TCP", 9090, False),   # frontend, but podSelector = own ns
        ("shop/db", "shop/api", "TCP", 9090, False),
    ], id="label-or-labelled-namespace-or-form"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: tcp-8080, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
          - ports: [{port: 8080}]
        """, [
        ("shop/api", "shop/web", "TCP", 8080, True),
        ("dev/tester", "shop/web", "TCP", 8080, True),
        ("shop/api", "shop/web", "UDP", 8080, False),  # protocol defaults to TCP
        ("shop/api", "shop/web", "TCP", 8081, False),
    ], id="allow-only-tcp-8080"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: range, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - ports: [{protocol: UDP, port: 9000, endPort: 9010}]
        """, [
        ("shop/api", "shop/db", "UDP", 9000, True),
        ("shop/api", "shop/db", "UDP", 9007, True),
        ("shop/api", "shop/db", "UDP", 9010, True),
        ("shop/api", "shop/db", "UDP", 9011, False),
        ("shop/api", "shop/db", "UDP", 8999, False),
        ("shop/api", "shop/db", "TCP", 9005, False),
    ], id="endport-range"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: ipblock, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: api}}
          policyTypes: [Egress]
          egress:
          - to:
            - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}
        """, [
        ("shop/api", EXTERNAL, "TCP", 443, True),
        ("shop/api", EXTERNAL_EXCEPTED, "TCP", 443, False),
        ("shop/api", "198.51.100.7", "TCP", 443, False),
        ("shop/api", "shop/db", "TCP", 5432, False),  # pods are not in an ipBlock
        ("shop/web", EXTERNAL_EXCEPTED, "TCP", 443, True),  # web is not selected
    ], id="ipblock-with-except"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: egress-dns-only, namespace: shop}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress:
          - ports: [{protocol: UDP, port: 53}]
        """, [
        ("shop/web", EXTERNAL, "UDP", 53, True),
        ("shop/web", "ops/monitor", "UDP", 53, True),
        ("shop/web", "ops/monitor", "TCP", 53, False),
        ("shop/web", "shop/api", "TCP", 9090, False),
        ("ops/monitor", "shop/web", "TCP", 8080, True),  # ingress of shop is still open
    ], id="egress-deny-all-except-one-port"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: lock-shop, namespace: shop}
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
        """, [
        ("shop/web", "shop/api", "TCP", 9090, False),
        ("ops/monitor", "dev/tester", "TCP", 80, True),
        ("dev/tester", "ops/monitor", "UDP", 53, True),
        ("ops/monitor", "shop/web", "TCP", 8080, False),
    ], id="policy-on-one-namespace-leaves-another-open"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: same-namespace, namespace: shop}
        spec:
          podSelector: {}
          ingress:
          - from: [{podSelector: {}}]
        """, [
        ("shop/web", "shop/db", "TCP", 5432, True),
        ("shop/db", "shop/web", "UDP", 1, True),
        ("ops/monitor", "shop/db", "TCP", 5432, False),
    ], id="empty-podselector-means-all"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: named, namespace: shop}
        spec:
          podSelector: {}
          ingress:
          - ports: [{port: http}]
        """, [
        ("ops/monitor", "shop/web", "TCP", 8080, True),   # web's http is 8080
        ("ops/monitor", "shop/api", "TCP", 9090, True),   # api's http is 9090
        ("ops/monitor", "shop/api", "TCP", 8080, False),
        ("ops/monitor", "shop/db", "TCP", 8080, False),   # db has no port named http
    ], id="named-port"),
    pytest.param("""
        kind: NetworkPolicy
        metadata: {name: empty-rule-list, namespace: shop}
        spec: {podSelector: {}, ingress: []}
        ---
        kind: NetworkPolicy
        metadata: {name: empty-rule, namespace: ops}
        spec: {podSelector: {}, ingress: [{}]}
        """, [
        ("ops/monitor", "shop/web", "TCP", 8080, False),  # [] allows nothing
        ("shop/web", "ops/monitor", "TCP", 80, True),     # [{}] allows everything
    ], id="empty-rule-list-vs-empty-rule"),
    pytest.param("""
        kind: CiliumNetworkPolicy
        metadata: {name: from-world, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          ingress:
          - fromEntities: [world]
        """, [
        (EXTERNAL, "shop/web", "TCP", 8080, True),
        ("shop/api", "shop/web", "TCP", 8080, False),    # a pod is not the world
        (HOST, "shop/web", "TCP", 8080, False),          # nor is the node
        ("shop/web", "shop/api", "TCP", 9090, True),     # egress not selected
    ], id="cilium-from-entities-world"),
    pytest.param("""
        kind: CiliumNetworkPolicy
        metadata: {name: allow-all-in, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingress:
          - fromEntities: [cluster]
        ---
        kind: CiliumNetworkPolicy
        metadata: {name: no-tester, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingressDeny:
          - fromEndpoints:
            - matchLabels: {"k8s:io.kubernetes.pod.namespace": dev}
            toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
        """, [
        ("shop/api", "shop/db", "TCP", 5432, True),
        ("dev/tester", "shop/db", "TCP", 5432, False),   # the deny beats cluster
        ("dev/tester", "shop/db", "TCP", 5433, True),
        (EXTERNAL, "shop/db", "TCP", 5432, False),       # world is not cluster
    ], id="cilium-ingress-deny-overrides-allow"),
    pytest.param("""
        kind: CiliumNetworkPolicy
        metadata: {name: cidrset, namespace: shop}
        spec:
          endpointSelector: {}
          egress:
          - toCIDRSet:
            - {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}
            toPorts: [{ports: [{port: "443"}]}]
        """, [
        ("shop/web", EXTERNAL, "TCP", 443, True),
        ("shop/web", EXTERNAL, "UDP", 443, True),        # protocol ANY
        ("shop/web", EXTERNAL, "TCP", 80, False),
        ("shop/web", EXTERNAL_EXCEPTED, "TCP", 443, False),
        ("shop/web", "shop/api", "TCP", 443, False),     # a CIDR never matches a pod
        ("ops/monitor", EXTERNAL_EXCEPTED, "TCP", 443, True),
    ], id="cilium-to-cidrset-with-except"),
    pytest.param("""
        kind: CiliumNetworkPolicy
        metadata: {name: l4-only-and-empty, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: api}}
          ingress:
          - {}
          - toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
        """, [
        ("dev/tester", "shop/api", "TCP", 9090, True),   # L4-only: any peer
        (EXTERNAL, "shop/api", "TCP", 9090, True),
        ("shop/web", "shop/api", "TCP", 9091, False),    # `{}` allows nothing
    ], id="cilium-l4-only-rule-and-empty-rule"),
    pytest.param("""
        kind: CiliumNetworkPolicy
        metadata: {name: same-ns-peers, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingress:
          - fromEndpoints: [{matchLabels: {role: frontend}}]
        ---
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: ccnp-dev}
        spec:
          endpointSelector: {matchLabels: {app: tester}}
          egress:
          - toEndpoints: [{matchLabels: {role: frontend}}]
        """, [
        ("shop/web", "shop/db", "TCP", 5432, True),
        ("ops/monitor", "shop/db", "TCP", 5432, False),  # frontend, other namespace
        ("dev/tester", "ops/monitor", "TCP", 80, True),  # clusterwide sees every namespace
        ("dev/tester", "shop/api", "TCP", 80, False),
    ], id="cilium-namespaced-vs-clusterwide-selectors"),
    pytest.param("""
        kind: CiliumNetworkPolicy
        metadata: {name: subject-stays-home, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {"k8s:io.kubernetes.pod.namespace": ops}}
          ingress: [{}]
        """, [
        ("dev/tester", "ops/monitor", "TCP", 80, True),   # cannot reach into another namespace
        ("dev/tester", "shop/web", "TCP", 8080, False),   # the policy's own namespace instead
    ], id="cilium-endpoint-selector-is-confined-to-its-namespace"),
]


@pytest.mark.parametrize(("policies", "probes"), CASES)
def test_named_policy_cases(policies: str, probes: list[Probe]) -> None:
    world = _world(policies)
    wrong = [(src, dst, proto, port, want, decide(world, src, dst, proto, port))
             for src, dst, proto, port, want in probes
             if allowed(world, src, dst, proto, port) != want]
    assert not wrong, wrong


def test_no_policy_allows_everything() -> None:
    world = _world("")
    assert all(allowed(world, a.ip, b.ip, "TCP", 1) for a in PODS for b in PODS)


def test_answers_say_which_rule_decided() -> None:
    world = _world("""
        kind: NetworkPolicy
        metadata: {name: tcp-8080, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{ports: [{port: 8080}]}]
        """)
    ok = decide(world, "shop/api", "shop/web", "TCP", 8080)
    assert ok.ingress.why == "ingress: allowed by NetworkPolicy shop/tcp-8080 ingress[0]"
    assert ok.egress.why == "egress: not selected by any policy"
    no = decide(world, "shop/api", "shop/web", "TCP", 9)
    assert no.ingress.why == "ingress: default deny (selected by NetworkPolicy shop/tcp-8080)"


@pytest.mark.parametrize(
    ("proto", "message"),
    [pytest.param("ICMPv9", "unknown protocol", id="protocol")],
)
def test_bad_input_is_named(proto: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allowed(_world(""), "shop/web", "shop/api", proto, 1)
