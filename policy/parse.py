"""Policy documents in, `Policy` models out: Kubernetes NetworkPolicy here, Cilium in cilium.py.

Policies arrive from the lab manifest (already split into raw objects) and from
`spyglass policy apply -f FILE` (YAML text). Either way everything is parsed before
anything is returned, and the first bad field raises `PolicyError`, so a bad file is
refused whole and nothing is half-applied.

NetworkPolicy follows networking.k8s.io/v1 to the letter where it matters for
enforcement: policyTypes defaults to Ingress, plus Egress when the egress list is
non-empty; a missing or empty `from`/`to` means every peer and a missing or empty
`ports` every port; an empty rule list with that direction enforced allows nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from spyglass.model import k8s_names
from spyglass.model.safeload import describe, load_yaml_all
from spyglass.policy import selectors
from spyglass.policy.fields import (
    PolicyError,
    Where,
    cidr_peer,
    known_keys,
    mapping,
    port_rule,
    selector,
    seq,
)
from spyglass.policy.model import (
    KIND_CCNP,
    KIND_CNP,
    KIND_NETWORK_POLICY,
    KINDS,
    Peer,
    Policy,
    PortRule,
    Rule,
    SelectorPeer,
    Spec,
)

__all__ = ["PolicyDocument", "PolicyError", "parse_policies", "parse_policy_yaml"]

API_VERSIONS = {KIND_NETWORK_POLICY: "networking.k8s.io/v1", KIND_CNP: "cilium.io/v2",
                KIND_CCNP: "cilium.io/v2"}


class PolicyObject(Protocol):
    """What the lab's RawObject offers; anything of this shape can be parsed."""

    @property
    def api_version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def doc(self) -> int: ...


