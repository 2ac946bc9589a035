"""Field readers shared by the Kubernetes and Cilium parsers, with located errors.

A policy that is refused must say exactly where it is wrong (file, document, policy and
field path) and how to fix it, because people write these by hand. Every reader takes a
`Where` and raises `PolicyError` through it; none returns a half-checked value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from spyglass.model.labels import LabelSelector, SelectorError
from spyglass.model.safeload import describe
from spyglass.policy.model import PROTO_ANY, PROTO_NUMBERS, CIDRPeer, PortRule

_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class PolicyNotFound(LookupError):
    """A delete or explain named a policy or pod that is not there."""


class PolicyError(ValueError):
    """A policy that cannot be accepted. `path` is the field, `reason` and `fix` apart."""

    def __init__(self, source: str, doc: int, ident: str, path: str, reason: str,
                 fix: str = "") -> None:
        parts = [source]
        if doc or ident:
            doc_text = f"document {doc}" if doc else "policy"
            parts.append(f"{doc_text} ({ident})" if ident else doc_text)
        text = ": ".join([*parts, path, reason])
        if fix:
            text += f"; {fix}"
        super().__init__(text)
        self.source = source
        self.doc = doc
        self.ident = ident
        self.path = path
        self.reason = reason
        self.fix = fix


@dataclass
class Where:
    """The document being read, so that any field error can name its place."""

    source: str
    doc: int
    ident: str = ""

    def fail(self, path: str, reason: str, fix: str = "") -> NoReturn:
        raise PolicyError(self.source, self.doc, self.ident, path, reason, fix)


def mapping(w: Where, value: Any, path: str, example: str = "") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        w.fail(path, f"expected a mapping, got {describe(value)}",
               f"write it like {example}" if example else "")
    return value


def seq(w: Where, value: Any, path: str, example: str = "") -> Sequence[Any]:
    """A list; null counts as empty (YAML `from:` with nothing after it)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        w.fail(path, f"expected a list, got {describe(value)}",
               f"write it like {example}" if example else "start each item with '- '")
    return value


def known_keys(w: Where, data: Mapping[str, Any], path: str, allowed: Sequence[str],
               unsupported: Mapping[str, str] | None = None) -> None:
    """Refuse unknown fields: a typo ("ingres") would otherwise silently open a hole."""
    for key in data:
        sub = f"{path}.{key}" if path else str(key)
        if unsupported and key in unsupported:
            w.fail(sub, f"{key!r} is not supported by Spyglass", unsupported[key])
        if key not in allowed:
            w.fail(sub, f"unknown field {key!r}", f"use one of {', '.join(allowed)}")


def selector(w: Where, raw: Any, path: str) -> LabelSelector:
    """A Kubernetes LabelSelector ({} = everything); null also means everything."""
    if raw is None:
        return LabelSelector()
    data = mapping(w, raw, path, "{matchLabels: {app: web}}")
    known_keys(w, data, path, ("matchLabels", "matchExpressions"))
    labels = data.get("matchLabels")
    if labels is not None:
        labels = mapping(w, labels, f"{path}.matchLabels", "{app: web}")
        for k, v in labels.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                w.fail(f"{path}.matchLabels.{k}", f"expected a string, got {describe(v)}",
                       "quote the value")
    exprs = seq(w, data.get("matchExpressions"), f"{path}.matchExpressions",
                "[{key: app, operator: In, values: [web]}]")
    for i, e in enumerate(exprs):
        mapping(w, e, f"{path}.matchExpressions[{i}]", "{key: app, operator: In, values: [web]}")
    try:
        return LabelSelector.from_k8s(labels, exprs)
    except SelectorError as e:
        w.fail(path, e.problem, e.fix)


def cidr(w: Where, raw: Any, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(raw, str):
        w.fail(path, f"expected a CIDR string, got {describe(raw)}", "write it like 10.0.0.0/8")
    if "/" not in raw:
        w.fail(path, f"{raw!r} has no prefix length", f"write it like {raw}/32")
    try:
        return ipaddress.ip_network(raw, strict=False)
    except ValueError as e:
        w.fail(path, f"{raw!r} is not a CIDR ({e})", "write it like 10.0.0.0/8")


def cidr_peer(w: Where, raw_cidr: Any, raw_except: Any, path: str, except_key: str) -> CIDRPeer:
    """A CIDR with exceptions; each exception must lie strictly inside the CIDR."""
    net = cidr(w, raw_cidr, f"{path}.cidr")
    excepts: list[str] = []
    for i, item in enumerate(seq(w, raw_except, f"{path}.{except_key}", "[10.1.0.0/16]")):
        sub = f"{path}.{except_key}[{i}]"
        ex = cidr(w, item, sub)
        if ex.version != net.version or not ex.subnet_of(net) or ex == net:  # type: ignore[arg-type]
            w.fail(sub, f"{ex} is not strictly inside {net}",
                   f"list only smaller ranges inside {net}, or remove it")
        excepts.append(str(ex))
    return CIDRPeer(str(net), tuple(sorted(set(excepts))))


def port_number(w: Where, raw: Any, path: str, *, allow_name: bool,
                allow_zero: bool = False) -> tuple[int | None, str | None]:
    """(number, None) or (None, name). Digit strings are numbers ("80", as Cilium writes)."""
    if isinstance(raw, bool):
        w.fail(path, f"expected a port, got {describe(raw)}", "write a number like 8080")
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, int):
        low = 0 if allow_zero else 1
        if not low <= raw <= 65535:
            w.fail(path, f"port {raw} is out of range", f"use {low}..65535")
        return (raw or None) if allow_zero else raw, None
    if isinstance(raw, str) and allow_name:
        if len(raw) > 15 or not _PORT_NAME.match(raw) or not any(c.isalpha() for c in raw):
            w.fail(path, f"{raw!r} is not a port number or a valid port name",
                   "a named port has at most 15 lower-case letters, digits or '-'")
        return None, raw
    w.fail(path, f"expected a port number{' or name' if allow_name else ''}, "
           f"got {describe(raw)}", "write it like 8080")


def protocol(w: Where, raw: Any, path: str, default: str, allow_any: bool) -> str:
    if raw is None:
        return default
    names = (*PROTO_NUMBERS, PROTO_ANY) if allow_any else tuple(PROTO_NUMBERS)
    if not isinstance(raw, str) or raw.upper() not in names:
        w.fail(path, f"unknown protocol {describe(raw)}", f"use one of {', '.join(names)}")
    return raw.upper()


def port_rule(w: Where, data: Mapping[str, Any], path: str, *, default_proto: str,
              allow_any: bool) -> PortRule:
    """A port entry (`port`, `protocol`, `endPort`), the same shape in both kinds."""
    proto = protocol(w, data.get("protocol"), f"{path}.protocol", default_proto, allow_any)
    number, name = (None, None)
    if data.get("port") is not None:
        number, name = port_number(w, data["port"], f"{path}.port", allow_name=True,
                                   allow_zero=allow_any)
    end = data.get("endPort")
    if end is None:
        return PortRule(proto, number, name)
    if isinstance(end, bool) or not isinstance(end, int):
        w.fail(f"{path}.endPort", f"expected a port number, got {describe(end)}",
               "write it like endPort: 32768")
    if number is None:
        w.fail(f"{path}.endPort", "endPort needs a numeric port to start the range",
               "add port: <first port>, or remove endPort")
    if not number <= end <= 65535:
        w.fail(f"{path}.endPort", f"endPort {end} is not in {number}..65535",
               f"make endPort at least the port ({number})")
    return PortRule(proto, number, None, end if end != number else None)
