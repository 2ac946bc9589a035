"""Policies x identities -> the identity-keyed tables the datapath loads (types.py).

Why a compiler and not an evaluator: the datapath can only do map lookups, so every
selector is resolved here, once per change, into (local identity, direction, remote
identity, proto/port prefix) entries. `explain` reads the very same tables.

Stable choices, so that a recompile after an unrelated change touches few map entries:
- cookies are a hash of what they name (kind/namespace/name/direction/index/deny, or the
  set of selecting policies), probed on a clash, and taken from `previous` when present;
- CIDR identities keep their number from `previous`; new CIDRs get numbers above all
  numbers in use;
- when several rules give the same key, the first rule in a fixed order wins the cookie
  (policies by kind, namespace, name; rules by index), separately for allow and deny.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from spyglass.model.identity import IDENTITY_HOST, IDENTITY_WORLD, RESERVED_IDENTITY_LABELS
from spyglass.model.policy import (
    ANY_IDENTITY,
    CIDR_IDENTITY_BASE,
    CompiledPolicy,
    Direction,
    PolicyKey,
    RuleRef,
)
from spyglass.policy.model import CIDRPeer, EntityPeer, Policy, PortRule, Rule, SelectorPeer
from spyglass.policy.ports import (
    ANY_PORT_PREFIX,
    ANY_PROTOS,
    NamedPorts,
    PortPrefix,
    port_prefixes,
)
from spyglass.policy.selectors import NAMESPACE_KEY

_NS_PREFIX = f"k8s:{NAMESPACE_KEY}="
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
#: PolicyKey's fields as a plain tuple; it equals and hashes like the PolicyKey, so the
#: NamedTuple is built only for the entries that are kept.
_Key = tuple[int, Direction, int, int, int, int]
#: The most datapath entries one policy change may make, unless the agent says otherwise.
DEFAULT_MAX_ENTRIES = 250_000


class PolicyTooLarge(ValueError):
    """A policy set would make more entries than the limit: refused before any work."""


def pod_namespace(labels: Iterable[str]) -> str | None:
    """The namespace an identity's labels name, or None for reserved/CIDR identities."""
    for label in labels:
        if label.startswith(_NS_PREFIX):
            return label[len(_NS_PREFIX):]
    return None


class _Cookies:
    """u32 cookies, never 0, stable: reused from `previous`, else a hash probed on clash."""

    def __init__(self, previous: CompiledPolicy | None) -> None:
        self.by_refs: dict[tuple[RuleRef, ...], int] = {}
        self.out: dict[int, tuple[RuleRef, ...]] = {}
        self._previous = {refs: c for c, refs in previous.cookies.items()} if previous else {}
        self._reserved = set(previous.cookies) if previous else set()

    def get(self, refs: tuple[RuleRef, ...]) -> int:
        found = self.by_refs.get(refs)
        if found is not None:
            return found
        cookie = self._previous.get(refs)
        if cookie is None or cookie in self.out:
            digest = hashlib.sha256(repr(refs).encode()).digest()
            cookie = int.from_bytes(digest[:4], "big") or 1
            while cookie in self.out or cookie in self._reserved:
                cookie = cookie % 0xFFFFFFFF + 1  # 1..2^32-1, skipping 0
        self.by_refs[refs] = cookie
        self.out[cookie] = refs
        return cookie


def _cidr_identities(policies: Sequence[Policy],
                     previous: CompiledPolicy | None) -> dict[str, int]:
    wanted: set[str] = set()
    for pol in policies:
        for rule in _all_rules(pol):
            for peer in rule.peers or ():
                if isinstance(peer, CIDRPeer):
                    wanted.add(peer.cidr)
                    wanted.update(peer.excepts)
    old = previous.cidr_identities if previous else {}
    out = {c: old[c] for c in wanted if c in old}
    next_id = max([CIDR_IDENTITY_BASE - 1, *old.values(), *out.values()]) + 1
    for c in sorted(wanted - out.keys()):
        out[c] = next_id
        next_id += 1
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _all_rules(pol: Policy) -> Iterable[Rule]:
    for spec in pol.specs:
        yield from spec.ingress
        yield from spec.egress
        yield from spec.ingress_deny
        yield from spec.egress_deny


