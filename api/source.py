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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from spyglass.collector.filters import FilterSet
from spyglass.model.flow import Event, Flow

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

    def last(
        self, n: int, predicate: Callable[[Event], bool] | None = None
    ) -> list[Event]: ...

    def read_since(self, seq: int, max_n: int) -> tuple[list[Event], int]: ...


class FlowSource(Protocol):
    """The agent as the API sees it: a ring, a node name and live counters.

    `status()` may return any JSON-able keys; the ones the API knows
    (`flows_rate`, `uptime_ns`, `version`, `lost_events`, …) fill the typed
    status fields and the rest are passed through for `spyglass status -o json`.
    """

    @property
    def ring(self) -> RingReader: ...

    @property
    def node_name(self) -> str: ...

    def status(self) -> Mapping[str, Any]: ...

    # Optional members, read with getattr by the helpers below:
    #   store: HistoryStore | None       history (since/until, aggregations, import)
    #   store_dsn: str                   shown (without password) in status
    #   writer_stats() -> dict           StoreWriter.stats(): queued_rows, lag_s, written,
    #                                    lost, retries, last_error, store_up
    #   live_namespaces() -> list[str]   namespaces with pods now (the lab's)


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
                   bucket_s: float) -> Any: ...

    def namespaces(self, *, since_ns: int | None, until_ns: int | None) -> Any: ...

    def sql(self, text: str, *, limit: int, timeout_s: float) -> Any: ...

    def insert_arrow(self, table: Any) -> Any: ...


def source_store(source: object) -> HistoryStore | None:
    """The source's store, if it has one: `store` is optional on a FlowSource."""
    return getattr(source, "store", None)


def source_writer_stats(source: object) -> dict[str, Any] | None:
    """`writer_stats()` of the source (StoreWriter.stats()), or None without a writer."""
    fn = getattr(source, "writer_stats", None)
    if fn is None:
        return None
    stats = fn()
    return dict(stats) if stats is not None else None


def source_live_namespaces(source: object) -> list[str]:
    """Namespaces the source knows are live now (the lab's pods), if it says."""
    fn = getattr(source, "live_namespaces", None)
    return sorted(set(fn())) if fn is not None else []


def source_store_dsn(source: object) -> str | None:
    """The store's DSN with any password removed (status shows it)."""
    dsn = getattr(source, "store_dsn", None)
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
