"""Policy parsing: defaults, both Cilium forms, and errors that name document and field."""

from __future__ import annotations

import pytest

from spyglass.policy.model import CIDRPeer, EntityPeer, PortRule, SelectorPeer
from spyglass.policy.parse import PolicyDocument, PolicyError, parse_policies, parse_policy_yaml

NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
CNP = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
GOOD = NP + "metadata: {name: ok, namespace: shop}\nspec: {podSelector: {}}\n"


@pytest.mark.parametrize(("spec", "ingress", "egress"), [
    pytest.param("{podSelector: {}}", True, False, id="no-types-no-rules"),
    pytest.param("{podSelector: {}, egress: [{}]}", True, True, id="egress-rules-add-egress"),
    pytest.param("{podSelector: {}, egress: []}", True, False, id="empty-egress-list"),
    pytest.param("{podSelector: {}, policyTypes: [Egress]}", False, True, id="egress-only"),
    pytest.param("{podSelector: {}, policyTypes: [Egress], ingress: [{}]}", False, True,
                 id="ingress-rules-ignored-without-type"),
])
def test_network_policy_policytypes_defaults(spec: str, ingress: bool, egress: bool) -> None:
    (pol,) = parse_policy_yaml(NP + f"metadata: {{name: p, namespace: shop}}\nspec: {spec}\n")
    (s,) = pol.specs
    assert (s.enforce_ingress, s.enforce_egress) == (ingress, egress)
    if not ingress:
        assert s.ingress == ()


def test_network_policy_rule_shapes() -> None:
    (pol,) = parse_policy_yaml(NP + """
metadata: {name: p, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - {}
  - from: []
    ports: []
  - from: [{ipBlock: {cidr: 10.0.0.1/8, except: [10.1.0.0/16]}}, {podSelector: {}}]
    ports: [{port: 80}, {protocol: UDP}, {port: http, protocol: SCTP}, {port: 1, endPort: 9}]
""")
    r0, r1, r2 = pol.specs[0].ingress
    assert (r0.peers, r0.ports) == (None, None)  # {} = every peer, every port
    assert (r1.peers, r1.ports) == (None, None)  # empty lists mean the same
    assert r2.peers is not None and r2.peers[0] == CIDRPeer("10.0.0.0/8", ("10.1.0.0/16",))
    assert isinstance(r2.peers[1], SelectorPeer)
    assert r2.ports == (PortRule("TCP", 80), PortRule("UDP"), PortRule("SCTP", name="http"),
                        PortRule("TCP", 1, end_port=9))
    assert pol.namespace == "shop" and pol.source == "<policy>" and pol.doc == 1


def test_cilium_specs_list_numbers_rules_across_specs() -> None:
    (pol,) = parse_policy_yaml(CNP + """
metadata: {name: p, namespace: shop}
specs:
- endpointSelector: {matchLabels: {app: a}}
  ingress: [{fromEntities: [world]}]
- endpointSelector: {matchLabels: {app: b}}
  ingress: [{fromEntities: [host]}, {}]
  egressDeny: [{toPorts: [{ports: [{port: "53"}]}]}]
""")
    a, b = pol.specs
    assert [r.index for r in a.ingress] == [0]
    assert [r.index for r in b.ingress] == [1, 2]
    assert b.ingress[0].peers == (EntityPeer("host"),)
    assert b.ingress[1].peers == () and b.ingress[1].ports is None  # the empty rule
    assert b.egress_deny[0].peers is None and b.egress_deny[0].deny
    assert b.egress_deny[0].ports == (PortRule("ANY", 53),)
    assert (b.enforce_ingress, b.enforce_egress) == (True, True)
    assert (a.enforce_ingress, a.enforce_egress) == (True, False)


def test_parse_policies_takes_lab_raw_objects() -> None:
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "cw"}, "spec": {"endpointSelector": {}, "ingress": [{}]}}
    obj = PolicyDocument("cilium.io/v2", "CiliumClusterwideNetworkPolicy", "cw", "", body, 4)
    (pol,) = parse_policies([obj], "demo.yaml")
    assert (pol.kind, pol.namespace, pol.name, pol.doc) == (obj.kind, "", "cw", 4)


