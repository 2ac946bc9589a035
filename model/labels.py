"""Kubernetes label selectors over Cilium-style labels.

People already know the selector syntax from `kubectl -l` and from NetworkPolicy
podSelectors, so `--label 'app in (web,api),!canary'` should work here too. The
one twist is Cilium's label *source*: flow labels read `k8s:app=frontend`. A
selector key may name a source (`k8s:app=x`) or not (`app=x`); without one it
matches that key from any source, which is what people mean nearly always.
(`any:app` is the same as `app`, as in Cilium.) A label that carries no source
itself ("app=x", as in a manifest) only matches selectors that name none.

`LabelSelector` is shared: flow filters (`collector/filters/labels.py`, which adds
the SQL form) and policy (`from_k8s`, for `matchLabels`/`matchExpressions`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["=", "!=", "in", "notin", "exists", "!"]

_SOURCE = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_KEY_RE = re.compile(rf"(?:({_SOURCE}):)?([A-Za-z0-9][A-Za-z0-9_./-]*)")
_VALUE_RE = re.compile(r"[A-Za-z0-9._-]*")
_SET_OP_RE = re.compile(r"(notin|in)(?=[\s(])")
_FIX = "write it like 'app=frontend', 'k8s:app!=db', 'tier in (web,api)', 'app' or '!canary'"
_K8S_OPS: dict[str, Op] = {"In": "in", "NotIn": "notin", "Exists": "exists",
                           "DoesNotExist": "!"}


class SelectorError(ValueError):
    """A selector that does not parse; `problem` and `fix` are kept apart for callers."""

    def __init__(self, problem: str, fix: str = _FIX) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated term of a selector. `source` None means any source."""

    key: str
    op: Op
    values: tuple[str, ...] = ()
    source: str | None = None

    def __str__(self) -> str:
        key = f"{self.source}:{self.key}" if self.source else self.key
        if self.op == "exists":
            return key
        if self.op == "!":
            return f"!{key}"
        if self.op in ("in", "notin"):
            return f"{key} {self.op} ({','.join(self.values)})"
        return f"{key}{self.op}{self.values[0]}"

    def matches(self, index: Mapping[str, tuple[tuple[str, str], ...]]) -> bool:
        found = [v for s, v in index.get(self.key, ()) if self.source is None or s == self.source]
        if self.op == "exists":
            return bool(found)
        if self.op == "!":
            return not found
        hit = any(v in self.values for v in found)
        # k8s semantics: != and notin also match when the key is absent.
        return hit if self.op in ("=", "in") else not hit


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed selector: all requirements must hold (an empty selector matches everything)."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        return cls(tuple(_Parser(text).requirements()))

    @classmethod
    def from_k8s(
        cls,
        match_labels: Mapping[str, str] | None = None,
        match_expressions: Sequence[Mapping[str, Any]] | None = None,
    ) -> LabelSelector:
        """Build from a NetworkPolicy-style selector (`matchLabels` + `matchExpressions`)."""
        reqs: list[Requirement] = []
        for k, v in (match_labels or {}).items():
            source, key = _split_key(str(k))
            reqs.append(Requirement(key, "=", (_check_value(str(v), str(k)),), source))
        for i, expr in enumerate(match_expressions or ()):
            where = f"matchExpressions[{i}]"
            if "key" not in expr or "operator" not in expr:
                raise SelectorError(f"{where} needs 'key' and 'operator'",
                                    "write it like {key: app, operator: In, values: [web]}")
            op = _K8S_OPS.get(str(expr["operator"]))
            if op is None:
                raise SelectorError(f"{where}: unknown operator {expr['operator']!r}",
                                    f"use one of {', '.join(_K8S_OPS)}")
            source, key = _split_key(str(expr["key"]))
            raw_values = expr.get("values") or []
            if isinstance(raw_values, str) or not isinstance(raw_values, Sequence):
                raise SelectorError(f"{where}: 'values' must be a list",
                                    "write it like values: [web, api]")
            values = tuple(sorted({_check_value(str(v), str(expr["key"])) for v in raw_values}))
            if op in ("in", "notin") and not values:
                raise SelectorError(f"{where}: operator {expr['operator']} needs values",
                                    "list at least one value")
            if op in ("exists", "!") and values:
                raise SelectorError(f"{where}: operator {expr['operator']} takes no values",
                                    "remove 'values'")
            reqs.append(Requirement(key, op, values, source))
        return cls(tuple(reqs))

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def matches(self, labels: Mapping[str, str] | Iterable[str]) -> bool:
        """True if the labels ("src:key=value" strings or a key→value mapping) meet all terms."""
        if isinstance(labels, Mapping):
            index = _index_pairs(tuple((str(k), str(v)) for k, v in labels.items()))
        else:
            index = index_labels(labels if isinstance(labels, tuple) else tuple(labels))
        return all(r.matches(index) for r in self.requirements)


