"""Parsed policy: one small model for Kubernetes and Cilium policies alike.

Both kinds say the same things (who is selected, which peers on which ports, allow or
deny), so the parser lowers both into these dataclasses and the compiler knows only
this model. Selectors are kept as `LabelSelector`s over identity labels, with the
namespace restrictions that each kind implies already added by the parser, so the
compiler never needs to know which kind a rule came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from spyglass.model.labels import LabelSelector

KIND_NETWORK_POLICY = "NetworkPolicy"
KIND_CNP = "CiliumNetworkPolicy"
KIND_CCNP = "CiliumClusterwideNetworkPolicy"
KINDS = (KIND_NETWORK_POLICY, KIND_CNP, KIND_CCNP)

#: IANA protocol numbers, as the datapath keys them.
PROTO_NUMBERS: dict[str, int] = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTO_NAMES: dict[int, str] = {v: k for k, v in PROTO_NUMBERS.items()}
PROTO_ANY = "ANY"

#: Cilium entities Spyglass knows (its lab has no remote nodes, health or kube-apiserver).
ENTITIES = ("world", "host", "cluster", "all")


@dataclass(frozen=True, slots=True)
class SelectorPeer:
    """Pods (identities) whose labels match; namespace scoping is already in `selector`."""

    selector: LabelSelector


@dataclass(frozen=True, slots=True)
class CIDRPeer:
    """Addresses outside the pods: a CIDR minus its `excepts` (canonical text)."""

    cidr: str
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EntityPeer:
    """A Cilium entity: world, host, cluster or all."""

    entity: str


Peer = SelectorPeer | CIDRPeer | EntityPeer


@dataclass(frozen=True, slots=True)
class PortRule:
    """One port entry. `protocol` is TCP/UDP/SCTP or ANY (Cilium).

    port None = every port of the protocol; `name` set = a named port, resolved per
    identity by the compiler; end_port = the last port of a range (inclusive).
    """

    protocol: str
    port: int | None = None
    name: str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ingress/egress rule: any listed peer AND any listed port.

    peers None = every peer (Kubernetes' missing `from`/`to`, a Cilium rule with only
    toPorts); peers () = no peer at all (Cilium's empty rule `{}`: it selects the endpoint
    and allows nothing). ports None = every protocol and port.
    """

    index: int
    peers: tuple[Peer, ...] | None
    ports: tuple[PortRule, ...] | None
    deny: bool = False


@dataclass(frozen=True, slots=True)
class Spec:
    """Who a policy applies to and its rules, per direction.

    `enforce_*` says whether the selected endpoints become default-deny in that
    direction (NetworkPolicy policyTypes; for Cilium, "has rules in that direction").
    """

    subject: LabelSelector
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    ingress_deny: tuple[Rule, ...] = ()
    egress_deny: tuple[Rule, ...] = ()
    enforce_ingress: bool = False
    enforce_egress: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy. A Cilium `specs:` list gives several Specs; rule indexes then
    count across the specs in order, so (kind, namespace, name, direction, index, deny)
    still names exactly one rule."""

    kind: str
    namespace: str  # "" for CiliumClusterwideNetworkPolicy
    name: str
    specs: tuple[Spec, ...]
    source: str = ""
    doc: int = 0

    @property
    def ref(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def display(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else \
            f"{self.kind} {self.name}"
