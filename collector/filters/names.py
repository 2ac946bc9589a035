"""Pods, services and workloads: the Kubernetes names of a flow's endpoints.

Pods and services use Hubble's `[namespace/]prefix` form: with a namespace the
namespace must match exactly and the name by prefix, so `shop/frontend`
catches every replica `frontend-7d9c…`, and `shop/` catches the whole
namespace. A bare `prefix` (no slash) matches that name prefix in ANY
namespace. Hubble would require a namespace (or apply `--namespace`); we are
friendlier because most lab and dev clusters have unique pod names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import (
    Clause,
    EndpointClause,
    Side,
    ValueProblem,
    as_text,
    table_mask,
)
from spyglass.collector.filters.sql import Params, Sql, all_of, any_of
from spyglass.model.flow import Endpoint, Flow, Service

# Namespace and name characters Kubernetes allows (DNS labels/subdomains), leniently.
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*)?", re.IGNORECASE)


def parse_namespaced(raw: Any, what: str, example: str) -> str:
    """Validate `[namespace/]prefix` and return it trimmed."""
    text = as_text(raw, f"{what} name", example)
    if not text:
        raise ValueProblem(f"the {what} name is empty",
                           f"give '[namespace/]{what}-prefix' (or 'namespace/' for all of it)",
                           example)
    ns, slash, prefix = text.rpartition("/") if "/" in text else ("", "", text)
    if slash:
        if "/" in ns:
            raise ValueProblem(f"{text!r} has more than one '/'",
                               f"use 'namespace/{what}-prefix'", example)
        if not ns:
            raise ValueProblem(f"{text!r} has an empty namespace before '/'",
                               "drop the '/' to match any namespace, or name one", example)
        if not _NAME_RE.fullmatch(ns):
            raise ValueProblem(f"{ns!r} is not a valid namespace name",
                               "namespaces use letters, digits and '-'", example)
    if prefix and not _NAME_RE.fullmatch(prefix):
        raise ValueProblem(f"{prefix!r} is not a valid {what} name prefix",
                           f"{what} names use letters, digits, '-' and '.'", example)
    return text


def split_namespaced(value: str) -> tuple[str | None, str]:
    """(namespace or None for any, prefix)."""
    if "/" in value:
        ns, _, prefix = value.partition("/")
        return ns, prefix
    return None, value


def show_namespaced(value: str) -> str:
    ns, prefix = split_namespaced(value)
    return f"{ns if ns is not None else '*'}/{prefix}*"


def _matcher(values: Sequence[str]) -> tuple[frozenset[str], tuple[tuple[str | None, str], ...]]:
    """Whole-namespace values become a set lookup; the rest are (ns, prefix) pairs."""
    whole_ns = frozenset(ns for ns, p in map(split_namespaced, values) if ns is not None and not p)
    prefixes = tuple((ns, p) for ns, p in map(split_namespaced, values) if p)
    return whole_ns, prefixes


def _match_sql(ns_col: str, name_col: str, whole_ns: frozenset[str],
               prefixes: tuple[tuple[str | None, str], ...], p: Params) -> str:
    """`_match` in SQL: a whole namespace, or an optional namespace and a name prefix."""
    parts = []
    if whole_ns:
        parts.append(f"has({p.add(sorted(whole_ns), 'Array(String)')}, {ns_col})")
    for want_ns, prefix in prefixes:
        starts = f"startsWith({name_col}, {p.add(prefix, 'String')})"
        parts.append(starts if want_ns is None
                     else f"{ns_col} = {p.add(want_ns, 'String')} AND {starts}")
    return any_of(parts)


def _match(ns: str, name: str, whole_ns: frozenset[str],
           prefixes: tuple[tuple[str | None, str], ...]) -> bool:
    if ns in whole_ns:
        return True
    for want_ns, prefix in prefixes:
        if (want_ns is None or want_ns == ns) and name.startswith(prefix):
            return True
    return False


class PodClause(EndpointClause):
    """source_pod / destination_pod."""

    noun = "pod"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._whole_ns, self._prefixes = _matcher(self.values)

    @staticmethod
    def parse(raw: Any) -> str:
        return parse_namespaced(raw, "pod", "shop/frontend")

    def matches_endpoint(self, ep: Endpoint) -> bool:
        if not ep.namespace and not ep.pod_name:
            return False  # world, host: not a pod at all
        return _match(ep.namespace, ep.pod_name, self._whole_ns, self._prefixes)

    def sql(self) -> Sql:
        p = Params()
        ns, pod = self.column("namespace"), self.column("pod_name")
        return all_of([f"({ns} != '' OR {pod} != '')",
                       _match_sql(ns, pod, self._whole_ns, self._prefixes, p)]), p.values

    def verb(self) -> str:
        return "in"

    def shown(self) -> list[str]:
        return [show_namespaced(v) for v in self.values]


class ServiceClause(Clause):
    """source_service / destination_service, by the service's namespace and name prefix."""

    noun = "service"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._whole_ns, self._prefixes = _matcher(self.values)
        self._attr = "source_service" if side == "source" else "destination_service"

    @staticmethod
    def parse(raw: Any) -> str:
        return parse_namespaced(raw, "service", "shop/backend")

    def predicate(self, flow: Flow) -> bool:
        return self._matches_service(getattr(flow, self._attr))

    def _matches_service(self, svc: Service | None) -> bool:
        if svc is None:
            return False
        return _match(svc.namespace, svc.name, self._whole_ns, self._prefixes)

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        return table_mask(batch.service_table, getattr(batch, self._attr),
                          self._matches_service)

    def sql(self) -> Sql:
        p = Params()
        name = self.column("service_name")
        test = _match_sql(self.column("service_namespace"), f"ifNull({name}, '')",
                          self._whole_ns, self._prefixes, p)
        return all_of([f"isNotNull({name})", test]), p.values

    def verb(self) -> str:
        return "in"

    def shown(self) -> list[str]:
        return [show_namespaced(v) for v in self.values]


