"""A reference evaluator for network policy: a TEST ORACLE, not production code.

It is a second, deliberately plain reading of the semantics, written from the Kubernetes
NetworkPolicy reference and Cilium's policy docs (policy language, deny policies, entities),
and it shares no code with `spyglass.policy`: policies stay plain dicts (parsed YAML),
selectors are matched here, and a probe is answered by walking the rules directly, with no
identities, no tables and no prefixes. Where the two disagree, one of them is wrong.

The semantics, as read from the docs:
- A pod is isolated in a direction once any policy selects it in that direction; an isolated
  pod allows only what some rule of a selecting policy allows (the union), and deny rules
  (Cilium) beat every allow. A pod nobody selects allows everything in that direction.
- Egress is checked at the source pod, ingress at the destination pod; a non-pod side
  (an IP) has no policy of its own.
- NetworkPolicy: `policyTypes` (missing or empty) defaults to Ingress, plus Egress when
  `egress` has rules; a
  missing or empty `from`/`to` means every peer, missing or empty `ports` every port; peers
  are ORed; podSelector alone = pods of the policy's namespace, namespaceSelector alone =
  every pod of the matching namespaces, both in one peer = both must hold (AND); ipBlock
  (with `except`) matches addresses outside the cluster's pods; a port may be a number (with
  `endPort` for a range) or a name looked up on the destination pod; protocol defaults to TCP.
- CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy: a direction is enforced when the
  policy has (non-empty) `ingress`/`ingressDeny` (resp. egress) rules; in a rule the L3 part
  (fromEndpoints, fromCIDR, fromCIDRSet, fromEntities) and the L4 part (toPorts) must both
  match; a rule with only toPorts allows that port from anyone; an empty rule `{}` allows
  nothing. A namespaced policy's endpointSelector always selects in its own namespace (a
  namespace match in it is replaced), and its peer selectors only see its own namespace
  unless they name `io.kubernetes.pod.namespace`. Entities: world = outside the cluster,
  host = the node, cluster = every pod and the node, all = everything. CIDRs never match
  pods (pods have their own identity). Protocol defaults to ANY.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
K8S_KINDS = ("NetworkPolicy",)
CILIUM_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    #: named container ports: name -> (protocol name, port)
    ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class World:
    """Pods, namespace labels and policies (plain dicts, as YAML loads them)."""

    pods: Sequence[Pod]
    namespaces: Mapping[str, Mapping[str, str]]
    policies: Sequence[Mapping[str, Any]]
    host_ips: frozenset[str] = frozenset()

    def pod(self, ref: str) -> Pod | None:
        """A pod by "namespace/name" or by IP."""
        for pod in self.pods:
            if ref in (f"{pod.namespace}/{pod.name}", pod.ip):
                return pod
        return None


@dataclass(frozen=True)
class Side:
    """One direction's answer, with the reason in words (printed by the differential test)."""

    allowed: bool
    why: str


@dataclass(frozen=True)
class Answer:
    allowed: bool
    egress: Side
    ingress: Side


def decide(world: World, src: str, dst: str, proto: str | int, port: int) -> Answer:
    """May `src` open a connection to `dst` on proto/port? src and dst: "ns/name" or an IP."""
    proto_num = _proto_number(proto)
    src_pod, dst_pod = world.pod(src), world.pod(dst)
    src_peer: Pod | str = src_pod or src
    dst_peer: Pod | str = dst_pod or dst
    egress = (_direction(world, src_pod, dst_peer, "egress", proto_num, port, dst_pod)
              if src_pod else Side(True, "source is not a pod"))
    ingress = (_direction(world, dst_pod, src_peer, "ingress", proto_num, port, dst_pod)
               if dst_pod else Side(True, "destination is not a pod"))
    return Answer(egress.allowed and ingress.allowed, egress, ingress)


def allowed(world: World, src: str, dst: str, proto: str | int, port: int) -> bool:
    return decide(world, src, dst, proto, port).allowed


# -- one direction ----------------------------------------------------------------


