"""Compiled policy semantics, asserted through table lookups on concrete pod pairs.

Each case is one of the Kubernetes/Cilium situations the issue lists: a policy text, then
(source, destination, port, protocol, allowed?) probes. A flow is allowed when egress at
the source and ingress at the destination both allow it, as in the datapath.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from spyglass.model.enums import DropReason
from spyglass.model.identity import IdentityAllocator, pod_labels
from spyglass.model.policy import CIDR_IDENTITY_BASE, CompiledPolicy, Direction
from spyglass.policy.compile import PolicyTooLarge, compile_policies
from spyglass.policy.parse import parse_policy_yaml
from spyglass.policy.table import PolicyTable

NAMESPACES = {"prod": {"env": "prod", "team": "a"}, "dev": {"env": "dev", "team": "a"},
              "other": {"env": "test"}}
PODS = {
    "prod/web": {"app": "web", "role": "frontend"},
    "prod/db": {"app": "db"},
    "prod/api": {"app": "api"},
    "dev/web": {"app": "web", "role": "frontend"},
    "dev/client": {"app": "client"},
    "other/client": {"app": "client"},
    "other/fe": {"app": "fe", "role": "frontend"},
}
PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1}


@dataclass
class World:
    """Pods with identities built the way the lab builds them (namespace labels included)."""

    ids: dict[str, int] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    identities: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def make(cls, pods: dict[str, dict[str, str]] = PODS) -> World:
        w, alloc = cls(), IdentityAllocator()
        for n, (ref, labels) in enumerate(sorted(pods.items()), start=2):
            ns = ref.split("/")[0]
            ns_labels = {f"io.cilium.k8s.namespace.labels.{k}": v
                         for k, v in NAMESPACES[ns].items()}
            lbls = pod_labels(ns, {**labels, **ns_labels})
            w.ids[ref] = alloc.allocate(lbls)
            w.identities[w.ids[ref]] = lbls
            w.ips[ref] = f"10.244.0.{n}"
        return w

    def compile(self, text: str, **kw: object) -> CompiledPolicy:
        return compile_policies(parse_policy_yaml(text, "case.yaml"), self.identities,
                                **kw)  # type: ignore[arg-type]

    def remote(self, table: PolicyTable, who: str) -> int:
        if who in self.ids:
            return self.ids[who]
        return table.resolve_remote(who, {ip: self.ids[p] for p, ip in self.ips.items()})

    def allowed(self, table: PolicyTable, src: str, dst: str, port: int,
                proto: str = "TCP") -> bool:
        p = PROTO[proto]
        ok = True
        if src in self.ids:
            ok &= table.lookup(self.ids[src], Direction.EGRESS, self.remote(table, dst), p,
                               port).allowed
        if dst in self.ids:
            ok &= table.lookup(self.ids[dst], Direction.INGRESS, self.remote(table, src), p,
                               port).allowed
        return ok


NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
CNP = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
CCNP = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"

CASES = [
    pytest.param(NP + """
metadata: {name: deny-ingress, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress]}
""", [("dev/client", "prod/web", 80, "TCP", False), ("prod/db", "prod/web", 80, "TCP", False),
      ("8.8.8.8", "prod/web", 80, "TCP", False), ("prod/web", "dev/web", 80, "TCP", True),
      ("prod/web", "8.8.8.8", 443, "TCP", True)],
        id="k8s-deny-all-ingress-in-namespace"),
    pytest.param(NP + """
metadata: {name: from-dev, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {env: dev}}}]}]
""", [("dev/client", "prod/db", 5432, "TCP", True), ("dev/web", "prod/db", 1, "UDP", True),
      ("other/client", "prod/db", 5432, "TCP", False), ("prod/web", "prod/db", 5432, "TCP", False),
      ("8.8.8.8", "prod/db", 5432, "TCP", False)],
        id="k8s-allow-only-from-one-namespace"),
    pytest.param(NP + """
metadata: {name: and-form, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchLabels: {role: frontend}}
""", [("dev/web", "prod/db", 5432, "TCP", True), ("prod/web", "prod/db", 5432, "TCP", True),
      ("dev/client", "prod/db", 5432, "TCP", False), ("other/fe", "prod/db", 5432, "TCP", False),
      ("prod/api", "prod/db", 5432, "TCP", False)],
        id="k8s-pod-and-namespace-selector-AND"),
    pytest.param(NP + """