BAD = [
    pytest.param("a: [", "f.yaml: line 1, column 5: YAML syntax error: while parsing a flow node",
                 id="yaml-syntax"),
    pytest.param("", "no policy documents found", id="empty-file"),
    pytest.param(GOOD + "---\n- 1\n", "f.yaml: document 2: (document): expected a policy "
                 "mapping", id="not-a-mapping"),
    pytest.param(GOOD + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
                 "f.yaml: document 2: kind: 'Pod' is not a policy kind", id="wrong-kind"),
    pytest.param("apiVersion: cilium.io/v2\nkind: NetworkPolicy\nmetadata: {name: x}\n"
                 "spec: {podSelector: {}}\n",
                 "document 1 (NetworkPolicy): apiVersion: expected 'networking.k8s.io/v1'",
                 id="wrong-api-version"),
    pytest.param(NP + "metadata: {name: Bad_Name}\nspec: {podSelector: {}}\n",
                 "document 1 (NetworkPolicy default/Bad_Name): metadata.name: 'Bad_Name' must",
                 id="bad-name"),
    pytest.param(GOOD + "---\n" + GOOD, "document 2 (NetworkPolicy shop/ok): metadata.name: "
                 "duplicate NetworkPolicy shop/ok (first in document 1)", id="duplicate"),
    pytest.param(NP + "metadata: {name: x}\nspec: {podSelector: {}, ingres: []}\n",
                 "spec.ingres: unknown field 'ingres'; use one of podSelector, policyTypes",
                 id="typo-field"),
    pytest.param(NP + "metadata: {name: x}\nspec: {ingress: []}\n",
                 "spec.podSelector: required; use podSelector: {}", id="missing-podselector"),
    pytest.param(NP + "metadata: {name: x}\nspec: {podSelector: {}, policyTypes: [ingress]}\n",
                 "spec.policyTypes[0]: unknown policy type 'ingress'", id="policy-type-case"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  ingress:\n  - {}\n"
                 "  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n",
                 "spec.ingress[1].from[0].ipBlock.except[0]: 11.0.0.0/16 is not strictly "
                 "inside 10.0.0.0/8", id="except-outside-cidr"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  ingress:\n"
                 "  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
                 "spec.ingress[0].from[0]: ipBlock cannot be combined", id="ipblock-combined"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  ingress:\n"
                 "  - from: [{}]\n", "spec.ingress[0].from[0]: an empty peer selects nothing",
                 id="empty-peer"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  egress:\n"
                 "  - ports: [{port: 70000}]\n", "spec.egress[0].ports[0].port: port 70000 is "
                 "out of range", id="port-range"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  egress:\n"
                 "  - ports: [{port: http, endPort: 90}]\n",
                 "spec.egress[0].ports[0].endPort: endPort needs a numeric port",
                 id="endport-with-name"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  egress:\n"
                 "  - ports: [{port: 90, endPort: 80}]\n",
                 "spec.egress[0].ports[0].endPort: endPort 80 is not in 90..65535",
                 id="endport-below-port"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector: {}\n  egress:\n"
                 "  - ports: [{port: 80, protocol: ANY}]\n",
                 "spec.egress[0].ports[0].protocol: unknown protocol 'ANY'; use one of TCP, "
                 "UDP, SCTP", id="k8s-has-no-any-protocol"),
    pytest.param(NP + "metadata: {name: x}\nspec:\n  podSelector:\n    matchExpressions:\n"
                 "    - {key: app, operator: Like, values: [a]}\n",
                 "spec.podSelector: matchExpressions[0]: unknown operator 'Like'",
                 id="bad-selector-operator"),
    pytest.param(CNP + "metadata: {name: x}\nspec:\n  nodeSelector: {}\n",
                 "spec.nodeSelector: 'nodeSelector' is not supported by Spyglass",
                 id="cilium-nodeselector"),
    pytest.param(CNP + "metadata: {name: x}\nspec:\n  endpointSelector: {}\n"
                 "  egress: [{toEntities: [kube-apiserver]}]\n",
                 "spec.egress[0].toEntities[0]: entity 'kube-apiserver' is not supported; use "
                 "one of world, host, cluster, all", id="cilium-unknown-entity"),
    pytest.param(CNP + "metadata: {name: x}\nspec:\n  endpointSelector: {}\n"
                 "  egress: [{toFQDNs: [{matchName: a.com}]}]\n",
                 "spec.egress[0].toFQDNs: 'toFQDNs' is not supported by Spyglass",
                 id="cilium-fqdn"),
    pytest.param(CNP + "metadata: {name: x}\nspec:\n  endpointSelector: {}\n  ingress:\n"
                 "  - toPorts: [{ports: [{port: '80'}], rules: {http: [{}]}}]\n",
                 "spec.ingress[0].toPorts[0].rules: 'rules' is not supported by Spyglass; "
                 "Spyglass has no L7 proxy", id="cilium-l7"),
    pytest.param(CNP + "metadata: {name: x}\nspec:\n  endpointSelector: {}\n"
                 "  ingress: [{fromEndpoints: [{}]}]\n  ingressDeny: [{toEndpoints: []}]\n",
                 "spec.ingressDeny[0].toEndpoints: unknown field 'toEndpoints'",
                 id="cilium-wrong-direction-field"),
    pytest.param(CNP + "metadata: {name: x}\nspecs: []\n", "specs: the list is empty",
                 id="cilium-empty-specs"),
    pytest.param(CNP + "metadata: {name: x}\nspecs:\n- endpointSelector: {}\n- ingress: []\n",
                 "specs[1].endpointSelector: required", id="cilium-specs-item"),
    pytest.param(CNP + "metadata: {name: x}\nspec:\n  endpointSelector: {}\n"
                 "  enableDefaultDeny: {ingress: false}\n  ingressDeny: [{}]\n",
                 "spec.enableDefaultDeny.ingress: ingressDeny rules without default deny are "
                 "not supported", id="cilium-deny-without-default-deny"),
    pytest.param("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
                 "metadata: {name: x, namespace: a}\nspec: {endpointSelector: {}}\n",
                 "metadata.namespace: CiliumClusterwideNetworkPolicy is cluster-wide",
                 id="clusterwide-with-namespace"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_policy_is_refused_with_place_and_reason(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_yaml(text, "f.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("f.yaml: ")


def test_error_carries_parts_for_callers() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_yaml(GOOD + "---\n" + NP + "metadata: {name: y}\nspec: {podSelector: 3}\n",
                          "f.yaml")
    e = info.value
    assert (e.source, e.doc, e.ident, e.path) == ("f.yaml", 2, "NetworkPolicy default/y",
                                                  "spec.podSelector")
    assert isinstance(e, ValueError)


def test_one_bad_document_refuses_the_whole_file() -> None:
    """Nothing is returned at all: the good first document is not half-applied."""
    text = GOOD + "---\n" + NP + "metadata: {name: y}\nspec: {podSelector: {}, egress: 1}\n"
    with pytest.raises(PolicyError, match="document 2"):
        parse_policy_yaml(text, "f.yaml")


def test_policies_from_a_lab_manifest() -> None:
    from spyglass.lab.manifest import parse_manifest

    manifest = parse_manifest(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n" + NP
        + "metadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n---\n"
        + CNP + "metadata: {name: bad, namespace: shop}\nspec: {endpointSelector: {}, "
        "ingress: [{fromEntities: [nodes]}]}\n", "demo.yaml")
    with pytest.raises(PolicyError, match=r"^demo.yaml: document 3 \(CiliumNetworkPolicy "
                                          r"shop/bad\): spec.ingress\[0\].fromEntities\[0\]"):
        parse_policies(manifest.objects, manifest.source)
    (pol,) = parse_policies(manifest.objects[:1], manifest.source)
    assert (pol.kind, pol.namespace, pol.name, pol.doc) == ("NetworkPolicy", "shop", "deny", 2)