def _direction(world: World, local: Pod, remote: Pod | str, direction: str, proto: int,
               port: int, dst_pod: Pod | None) -> Side:
    selecting: list[str] = []
    allows: list[str] = []
    denies: list[str] = []
    for policy in world.policies:
        kind = policy.get("kind", "")
        meta = policy.get("metadata") or {}
        name = f"{kind} {meta.get('namespace', '')}/{meta.get('name', '')}"
        if kind in K8S_KINDS:
            spec = policy.get("spec") or {}
            if not _k8s_selects(spec, meta.get("namespace", "default"), local, direction):
                continue
            selecting.append(name)
            for i, rule in enumerate(spec.get(direction) or []):
                if _k8s_rule_matches(world, rule or {}, direction, meta.get("namespace",
                                     "default"), remote, proto, port, dst_pod):
                    allows.append(f"{name} {direction}[{i}]")
        elif kind in CILIUM_KINDS:
            namespace = meta.get("namespace") if kind == "CiliumNetworkPolicy" else None
            specs = list(policy.get("specs") or []) + ([policy["spec"]] if policy.get("spec")
                                                       else [])
            for spec in specs:
                if not _cilium_selects(world, spec, namespace, local, direction):
                    continue
                selecting.append(name)
                for section, bucket in ((direction, allows), (f"{direction}Deny", denies)):
                    for i, rule in enumerate(spec.get(section) or []):
                        if _cilium_rule_matches(world, rule or {}, direction, namespace, remote,
                                                proto, port):
                            bucket.append(f"{name} {section}[{i}]")
    if not selecting:
        return Side(True, f"{direction}: not selected by any policy")
    if denies:
        return Side(False, f"{direction}: denied by {denies[0]}")
    if allows:
        return Side(True, f"{direction}: allowed by {allows[0]}")
    return Side(False, f"{direction}: default deny (selected by {', '.join(selecting)})")


# -- Kubernetes NetworkPolicy ------------------------------------------------------


def _k8s_selects(spec: Mapping[str, Any], namespace: str, pod: Pod, direction: str) -> bool:
    if pod.namespace != namespace:
        return False
    if not _selector_matches(spec.get("podSelector") or {}, pod.labels):
        return False
    types = spec.get("policyTypes")
    if not types:  # missing or [] (the API server defaults both the same way)
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return direction.capitalize() in types


def _k8s_rule_matches(world: World, rule: Mapping[str, Any], direction: str, namespace: str,
                      remote: Pod | str, proto: int, port: int, dst_pod: Pod | None) -> bool:
    peers = rule.get("from" if direction == "ingress" else "to") or []
    if peers and not any(_k8s_peer_matches(world, p or {}, namespace, remote) for p in peers):
        return False
    ports = rule.get("ports") or []
    return not ports or any(_k8s_port_matches(p or {}, proto, port, dst_pod) for p in ports)


def _k8s_peer_matches(world: World, peer: Mapping[str, Any], namespace: str,
                      remote: Pod | str) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"] or {}
        return isinstance(remote, str) and _in_cidr(remote, block.get("cidr", ""),
                                                     block.get("except") or [])
    if not isinstance(remote, Pod):
        return False
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if ns_sel is None:
        in_namespace = remote.namespace == namespace
    else:
        in_namespace = _selector_matches(ns_sel, world.namespaces.get(remote.namespace, {}))
    return in_namespace and (pod_sel is None or _selector_matches(pod_sel, remote.labels))


def _k8s_port_matches(entry: Mapping[str, Any], proto: int, port: int,
                      dst_pod: Pod | None) -> bool:
    if _proto_number(entry.get("protocol", "TCP")) != proto:
        return False
    want = entry.get("port")
    if want is None:
        return True
    if isinstance(want, str) and not want.isdigit():
        named = dst_pod.ports.get(want) if dst_pod else None
        return named is not None and _proto_number(named[0]) == proto and named[1] == port
    low = int(want)
    return low <= port <= int(entry.get("endPort", low))


# -- Cilium -------------------------------------------------------------------------


def _cilium_labels(world: World, pod: Pod) -> dict[str, str]:
    """The labels a Cilium selector sees: the pod's, its namespace, the namespace's labels."""
    out = dict(pod.labels)
    out[NAMESPACE_KEY] = pod.namespace
    for key, value in world.namespaces.get(pod.namespace, {}).items():
        out[NAMESPACE_LABELS_PREFIX + key] = value
    return out


def _cilium_selector(world: World, selector: Mapping[str, Any], namespace: str | None,
                     pod: Pod) -> bool:
    """A namespaced policy's selector is confined to its namespace unless it names one."""
    sel = _strip_sources(selector)
    names_namespace = NAMESPACE_KEY in (sel.get("matchLabels") or {}) or any(
        e.get("key") == NAMESPACE_KEY for e in sel.get("matchExpressions") or [])
    if namespace is not None and not names_namespace and pod.namespace != namespace:
        return False
    return _selector_matches(sel, _cilium_labels(world, pod))