metadata: {name: or-form, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
    - podSelector: {matchLabels: {role: frontend}}
""", [("dev/web", "prod/db", 5432, "TCP", True), ("prod/web", "prod/db", 5432, "TCP", True),
      ("dev/client", "prod/db", 5432, "TCP", True), ("prod/api", "prod/db", 5432, "TCP", True),
      ("other/fe", "prod/db", 5432, "TCP", False),
      ("other/client", "prod/db", 5432, "TCP", False)],
        id="k8s-pod-or-namespace-selector-OR"),
    pytest.param(NP + """
metadata: {name: tcp-8080, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{ports: [{protocol: TCP, port: 8080}]}]
""", [("prod/web", "prod/db", 8080, "TCP", True), ("other/client", "prod/db", 8080, "TCP", True),
      ("prod/web", "prod/db", 8081, "TCP", False), ("prod/web", "prod/db", 8080, "UDP", False),
      ("prod/web", "prod/db", 0, "ICMP", False)],
        id="k8s-allow-only-tcp-8080"),
    pytest.param(NP + """
metadata: {name: range, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{ports: [{protocol: TCP, port: 32000, endPort: 32768}]}]
""", [("prod/web", "prod/db", 31999, "TCP", False), ("prod/web", "prod/db", 32000, "TCP", True),
      ("prod/web", "prod/db", 32500, "TCP", True), ("prod/web", "prod/db", 32768, "TCP", True),
      ("prod/web", "prod/db", 32769, "TCP", False), ("prod/web", "prod/db", 32500, "UDP", False)],
        id="k8s-endport-range"),
    pytest.param(NP + """
metadata: {name: ipblock, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]}]
""", [("prod/web", "10.2.3.4", 443, "TCP", True), ("prod/web", "10.1.2.3", 443, "TCP", False),
      ("prod/web", "192.168.1.1", 443, "TCP", False),
      # Pod addresses resolve to pod identities first (as Cilium's ipcache does), so an
      # ipBlock never matches a pod, even when the pod network lies inside it.
      ("prod/web", "prod/db", 443, "TCP", False),
      ("prod/db", "10.1.2.3", 443, "TCP", True)],
        id="k8s-ipblock-with-except"),
    pytest.param(NP + """
metadata: {name: egress-dns-only, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{ports: [{protocol: UDP, port: 53}]}]
""", [("prod/web", "prod/db", 5432, "TCP", False), ("prod/web", "dev/client", 53, "UDP", True),
      ("prod/web", "8.8.8.8", 53, "UDP", True), ("prod/web", "8.8.8.8", 53, "TCP", False),
      ("prod/db", "prod/api", 5432, "TCP", True)],
        id="k8s-egress-deny-all-except-one-port"),
    pytest.param(NP + """
metadata: {name: lock-prod, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
""", [("dev/client", "dev/web", 80, "TCP", True), ("other/client", "dev/web", 80, "TCP", True),
      ("dev/client", "prod/web", 80, "TCP", False), ("prod/web", "dev/web", 80, "TCP", False)],
        id="k8s-policy-on-one-namespace-leaves-another-open"),
    pytest.param(NP + """
metadata: {name: same-namespace, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
""", [("prod/web", "prod/db", 1, "TCP", True), ("prod/api", "prod/web", 9, "UDP", True),
      ("dev/client", "prod/db", 1, "TCP", False), ("8.8.8.8", "prod/db", 1, "TCP", False)],
        id="k8s-empty-podselector"),
    pytest.param(NP + """
metadata: {name: default-types, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]
""", [("prod/web", "prod/db", 5432, "TCP", True), ("prod/web", "prod/api", 80, "TCP", False),
      ("prod/api", "prod/web", 80, "TCP", False)],
        id="k8s-policytypes-default-ingress-plus-egress-when-rules"),
    pytest.param(NP + """
metadata: {name: empty-egress-list, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: []
""", [("prod/web", "prod/api", 80, "TCP", True), ("prod/api", "prod/web", 80, "TCP", False)],
        id="k8s-empty-egress-list-means-ingress-only"),
    pytest.param(CNP + """
metadata: {name: world-in, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEntities: [world]}]
""", [("8.8.8.8", "prod/web", 443, "TCP", True), ("prod/db", "prod/web", 443, "TCP", False),
      ("dev/client", "prod/web", 443, "TCP", False)],
        id="cilium-fromEntities-world"),
    pytest.param(CNP + """
metadata: {name: deny-web, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{}]}]
  ingressDeny: [{fromEndpoints: [{matchLabels: {app: web}}]}]
