"""The minimal policy that would allow one denied flow, as YAML to apply.

Minimal means: only the direction(s) that denied it, only that peer, only that port
and protocol. Pods are selected by their `app` label (what people usually key policy
on), or all their own labels when they have none; namespaces by
`kubernetes.io/metadata.name` (Kubernetes) or `k8s:io.kubernetes.pod.namespace`
(Cilium). A deny rule cannot be overridden by any allow, so then no YAML is offered:
the answer names the deny rule to change instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from spyglass.model.policy import Direction, RuleRef
from spyglass.policy.model import PROTO_NAMES
from spyglass.policy.selectors import METADATA_NAME, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX

if TYPE_CHECKING:
    from spyglass.policy.explain import DirectionReport, Explanation, PodEndpoint

FORMATS = ("kubernetes", "cilium")
_ALIASES = {"kubernetes": "kubernetes", "k8s": "kubernetes", "networkpolicy": "kubernetes",
            "cilium": "cilium", "cnp": "cilium", "ciliumnetworkpolicy": "cilium"}


@dataclass(frozen=True)
class Suggestion:
    """`yaml` is empty when a deny rule blocks the flow (then `deny_rules` names it)."""

    format: str
    name: str
    filename: str
    yaml: str
    command: str
    deny_rules: tuple[RuleRef, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "name": self.name, "filename": self.filename,
            "yaml": self.yaml, "command": self.command, "note": self.note,
            "deny_rules": [rule_dict(r) for r in self.deny_rules],
        }


def rule_dict(ref: RuleRef) -> dict[str, Any]:
    return {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name,
            "rule": rule_name(ref), "rule_index": ref.rule_index}


def rule_name(ref: RuleRef) -> str:
    base = "ingress" if ref.direction is Direction.INGRESS else "egress"
    return f"{base}Deny rule {ref.rule_index}" if ref.deny else f"{base} rule {ref.rule_index}"


def policy_display(ref: RuleRef) -> str:
    return f"{ref.kind} {ref.namespace}/{ref.name}" if ref.namespace else f"{ref.kind} {ref.name}"


def normalize_format(fmt: str) -> str:
    found = _ALIASES.get(fmt.lower())
    if found is None:
        raise ValueError(f"unknown policy format {fmt!r}: use {' or '.join(FORMATS)}")
    return found


def own_labels(labels: tuple[str, ...]) -> dict[str, str]:
    """A pod's own labels from its identity labels (not namespace or reserved ones)."""
    out: dict[str, str] = {}
    for label in labels:
        if not label.startswith("k8s:"):
            continue
        key, _, value = label[4:].partition("=")
        if key == NAMESPACE_KEY or key.startswith(NAMESPACE_LABELS_PREFIX):
            continue
        out[key] = value
    return out


def selecting_labels(ep: PodEndpoint) -> dict[str, str]:
    mine = own_labels(ep.labels)
    return {"app": mine["app"]} if "app" in mine else dict(sorted(mine.items()))


def policy_name(ex: Explanation) -> str:
    dst = ex.destination.name if ex.destination.is_pod else \
        ex.destination.ip.replace(".", "-").replace(":", "-")
    text = f"allow-{ex.source.name}-to-{dst}-{ex.port}".lower()
    text = re.sub(r"[^a-z0-9.-]+", "-", text).strip("-.")
    return text[:253].rstrip("-.")


def suggest(ex: Explanation, format: str = "kubernetes") -> Suggestion | None:
    """The policy that would allow exactly this flow; None when it is already allowed."""
    fmt = normalize_format(format)
    blocking = [r for r in ex.reports if not r.decision.allowed or r.decision.audited]
    if not blocking:
        return None
    name = policy_name(ex)
    filename = f"{name}.yaml"
    command = f"spyglass policy apply -f {filename}"
    denies = tuple(r.matched for r in blocking if r.matched is not None and r.matched.deny)
    if denies:
        return Suggestion(fmt, name, filename, "", command, denies,
                          "An allow rule cannot override a deny rule.")
    # Both directions in one namespace would give two policies one name: tell them apart.
    split = len(blocking) > 1 and ex.source.namespace == ex.destination.namespace
    docs = [_document(ex, r, f"{name}-{r.direction.name.lower()}" if split else name, fmt)
            for r in blocking]
    note = ""
    if ex.proto not in PROTO_NAMES or not ex.port:
        note = ("Policies cannot name this protocol or port, so the rule allows every "
                "port and protocol to this peer.")
    text = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
    return Suggestion(fmt, name, filename, text, command, (), note)


def _document(ex: Explanation, report: DirectionReport, name: str, fmt: str) -> dict[str, Any]:
    egress = report.direction is Direction.EGRESS
    me = ex.source if egress else ex.destination
    peer = ex.destination if egress else ex.source
    if fmt == "cilium":
        return _cilium(ex, me, peer, egress, name)
    peer_sel: dict[str, Any]
    if peer.is_pod:
        peer_sel = {"namespaceSelector": {"matchLabels": {METADATA_NAME: peer.namespace}},
                    "podSelector": {"matchLabels": selecting_labels(peer)}}
    else:
        peer_sel = {"ipBlock": {"cidr": _host_cidr(peer.ip)}}
    rule: dict[str, Any] = {"to" if egress else "from": [peer_sel]}
    ports = _k8s_ports(ex)
    if ports:
        rule["ports"] = ports
    direction = "Egress" if egress else "Ingress"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": me.namespace},
        "spec": {
            "podSelector": {"matchLabels": selecting_labels(me)},
            "policyTypes": [direction],
            direction.lower(): [rule],
        },
    }


def _cilium(ex: Explanation, me: PodEndpoint, peer: PodEndpoint, egress: bool,
            name: str) -> dict[str, Any]:
    pre = "to" if egress else "from"
    rule: dict[str, Any]
    if peer.is_pod:
        labels = {f"k8s:{NAMESPACE_KEY}": peer.namespace, **selecting_labels(peer)}
        rule = {f"{pre}Endpoints": [{"matchLabels": labels}]}
    else:
        rule = {f"{pre}CIDR": [_host_cidr(peer.ip)]}
    if ex.proto in PROTO_NAMES and ex.port:
        rule["toPorts"] = [{"ports": [{"port": str(ex.port), "protocol": PROTO_NAMES[ex.proto]}]}]
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": me.namespace},
        "spec": {
            "endpointSelector": {"matchLabels": selecting_labels(me)},
            "egress" if egress else "ingress": [rule],
        },
    }


def _k8s_ports(ex: Explanation) -> list[dict[str, Any]]:
    if ex.proto not in PROTO_NAMES or not ex.port:
        return []
    return [{"protocol": PROTO_NAMES[ex.proto], "port": ex.port}]


def _host_cidr(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"
