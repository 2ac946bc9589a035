"""`FakeSource`: the whole FlowSource protocol over a real FlowRing, without an agent.

Tests change what they need (`source.store = ...`, `source.agent = AgentStatus(...)`,
`source.losses.add(...)`) and the API reads it exactly as it reads the agent.

The ledger is fixed for the source's life: `create_app` hands `source.losses` to the
streams and to `/metrics` once, so a new ledger would be one that status reads and the
streams never write. A test that counts losses serves an app of its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from spyglass.api.source import AgentStatus, FlowSource, HistoryStore
from spyglass.collector.collector import CollectorStats
from spyglass.collector.lost import LossLedger
from spyglass.collector.ring import FlowRing
from spyglass.model.flow import Event
from spyglass.storage import WriterStats
from support.flows import NODE


class FakeSource:
    """A FlowSource: a ring, a ledger, and optionally a store, a writer's stats and pods."""

    def __init__(self, capacity: int = 1023, *, events: Sequence[Event] = (),
                 node_name: str = NODE, store: HistoryStore | None = None,
                 store_dsn: str | None = None, namespaces: Sequence[str] = ()) -> None:
        self.ring = FlowRing(capacity)
        if events:
            self.ring.write_many(list(events))
        self.node_name = node_name
        self.losses = LossLedger()
        self.store = store
        self.store_dsn = store_dsn
        self.namespaces = list(namespaces)
        self.writer: WriterStats | None = None
        self.started_ns = time.time_ns()
        #: What status() reports; replace it to test how the API shows the agent.
        self.agent: AgentStatus | None = None

    def reset(self, capacity: int | None = None) -> None:
        """A fresh ring, agent status and writer, for module-scoped servers shared by tests.

        Not a fresh ledger: the app's streams and /metrics keep the one they were given
        (see the module docstring).
        """
        self.ring = FlowRing(capacity if capacity is not None else self.ring.capacity)
        self.agent = None
        self.writer = None

    def status(self) -> AgentStatus:
        if self.agent is not None:
            return self.agent
        return AgentStatus(version="test", uptime_ns=time.time_ns() - self.started_ns)

    def writer_stats(self) -> WriterStats | None:
        return self.writer

    def live_namespaces(self) -> list[str]:
        return list(self.namespaces)


def collector_stats(**fields: Any) -> CollectorStats:
    """A running collector's counters: all zero, and nothing lost, unless given."""
    values: dict[str, Any] = {
        "seen_flows": 0, "flows_rate": 0.0, "lost_by_cpu": {}, "perf_kernel_counted": 0,
        "perf_reported": 0, "decode_errors": {}, "perf_malformed": 0, "getter_errors": 0,
        "failed_batches": 0, "reads": 0, "running": True, "hook_errors": 0,
    }
    values.update(fields)
    return CollectorStats(**values)


def _is_flow_source(source: FakeSource) -> FlowSource:
    return source  # mypy checks that FakeSource is a whole FlowSource
