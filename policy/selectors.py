"""Selectors over identity labels, with each kind's namespace scoping made explicit.

An identity's labels carry the pod's namespace (`k8s:io.kubernetes.pod.namespace=N`) and
its namespace's labels (`k8s:io.cilium.k8s.namespace.labels.<key>=<value>`), so every
selector can be answered from identity labels alone, as Cilium does. The only work is
to add the namespace terms that each policy kind implies:

- NetworkPolicy podSelector: the policy's namespace. namespaceSelector: a selector over
  namespace labels, and only pods (the namespace label must exist).
- CiliumNetworkPolicy endpointSelector: the policy's namespace. fromEndpoints/toEndpoints:
  the policy's namespace unless the selector names the namespace or namespace labels,
  or reserved labels (Cilium's getEndpointSelector rule).
- CiliumClusterwideNetworkPolicy peers: any namespace, but only pods unless reserved
  labels are named.
"""

from __future__ import annotations

from spyglass.model.labels import LabelSelector, Requirement

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
#: The label Kubernetes puts on every namespace; it is the namespace's own name.
METADATA_NAME = "kubernetes.io/metadata.name"


def _and(a: LabelSelector, *reqs: Requirement) -> LabelSelector:
    return LabelSelector(a.requirements + reqs)


def in_namespace(sel: LabelSelector, namespace: str) -> LabelSelector:
    return _and(sel, Requirement(NAMESPACE_KEY, "=", (namespace,), "k8s"))


def pods_only(sel: LabelSelector) -> LabelSelector:
    return _and(sel, Requirement(NAMESPACE_KEY, "exists", (), "k8s"))


def namespace_selector(sel: LabelSelector) -> LabelSelector:
    """A namespaceSelector, rewritten onto the namespace labels each identity carries.

    `kubernetes.io/metadata.name` becomes the pod's namespace label, since Kubernetes
    sets it on every namespace to the namespace's name.
    """
    reqs = []
    for r in sel.requirements:
        key = NAMESPACE_KEY if r.key == METADATA_NAME else NAMESPACE_LABELS_PREFIX + r.key
        reqs.append(Requirement(key, r.op, r.values, "k8s" if r.source is None else r.source))
    return pods_only(LabelSelector(tuple(reqs)))


def _names_namespace(sel: LabelSelector) -> bool:
    return any(r.key == NAMESPACE_KEY and r.source in (None, "k8s") for r in sel.requirements)


def _names_namespace_labels(sel: LabelSelector) -> bool:
    return any(r.key.startswith(NAMESPACE_LABELS_PREFIX) for r in sel.requirements)


def _names_reserved(sel: LabelSelector) -> bool:
    return any(r.source == "reserved" for r in sel.requirements)


def cilium_peer(sel: LabelSelector, policy_namespace: str) -> LabelSelector:
    """fromEndpoints/toEndpoints scoping (policy_namespace "" = clusterwide)."""
    if _names_reserved(sel) or _names_namespace(sel):
        return sel
    if not policy_namespace:
        return pods_only(sel)
    if _names_namespace_labels(sel):
        return sel
    return in_namespace(sel, policy_namespace)


def cilium_subject(sel: LabelSelector, policy_namespace: str) -> LabelSelector:
    """endpointSelector: a namespaced policy only ever applies in its own namespace."""
    return in_namespace(sel, policy_namespace) if policy_namespace else sel
