"""What the API needs from the process that owns the flows.

The API never reaches into the collector: it is handed a `FlowSource` (the
agent, or a test fake) and reads the ring through the few methods below. Keeping
this surface small lets tests drive every endpoint with a plain in-memory ring
and lets the agent change how it collects without touching the API.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spyglass.collector.collector import CollectorStats
from spyglass.collector.filters import FilterSet
from spyglass.collector.lost import LossLedger
from spyglass.collector.ring import Chunk, Mask
from spyglass.model.flow import Event, Flow
from spyglass.storage.writer import WriterStats

#: A position in time-ordered history: (time_ns, uuid) of the last flow returned.
Cursor = tuple[int, str]


class RingReader(Protocol):
    """The read side of `collector.ring.FlowRing` that the API uses."""

    @property
    def capacity(self) -> int: ...

    @property
    def seen(self) -> int: ...

    @property
    def head(self) -> int: ...

    def __len__(self) -> int: ...

    def read_chunks(self, seq: int, max_n: int) -> tuple[list[Chunk], int]:
        """Batch slices and lost-event records from `seq` (the live stream's read)."""

    def read_since(self, seq: int, max_n: int) -> tuple[list[Event], int]: ...

    def last(self, n: int, mask: Mask | None = None, *, before: int | None = None,
             lost: bool = True) -> list[Event]: ...

    def first(self, n: int, mask: Mask | None = None) -> list[Event]: ...

    def flows(self, mask: Mask) -> list[Flow]: ...

    def time_bounds(self) -> tuple[int, int] | None: ...


@dataclass(frozen=True, slots=True)
class RestartGap:
    """What an agent found when it adopted the datapath an earlier agent left running."""

    generation: int  # this agent's generation of the datapath (1 = the first agent)
    restarts: int  # agents that adopted this datapath so far, this one included
    previous_pid: int
    adopted_rings: bool  # the perf rings were taken back from the ring keeper
    waiting_in_rings: int  # events written while no agent ran, read from the kept rings
    lost_in_rings: int  # written, never delivered, and no longer in any ring (AGENT_RESTART)
    failures_untold: int  # submits that failed while no agent told them (PERF_EVENT_RING_BUFFER)
    unstored: int  # flows the earlier agent read but had not written to the store (STORE)
    endpoints_written: int  # endpoint entries that differed and were rewritten
    endpoints_deleted: int
    programs_replaced: int  # TC programs swapped in place (tc filter replace)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What the agent says about itself; the API adds the ring's and the streams' view.

    `collector` is None for a source that does not collect (a test's ring, an import).
    """

    version: str
    uptime_ns: int
    collector: CollectorStats | None = None
    pods: int | None = None
    monitor_aggregation: str | None = None
    restart: RestartGap | None = None


class FlowSource(Protocol):
    """The agent as the API sees it: a ring, a node name, a loss ledger, maybe a store.

    Every member is required: a source without a store says `store = None`, one without
    a lab says `live_namespaces() == []` (tests use `tests.support.FakeSource`).
    """

    @property
    def ring(self) -> RingReader: ...

    @property
    def node_name(self) -> str: ...

    @property
    def losses(self) -> LossLedger:
        """The agent's one loss ledger; the API's streams add their own drops to it."""

    @property
    def store(self) -> HistoryStore | None:
        """History (since/until, aggregations, import), or None without a store."""

    @property
    def store_dsn(self) -> str | None:
        """The store's address as configured (status shows it without the password)."""

    def status(self) -> AgentStatus: ...

    def writer_stats(self) -> WriterStats | None:
        """The store writer's counters, or None without a store."""

    def live_namespaces(self) -> list[str]:
        """Namespaces with pods now (the lab's)."""


class HistoryStore(Protocol):
    """What the API uses of `storage.FlowStore` (the agent's store, or a test double).

    Every method may raise `storage.StoreError` (a RuntimeError) when the store
    refuses or is down; the API turns that into a 400 or 503 with its reason.
    """

    def query_flows(self, filters: FilterSet, *, since_ns: int | None, until_ns: int | None,
                    limit: int, order: str = "desc", after: Cursor | None = None
                    ) -> tuple[list[Flow], Cursor | None]: ...

    def count(self, filters: FilterSet, since_ns: int | None, until_ns: int | None) -> int: ...

    def service_map(self, *, since_ns: int | None, until_ns: int | None,
                    namespaces: Sequence[str] = ()) -> Any: ...

    def drops(self, *, since_ns: int | None, until_ns: int | None, by: str = "reason",
              namespaces: Sequence[str] = (), limit: int = 100) -> Any: ...

    def top(self, *, since_ns: int | None, until_ns: int | None, by: str = "source",
            metric: str = "flows", limit: int = 20) -> Any: ...

    def timeseries(self, filters: FilterSet, *, since_ns: int | None, until_ns: int | None,
                   bucket_s: int) -> Any: ...

    def namespaces(self, *, since_ns: int | None, until_ns: int | None) -> Any: ...

    def sql(self, text: str, *, limit: int, timeout_s: float) -> Any: ...

    def insert_arrow(self, table: Any) -> Any: ...

    def insert_imported(self, table: Any, *, retention_days: int) -> Any:
        """Imported rows, kept `retention_days` from now; `.rows`, `.kept_until_s`."""


def redacted_dsn(dsn: str | None) -> str | None:
    """A store's DSN with any password removed (status shows it)."""
    if not dsn:
        return None
    text = str(dsn)
    if "@" in text and "://" in text:
        scheme, rest = text.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return text


class RateMeter:
    """Flows per second over a sliding window, for sources that do not report a rate.

    Sampled whenever status is asked for; the rate is the slope between the
    oldest sample still inside the window and now, so two status calls a few
    seconds apart already give a useful number.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def sample(self, seen: int) -> float:
        """Record the current total and return the rate over the window."""
        now = self._clock()
        with self._lock:
            self._samples.append((now, seen))
            while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
                self._samples.popleft()
            t0, s0 = self._samples[0]
        if now <= t0 or seen < s0:
            return 0.0
        return (seen - s0) / (now - t0)
