"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2) into the model.

Cilium's semantics, as its documentation states them:
- a direction is enforced (default-deny) when the policy has allow or deny rules in it;
  an omitted or empty `ingress`/`egress` list does not apply at all;
- within a rule, all L3 peer fields (fromEndpoints, fromCIDR, fromCIDRSet, fromEntities)
  are a union, ANDed with toPorts; a rule with only toPorts allows every peer on those
  ports; the empty rule `{}` selects the endpoint and allows nothing;
- toPorts protocol defaults to ANY; port 0 or no port = every port.
Features Spyglass cannot enforce (L7 rules, FQDNs, services, nodes, ICMP, auth) are
refused by name rather than silently ignored: a silently dropped rule is an open hole
or a mystery drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spyglass.model.safeload import describe
from spyglass.policy import selectors
from spyglass.policy.fields import (
    Where,
    cidr,
    cidr_peer,
    known_keys,
    mapping,
    port_rule,
    selector,
    seq,
)
from spyglass.policy.model import (
    ENTITIES,
    PROTO_ANY,
    CIDRPeer,
    EntityPeer,
    Peer,
    Policy,
    PortRule,
    Rule,
    SelectorPeer,
    Spec,
)

_SPEC_KEYS = ("endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny",
              "description", "labels", "enableDefaultDeny")
_UNSUPPORTED_SPEC = {
    "nodeSelector": "Spyglass enforces policy on pods only (no host firewall); use "
                    "endpointSelector",
}
_UNSUPPORTED_RULE = {
    k: "Spyglass enforces L3/L4 identity and CIDR policy only; remove it"
    for k in ("fromRequires", "toRequires", "fromGroups", "toGroups", "fromNodes", "toNodes",
              "toServices", "toFQDNs", "icmps", "authentication")
}
_UNSUPPORTED_PORTS = {
    k: "Spyglass has no L7 proxy; keep only 'ports' in toPorts"
    for k in ("rules", "listener", "originatingTLS", "terminatingTLS", "serverNames")
}


def parse_cilium(w: Where, obj: Any) -> Policy:
    body = obj.body
    if "spec" in body and "specs" in body:
        w.fail("specs", "give either spec or specs, not both", "move the rules into one of them")
    if "specs" in body:
        raw_specs = seq(w, body["specs"], "specs", "[{endpointSelector: {}, ingress: [...]}]")
        paths = [f"specs[{i}]" for i in range(len(raw_specs))]
        if not raw_specs:
            w.fail("specs", "the list is empty", "give at least one spec")
    elif "spec" in body:
        raw_specs, paths = [body["spec"]], ["spec"]
    else:
        w.fail("spec", "required", "add spec: {endpointSelector: {...}, ingress: [...]}")
    counters = {"ingress": 0, "egress": 0, "ingressDeny": 0, "egressDeny": 0}
    specs = tuple(_spec(w, raw, path, obj.namespace, counters)
                  for raw, path in zip(raw_specs, paths, strict=True))
    return Policy(obj.kind, obj.namespace, obj.name, specs, source=w.source, doc=obj.doc)


def _spec(w: Where, raw: Any, path: str, namespace: str, counters: dict[str, int]) -> Spec:
    data = mapping(w, raw, path, "{endpointSelector: {matchLabels: {app: web}}, ingress: [...]}")
    known_keys(w, data, path, _SPEC_KEYS, _UNSUPPORTED_SPEC)
    if "endpointSelector" not in data:
        w.fail(f"{path}.endpointSelector", "required",
               "use endpointSelector: {} to select every pod")
    subject = selectors.cilium_subject(
        selector(w, data["endpointSelector"], f"{path}.endpointSelector"), namespace)
    lists: dict[str, tuple[Rule, ...]] = {}
    for key in ("ingress", "ingressDeny", "egress", "egressDeny"):
        items = seq(w, data.get(key), f"{path}.{key}", "[{fromEndpoints: [...]}]")
        rules = []
        for item in items:
            index = counters[key]
            counters[key] += 1
            rules.append(_rule(w, item, f"{path}.{key}[{index}]", index, key, namespace))
        lists[key] = tuple(rules)
    has_in = bool(lists["ingress"] or lists["ingressDeny"])
    has_eg = bool(lists["egress"] or lists["egressDeny"])
    enforce_in, enforce_eg = _default_deny(w, data.get("enableDefaultDeny"), path,
                                           has_in, has_eg, lists)
    return Spec(subject, lists["ingress"], lists["egress"], lists["ingressDeny"],
                lists["egressDeny"], enforce_in, enforce_eg)


