"""Split a flows request's query into selectors (`last`, `first`) and filters.

Filters are order-sensitive (`not-` and the left/right trackers follow
Hubble's flag order), so the query is kept as an ordered list of pairs and
everything that is not a selector goes to `build_from_query` untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from spyglass.api.errors import ApiError
from spyglass.collector.filters import FilterSet, build_from_query
from spyglass.collector.flow import Event, Flow

SELECTORS = ("last", "first")
DEFAULT_LAST = 20


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """A parsed flows request: how many, from which end, and which flows."""

    number: int
    first: bool
    filters: FilterSet

    def predicate(self) -> Callable[[Event], bool] | None:
        return event_predicate(self.filters)


def event_predicate(filters: FilterSet) -> Callable[[Event], bool] | None:
    """A ring predicate; lost events always pass, since a gap must never be hidden."""
    if filters.empty:
        return None
    matches = filters.matches

    def predicate(ev: Event) -> bool:
        return not isinstance(ev, Flow) or matches(ev)

    return predicate


def parse_count(name: str, raw: str, maximum: int) -> int:
    """A non-negative count, clamped to what the ring can hold."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name}: {raw!r} is not a number; use a whole number like "
                            f"{name}=20") from None
    if value < 0:
        raise ApiError(400, f"{name}: {value} is negative; use 0 or more, like {name}=20")
    return min(value, maximum)


def parse_flow_query(items: Sequence[tuple[str, str]], *, capacity: int,
                     default_last: int = DEFAULT_LAST) -> FlowQuery:
    """Parse `last`/`first` and hand every other parameter, in order, to the filter builder."""
    selectors: dict[str, str] = {}
    filter_items: list[tuple[str, str]] = []
    for key, value in items:
        if key in SELECTORS:
            if key in selectors:
                raise ApiError(400, f"{key} is given more than once; give it once, "
                                    f"like {key}=20")
            selectors[key] = value
        else:
            filter_items.append((key, value))
    if "last" in selectors and "first" in selectors:
        raise ApiError(400, "last and first cannot be combined; ask for the newest flows "
                            "with last=N or the oldest with first=N")
    filters = build_from_query(filter_items)
    if "first" in selectors:
        return FlowQuery(parse_count("first", selectors["first"], capacity), True, filters)
    raw = selectors.get("last")
    number = default_last if raw is None else parse_count("last", raw, capacity)
    return FlowQuery(number, False, filters)