class WorkloadClause(EndpointClause):
    """source_workload / destination_workload: `[kind/]name`, exact name.

    Like Hubble, a part left out matches anything. The kind compares without
    case, so `deployment/web` and `Deployment/web` both work.
    """

    noun = "workload"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._wanted = tuple(_split_workload(v) for v in self.values)

    @staticmethod
    def parse(raw: Any) -> str:
        if isinstance(raw, dict):  # Hubble's JSON form {"kind": …, "name": …}
            kind, name = str(raw.get("kind", "")).strip(), str(raw.get("name", "")).strip()
            if set(raw) - {"kind", "name"}:
                raise ValueProblem(f"unknown workload keys {sorted(set(raw) - {'kind', 'name'})}",
                                   "use only 'kind' and 'name'", '{"kind": "Deployment"}')
            text = f"{kind}/{name}" if kind else name
        else:
            text = as_text(raw, "workload", "Deployment/frontend")
        kind, slash, name = text.partition("/") if "/" in text else ("", "", text)
        if not kind and not name:
            raise ValueProblem("the workload is empty", "give '[kind/]name'", "Deployment/frontend")
        if "/" in name or (slash and not kind):
            raise ValueProblem(f"{text!r} is not '[kind/]name'", "use one '/' after the kind",
                               "Deployment/frontend")
        for part in (kind, name):
            if part and not _NAME_RE.fullmatch(part):
                raise ValueProblem(f"{part!r} is not a valid workload kind or name",
                                   "use letters, digits, '-' and '.'", "Deployment/frontend")
        return f"{kind}/{name}" if kind else name

    @staticmethod
    def to_json(value: str) -> dict[str, str]:
        kind, name = _split_workload(value)
        d = {}
        if kind:
            d["kind"] = value.partition("/")[0]
        if name:
            d["name"] = name
        return d

    def matches_endpoint(self, ep: Endpoint) -> bool:
        for w in ep.workloads:
            kind = w.kind.lower()
            for want_kind, want_name in self._wanted:
                if (not want_name or want_name == w.name) and (not want_kind or want_kind == kind):
                    return True
        return False

    def sql(self) -> Sql:
        p = Params()
        alternatives = []
        for want_kind, want_name in self._wanted:
            alternatives.append(all_of([
                f"tupleElement(w, 'name') = {p.add(want_name, 'String')}" if want_name else "",
                f"lowerUTF8(tupleElement(w, 'kind')) = {p.add(want_kind, 'String')}"
                if want_kind else "",
            ]))
        return f"arrayExists(w -> {any_of(alternatives)}, {self.column('workloads')})", p.values


def _split_workload(value: str) -> tuple[str, str]:
    """(lower-case kind or "", name or "")."""
    if "/" in value:
        kind, _, name = value.partition("/")
        return kind.lower(), name
    return "", value


def parse_namespace(raw: Any) -> str:
    """A bare namespace name, for --namespace and friends."""
    text = as_text(raw, "namespace", "kube-system")
    if text.endswith("/") and "/" not in text[:-1]:
        text = text[:-1]  # "shop/" reads as the namespace shop, as --pod shop/ does
    if not text:
        raise ValueProblem("the namespace is empty", "give a namespace name", "kube-system")
    if "/" in text:
        raise ValueProblem(f"{text!r} is not a namespace name",
                           f"to select a pod use --pod {text}; a namespace looks", "kube-system")
    if not _NAME_RE.fullmatch(text):
        raise ValueProblem(f"{text!r} is not a valid namespace name",
                           "namespaces use letters, digits and '-'", "kube-system")
    return text
