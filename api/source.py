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
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from spyglass.collector.flow import Event


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