class _Compiler:
    def __init__(self, identities: Mapping[int, Sequence[str]], cidrs: dict[str, int],
                 named: NamedPorts) -> None:
        self.labels = {int(i): tuple(sorted(ls)) for i, ls in identities.items()}
        for num, label in RESERVED_IDENTITY_LABELS.items():
            self.labels.setdefault(num, (label,))
        self.pods = sorted(i for i, ls in self.labels.items() if pod_namespace(ls) is not None)
        self.cidrs = {c: (ipaddress.ip_network(c), num) for c, num in cidrs.items()}
        for c, num in cidrs.items():
            self.labels[num] = (f"cidr:{c}", RESERVED_IDENTITY_LABELS[IDENTITY_WORLD])
        self.named = named
        self._peer_cache: dict[object, frozenset[int]] = {}
        self._prefix_cache: dict[PortRule, list[PortPrefix]] = {}

    def peer_ids(self, peers: tuple[object, ...] | None) -> frozenset[int]:
        """Remote identities a rule's peers cover; {ANY_IDENTITY} when it covers all."""
        if peers is None:
            return frozenset({ANY_IDENTITY})
        out: set[int] = set()
        for peer in peers:
            found = self._peer_cache.get(peer)
            if found is None:
                found = self._peer_cache[peer] = self._one_peer(peer)
            out |= found
        return frozenset({ANY_IDENTITY}) if ANY_IDENTITY in out else frozenset(out)

    def _one_peer(self, peer: object) -> frozenset[int]:
        if isinstance(peer, SelectorPeer):
            return frozenset(i for i, ls in self.labels.items() if peer.selector.matches(ls))
        if isinstance(peer, CIDRPeer):
            net, num = self.cidrs[peer.cidr]
            excepts = [self.cidrs[e][0] for e in peer.excepts]
            out = {num}
            for other, onum in self.cidrs.values():
                if _inside(other, net) and not any(_inside(other, e) or other == e
                                                   for e in excepts):
                    out.add(onum)
            return frozenset(out)
        assert isinstance(peer, EntityPeer)
        if peer.entity == "all":
            return frozenset({ANY_IDENTITY})
        if peer.entity == "host":
            return frozenset({IDENTITY_HOST})
        if peer.entity == "world":
            return frozenset({IDENTITY_WORLD, *(num for _, num in self.cidrs.values())})
        return frozenset({IDENTITY_HOST, *self.pods})  # cluster

    def numeric_prefixes(self, rule: Rule) -> list[PortPrefix]:
        ports = rule.ports or ()
        return [x for p in ports if p.name is None for x in self._prefixes(p)]

    def _prefixes(self, port: PortRule) -> list[PortPrefix]:
        found = self._prefix_cache.get(port)
        if found is None:
            found = self._prefix_cache[port] = port_prefixes(port, None, {})
        return found

    def keys(self, rule: Rule, local: int, direction: Direction) -> Iterable[_Key]:
        """The rule's entries for one local identity, as plain tuples (PolicyKey's fields)."""
        remotes = self.peer_ids(rule.peers)
        if rule.ports is None:
            for r in sorted(remotes):
                yield (local, direction, r, *ANY_PORT_PREFIX)
            return
        named = [p for p in rule.ports if p.name is not None]
        prefixes = self.numeric_prefixes(rule)
        if direction is Direction.INGRESS:
            # Names resolve against the destination: here, the local endpoint.
            prefixes += [x for p in named for x in port_prefixes(p, local, self.named)]
            named = []
        for r in sorted(remotes):
            for proto, port, bits in prefixes:
                yield (local, direction, r, proto, port, bits)
        if named:
            # Egress: names resolve against each destination identity, so the entries
            # name that identity even when the rule covers every peer.
            for r in sorted(self._named_targets(remotes)):
                for p in named:
                    for proto, port, bits in port_prefixes(p, r, self.named):
                        yield (local, direction, r, proto, port, bits)

    def _named_targets(self, remotes: frozenset[int]) -> list[int]:
        targets = self.named.keys() if ANY_IDENTITY in remotes else remotes
        return [t for t in targets if t != ANY_IDENTITY]

    def estimate(self, rule: Rule, locals_: int, direction: Direction) -> int:
        """An upper bound of the entries `keys` yields for `locals_` identities, cheaply."""
        remotes = self.peer_ids(rule.peers)
        if rule.ports is None:
            return locals_ * len(remotes)
        named = sum(1 for p in rule.ports if p.name is not None) * len(ANY_PROTOS)
        numeric = len(self.numeric_prefixes(rule))
        if direction is Direction.INGRESS:
            return locals_ * len(remotes) * (numeric + named)
        return locals_ * (len(remotes) * numeric + len(self._named_targets(remotes)) * named)


