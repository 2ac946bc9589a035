"""The agent's live policy set: apply, delete, recompile, load, explain.

One object owns the policies in force and the `CompiledPolicy` the datapath was loaded
from. `explain` answers from that same compiled table, so what it says is what the maps
do. Every change parses first and recompiles the whole set: a bad document is refused
whole and nothing is half-applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from spyglass.lab.errors import PodRefError
from spyglass.lab.naming import resolve_ref
from spyglass.model.flow import PolicyRef
from spyglass.model.policy import CompiledPolicy
from spyglass.policy.compile import DEFAULT_MAX_ENTRIES, PolicyTooLarge, compile_policies
from spyglass.policy.explain import Explanation, PodEndpoint, explain
from spyglass.policy.fields import PolicyError, PolicyNotFound
from spyglass.policy.model import Policy
from spyglass.policy.parse import parse_policies, parse_policy_yaml
from spyglass.policy.table import PolicyTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodView:
    """What policy needs to know about a running pod."""

    namespace: str
    name: str
    ip: str
    identity: int
    identity_labels: tuple[str, ...]
    named_ports: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ApplyResult:
    applied: tuple[str, ...]
    compile_ms: float
    load_ms: float
    entries: int

    def to_dict(self) -> dict[str, Any]:
        return {"applied": list(self.applied), "compile_ms": round(self.compile_ms, 3),
                "load_ms": round(self.load_ms, 3), "entries": self.entries}


class Journal(Protocol):
    """Where runtime changes are recorded for the next agent (`records.PolicyJournal`)."""

    def applied(self, text: str, source: str) -> None: ...

    def deleted(self, name: str, namespace: str, kind: str | None) -> None: ...


class PolicyManager:
    """Owns the policies in force; `loader` puts a compiled set into the datapath."""

    def __init__(self, pods: Callable[[], Sequence[PodView]],
                 loader: Callable[[CompiledPolicy], object], *,
                 audit_namespaces: frozenset[str] = frozenset(), audit_all: bool = False,
                 max_entries: int = DEFAULT_MAX_ENTRIES, journal: Journal | None = None) -> None:
        self._pods = pods
        self._loader = loader
        self._audit_namespaces = audit_namespaces
        self._audit_all = audit_all
        self._max_entries = max_entries
        self._journal = journal
        self._policies: dict[tuple[str, str, str], Policy] = {}
        self._compiled = CompiledPolicy()
        self._table = PolicyTable(self._compiled)
        self._lock = threading.Lock()

    # -- changes -------------------------------------------------------------------------

    def apply_yaml(self, text: str, source: str = "<request>") -> ApplyResult:
        """`spyglass policy apply -f FILE`: parse everything, then apply all or nothing.

        A change from a request is bounded: if the whole set would make more than
        `max_entries` datapath entries it is refused (PolicyTooLarge) before any work.
        Pod changes recompile without the bound: the pods are already there, and
        leaving them without their policy would be worse.
        """
        result = self._apply(parse_policy_yaml(text, source), bounded=True)
        if self._journal is not None:
            self._journal.applied(text, source)
        return result

    def restore(self, objects: Sequence[Any], source: str,
                entries: Sequence[Mapping[str, Any]]) -> ApplyResult:
        """At start: the manifest's policies, then the journal of changes made since (an
        agent restart), compiled and loaded once.

        Once, because the datapath is enforcing the final set right now: loading the
        manifest first and replaying on top would put the manifest's policy back in the
        kernel for a moment, allowing or denying what the user had changed. An entry that
        no longer applies (refused by this version, a delete of something gone) is logged
        and skipped: the rest must still be rebuilt.
        """
        with self._lock:
            policies = {p.ref: p for p in parse_policies(objects, source)}
            for e in entries:
                try:
                    if e.get("op") == "apply":
                        for p in parse_policy_yaml(str(e["text"]), str(e.get("source", ""))):
                            policies[p.ref] = p
                    elif e.get("op") == "delete":
                        kind = e.get("kind") if isinstance(e.get("kind"), str) else None
                        key = self._match(policies, str(e["name"]),
                                          str(e.get("namespace", "default")), kind)
                        del policies[key]
                except (PolicyError, PolicyNotFound, KeyError, ValueError):
                    log.warning("skipping a journaled policy change that no longer applies: "
                                "%r", {k: e.get(k) for k in ("op", "name", "source")},
                                exc_info=True)
            self._policies = policies
            return self._recompile(tuple(p.display for p in policies.values()))

    def delete(self, name: str, namespace: str = "default", kind: str | None = None) -> ApplyResult:
        result = self._delete(name, namespace, kind)
        if self._journal is not None:
            self._journal.deleted(name, namespace, kind)
        return result

    def _delete(self, name: str, namespace: str, kind: str | None) -> ApplyResult:
        with self._lock:
            key = self._match(self._policies, name, namespace, kind)
            removed = self._policies.pop(key)
            try:
                return self._recompile((removed.display,))
            except BaseException:
                self._policies[key] = removed
                raise

    def _match(self, policies: Mapping[tuple[str, str, str], Policy], name: str,
               namespace: str, kind: str | None) -> tuple[str, str, str]:
        """The one policy `name` names (in `namespace`, or cluster-wide), or PolicyNotFound."""
        hits = [k for k in policies
                if k[2] == name and k[1] in (namespace, "") and (kind is None or k[0] == kind)]
        if not hits:
            known = ", ".join(sorted(self._display(k) for k in policies)) or "none"
            raise PolicyNotFound(f"no policy {namespace}/{name} is applied (applied: {known})")
        if len(hits) > 1:
            raise PolicyNotFound(f"{name} names several policies: "
                                 f"{', '.join(self._display(k) for k in hits)}; "
                                 "give --kind to choose one")
        return hits[0]

    def refresh(self) -> ApplyResult:
        """Pods came or went (identities changed): recompile the same policies."""
        with self._lock:
            return self._recompile(())

    def _apply(self, policies: list[Policy], bounded: bool = False) -> ApplyResult:
        with self._lock:
            before = dict(self._policies)
            for p in policies:
                self._policies[p.ref] = p
            try:
                return self._recompile(tuple(p.display for p in policies), bounded)
            except BaseException:
                self._policies = before
                raise

    def _recompile(self, changed: tuple[str, ...], bounded: bool = False) -> ApplyResult:
        pods = list(self._pods())
        identities = {p.identity: p.identity_labels for p in pods}
        named = {p.identity: p.named_ports for p in pods if p.named_ports}
        t0 = time.perf_counter()
        compiled = compile_policies(list(self._policies.values()), identities,
                                    named_ports=named or None,
                                    audit_namespaces=self._audit_namespaces,
                                    audit_all=self._audit_all, previous=self._compiled,
                                    max_entries=self._max_entries if bounded else None)
        t1 = time.perf_counter()
        self._loader(compiled)
        t2 = time.perf_counter()
        self._compiled, self._table = compiled, PolicyTable(compiled)
        return ApplyResult(changed, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                           len(compiled.allow) + len(compiled.deny))

    # -- reads ---------------------------------------------------------------------------

    def policies_by_cookie(self, cookie: int) -> tuple[PolicyRef, ...]:
        """PolicyGetter for enrichment: the policies a datapath cookie names."""
        refs = self._compiled.cookies.get(cookie, ())
        seen: dict[tuple[str, str, str], PolicyRef] = {}
        for r in refs:
            seen.setdefault((r.kind, r.namespace, r.name), PolicyRef(r.name, r.namespace, r.kind))
        return tuple(seen.values())

    def list(self) -> list[dict[str, Any]]:
        return [{"kind": k[0], "namespace": k[1], "name": k[2], "source": p.source}
                for k, p in sorted(self._policies.items())]

    def explain(self, src: str, dst: str, port: int, proto: int | str,
                fmt: str = "kubernetes") -> Explanation:
        """Why traffic from pod `src` to pod-or-IP `dst` on port/proto is allowed or not."""
        pods = list(self._pods())
        source = _endpoint(_find(pods, src))
        target = _by_ip(pods, dst) if _is_ip(dst) else _find(pods, dst, allow_ip=True)
        if isinstance(target, PodView):
            dest = _endpoint(target)
        else:
            by_ip = {p.ip: p.identity for p in pods}
            dest = PodEndpoint(identity=self._table.resolve_remote(dst, by_ip), ip=dst)
        return explain(self._table, source, dest, port, proto, format=fmt)

    @property
    def compiled(self) -> CompiledPolicy:
        return self._compiled

    @staticmethod
    def _display(key: tuple[str, str, str]) -> str:
        kind, ns, name = key
        return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def _endpoint(p: PodView) -> PodEndpoint:
    return PodEndpoint(identity=p.identity, labels=p.identity_labels, namespace=p.namespace,
                       name=p.name, ip=p.ip)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _by_ip(pods: Sequence[PodView], ip: str) -> PodView | str:
    return next((p for p in pods if p.ip == ip), ip)


def _find(pods: Sequence[PodView], ref: str, allow_ip: bool = False) -> PodView:
    """NAMESPACE/POD, or a bare POD in `default` or the only pod of that name (the lab's rule)."""
    try:
        ns, name = resolve_ref(ref, [(p.namespace, p.name) for p in pods])
    except PodRefError as exc:
        hint = " (or give an IP address)" if allow_ip else ""
        raise PolicyNotFound(f"{exc}{hint}") from None
    return next(p for p in pods if p.namespace == ns and p.name == name)


__all__ = ["ApplyResult", "PodView", "PolicyError", "PolicyManager", "PolicyNotFound",
           "PolicyTooLarge"]