def _default_deny(w: Where, raw: Any, path: str, has_in: bool, has_eg: bool,
                  lists: Mapping[str, tuple[Rule, ...]]) -> tuple[bool, bool]:
    """enableDefaultDeny: false is honoured only where the table can express it.

    The table allows everything for an endpoint that no policy makes default-deny, so a
    deny rule without default-deny cannot be enforced; that combination is refused.
    """
    if raw is None:
        return has_in, has_eg
    data = mapping(w, raw, f"{path}.enableDefaultDeny", "{ingress: true, egress: false}")
    known_keys(w, data, f"{path}.enableDefaultDeny", ("ingress", "egress"))
    out = []
    for direction, has in (("ingress", has_in), ("egress", has_eg)):
        value = data.get(direction, has)
        if not isinstance(value, bool):
            w.fail(f"{path}.enableDefaultDeny.{direction}",
                   f"expected true or false, got {describe(value)}")
        if not value and lists[f"{direction}Deny"]:
            w.fail(f"{path}.enableDefaultDeny.{direction}",
                   f"{direction}Deny rules without default deny are not supported by Spyglass",
                   "set it to true, or move the deny rules to another policy")
        out.append(value)
    return out[0], out[1]


def _rule(w: Where, raw: Any, path: str, index: int, key: str, namespace: str) -> Rule:
    ingress = key.startswith("ingress")
    deny = key.endswith("Deny")
    pre = "from" if ingress else "to"
    example = "{fromEndpoints: [{matchLabels: {app: web}}]}" if ingress else \
        "{toEndpoints: [{matchLabels: {app: db}}]}"
    data = mapping(w, raw if raw is not None else {}, path, example)
    allowed = (f"{pre}Endpoints", f"{pre}CIDR", f"{pre}CIDRSet", f"{pre}Entities", "toPorts")
    known_keys(w, data, path, allowed, _UNSUPPORTED_RULE)
    peers: list[Peer] = []
    has_l3 = False
    for i, item in enumerate(seq(w, data.get(f"{pre}Endpoints"), f"{path}.{pre}Endpoints")):
        has_l3 = True
        sel = selector(w, item, f"{path}.{pre}Endpoints[{i}]")
        peers.append(SelectorPeer(selectors.cilium_peer(sel, namespace)))
    for i, item in enumerate(seq(w, data.get(f"{pre}CIDR"), f"{path}.{pre}CIDR", "[10.0.0.0/8]")):
        has_l3 = True
        peers.append(CIDRPeer(str(cidr(w, item, f"{path}.{pre}CIDR[{i}]"))))
    for i, item in enumerate(seq(w, data.get(f"{pre}CIDRSet"), f"{path}.{pre}CIDRSet",
                                 "[{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]")):
        has_l3 = True
        sub = f"{path}.{pre}CIDRSet[{i}]"
        entry = mapping(w, item, sub, "{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}")
        known_keys(w, entry, sub, ("cidr", "except"), {
            "cidrGroupRef": "CIDR groups are not supported by Spyglass; list the CIDRs"})
        if "cidr" not in entry:
            w.fail(f"{sub}.cidr", "required", "write it like cidr: 10.0.0.0/8")
        peers.append(cidr_peer(w, entry["cidr"], entry.get("except"), sub, "except"))
    for i, item in enumerate(seq(w, data.get(f"{pre}Entities"), f"{path}.{pre}Entities",
                                 "[world]")):
        has_l3 = True
        if item not in ENTITIES:
            w.fail(f"{path}.{pre}Entities[{i}]", f"entity {describe(item)} is not supported",
                   f"use one of {', '.join(ENTITIES)}")
        peers.append(EntityPeer(item))
    ports = _to_ports(w, data.get("toPorts"), f"{path}.toPorts")
    if not has_l3:
        # toPorts alone: every peer on those ports. Nothing at all: the empty rule.
        return Rule(index, None if ports is not None else (), ports, deny)
    return Rule(index, tuple(peers), ports, deny)


def _to_ports(w: Where, raw: Any, path: str) -> tuple[PortRule, ...] | None:
    if raw is None:
        return None
    out: list[PortRule] = []
    for i, item in enumerate(seq(w, raw, path, "[{ports: [{port: '80', protocol: TCP}]}]")):
        sub = f"{path}[{i}]"
        entry = mapping(w, item, sub, "{ports: [{port: '80', protocol: TCP}]}")
        known_keys(w, entry, sub, ("ports",), _UNSUPPORTED_PORTS)
        for j, p in enumerate(seq(w, entry.get("ports"), f"{sub}.ports",
                                  "[{port: '80', protocol: TCP}]")):
            psub = f"{sub}.ports[{j}]"
            pdata = mapping(w, p, psub, "{port: '80', protocol: TCP}")
            known_keys(w, pdata, psub, ("port", "protocol", "endPort"))
            out.append(port_rule(w, pdata, psub, default_proto=PROTO_ANY, allow_any=True))
    return tuple(out) or None
