"""Manifest parsing: the demo loads, and every kind of mistake is named by file, document, field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spyglass.lab.errors import ManifestError
from spyglass.lab.manifest import load_manifest, parse_manifest

DEMO = Path(__file__).resolve().parents[1] / "lab" / "manifests" / "demo.yaml"

NS_SHOP = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"


def pod(name: str = "frontend-1", ns: str = "shop", extra: str = "",
        containers: str = '[{name: web, command: ["sleep", "60"]}]') -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"{extra}spec:\n  containers: {containers}\n")


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def test_demo_manifest_loads() -> None:
    m = load_manifest(DEMO)
    assert m.warnings == ()
    assert {n.name for n in m.namespaces} == {"shop", "ops"}
    assert len(m.pods) >= 6
    for p in m.pods:
        assert p.labels.get("app") and p.labels.get("tier"), p.ref
    monitor = m.pod("ops/monitor-0")
    assert [c.name for c in monitor.containers] == ["statsd", "prober"]
    assert monitor.containers[0].ports[0].protocol == "UDP"
    assert m.pod("frontend-0").containers[0].argv[:3] == (
        "{{python}}", "-m", "spyglass.lab.demoapp")


def test_pod_fields_and_defaults() -> None:
    text = docs(NS_SHOP, pod(extra="  labels: {app: web, example.com/tier: front}\n"
                                   "  annotations: {spyglass.io/role: traffic}\n",
                             containers='[{command: ["srv"], args: ["--port", "80"], '
                                        'env: [{name: A, value: "1"}], '
                                        'ports: [{containerPort: 80, name: http}]}]'),
                pod(name="bare", ns="default"))
    m = parse_manifest(text, "t.yaml")
    p = m.pod("shop/frontend-1")
    assert p.labels == {"app": "web", "example.com/tier": "front"}
    assert p.annotations == {"spyglass.io/role": "traffic"}
    c = p.containers[0]
    assert (c.name, c.argv, c.env) == ("main", ("srv", "--port", "80"), (("A", "1"),))
    assert (c.ports[0].container_port, c.ports[0].protocol, c.ports[0].name) == (80, "TCP", "http")
    assert m.pod("bare").namespace == "default"
    assert m.namespace("default") is not None and m.namespace("default").implicit
    assert m.warnings == ()  # `default` needs no Namespace object and earns no warning


def test_implicit_namespace_is_created_with_a_warning() -> None:
    m = parse_manifest(pod(ns="shpo"), "t.yaml")
    ns = m.namespace("shpo")
    assert ns is not None and ns.implicit and ns.labels == {}
    assert len(m.warnings) == 1 and "'shpo' has no Namespace object" in m.warnings[0]


def test_raw_objects_are_kept() -> None:
    np = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
          "metadata: {name: deny-all, namespace: shop}\nspec: {podSelector: {}}\n")
    ccnp = ("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
            "metadata: {name: world}\nspec: {}\n")
    m = parse_manifest(docs(NS_SHOP, np, ccnp, ""), "t.yaml")
    (o,) = m.objects_of("NetworkPolicy")
    assert (o.name, o.namespace, o.doc, o.body["spec"]) == ("deny-all", "shop", 2,
                                                           {"podSelector": {}})
    assert m.objects_of("CiliumClusterwideNetworkPolicy")[0].namespace == ""


ERRORS = [
    pytest.param("kind: Pod\nmetadata: {name: x\n",
                 r"^t\.yaml: line 3, column 1: YAML syntax error",
                 id="yaml-syntax-names-line"),
    pytest.param(docs(NS_SHOP, "apiVersion: v1\nkind: Pod\nmetadata: {namespace: shop}\n"),
                 r"^t\.yaml: document 2 \(Pod\): metadata\.name: required",
                 id="missing-name"),
    pytest.param(docs(NS_SHOP, pod(extra="  labels: {app: -bad}\n")),
                 r"document 2 \(Pod shop/frontend-1\): metadata\.labels\.app: bad value '-bad'",
                 id="bad-label-value"),
    pytest.param(docs(NS_SHOP, pod(extra="  labels: {'a/b/c': x}\n")),
                 r"metadata\.labels\.a/b/c: bad key 'a/b/c'", id="bad-label-key"),
    pytest.param(docs(NS_SHOP, pod(extra="  labels: {tier: 1}\n")),
                 r"metadata\.labels\.tier: expected a string, got 1 \(a number\); quote it",
                 id="label-not-string"),
    pytest.param("apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n",
                 r"document 1: kind: unknown kind 'Deployment': the lab understands Namespace",
                 id="unknown-kind"),
    pytest.param(docs(NS_SHOP, pod(), pod()),
                 r"document 3 \(Pod shop/frontend-1\): metadata\.name: duplicate pod "
                 r"shop/frontend-1 \(first defined in document 2\)", id="duplicate-pod"),
    pytest.param(docs(NS_SHOP, NS_SHOP), r"document 2 \(Namespace shop\): metadata\.name: "
                 r"duplicate Namespace", id="duplicate-namespace"),
    pytest.param(docs(NS_SHOP, NS_SHOP.replace("shop", "ops"),
                      pod(containers='[{command: "python3 -m http.server"}]')),
                 r"^t\.yaml: document 3 \(Pod shop/frontend-1\): spec\.containers\[0\]\.command: "
                 r"expected a list of strings, got 'python3 -m http\.server'$",
                 id="command-not-a-list"),
    pytest.param(pod(containers='[{command: ["srv", 8080]}]'),
                 r"spec\.containers\[0\]\.command\[1\]: expected a string, got 8080 "
                 r"\(a number\); quote it", id="command-item-not-string"),
    pytest.param(pod(containers='[{args: ["-v"]}]'),
                 r"spec\.containers\[0\]\.args: args without command", id="args-without-command"),
    pytest.param(pod(containers="[]"), r"spec\.containers: expected a non-empty list",
                 id="no-containers"),
    pytest.param(pod(containers='[{command: [a], ports: [{containerPort: 70000}]}]'),
                 r"ports\[0\]\.containerPort: must be between 1 and 65535", id="port-range"),
    pytest.param(pod(containers='[{command: [a], ports: [{containerPort: 53, protocol: udp}]}]'),
                 r"ports\[0\]\.protocol: expected one of TCP, UDP, SCTP, got 'udp'",
                 id="protocol-case"),
    pytest.param("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: x}\n",
                 r"document 1 \(Pod\): apiVersion: expected 'v1' for kind Pod, got 'apps/v1'",
                 id="wrong-api-version"),
    pytest.param(pod(name="Front_End"), r"metadata\.name: 'Front_End' must consist of lower case",
                 id="bad-pod-name"),
    pytest.param("- a\n- b\n", r"document 1: \(document\): expected a mapping", id="not-a-mapping"),
    pytest.param(pod(containers='[{command: ["x", "{{ip:shop/nope-0}}"]}]'),
                 r"spec\.containers\[0\]\.command\[1\]: no pod 'shop/nope-0'",
                 id="placeholder-unknown-pod"),
    pytest.param(pod(containers='[{command: ["x", "{{port:a}}"]}]'),
                 r"command\[1\]: unknown placeholder '\{\{port:a\}\}'", id="placeholder-kind"),
    pytest.param(pod(containers='[{command: ["x", "{{ip:a"]}]'),
                 r"command\[1\]: malformed placeholder", id="placeholder-malformed"),
    pytest.param(pod(containers='[{command: [x], env: [{name: A, valueFrom: {}}]}]'),
                 r"env\[0\]\.valueFrom: not supported", id="env-value-from"),
]


@pytest.mark.parametrize(("text", "pattern"), ERRORS)
def test_errors_name_document_and_field(text: str, pattern: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "t.yaml")
    assert re.search(pattern, str(info.value)), str(info.value)


def test_load_manifest_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: cannot read the manifest"):
        load_manifest(tmp_path / "nope.yaml")


def test_load_manifest_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(docs(NS_SHOP, NS_SHOP))
    with pytest.raises(ManifestError, match=r"^demo\.yaml: document 2"):
        load_manifest(path)