""", [("prod/web", "prod/db", 5432, "TCP", False), ("prod/api", "prod/db", 5432, "TCP", True),
      ("dev/web", "prod/db", 5432, "TCP", False), ("dev/client", "prod/db", 5432, "TCP", False)],
        id="cilium-ingressDeny-overrides-allow"),
    pytest.param(CNP + """
metadata: {name: cidrset, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]}]
""", [("prod/web", "10.1.1.1", 80, "TCP", True), ("prod/web", "10.100.0.1", 80, "TCP", False),
      ("prod/web", "11.0.0.1", 80, "TCP", False), ("prod/web", "prod/db", 80, "TCP", False)],
        id="cilium-toCIDRSet-with-except"),
    pytest.param(CNP + """
metadata: {name: ns-scoped, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
""", [("prod/web", "prod/db", 1, "TCP", True), ("dev/web", "prod/db", 1, "TCP", False)],
        id="cilium-fromEndpoints-scoped-to-policy-namespace"),
    pytest.param(CNP + """
metadata: {name: cross-ns, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web, k8s:io.kubernetes.pod.namespace: dev}}]
""", [("prod/web", "prod/db", 1, "TCP", False), ("dev/web", "prod/db", 1, "TCP", True)],
        id="cilium-fromEndpoints-naming-namespace"),
    pytest.param(CCNP + """
metadata: {name: clusterwide}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
""", [("prod/web", "prod/db", 1, "TCP", True), ("dev/web", "prod/db", 1, "TCP", True),
      ("dev/client", "prod/db", 1, "TCP", False), ("8.8.8.8", "prod/db", 1, "TCP", False)],
        id="cilium-clusterwide-peers-any-namespace"),
    pytest.param(CNP + """
metadata: {name: empty-rule, namespace: prod}
spec:
  endpointSelector: {}
  ingress: [{}]
""", [("prod/web", "prod/db", 1, "TCP", False), ("8.8.8.8", "prod/db", 1, "TCP", False),
      ("prod/db", "dev/web", 1, "TCP", True)],
        id="cilium-empty-rule-is-default-deny"),
    pytest.param(CNP + """
metadata: {name: l4-only, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{toPorts: [{ports: [{port: "53", protocol: ANY}]}]}]
""", [("other/client", "prod/db", 53, "TCP", True), ("8.8.8.8", "prod/db", 53, "UDP", True),
      ("prod/web", "prod/db", 54, "TCP", False)],
        id="cilium-toPorts-only-any-peer-any-protocol"),
    pytest.param(CNP + """
