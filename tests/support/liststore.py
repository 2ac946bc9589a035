"""A list-backed store that keeps FlowStore's query_flows contract, for API tests that
stage the writer's lag exactly (flows in the ring only, in the store only, or both)."""

from __future__ import annotations

import threading

from spyglass.collector.filters import FilterSet
from spyglass.model.flow import Flow


class ListStore:
    """FlowStore's query_flows contract over a list (see the module docstring)."""

    def __init__(self) -> None:
        self.flows: list[Flow] = []
        self.lock = threading.Lock()
        self.queries = 0

    def add(self, flows: list[Flow]) -> None:
        with self.lock:
            self.flows.extend(flows)

    def query_flows(self, filters: FilterSet, *, since_ns: int | None = None,
                    until_ns: int | None = None, limit: int = 100, order: str = "desc",
                    after: tuple[int, str] | None = None
                    ) -> tuple[list[Flow], tuple[int, str] | None]:
        self.queries += 1
        with self.lock:
            rows = list(self.flows)
        rows = [f for f in rows if (since_ns is None or f.time_ns >= since_ns)
                and (until_ns is None or f.time_ns < until_ns) and filters.matches(f)]
        desc = order == "desc"
        rows.sort(key=lambda f: (f.time_ns, f.uuid), reverse=desc)
        if after is not None:
            rows = [f for f in rows if ((f.time_ns, f.uuid) < after if desc
                                        else (f.time_ns, f.uuid) > after)]
        page = rows[:limit]
        cursor = (page[-1].time_ns, page[-1].uuid) if page and len(page) == limit else None
        return page, cursor
