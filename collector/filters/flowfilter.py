"""`FlowFilter`: Hubble's FlowFilter message, validated when built.

All set fields are ANDed; the values inside one field are ORed. Values are
stored canonically (ports as ints, verdicts as upper-case names, selectors
re-printed), so two filters that mean the same thing compare equal and a
filter survives JSON and query parameters unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import Clause, FilterError, Side, ValueProblem
from spyglass.collector.filters.event import (
    DropReasonClause,
    EventTypeClause,
    NodeNameClause,
    ReplyClause,
    TrafficDirectionClause,
    VerdictClause,
)
from spyglass.collector.filters.flowid import UUIDClause
from spyglass.collector.filters.interface import InterfaceClause, NetworkInterface
from spyglass.collector.filters.ip import IdentityClause, IPClause, IPVersionClause
from spyglass.collector.filters.l4 import PortClause, ProtocolClause, TCPFlagsClause
from spyglass.collector.filters.labels import LabelClause
from spyglass.collector.filters.names import PodClause, ServiceClause, WorkloadClause
from spyglass.collector.filters.sql import Sql, combine
from spyglass.model.flow import Flow

#: FlowFilter field → (clause class, side). The order is the order of `describe`.
FIELDS: dict[str, tuple[type[Clause], Side | None]] = {
    "source_pod": (PodClause, "source"),
    "destination_pod": (PodClause, "destination"),
    "source_service": (ServiceClause, "source"),
    "destination_service": (ServiceClause, "destination"),
    "source_workload": (WorkloadClause, "source"),
    "destination_workload": (WorkloadClause, "destination"),
    "source_label": (LabelClause, "source"),
    "destination_label": (LabelClause, "destination"),
    "source_identity": (IdentityClause, "source"),
    "destination_identity": (IdentityClause, "destination"),
    "source_ip": (IPClause, "source"),
    "destination_ip": (IPClause, "destination"),
    "source_port": (PortClause, "source"),
    "destination_port": (PortClause, "destination"),
    "protocol": (ProtocolClause, None),
    "tcp_flags": (TCPFlagsClause, None),
    "verdict": (VerdictClause, None),
    "drop_reason_desc": (DropReasonClause, None),
    "event_type": (EventTypeClause, None),
    "traffic_direction": (TrafficDirectionClause, None),
    "reply": (ReplyClause, None),
    "node_name": (NodeNameClause, None),
    "ip_version": (IPVersionClause, None),
    "interface": (InterfaceClause, None),
    "uuid": (UUIDClause, None),
}

#: Values one field may hold: far more than any real filter names, and few enough that a
#: hostile request (gRPC allows 4 MB) cannot keep the server parsing and matching for long.
MAX_VALUES = 4096

_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True, repr=False)
class FlowFilter:
    """One Hubble FlowFilter. Construct with any accepted spelling; fields end up canonical."""

    source_pod: tuple[str, ...] = ()
    destination_pod: tuple[str, ...] = ()
    source_service: tuple[str, ...] = ()
    destination_service: tuple[str, ...] = ()
    source_workload: tuple[str, ...] = ()
    destination_workload: tuple[str, ...] = ()
    source_label: tuple[str, ...] = ()
    destination_label: tuple[str, ...] = ()
    source_identity: tuple[int, ...] = ()
    destination_identity: tuple[int, ...] = ()
    source_ip: tuple[str, ...] = ()
    destination_ip: tuple[str, ...] = ()
    source_port: tuple[int, ...] = ()
    destination_port: tuple[int, ...] = ()
    protocol: tuple[str, ...] = ()
    tcp_flags: tuple[str, ...] = ()
    verdict: tuple[str, ...] = ()
    drop_reason_desc: tuple[str, ...] = ()
    event_type: tuple[str, ...] = ()
    traffic_direction: tuple[str, ...] = ()
    reply: tuple[bool, ...] = ()
    node_name: tuple[str, ...] = ()
    ip_version: tuple[str, ...] = ()
    interface: tuple[NetworkInterface, ...] = ()
    uuid: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, _canonical(name, getattr(self, name), "FlowFilter"))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in FIELDS if getattr(self, n))
        return f"FlowFilter({shown})"

    @property
    def is_empty(self) -> bool:
        """No field set: matches every flow (as an empty Hubble FlowFilter does)."""
        return not any(getattr(self, name) for name in FIELDS)

    def clauses(self) -> tuple[Clause, ...]:
        """The set fields, compiled. Called once per filter, never per flow."""
        return tuple(cls(getattr(self, name), side) for name, (cls, side) in FIELDS.items()
                     if getattr(self, name))

    def sql(self) -> Sql:
        """All set fields ANDed, as ClickHouse SQL with parameters ("1" when empty)."""
        return combine((c.sql() for c in self.clauses()), "AND")

    def to_dict(self) -> dict[str, Any]:
        """Hubble's FlowFilter JSON (proto field names), set fields only."""
        out: dict[str, Any] = {}
        for name, (cls, _side) in FIELDS.items():
            values = getattr(self, name)
            if values:
                out[name] = [cls.to_json(v) for v in values]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "filter") -> FlowFilter:
        """Parse FlowFilter JSON (snake_case or protojson camelCase keys), validating it."""
        if not isinstance(d, Mapping):
            raise FilterError(f"{where}: a FlowFilter must be a JSON object, got {d!r}; "
                              'write it like {"source_pod": ["shop/"]}')
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            name = _CAMEL_RE.sub("_", str(key)).lower()
            if name not in FIELDS:
                raise FilterError(f"{where}: unknown FlowFilter field {key!r}; "
                                  f"valid fields are {', '.join(FIELDS)}")
            if value is None:
                continue
            if name in kwargs:
                raise FilterError(f"{where}: field {name!r} is given twice; give it once")
            kwargs[name] = _canonical(name, value, where)
        return cls(**kwargs)


def _canonical(name: str, raw: Any, where: str) -> tuple[Any, ...]:
    """Parse every value of one field; a lone value counts as a list of one."""
    clause = FIELDS[name][0]
    if isinstance(raw, str | bytes | dict) or not isinstance(raw, tuple | list):
        raw = (raw,)
    if len(raw) > MAX_VALUES:
        raise FilterError(f"{where} field '{name}': {len(raw)} values, over the {MAX_VALUES} "
                          "one field may hold; match a prefix, a CIDR or a label instead, or "
                          "split the query")
    out: dict[Any, None] = {}  # ordered, and linear: a request may carry many values
    for item in raw:
        try:
            value = clause.parse(item)
        except ValueProblem as e:
            raise FilterError(e.render_field(f"{where} field '{name}'")) from None
        out[value] = None  # an OR of duplicates is the value itself
    return tuple(out)


class CompiledFilter:
    """A FlowFilter's clauses, ready to test flows: all must hold."""

    __slots__ = ("flow_filter", "clauses")

    def __init__(self, flow_filter: FlowFilter) -> None:
        self.flow_filter = flow_filter
        self.clauses = flow_filter.clauses()

    def matches(self, flow: Flow) -> bool:
        for clause in self.clauses:
            if not clause.predicate(flow):
                return False
        return True

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        """`matches` for every row of a batch: the clauses' masks ANDed."""
        out = np.ones(len(batch), dtype=bool)
        for clause in self.clauses:
            out &= clause.mask(batch)
            if not out.any():
                break
        return out

    def sql(self) -> Sql:
        return combine((c.sql() for c in self.clauses), "AND")

    def describe(self) -> str:
        if not self.clauses:
            return "all flows"
        return " AND ".join(c.describe() for c in self.clauses)
