"""The bounded in-memory flow ring: one writer, many readers, no silent gaps.

Modelled on Hubble's container/ring.go: the capacity is 2^n - 1 so the
backing store is a power of two indexed with a mask, and every event gets a
monotonic sequence number. A reader keeps its own sequence; if the writer has
lapped it, the reader is told how many events it missed with a LostEvent
(HUBBLE_RING_BUFFER) instead of getting a silent gap. The lock is held only
for O(1) writes and slice copies, so readers never hold up the collector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import cast

from spyglass.model import defaults
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Event, LostEvent

DEFAULT_CAPACITY = defaults.RING_CAPACITY
MAX_CAPACITY = (1 << 24) - 1
#: How many events `last()` copies per step while scanning backwards.
_SCAN_CHUNK = 4096


def validate_capacity(capacity: int) -> int:
    """Accept 2^n - 1 (1 <= n <= 24); otherwise say which valid values are nearest."""
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ValueError(f"ring capacity must be an integer of the form 2^n-1, got {capacity!r}")
    if 1 <= capacity <= MAX_CAPACITY and capacity & (capacity + 1) == 0:
        return capacity
    if capacity < 1:
        near = "1"
    elif capacity > MAX_CAPACITY:
        near = str(MAX_CAPACITY)
    else:
        k = (capacity + 1).bit_length()  # 2^(k-1) <= capacity + 1 < 2^k
        near = f"{(1 << (k - 1)) - 1} or {min((1 << k) - 1, MAX_CAPACITY)}"
    raise ValueError(f"ring capacity must be 2^n-1 between 1 and {MAX_CAPACITY} (as Hubble's "
                     f"event buffer capacity), got {capacity}: try {near}")


class FlowRing:
    """Holds the newest `capacity` events. Thread-safe for one writer and many readers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = validate_capacity(capacity)
        self._size = capacity + 1  # a power of two
        self._mask = self._size - 1
        self._buf: list[Event | None] = [None] * self._size
        self._head = 0  # sequence number of the next write
        self._lock = threading.Lock()

    # -- writer ----------------------------------------------------------------

    def write(self, ev: Event) -> None:
        with self._lock:
            self._buf[self._head & self._mask] = ev
            self._head += 1

    def write_many(self, evs: Iterable[Event]) -> None:
        items = evs if isinstance(evs, list) else list(evs)
        if len(items) > self._capacity:
            # Only the newest `capacity` can survive; the rest still count as written.
            skipped = len(items) - self._capacity
            items = items[skipped:]
        else:
            skipped = 0
        if not items:
            return
        with self._lock:
            self._head += skipped
            start = self._head & self._mask
            first = min(len(items), self._size - start)
            self._buf[start:start + first] = items[:first]
            if first < len(items):
                self._buf[0:len(items) - first] = items[first:]
            self._head += len(items)

    # -- state -----------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def head(self) -> int:
        """The sequence number the next write will get (a live reader starts here)."""
        return self._head

    @property
    def seen(self) -> int:
        """Events written since the ring was made."""
        return self._head

    @property
    def oldest(self) -> int:
        """The sequence number of the oldest event still held."""
        return max(0, self._head - self._capacity)

    def __len__(self) -> int:
        return min(self._head, self._capacity)

    # -- readers ---------------------------------------------------------------

    def _copy(self, start: int, stop: int) -> list[Event]:
        """Events with sequence numbers [start, stop); caller holds the lock."""
        if stop <= start:
            return []
        a, b = start & self._mask, stop & self._mask
        out = self._buf[a:b] if a < b else self._buf[a:] + self._buf[:b]
        return cast("list[Event]", out)  # slots in [start, stop) are all written

    def read_since(self, seq: int, max_n: int = 1024) -> tuple[list[Event], int]:
        """Events from `seq` on (at most `max_n`) and the sequence to ask for next.

        If `seq` was already overwritten, the list starts with a LostEvent
        saying exactly how many events this reader missed, then continues from
        the oldest event still held.
        """
        if seq < 0:
            raise ValueError(f"sequence numbers start at 0, got {seq}: use ring.head to follow "
                             "new events or ring.oldest to read everything held")
        if max_n < 1:
            raise ValueError(f"max_n must be at least 1, got {max_n}")
        with self._lock:
            head = self._head
            if seq > head:
                raise ValueError(f"sequence {seq} is ahead of the ring's head {head}: keep the "
                                 "`next_seq` that read_since returned, or start at ring.head")
            oldest = max(0, head - self._capacity)
            lost = oldest - seq if seq < oldest else 0
            start = max(seq, oldest)
            stop = min(head, start + max_n)
            events = self._copy(start, stop)
        if lost:
            events.insert(0, LostEvent(time_ns=time.time_ns(),
                                       source=LostEventSource.HUBBLE_RING_BUFFER,
                                       num_events_lost=lost))
        return events, stop

    def last(self, n: int, predicate: Callable[[Event], bool] | None = None) -> list[Event]:
        """The newest `n` events that match, oldest first.

        Scans backwards in chunks, copying each under the lock and testing it
        outside, so a slow predicate never blocks the writer. Events that are
        overwritten during the scan end it: they are older than everything
        already found.
        """
        if n <= 0:
            return []
        with self._lock:
            stop = self._head
            if predicate is None:
                return self._copy(max(stop - n, stop - self._capacity, 0), stop)
        found: list[Event] = []
        while len(found) < n:
            with self._lock:
                oldest = max(0, self._head - self._capacity)
                start = max(stop - _SCAN_CHUNK, oldest)
                if start >= stop:
                    break
                chunk = self._copy(start, stop)
            for ev in reversed(chunk):
                if predicate(ev):
                    found.append(ev)
                    if len(found) == n:
                        break
            stop = start
        found.reverse()
        return found
