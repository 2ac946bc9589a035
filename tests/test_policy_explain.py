"""`explain`: exact wording of the answer, its JSON, and suggestions tested by applying them."""

from __future__ import annotations

import pytest

from spyglass.model.enums import Verdict
from spyglass.model.identity import IdentityAllocator, pod_labels
from spyglass.policy.compile import compile_policies
from spyglass.policy.explain import Explanation, PodEndpoint, explain
from spyglass.policy.parse import parse_policy_yaml
from spyglass.policy.table import PolicyTable

POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: frontend}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: backend}}}]
    ports: [{port: 8080}]
  - to: [{podSelector: {matchLabels: {app: db}}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-db-from-frontend, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{}]}]
  ingressDeny: [{fromEndpoints: [{matchLabels: {app: frontend}}]}]
"""
PODS = {
    "shop/frontend-1": {"app": "frontend", "version": "v1"},
    "shop/backend-1": {"app": "backend"},
    "shop/db-1": {"app": "db"},
    "ops/monitor-1": {"app": "monitor"},
    "ops/other-1": {"tier": "misc"},
}


def make_pods() -> dict[str, PodEndpoint]:
    alloc = IdentityAllocator()
    out = {}
    for n, (ref, labels) in enumerate(PODS.items(), start=2):
        ns, name = ref.split("/")
        lbls = pod_labels(ns, labels)
        out[ref] = PodEndpoint(alloc.allocate(lbls), lbls, ns, name, f"10.244.0.{n}")
    return out


P = make_pods()


def table_for(extra: str = "", audit_all: bool = False) -> PolicyTable:
    text = POLICIES + (f"---\n{extra}" if extra else "")
    ids = {p.identity: p.labels for p in P.values()}
    return PolicyTable(compile_policies(parse_policy_yaml(text, "test.yaml"), ids,
                                        audit_all=audit_all))


def ip_endpoint(table: PolicyTable, ip: str) -> PodEndpoint:
    return PodEndpoint(table.resolve_remote(ip, {p.ip: p.identity for p in P.values()}), ip=ip)


def ids(*refs: str) -> tuple[int, ...]:
    return tuple(P[r].identity for r in refs)


def test_allowed_flow_names_the_rules() -> None:
    ex = explain(table_for(), P["shop/frontend-1"], P["shop/backend-1"], 8080, "tcp")
    fe, be = ids("shop/frontend-1", "shop/backend-1")
    assert ex.render() == f"""\
Verdict: FORWARDED
Flow: shop/frontend-1 (ID:{fe}) -> shop/backend-1 (ID:{be}) TCP/8080

Egress at shop/frontend-1: ALLOWED
  Selected by: NetworkPolicy shop/frontend-egress
  Allowed by NetworkPolicy shop/frontend-egress, egress rule 0 (L3-L4).
Ingress at shop/backend-1: ALLOWED
  Selected by: NetworkPolicy shop/backend-ingress
  Allowed by NetworkPolicy shop/backend-ingress, ingress rule 0 (L3-L4).
"""
    assert ex.suggestion is None and ex.verdict is Verdict.FORWARDED


def test_default_deny_gives_a_networkpolicy_to_apply() -> None:
    ex = explain(table_for(), P["ops/monitor-1"], P["shop/backend-1"], 8080, "tcp")
    mon, be = ids("ops/monitor-1", "shop/backend-1")
    assert ex.render() == f"""\
Verdict: DROPPED (Policy denied)
Flow: ops/monitor-1 (ID:{mon}) -> shop/backend-1 (ID:{be}) TCP/8080

Egress at ops/monitor-1: ALLOWED
  No policy selects ops/monitor-1 for egress: egress is not enforced.
Ingress at shop/backend-1: DROPPED (Policy denied)
  Selected by: NetworkPolicy shop/backend-ingress
  Nothing allows this traffic, so the default deny of the policies above applies.

To allow exactly this traffic, save this as allow-monitor-1-to-backend-1-8080.yaml:

apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-monitor-1-to-backend-1-8080
  namespace: shop
spec:
  podSelector:
    matchLabels:
      app: backend
  policyTypes:
  - Ingress
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: ops
      podSelector:
        matchLabels:
          app: monitor
    ports:
    - protocol: TCP
      port: 8080