def _inside(a: _Net, b: _Net) -> bool:
    """a strictly inside b."""
    return a.version == b.version and a != b and a.subnet_of(b)  # type: ignore[arg-type]


def compile_policies(
    policies: Iterable[Policy],
    identities: Mapping[int, Sequence[str]],
    *,
    named_ports: NamedPorts | None = None,
    audit_namespaces: frozenset[str] = frozenset(),
    audit_all: bool = False,
    previous: CompiledPolicy | None = None,
    max_entries: int | None = None,
) -> CompiledPolicy:
    """Resolve every selector against the known identities into LPM entries and cookies.

    `identities` maps identity -> labels (pods and, optionally, reserved ones); local
    (enforced) identities are the pods among them. Raises ValueError when two policies
    share kind, namespace and name (the caller must replace, not add, a re-applied one),
    and PolicyTooLarge, before generating anything, when the entries would exceed
    `max_entries`.

    The work is linear in the entries generated: a rule identical to an earlier one
    of the same spec and direction adds nothing (the first rule keeps every key) and
    is skipped, and a duplicate key costs a tuple and a dict lookup.
    """
    ordered = sorted(policies, key=lambda p: p.ref)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.ref == b.ref:
            raise ValueError(f"two policies are both named {a.display} (from {a.source or '?'} "
                             f"and {b.source or '?'}); delete one before applying the other")
    cidrs = _cidr_identities(ordered, previous)
    comp = _Compiler(identities, cidrs, named_ports or {})
    cookies = _Cookies(previous)
    jobs = _jobs(ordered, comp)
    if max_entries is not None:
        total = sum(comp.estimate(rule, len(locals_), direction)
                    for _, direction, rule, locals_ in jobs if rule is not None)
        if total > max_entries:
            raise PolicyTooLarge(
                f"these policies would make {total:,} datapath entries (before merging "
                f"duplicates), over the limit of {max_entries:,}; split them, use fewer "
                "peers x ports per rule, or raise the agent's --policy-max-entries")
    allow: dict[PolicyKey, int] = {}
    deny: dict[PolicyKey, int] = {}
    selecting: dict[tuple[int, Direction], list[RuleRef]] = {}
    for pol, direction, rule, locals_ in jobs:
        kind, ns, name = pol.ref
        if rule is None:  # the spec enforces this direction: its locals are selected
            whole = RuleRef(kind, ns, name, direction, -1)
            for local in locals_:
                refs = selecting.setdefault((local, direction), [])
                if whole not in refs:
                    refs.append(whole)
            continue
        cookie = cookies.get((RuleRef(kind, ns, name, direction, rule.index, rule.deny),))
        table = deny if rule.deny else allow
        for local in locals_:
            for key in comp.keys(rule, local, direction):
                if key not in table:
                    table[PolicyKey._make(key)] = cookie
    selected = {k: cookies.get(tuple(refs)) for k, refs in sorted(selecting.items())}
    audit = frozenset(comp.pods) if audit_all else frozenset(
        i for i in comp.pods if pod_namespace(comp.labels[i]) in audit_namespaces)
    return CompiledPolicy(allow=allow, deny=deny, selected=selected, cookies=cookies.out,
                          cidr_identities=cidrs, audit=audit)


_Job = tuple[Policy, Direction, "Rule | None", list[int]]


def _jobs(ordered: Sequence[Policy], comp: _Compiler) -> list[_Job]:
    """(policy, direction, rule or None, locals) in the fixed order cookies follow.

    A None rule marks a direction the spec enforces. Rules identical to an earlier
    one of the same spec and direction are left out: they cannot add a key.
    """
    jobs: list[_Job] = []
    for pol in ordered:
        for spec in pol.specs:
            locals_ = [i for i in comp.pods if spec.subject.matches(comp.labels[i])]
            for direction, enforce, rules, deny_rules in (
                (Direction.INGRESS, spec.enforce_ingress, spec.ingress, spec.ingress_deny),
                (Direction.EGRESS, spec.enforce_egress, spec.egress, spec.egress_deny),
            ):
                if enforce:
                    jobs.append((pol, direction, None, locals_))
                seen: set[tuple[bool, object, object]] = set()
                for rule in (*rules, *deny_rules):
                    shape = (rule.deny, rule.peers, rule.ports)
                    if shape in seen:
                        continue
                    seen.add(shape)
                    jobs.append((pol, direction, rule, locals_))
    return jobs
