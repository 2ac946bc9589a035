"""Bounded concurrency for work a caller can make expensive: user SQL and history.

Every store call is serialised (chDB admits one query at a time per connection), and
FastAPI runs sync routes on a shared pool of about 40 threads. Without a bound, 40
slow `query sql` requests would each hold a thread waiting for the store, and
`/status`, the live stream's own work and every other route would wait behind them.
A gate admits a few callers at a time and answers the rest at once with 429 and a
`Retry-After`, so the pool never fills and the agent stays responsive.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from spyglass.api.errors import ApiError

#: User SQL: one runs, one waits; store-backed reads (history, aggregations): eight.
SQL_SLOTS = 2
HISTORY_SLOTS = 8


class Gate:
    """At most `slots` callers inside at once; the others get 429 straight away."""

    def __init__(self, slots: int, what: str, retry_after_s: int = 2) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, not {slots}")
        self.slots = slots
        self.what = what
        self.retry_after_s = retry_after_s
        self._inside = 0
        self._refused = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        with self._lock:
            if self._inside >= self.slots:
                self._refused += 1
                raise ApiError(429, f"{self.slots} {self.what} are already running, the most "
                                    f"this agent runs at once; retry in {self.retry_after_s} s",
                               {"Retry-After": str(self.retry_after_s)})
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1

    @property
    def inside(self) -> int:
        return self._inside

    @property
    def refused(self) -> int:
        return self._refused