@dataclass(frozen=True)
class PolicyDocument:
    """One policy document read from YAML text (the same shape as the lab's RawObject)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    body: dict[str, Any]
    doc: int


def parse_policy_yaml(text: str, source: str = "<policy>") -> list[Policy]:
    """Parse multi-document YAML holding only policies; PolicyError on anything wrong."""
    try:
        docs = load_yaml_all(text, what=source)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise PolicyError(source, 0, "", where, f"YAML syntax error: {what}",
                          "fix the YAML; nothing was applied") from e
    except yaml.YAMLError as e:
        raise PolicyError(source, 0, "", "(file)", f"YAML error: {e}",
                          "fix the YAML; nothing was applied") from e
    objects = [_document(Where(source, n), data)
               for n, data in enumerate(docs, start=1) if data is not None]
    if not objects:
        raise PolicyError(source, 0, "", "(file)", "no policy documents found",
                          "give at least one NetworkPolicy or CiliumNetworkPolicy")
    return parse_policies(objects, source)


def parse_policies(objects: Iterable[PolicyObject], source: str = "<policy>") -> list[Policy]:
    """Parse every object first; raise on the first error, so nothing is half-applied."""
    out: list[Policy] = []
    seen: dict[tuple[str, str, str], int] = {}
    for obj in objects:
        w = Where(source, obj.doc, _ident(obj.kind, obj.namespace, obj.name))
        key = (obj.kind, obj.namespace, obj.name)
        if key in seen:
            w.fail("metadata.name", f"duplicate {w.ident} (first in document {seen[key]})",
                   "give each policy its own name")
        seen[key] = obj.doc
        if obj.kind == KIND_NETWORK_POLICY:
            out.append(_network_policy(w, obj))
        elif obj.kind in (KIND_CNP, KIND_CCNP):
            from spyglass.policy.cilium import parse_cilium  # cilium.py imports this module

            out.append(parse_cilium(w, obj))
        else:
            w.fail("kind", f"{obj.kind!r} is not a policy kind", f"use one of {', '.join(KINDS)}")
    return out


def _ident(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _document(w: Where, data: Any) -> PolicyDocument:
    if not isinstance(data, Mapping):
        w.fail("(document)", f"expected a policy mapping with apiVersion, kind, metadata and "
               f"spec, got {describe(data)}")
    kind = data.get("kind")
    if kind not in KINDS:
        w.fail("kind", f"{describe(kind)} is not a policy kind", f"use one of {', '.join(KINDS)}")
    w.ident = str(kind)
    if data.get("apiVersion") != API_VERSIONS[kind]:
        w.fail("apiVersion", f"expected {API_VERSIONS[kind]!r} for {kind}, "
               f"got {describe(data.get('apiVersion'))}", f"write apiVersion: {API_VERSIONS[kind]}")
    meta = mapping(w, data.get("metadata"), "metadata", "{name: allow-web, namespace: shop}")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        w.fail("metadata.name", f"expected a name, got {describe(name)}",
               "every policy needs metadata.name")
    namespace = ""
    if kind != KIND_CCNP:
        namespace = meta.get("namespace", "default")
        if not isinstance(namespace, str) or k8s_names.dns1123_label(namespace):
            w.fail("metadata.namespace", f"{describe(namespace)} is not a namespace name",
                   "use lower-case letters, digits and '-'")
    elif "namespace" in meta:
        w.fail("metadata.namespace", f"{kind} is cluster-wide and has no namespace",
               "remove metadata.namespace, or use a CiliumNetworkPolicy")
    w.ident = _ident(kind, namespace, name)
    err = k8s_names.dns1123_subdomain(name)
    if err:
        w.fail("metadata.name", f"{name!r} {err}")
    return PolicyDocument(str(data["apiVersion"]), kind, name, namespace, dict(data), w.doc)


def _network_policy(w: Where, obj: PolicyObject) -> Policy:
    spec = mapping(w, obj.body.get("spec"), "spec", "{podSelector: {}, policyTypes: [Ingress]}")
    known_keys(w, spec, "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    if "podSelector" not in spec:
        w.fail("spec.podSelector", "required", "use podSelector: {} to select every pod")
    subject = selectors.in_namespace(selector(w, spec["podSelector"], "spec.podSelector"),
                                     obj.namespace)
    ingress = seq(w, spec.get("ingress"), "spec.ingress", "[{from: [...], ports: [...]}]")
    egress = seq(w, spec.get("egress"), "spec.egress", "[{to: [...], ports: [...]}]")
    types = _policy_types(w, spec.get("policyTypes"), bool(egress))
    in_rules = tuple(_np_rule(w, r, i, "ingress", "from", obj.namespace)
                     for i, r in enumerate(ingress))
    eg_rules = tuple(_np_rule(w, r, i, "egress", "to", obj.namespace)
                     for i, r in enumerate(egress))
    # A direction not in policyTypes is ignored entirely, rules and all (as Kubernetes does).
    return Policy(obj.kind, obj.namespace, obj.name, (Spec(
        subject,
        ingress=in_rules if "Ingress" in types else (),
        egress=eg_rules if "Egress" in types else (),
        enforce_ingress="Ingress" in types,
        enforce_egress="Egress" in types,
    ),), source=w.source, doc=obj.doc)


def _policy_types(w: Where, raw: Any, has_egress: bool) -> frozenset[str]:
    if raw is None:
        return frozenset({"Ingress", "Egress"} if has_egress else {"Ingress"})
    items = seq(w, raw, "spec.policyTypes", "[Ingress, Egress]")
    for i, t in enumerate(items):
        if t not in ("Ingress", "Egress"):
            w.fail(f"spec.policyTypes[{i}]", f"unknown policy type {describe(t)}",
                   "use Ingress or Egress (capitalised)")
    if not items:
        return frozenset({"Ingress", "Egress"} if has_egress else {"Ingress"})
    return frozenset(items)


def _np_rule(w: Where, raw: Any, index: int, direction: str, peer_key: str,
             namespace: str) -> Rule:
    path = f"spec.{direction}[{index}]"
    data = mapping(w, raw if raw is not None else {}, path, f"{{{peer_key}: [...], ports: [...]}}")
    known_keys(w, data, path, (peer_key, "ports"))
    raw_peers = seq(w, data.get(peer_key), f"{path}.{peer_key}", "[{podSelector: {}}]")
    peers = tuple(_np_peer(w, p, f"{path}.{peer_key}[{i}]", namespace)
                  for i, p in enumerate(raw_peers))
    raw_ports = seq(w, data.get("ports"), f"{path}.ports", "[{protocol: TCP, port: 8080}]")
    ports: list[PortRule] = []
    for i, p in enumerate(raw_ports):
        sub = f"{path}.ports[{i}]"
        entry = mapping(w, p, sub, "{protocol: TCP, port: 8080}")
        known_keys(w, entry, sub, ("protocol", "port", "endPort"))
        ports.append(port_rule(w, entry, sub, default_proto="TCP", allow_any=False))
    return Rule(index, peers or None, tuple(ports) or None)


def _np_peer(w: Where, raw: Any, path: str, namespace: str) -> Peer:
    data = mapping(w, raw, path, "{podSelector: {matchLabels: {app: web}}}")
    known_keys(w, data, path, ("podSelector", "namespaceSelector", "ipBlock"))
    if not data:
        w.fail(path, "an empty peer selects nothing and Kubernetes refuses it",
               "give podSelector, namespaceSelector or ipBlock (podSelector: {} = all pods "
               "in this namespace)")
    if "ipBlock" in data:
        if len(data) > 1:
            w.fail(path, "ipBlock cannot be combined with podSelector or namespaceSelector",
                   "put the ipBlock in a peer of its own")
        block = mapping(w, data["ipBlock"], f"{path}.ipBlock", "{cidr: 10.0.0.0/8}")
        known_keys(w, block, f"{path}.ipBlock", ("cidr", "except"))
        if "cidr" not in block:
            w.fail(f"{path}.ipBlock.cidr", "required", "write it like cidr: 10.0.0.0/8")
        return cidr_peer(w, block["cidr"], block.get("except"), f"{path}.ipBlock", "except")
    pods = selector(w, data.get("podSelector"), f"{path}.podSelector")
    if "namespaceSelector" not in data:
        return SelectorPeer(selectors.in_namespace(pods, namespace))
    ns = selectors.namespace_selector(
        selector(w, data["namespaceSelector"], f"{path}.namespaceSelector"))
    return SelectorPeer(type(ns)(pods.requirements + ns.requirements))