@functools.lru_cache(maxsize=8192)
def index_labels(labels: tuple[str, ...]) -> dict[str, tuple[tuple[str, str], ...]]:
    """key → ((source, value), …). Cached: a pod's label tuple recurs on every flow."""
    pairs = []
    for label in labels:
        key, _, value = label.partition("=")
        pairs.append((key, value))
    return _index_pairs(tuple(pairs))


def _index_pairs(pairs: tuple[tuple[str, str], ...]) -> dict[str, tuple[tuple[str, str], ...]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for full_key, value in pairs:
        source, key = full_key.split(":", 1) if ":" in full_key else ("", full_key)
        out.setdefault(key, []).append((source, value))
    return {k: tuple(v) for k, v in out.items()}


def _split_key(text: str) -> tuple[str | None, str]:
    m = _KEY_RE.fullmatch(text)
    if not m:
        raise SelectorError(f"{text!r} is not a label key")
    source = m.group(1)
    return (None if source in (None, "any") else source), m.group(2)


def _check_value(value: str, key: str) -> str:
    if not _VALUE_RE.fullmatch(value):
        raise SelectorError(f"{value!r} is not a valid value for label {key!r}",
                            "label values use letters, digits, '-', '_' and '.'")
    return value


class _Parser:
    """A small scanner for the kubectl selector grammar, with positions in its errors."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> SelectorError:
        return SelectorError(f"label selector {self.text!r}: {what} at position {self.pos}")

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def requirements(self) -> list[Requirement]:
        out: list[Requirement] = []
        self.ws()
        if self.at_end():
            return out
        while True:
            out.append(self.requirement())
            self.ws()
            if self.at_end():
                return out
            if self.text[self.pos] != ",":
                raise self.fail(f"unexpected {self.text[self.pos]!r}")
            self.pos += 1
            self.ws()
            if self.at_end():
                raise self.fail("nothing after ','")

    def key(self) -> tuple[str | None, str]:
        m = _KEY_RE.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a label key")
        self.pos = m.end()
        source = m.group(1)
        return (None if source == "any" else source), m.group(2)

    def value(self) -> str:
        m = _VALUE_RE.match(self.text, self.pos)
        assert m is not None  # the pattern also matches the empty string
        self.pos = m.end()
        return m.group(0)

    def requirement(self) -> Requirement:
        if self.text[self.pos] == "!":
            self.pos += 1
            self.ws()
            source, key = self.key()
            return Requirement(key, "!", (), source)
        source, key = self.key()
        self.ws()
        rest = self.text[self.pos:]
        for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if rest.startswith(token):
                self.pos += len(token)
                self.ws()
                value = self.value()
                return Requirement(key, op, (value,), source)  # type: ignore[arg-type]
        m = _SET_OP_RE.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return Requirement(key, m.group(1), self.value_set(), source)  # type: ignore[arg-type]
        if self.at_end() or rest.startswith(","):
            return Requirement(key, "exists", (), source)
        raise self.fail(f"unexpected {self.text[self.pos]!r} after key {key!r}")

    def value_set(self) -> tuple[str, ...]:
        self.ws()
        if self.at_end() or self.text[self.pos] != "(":
            raise self.fail("expected '(' after in/notin")
        self.pos += 1
        values: set[str] = set()
        while True:
            self.ws()
            values.add(self.value())
            self.ws()
            if self.at_end():
                raise self.fail("missing ')'")
            ch = self.text[self.pos]
            self.pos += 1
            if ch == ")":
                break
            if ch != ",":
                self.pos -= 1
                raise self.fail(f"unexpected {ch!r} in value list")
        values.discard("")
        if not values:
            raise self.fail("empty value list")
        return tuple(sorted(values))
