"""`FilterSet`: an allowlist and a denylist of FlowFilters, compiled once.

Hubble's GetFlowsRequest semantics: a flow passes if it matches ANY allow
filter (an empty allowlist lets everything through) and NO deny filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.flowfilter import CompiledFilter, FlowFilter
from spyglass.collector.filters.sql import Sql, combine
from spyglass.model.flow import Flow


@dataclass(frozen=True)
class FilterSet:
    """Compiled allowlist + denylist. Equality looks only at the filters themselves."""

    allow: tuple[FlowFilter, ...] = ()
    deny: tuple[FlowFilter, ...] = ()
    _allow: tuple[CompiledFilter, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[CompiledFilter, ...] = field(init=False, repr=False, compare=False)
    _allow_all: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", tuple(self.allow))
        object.__setattr__(self, "deny", tuple(self.deny))
        object.__setattr__(self, "_allow", tuple(CompiledFilter(f) for f in self.allow))
        object.__setattr__(self, "_deny", tuple(CompiledFilter(f) for f in self.deny))
        object.__setattr__(self, "_allow_all",
                           not self.allow or any(f.is_empty for f in self.allow))

    @property
    def empty(self) -> bool:
        """True when the set lets every flow through, so callers can skip it."""
        return self._allow_all and not self.deny

    def matches(self, flow: Flow) -> bool:
        """Whether a flow passes. LostEvents are not flows: callers pass them through."""
        if not self._allow_all:
            for f in self._allow:
                if f.matches(flow):
                    break
            else:
                return False
        for f in self._deny:
            if f.matches(flow):
                return False
        return True

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        """`matches` for every row of a batch at once, as a boolean array."""
        n = len(batch)
        if self._allow_all:
            out = np.ones(n, dtype=bool)
        else:
            out = np.zeros(n, dtype=bool)
            for f in self._allow:
                out |= f.mask(batch)
        for f in self._deny:
            if not out.any():
                break
            out &= ~f.mask(batch)
        return out

    def sql(self) -> Sql:
        """The same selection as `matches`, as a ClickHouse WHERE fragment and its parameters.

        Allow filters are ORed, deny filters ORed and negated; every fragment is
        NULL-free, so NOT is exact.
        """
        allow_text, params = ("1", {}) if self._allow_all else combine(
            (f.sql() for f in self._allow), "OR")
        if not self._deny:
            return allow_text, params
        deny_text, deny_params = combine((f.sql() for f in self._deny), "OR")
        params.update(deny_params)
        if allow_text == "1":
            return f"NOT ({deny_text})", params
        return f"({allow_text}) AND NOT ({deny_text})", params

    def describe(self) -> str:
        """E.g. "(source pod in shop/front* AND verdict is DROPPED) OR (…) EXCEPT (…)"."""
        if self._allow_all:
            text = "all flows"
        else:
            text = " OR ".join(f"({f.describe()})" for f in self._allow)
        if self._deny:
            text += " EXCEPT " + " OR ".join(f"({f.describe()})" for f in self._deny)
        return text

    def to_params(self) -> list[tuple[str, str]]:
        """Query parameters that rebuild this set with `build_from_query` (raw JSON lists)."""
        return ([("allowlist", _json(f.to_dict())) for f in self.allow]
                + [("denylist", _json(f.to_dict())) for f in self.deny])

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Hubble's request shape: {"allowlist": [FlowFilter…], "denylist": […]}."""
        return {"allowlist": [f.to_dict() for f in self.allow],
                "denylist": [f.to_dict() for f in self.deny]}


def _json(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), sort_keys=False)