metadata: {name: entities, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress: [{toEntities: [cluster]}, {toEntities: [host], toPorts: [{ports: [{port: "22"}]}]}]
""", [("prod/web", "other/client", 1, "TCP", True), ("prod/web", "8.8.8.8", 1, "TCP", False)],
        id="cilium-toEntities-cluster"),
    pytest.param(CNP + """
metadata: {name: all, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress: [{toEntities: [all]}]
  egressDeny: [{toCIDR: [8.8.8.8/32]}]
""", [("prod/web", "other/client", 1, "TCP", True), ("prod/web", "8.8.4.4", 1, "TCP", True),
      ("prod/web", "8.8.8.8", 1, "TCP", False)],
        id="cilium-toEntities-all-with-toCIDR-deny"),
]


@pytest.mark.parametrize(("policy", "probes"), CASES)
def test_policy_semantics(policy: str,
                          probes: list[tuple[str, str, int, str, bool]]) -> None:
    world = World.make()
    table = PolicyTable(world.compile(policy))
    got = [(s, d, port, proto, world.allowed(table, s, d, port, proto))
           for s, d, port, proto, _ in probes]
    assert got == probes


def test_no_policy_allows_everything() -> None:
    world = World.make()
    table = PolicyTable(compile_policies([], world.identities))
    assert world.allowed(table, "prod/web", "dev/client", 1, "UDP")
    assert table.compiled.selected == {}


def test_deny_rule_reports_policy_deny_and_default_deny_reports_policy_denied() -> None:
    world = World.make()
    table = PolicyTable(world.compile(CASES[13].values[0]))
    db, web, api = world.ids["prod/db"], world.ids["prod/web"], world.ids["dev/client"]
    assert table.lookup(db, Direction.INGRESS, web, 6, 1).reason is DropReason.POLICY_DENY
    assert table.lookup(db, Direction.INGRESS, api, 6, 1).reason is DropReason.POLICY_DENIED


def test_entity_host_and_world_include_cidr_identities() -> None:
    world = World.make()
    compiled = world.compile(CNP + """
metadata: {name: w, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEntities: [world, host]}, {fromCIDR: [192.168.0.0/16]}]
""")
    table = PolicyTable(compiled)
    cidr_id = compiled.cidr_identities["192.168.0.0/16"]
    web = world.ids["prod/web"]
    for remote in (1, 2, cidr_id):
        assert table.lookup(web, Direction.INGRESS, remote, 6, 80).allowed, remote


@pytest.mark.parametrize(("direction", "src", "dst", "port", "want"), [
    pytest.param("ingress", "prod/web", "prod/db", 8080, True, id="ingress-name-on-local-pod"),
    pytest.param("ingress", "prod/web", "prod/db", 9090, False, id="ingress-other-port"),
    pytest.param("egress", "prod/web", "prod/db", 8080, True, id="egress-name-on-remote-pod"),
    pytest.param("egress", "prod/web", "prod/api", 9090, True, id="egress-name-differs-per-pod"),
    pytest.param("egress", "prod/web", "prod/api", 8080, False, id="egress-not-that-pods-port"),
    pytest.param("egress", "prod/web", "8.8.8.8", 8080, False, id="egress-name-never-on-world"),
])
def test_named_ports(direction: str, src: str, dst: str, port: int, want: bool) -> None:
    world = World.make()
    named = {world.ids["prod/db"]: {"http": ("TCP", 8080)},
             world.ids["prod/api"]: {"http": (6, 9090)}}
    subject = "db" if direction == "ingress" else "web"
    rules = ("ingress: [{ports: [{port: http}]}]" if direction == "ingress"
             else "policyTypes: [Egress]\n  egress: [{ports: [{port: http}]}]")
    text = NP + f"""
metadata: {{name: named, namespace: prod}}
spec:
  podSelector: {{matchLabels: {{app: {subject}}}}}
  {rules}
"""
    table = PolicyTable(world.compile(text, named_ports=named))
    assert world.allowed(table, src, dst, port) is want


def test_audit_namespaces_let_traffic_through_and_say_what_would_happen() -> None:
    world = World.make()
    text = CASES[0].values[0]
    table = PolicyTable(world.compile(text, audit_namespaces=frozenset({"prod"})))
    d = table.lookup(world.ids["prod/web"], Direction.INGRESS, world.ids["dev/client"], 6, 80)
    assert (d.allowed, d.audited, d.reason) == (True, True, DropReason.POLICY_DENIED)
    assert table.compiled.audit == frozenset(i for r, i in world.ids.items()
                                             if r.startswith("prod/"))
    all_audit = world.compile(text, audit_all=True)
    assert all_audit.audit == frozenset(world.ids.values())


def test_selected_record_names_every_selecting_policy() -> None:
    world = World.make()
    text = CASES[0].values[0] + "---\n" + CASES[4].values[0]
    compiled = world.compile(text)
    cookie = compiled.selected[(world.ids["prod/db"], Direction.INGRESS)]
    assert [(r.name, r.rule_index) for r in compiled.cookies[cookie]] == [
        ("deny-ingress", -1), ("tcp-8080", -1)]
    assert (world.ids["prod/db"], Direction.EGRESS) not in compiled.selected


def test_first_rule_in_stable_order_keeps_a_shared_key() -> None:
    world = World.make()
    a = NP + """
metadata: {name: b-second, namespace: prod}
spec: {podSelector: {}, ingress: [{ports: [{port: 80}]}, {ports: [{port: 80}]}]}
"""
    b = a.replace("b-second", "a-first")
    compiled = world.compile(a + "---\n" + b)
    key = next(k for k in compiled.allow if k.local_identity == world.ids["prod/db"])
    ref = compiled.cookies[compiled.allow[key]][0]
    assert (ref.name, ref.rule_index) == ("a-first", 0)


def test_cookies_are_stable_and_never_zero() -> None:
    world = World.make()
    base = CASES[3].values[0]
    first = world.compile(base)
    again = world.compile(base)
    assert first.cookies == again.cookies and first.allow == again.allow
    more = world.compile(base + "---\n" + CASES[5].values[0])
    # Rule cookies of the unchanged policy keep their numbers; the "selected" record of
    # prod/db now names two policies, so that one is (rightly) a new cookie.
    rules = {c: refs for c, refs in first.cookies.items() if refs[0].rule_index >= 0}
    assert rules and all(more.cookies[c] == refs for c, refs in rules.items())
    with_previous = world.compile(base + "---\n" + CASES[5].values[0], previous=more)
    assert with_previous.cookies == more.cookies
    assert 0 not in more.cookies and all(0 < c < 2**32 for c in more.cookies)


def test_cookie_clash_is_probed_not_shared() -> None:
    world = World.make()
    first = world.compile(CASES[3].values[0])
    # A previous table that already used every cookie this compile would hash to.
    fake = CompiledPolicy(cookies={c: () for c in first.cookies})
    second = world.compile(CASES[3].values[0], previous=fake)
    assert set(second.cookies).isdisjoint(first.cookies)
    assert set(second.cookies.values()) == set(first.cookies.values())


def test_cidr_identities_are_stable_across_recompiles() -> None:
    world = World.make()
    one = world.compile(CASES[6].values[0])
    assert one.cidr_identities == {"10.0.0.0/8": CIDR_IDENTITY_BASE,
                                   "10.1.0.0/16": CIDR_IDENTITY_BASE + 1}
    extra = CNP + """
metadata: {name: extra, namespace: prod}
spec:
  endpointSelector: {}
  egress: [{toCIDR: [1.0.0.0/8]}]
"""
    two = world.compile(CASES[6].values[0] + "---\n" + extra, previous=one)
    assert two.cidr_identities == {**one.cidr_identities, "1.0.0.0/8": CIDR_IDENTITY_BASE + 2}


def test_duplicate_policy_across_sources_is_refused() -> None:
    world = World.make()
    pols = parse_policy_yaml(CASES[0].values[0], "a.yaml") + \
        parse_policy_yaml(CASES[0].values[0], "b.yaml")
    with pytest.raises(ValueError, match="a.yaml and b.yaml"):
        compile_policies(pols, world.identities)


def test_hundred_identities_fifty_policies_compile() -> None:
    """Size check only (no timing assertion): the bench in the report measures the time."""
    pods = {f"{ns}/p{i}": {"app": f"a{i % 10}", "tier": f"t{i % 3}", "n": str(i)}
            for ns in ("prod", "dev") for i in range(50)}
    world = World.make(pods)
    docs = []
    for i in range(50):
        docs.append(NP + f"""
metadata: {{name: p{i}, namespace: {"prod" if i % 2 else "dev"}}}
spec:
  podSelector: {{matchLabels: {{app: a{i % 10}}}}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: a}}}}
      podSelector: {{matchLabels: {{tier: t{i % 3}}}}}
    ports: [{{port: {8000 + i}, endPort: {8100 + i}}}]
  egress: [{{to: [{{ipBlock: {{cidr: 10.{i}.0.0/16}}}}]}}]