and apply it with:
  spyglass policy apply -f allow-monitor-1-to-backend-1-8080.yaml
"""


def test_cilium_format_suggestion() -> None:
    ex = explain(table_for(), P["ops/monitor-1"], P["shop/backend-1"], 8080, "tcp",
                 format="cilium")
    assert ex.suggestion is not None
    assert ex.suggestion.yaml == """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-monitor-1-to-backend-1-8080
  namespace: shop
spec:
  endpointSelector:
    matchLabels:
      app: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: ops
        app: monitor
    toPorts:
    - ports:
      - port: '8080'
        protocol: TCP
"""


def test_deny_rule_says_an_allow_cannot_override_it() -> None:
    ex = explain(table_for(), P["shop/frontend-1"], P["shop/db-1"], 5432, "tcp")
    fe, db = ids("shop/frontend-1", "shop/db-1")
    assert ex.render() == f"""\
Verdict: DROPPED (Policy denied by denylist)
Flow: shop/frontend-1 (ID:{fe}) -> shop/db-1 (ID:{db}) TCP/5432

Egress at shop/frontend-1: ALLOWED
  Selected by: NetworkPolicy shop/frontend-egress
  Allowed by NetworkPolicy shop/frontend-egress, egress rule 1 (L3-Only).
Ingress at shop/db-1: DROPPED (Policy denied by denylist)
  Selected by: CiliumNetworkPolicy shop/no-db-from-frontend
  Denied by CiliumNetworkPolicy shop/no-db-from-frontend, ingressDeny rule 0 (L3-Only).

An allow rule cannot override a deny rule.
To let this traffic through, change or delete:
  CiliumNetworkPolicy shop/no-db-from-frontend (ingressDeny rule 0)
"""
    assert ex.suggestion is not None and ex.suggestion.yaml == ""


def test_address_destination_checks_egress_only() -> None:
    table = table_for()
    ex = explain(table, P["shop/frontend-1"], ip_endpoint(table, "1.2.3.4"), 443, "tcp")
    fe = P["shop/frontend-1"].identity
    assert ex.render() == f"""\
Verdict: DROPPED (Policy denied)
Flow: shop/frontend-1 (ID:{fe}) -> 1.2.3.4 (ID:2) TCP/443

Egress at shop/frontend-1: DROPPED (Policy denied)
  Selected by: NetworkPolicy shop/frontend-egress
  Nothing allows this traffic, so the default deny of the policies above applies.
Ingress: not checked: 1.2.3.4 is not a pod.

To allow exactly this traffic, save this as allow-frontend-1-to-1-2-3-4-443.yaml:

apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-frontend-1-to-1-2-3-4-443
  namespace: shop
spec:
  podSelector:
    matchLabels:
      app: frontend
  policyTypes:
  - Egress
  egress:
  - to:
    - ipBlock:
        cidr: 1.2.3.4/32
    ports:
    - protocol: TCP
      port: 443

and apply it with:
  spyglass policy apply -f allow-frontend-1-to-1-2-3-4-443.yaml