def _cilium_selects(world: World, spec: Mapping[str, Any], namespace: str | None, pod: Pod,
                    direction: str) -> bool:
    """The subject of a namespaced policy is always in the policy's namespace: Cilium replaces
    a namespace match in its endpointSelector by the policy's own (and warns)."""
    if "endpointSelector" not in spec:
        return False  # nodeSelector policies are for hosts, not pods
    if not (spec.get(direction) or spec.get(f"{direction}Deny")):
        return False
    if namespace is not None:
        if pod.namespace != namespace:
            return False
        sel = _strip_sources(spec["endpointSelector"] or {})
        sel["matchLabels"].pop(NAMESPACE_KEY, None)
        sel["matchExpressions"] = [e for e in sel["matchExpressions"]
                                   if e.get("key") != NAMESPACE_KEY]
        return _selector_matches(sel, _cilium_labels(world, pod))
    return _cilium_selector(world, spec["endpointSelector"] or {}, None, pod)


def _cilium_rule_matches(world: World, rule: Mapping[str, Any], direction: str,
                         namespace: str | None, remote: Pod | str, proto: int,
                         port: int) -> bool:
    pre = "from" if direction == "ingress" else "to"
    endpoints = rule.get(f"{pre}Endpoints") or []
    cidrs = [{"cidr": c} for c in rule.get(f"{pre}CIDR") or []]
    cidrs += list(rule.get(f"{pre}CIDRSet") or [])
    entities = rule.get(f"{pre}Entities") or []
    to_ports = rule.get("toPorts") or []
    if not (endpoints or cidrs or entities):
        if not to_ports:
            return False  # `{}` allows nothing: it only makes the endpoint default-deny
        l3 = True         # L4-only rule: any peer on these ports
    else:
        l3 = (any(isinstance(remote, Pod) and _cilium_selector(world, s or {}, namespace, remote)
                  for s in endpoints)
              or any(isinstance(remote, str) and _in_cidr(remote, c.get("cidr", ""),
                                                          c.get("except") or [])
                     for c in cidrs)
              or any(_entity_matches(world, e, remote) for e in entities))
    if not l3:
        return False
    if not to_ports:
        return True
    return any(_cilium_port_matches(p or {}, proto, port)
               for entry in to_ports for p in (entry or {}).get("ports") or [{}])


def _cilium_port_matches(entry: Mapping[str, Any], proto: int, port: int) -> bool:
    want_proto = str(entry.get("protocol", "ANY")).upper()
    if want_proto != "ANY" and _proto_number(want_proto) != proto:
        return False
    if want_proto == "ANY" and proto not in PROTOCOLS.values():
        return False
    low = int(entry.get("port", 0) or 0)
    if low == 0:
        return True
    return low <= port <= int(entry.get("endPort", low) or low)


def _entity_matches(world: World, entity: str, remote: Pod | str) -> bool:
    is_pod = isinstance(remote, Pod)
    is_host = isinstance(remote, str) and remote in world.host_ips
    return {"all": True, "cluster": is_pod or is_host, "host": is_host,
            "world": not is_pod and not is_host}.get(entity, False)


# -- shared small pieces ------------------------------------------------------------


def _strip_sources(selector: Mapping[str, Any]) -> dict[str, Any]:
    """Cilium keys may carry a source ("k8s:app"); pods' labels here have none."""
    def key(k: str) -> str:
        for source in ("k8s:", "any:"):
            if k.startswith(source):
                return k[len(source):]
        return k
    return {
        "matchLabels": {key(k): v for k, v in (selector.get("matchLabels") or {}).items()},
        "matchExpressions": [{**e, "key": key(e.get("key", ""))}
                             for e in selector.get("matchExpressions") or []],
    }


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector: every matchLabels pair and every expression must hold."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = [str(v) for v in expr.get("values") or []]
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"oracle: unknown selector operator {op!r}")
    return True


def _in_cidr(ip: str, cidr: str, excepts: Iterable[str]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e, strict=False) for e in excepts)


def _proto_number(proto: str | int) -> int:
    if isinstance(proto, int):
        return proto
    try:
        return PROTOCOLS[proto.upper()]
    except KeyError:
        raise ValueError(f"oracle: unknown protocol {proto!r}; use TCP, UDP or SCTP") from None
