"""What happened to a flow and where it was seen: verdict, drop reason, direction,
event type, reply, node.

Enum values are accepted by name without regard to case (`dropped` works) and,
from JSON, by number, because protojson allows both; they are kept by their
canonical upper-case name so a filter prints the way Hubble prints it.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import Clause, Side, ValueProblem, as_text, in_set
from spyglass.collector.filters.sql import Params, Sql, any_of, glob_regex
from spyglass.model.enums import (
    TRACE_SUBTYPE_TO_POINT,
    DropReason,
    EventType,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Flow


def _enum_name(raw: Any, cls: type[enum.IntEnum], what: str, example: str,
               aliases: dict[str, str] | None = None) -> str:
    valid = [m.name for m in cls]
    if isinstance(raw, int) and not isinstance(raw, bool):
        try:
            return cls(raw).name
        except ValueError:
            raise ValueProblem(f"{raw} is not a {what} number", f"use one of {', '.join(valid)}",
                               example) from None
    text = as_text(raw, what, example).upper().replace("-", "_")
    text = (aliases or {}).get(text, text)
    if text in valid:
        return text
    raise ValueProblem(f"{text!r} is not a {what}", f"use one of {', '.join(valid)}", example)


class _EnumClause(Clause):
    enum_cls: type[enum.IntEnum]
    attr: str

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._set = frozenset(self.enum_cls[v] for v in self.values)

    def predicate(self, flow: Flow) -> bool:
        return getattr(flow, self.attr) in self._set

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        # The batch's enum columns hold the members' own numbers.
        return in_set(getattr(batch, self.attr), frozenset(int(m) for m in self._set))

    def sql(self) -> Sql:
        # The column is an Enum8 with the enum's names, so names compare directly.
        p = Params()
        return f"{self.attr} IN {p.add(sorted(m.name for m in self._set), 'Array(String)')}", \
            p.values


class VerdictClause(_EnumClause):
    noun = "verdict"
    enum_cls = Verdict
    attr = "verdict"

    @staticmethod
    def parse(raw: Any) -> str:
        return _enum_name(raw, Verdict, "verdict", "DROPPED")


class DropReasonClause(_EnumClause):
    noun = "drop reason"
    enum_cls = DropReason
    attr = "drop_reason"

    @staticmethod
    def parse(raw: Any) -> str:
        return _enum_name(raw, DropReason, "drop reason", "POLICY_DENIED")


class TrafficDirectionClause(_EnumClause):
    noun = "traffic direction"
    enum_cls = TrafficDirection
    attr = "traffic_direction"

    @staticmethod
    def parse(raw: Any) -> str:
        return _enum_name(raw, TrafficDirection, "traffic direction", "ingress",
                          aliases={"UNKNOWN": "TRAFFIC_DIRECTION_UNKNOWN"})


class ReplyClause(Clause):
    """reply: whether the flow is a reply; flows where that is unknown never match."""

    noun = "reply"

    def __init__(self, values: Sequence[bool], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._set = frozenset(self.values)

    @staticmethod
    def parse(raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        text = as_text(raw, "true or false", "true").lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
        raise ValueProblem(f"{text!r} is not true or false", "use true or false", "true")

    def predicate(self, flow: Flow) -> bool:
        return flow.is_reply is not None and flow.is_reply in self._set

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        # is_reply codes: -1 unknown (never matches), 0 no, 1 yes.
        return in_set(batch.is_reply, frozenset(int(v) for v in self._set))

    def sql(self) -> Sql:
        if len(self._set) > 1:
            return "isNotNull(is_reply)", {}
        p = Params()
        return f"ifNull(is_reply = {p.add(next(iter(self._set)), 'Bool')}, 0)", p.values

    def shown(self) -> list[str]:
        return ["true" if v else "false" for v in self.values]


# -- event type ---------------------------------------------------------------

#: Hubble's `-t` names for the monitor message types Spyglass emits.
TYPE_NAMES: dict[str, EventType] = {
    "drop": EventType.DROP,
    "trace": EventType.TRACE,
    "policy-verdict": EventType.POLICY_VERDICT,
}
_TYPE_BY_NUM = {int(v): k for k, v in TYPE_NAMES.items()}
#: trace sub-type names (`to-endpoint` …) in the monitor's numbering.
TRACE_SUBTYPES: dict[str, int] = {
    point.name.lower().replace("_", "-"): num for num, point in TRACE_SUBTYPE_TO_POINT.items()
}
_TRACE_SUB_BY_NUM = {v: k for k, v in TRACE_SUBTYPES.items()}
_HUBBLE_ONLY = ("capture", "debug", "l7", "agent", "trace-sock", "recorder")
_TYPE_FIX = ("use drop, policy-verdict, trace or trace:<point> with a point from "
             + ", ".join(TRACE_SUBTYPES))


def split_event_type(value: str) -> tuple[int, int | None]:
    """Canonical text → (type number, sub-type number or None for any)."""
    name, _, sub = value.partition(":")
    t = int(TYPE_NAMES[name])
    if not sub:
        return t, None
    if t == EventType.TRACE and sub in TRACE_SUBTYPES:
        return t, TRACE_SUBTYPES[sub]
    return t, int(sub)


class EventTypeClause(Clause):
    """event_type: `type[:sub_type]` with Hubble's names and the monitor's numbers."""

    noun = "event type"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._any_sub = frozenset(t for t, s in map(split_event_type, self.values) if s is None)
        self._exact = frozenset((t, s) for t, s in map(split_event_type, self.values)
                                if s is not None)

    @staticmethod
    def parse(raw: Any) -> str:
        if isinstance(raw, dict):  # Hubble's JSON form {"type": 4, "match_sub_type": true, …}
            extra = set(raw) - {"type", "match_sub_type", "sub_type"}
            if extra:
                raise ValueProblem(f"unknown event_type keys {sorted(extra)}",
                                   "use type, match_sub_type and sub_type",
                                   '{"type": 4, "match_sub_type": true, "sub_type": 0}')
            t, sub = raw.get("type", 0), raw.get("sub_type", 0)
            text = str(t) + (f":{sub}" if raw.get("match_sub_type") else "")
        else:
            text = as_text(raw, "event type", "trace:to-endpoint").lower()
        name, colon, sub = text.partition(":")
        if name.isdigit() and int(name) in _TYPE_BY_NUM:
            name = _TYPE_BY_NUM[int(name)]
        if name not in TYPE_NAMES:
            why = ("is a Hubble event type that Spyglass does not produce"
                   if name in _HUBBLE_ONLY else "is not an event type")
            raise ValueProblem(f"{name!r} {why}", _TYPE_FIX, "trace:to-endpoint")
        if not colon:
            return name
        if name == "trace" and sub in TRACE_SUBTYPES:
            return f"{name}:{sub}"
        if sub.isdigit() and int(sub) <= 255:
            if name == "trace" and int(sub) in _TRACE_SUB_BY_NUM:
                return f"{name}:{_TRACE_SUB_BY_NUM[int(sub)]}"
            return f"{name}:{int(sub)}"
        raise ValueProblem(f"{sub!r} is not a sub-type of {name!r}",
                           "use a number (0-255)" + (
                               " or one of " + ", ".join(TRACE_SUBTYPES)
                               if name == "trace" else ""),
                           "trace:to-endpoint")

    @staticmethod
    def to_json(value: str) -> dict[str, Any]:
        t, sub = split_event_type(value)
        if sub is None:
            return {"type": t}
        return {"type": t, "match_sub_type": True, "sub_type": sub}

    def predicate(self, flow: Flow) -> bool:
        t = flow.event_type
        return t in self._any_sub or (t, flow.event_subtype) in self._exact

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        t = batch.event_type.astype(np.int64)
        out = in_set(t, frozenset(int(x) for x in self._any_sub))
        if self._exact:
            out |= in_set(t * 256 + batch.event_subtype,
                          frozenset(int(a) * 256 + int(b) for a, b in self._exact))
        return out

    def sql(self) -> Sql:
        p = Params()
        t = "CAST(event_type, 'Int8')"
        parts = []
        if self._any_sub:
            parts.append(f"has({p.add(sorted(self._any_sub), 'Array(Int8)')}, {t})")
        if self._exact:
            codes = sorted(t_ * 256 + s for t_, s in self._exact)
            parts.append(f"has({p.add(codes, 'Array(Int32)')}, "
                         f"toInt32({t}) * 256 + event_subtype)")
        return any_of(parts), p.values


# -- node name ----------------------------------------------------------------

_NODE_RE = re.compile(r"[A-Za-z0-9.*?\[\]!_/-]+")
DEFAULT_CLUSTER = "default"


class NodeNameClause(Clause):
    """node_name: glob patterns (`*.lab`, `worker-?`), or `cluster/pattern` as Hubble allows.

    A pattern without '/' is matched against the node name alone. With a '/',
    it is matched against `cluster/node`, where a node reported without a
    cluster belongs to the cluster "default" (Hubble's rule).
    """

    noun = "node"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        bare = [fnmatch.translate(v) for v in self.values if "/" not in v]
        full = [fnmatch.translate(v) for v in self.values if "/" in v]
        self._bare = re.compile("|".join(bare)) if bare else None
        self._full = re.compile("|".join(full)) if full else None

    @staticmethod
    def parse(raw: Any) -> str:
        text = as_text(raw, "node name pattern", "*.lab")
        if not text:
            raise ValueProblem("the node name pattern is empty", "give a name or a glob", "*.lab")
        if not _NODE_RE.fullmatch(text) or text.count("/") > 1:
            raise ValueProblem(f"{text!r} is not a node name pattern",
                               "use letters, digits, '.', '-' and the globs * ? [..], "
                               "optionally after 'cluster/'", "*.lab")
        return text

    def predicate(self, flow: Flow) -> bool:
        return self._matches_node(flow.node_name)

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        return np.full(len(batch), self._matches_node(batch.node_name), dtype=bool)

    def _matches_node(self, name: str) -> bool:
        if not name:
            return False
        full = name if "/" in name else f"{DEFAULT_CLUSTER}/{name}"
        if self._bare is not None and self._bare.match(full.partition("/")[2]):
            return True
        return self._full is not None and self._full.match(full) is not None

    def sql(self) -> Sql:
        p = Params()
        full = (f"if(position(node_name, '/') > 0, node_name, "
                f"concat('{DEFAULT_CLUSTER}/', node_name))")
        bare = f"substring({full}, position({full}, '/') + 1)"
        tests = [f"match({full if '/' in v else bare}, {p.add(glob_regex(v), 'String')})"
                 for v in self.values]
        return f"node_name != '' AND {any_of(tests)}", p.values

    def verb(self) -> str:
        return "matches"