""")
    compiled = world.compile("---\n".join(docs))
    assert len(world.identities) == 100
    assert len(compiled.allow) > 10_000


BOMB = CNP + """metadata: {name: bomb, namespace: prod}
spec:
  endpointSelector: {}
  ingress:
  - &r
    fromCIDR: [10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, 10.4.0.0/16, 10.5.0.0/16]
    toPorts:
    - ports:
      - {port: '1', endPort: 65535, protocol: ANY}
      - {port: '2', endPort: 65534, protocol: ANY}
""" + "  - *r\n" * 9


def test_identical_rules_add_nothing_and_change_nothing() -> None:
    """The alias bomb's ten copies of one rule compile to exactly what one copy gives."""
    world = World.make()
    once = BOMB.split("  - *r\n")[0]
    bombed, single = world.compile(BOMB), world.compile(once)
    assert set(bombed.allow) == set(single.allow) and len(bombed.allow) > 500
    assert set(bombed.allow.values()) == set(single.allow.values())  # rule 0's cookie wins


@pytest.mark.parametrize(("limit", "refused"), [(100, True), (10**6, False)])
def test_a_policy_set_over_the_entry_limit_is_refused_with_the_count(limit: int,
                                                                    refused: bool) -> None:
    world = World.make()
    if not refused:
        assert world.compile(BOMB, max_entries=limit).allow
        return
    with pytest.raises(PolicyTooLarge, match=r"would make [\d,]+ datapath entries .* over the "
                                             r"limit of 100"):
        world.compile(BOMB, max_entries=limit)


def test_the_estimate_bounds_what_is_generated() -> None:
    """The refusal's count is an upper bound of the entries, so nothing legal is refused."""
    world = World.make()
    once = BOMB.split("  - *r\n")[0]
    entries = len(world.compile(once).allow)
    world.compile(once, max_entries=entries * 4)  # a comfortable bound passes
    with pytest.raises(PolicyTooLarge):
        world.compile(once, max_entries=entries // 2)