"""


def test_audit_mode_reports_what_enforcement_would_do() -> None:
    ex = explain(table_for(audit_all=True), P["ops/monitor-1"], P["shop/backend-1"], 8080,
                 "tcp")
    assert ex.verdict is Verdict.AUDIT
    lines = ex.render().splitlines()
    assert lines[0] == "Verdict: AUDIT (would be dropped: Policy denied)"
    assert lines[5] == "Ingress at shop/backend-1: AUDIT (would be dropped: Policy denied)"
    assert ex.suggestion is not None and ex.suggestion.yaml


def test_to_dict_is_the_api_shape() -> None:
    ex = explain(table_for(), P["shop/frontend-1"], P["shop/db-1"], 5432, "tcp")
    d = ex.to_dict()
    assert (d["verdict"], d["drop_reason_desc"], d["protocol"], d["port"]) == (
        "DROPPED", "POLICY_DENY", "TCP", 5432)
    assert d["source"]["pod_name"] == "frontend-1" and d["destination"]["namespace"] == "shop"
    assert d["egress"]["allowed_by"] == [{"kind": "NetworkPolicy", "namespace": "shop",
                                          "name": "frontend-egress", "rule": "egress rule 1",
                                          "rule_index": 1}]
    assert d["egress"]["statement"] == (
        "Allowed by NetworkPolicy shop/frontend-egress, egress rule 1 (L3-Only).")
    ing = d["ingress"]
    assert (ing["verdict"], ing["enforced"], ing["match_type"]) == ("DROPPED", True, "L3-Only")
    assert ing["denied_by"][0]["rule"] == "ingressDeny rule 0"
    assert ing["selected_by"] == [{"kind": "CiliumNetworkPolicy", "namespace": "shop",
                                   "name": "no-db-from-frontend"}]
    assert d["suggestion"]["deny_rules"][0]["name"] == "no-db-from-frontend"


def reexplain(ex: Explanation, extra: str, src: str, dst: str, port: int,
              proto: str = "tcp") -> Verdict:
    table = table_for(extra)
    d = ip_endpoint(table, dst) if dst[0].isdigit() else P[dst]
    return explain(table, P[src], d, port, proto).verdict


@pytest.mark.parametrize("fmt", [pytest.param("kubernetes", id="networkpolicy"),
                                 pytest.param("cilium", id="cilium")])
@pytest.mark.parametrize(("src", "dst", "port", "proto", "other_peer"), [
    pytest.param("ops/monitor-1", "shop/backend-1", 8080, "tcp",
                 ("ops/other-1", "shop/backend-1"), id="ingress-default-deny"),
    pytest.param("shop/frontend-1", "1.2.3.4", 443, "tcp", ("shop/frontend-1", "1.2.3.5"),
                 id="egress-to-address"),
    pytest.param("shop/frontend-1", "shop/backend-1", 9090, "tcp",
                 ("shop/frontend-1", "shop/db-1"), id="both-directions-same-namespace"),
    pytest.param("ops/other-1", "shop/backend-1", 8080, "udp",
                 ("ops/monitor-1", "shop/backend-1"), id="udp-and-no-app-label"),
])
def test_suggestion_allows_exactly_that_traffic(fmt: str, src: str, dst: str, port: int,
                                                proto: str, other_peer: tuple[str, str]) -> None:
    table = table_for()
    d = ip_endpoint(table, dst) if dst[0].isdigit() else P[dst]
    ex = explain(table, P[src], d, port, proto, format=fmt)
    assert ex.verdict is Verdict.DROPPED and ex.suggestion is not None
    extra = ex.suggestion.yaml
    assert ex.suggestion.command in ex.render()
    assert reexplain(ex, extra, src, dst, port, proto) is Verdict.FORWARDED
    assert reexplain(ex, extra, src, dst, port + 1, proto) is Verdict.DROPPED
    other_proto = "udp" if proto == "tcp" else "tcp"
    assert reexplain(ex, extra, src, dst, port, other_proto) is Verdict.DROPPED
    if other_peer[1] != "shop/db-1":  # db-1 takes anything from the shop namespace
        assert reexplain(ex, extra, *other_peer, port, proto) is Verdict.DROPPED
    # Traffic that was allowed before stays allowed.
    assert reexplain(ex, extra, "shop/frontend-1", "shop/backend-1", 8080) is Verdict.FORWARDED


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"proto": "gre"}, "unknown protocol 'gre'", id="bad-protocol"),
    pytest.param({"port": 70000}, "port 70000 is out of range", id="bad-port"),
    pytest.param({"format": "calico"}, "unknown policy format 'calico'", id="bad-format"),
])
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"port": 80, "proto": "tcp", **kwargs}
    with pytest.raises(ValueError, match=message):
        explain(table_for(), P["shop/frontend-1"], P["shop/backend-1"],
                args.pop("port"), args.pop("proto"), **args)  # type: ignore[arg-type]


def test_default_deny_statement_names_the_selecting_policies_in_json() -> None:
    ex = explain(table_for(), P["ops/monitor-1"], P["shop/backend-1"], 8080, "tcp")
    assert ex.to_dict()["ingress"]["statement"] == (
        "Nothing allows this traffic: default deny applies (shop/backend-1 is selected for "
        "ingress by NetworkPolicy shop/backend-ingress).")
