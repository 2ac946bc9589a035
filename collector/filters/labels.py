"""The label dimension of flow filters: selectors (`model.labels`) as predicate and SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spyglass.collector.filters.base import EndpointClause, Side, ValueProblem
from spyglass.collector.filters.sql import Params, Sql, all_of, any_of
from spyglass.model.flow import Endpoint
from spyglass.model.labels import LabelSelector, Requirement, SelectorError, index_labels


def selector_sql(selector: LabelSelector, column: str, p: Params) -> str:
    """The selector over an Array(String) column of "source:key=value" labels."""
    return all_of(_requirement_sql(r, column, p) for r in selector.requirements)


# A label split as `index_labels` splits it: value after the first '=', source
# before the first ':' of the key. Byte positions suit because both are ASCII.
_EQ = "position(l, '=')"
_FULL_KEY = f"if({_EQ} > 0, substring(l, 1, {_EQ} - 1), l)"
_VALUE = f"if({_EQ} > 0, substring(l, {_EQ} + 1), '')"
_COLON = f"position({_FULL_KEY}, ':')"
_SRC = f"if({_COLON} > 0, substring({_FULL_KEY}, 1, {_COLON} - 1), '')"
_KEY = f"if({_COLON} > 0, substring({_FULL_KEY}, {_COLON} + 1), {_FULL_KEY})"


def _requirement_sql(r: Requirement, column: str, p: Params) -> str:
    key = [f"{_KEY} = {p.add(r.key, 'String')}"]
    if r.source is not None:
        key.append(f"{_SRC} = {p.add(r.source, 'String')}")
    if r.op in ("exists", "!"):
        found = f"arrayExists(l -> {all_of(key)}, {column})"
        return found if r.op == "exists" else f"NOT {found}"
    values = p.add(list(r.values), "Array(String)")
    hit = f"arrayExists(l -> {all_of([*key, f'has({values}, {_VALUE})'])}, {column})"
    return hit if r.op in ("=", "in") else f"NOT {hit}"


class LabelClause(EndpointClause):
    """source_label / destination_label: each value is a whole selector; values are ORed."""

    noun = "label"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._selectors = tuple(LabelSelector.parse(v) for v in self.values)

    @staticmethod
    def parse(raw: Any) -> str:
        if not isinstance(raw, str):
            raise ValueProblem(f"{raw!r} is not a label selector", "give selector text",
                               "app=frontend")
        if not raw.strip():
            raise ValueProblem("the label selector is empty", "give a selector", "app=frontend")
        try:
            return str(LabelSelector.parse(raw))
        except SelectorError as e:
            raise ValueProblem(e.problem, e.fix) from None

    def matches_endpoint(self, ep: Endpoint) -> bool:
        index = index_labels(ep.labels)
        return any(all(r.matches(index) for r in s.requirements) for s in self._selectors)

    def sql(self) -> Sql:
        p = Params()
        return any_of(selector_sql(s, self.column("labels"), p)
                      for s in self._selectors), p.values

    def verb(self) -> str:
        return "matches"
