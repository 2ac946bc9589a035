"""The bounded in-memory flow ring: enriched column batches, one writer, many readers.

Modelled on Hubble's container/ring.go in what it promises: a capacity of 2^n - 1
events, a monotonic sequence number per event, and a reader that the writer has
lapped is told exactly how many events it missed with a LostEvent
(HUBBLE_RING_BUFFER) instead of getting a silent gap.

What it holds is columnar. The collector writes each read's `EnrichedBatch`
whole, so the ring is a bounded run of batches (and the LostEvents between
them), each with the sequence number of its first row; the oldest batch is cut
logically as newer rows push it past the capacity. Nothing is copied or
converted on the way in: a write is an append of a reference. Readers get
batch slices (`read_chunks`) and select rows with a filter's numpy mask; a
`Flow` is built only for a row that is actually sent (`read_since`, `last`,
`first` build them for their results alone). The lock is held for O(log n)
lookups and slice views, never while a filter runs, so readers never hold up
the collector.

Why not a preallocated structured array: the batch's tables (endpoints,
addresses, services, policies) are per batch, and copying rows into fixed
columns would mean re-coding them into global tables on the collector thread,
which costs more than the whole enrichment. A batch reference is the ring slot.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from spyglass.collector.enriched import EnrichedBatch, batches_from_flows
from spyglass.model import defaults
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Event, Flow, LostEvent

DEFAULT_CAPACITY = defaults.RING_CAPACITY
MAX_CAPACITY = (1 << 24) - 1
#: How many rows a reader gets per step of `last`/`first`/`flows` while scanning.
_SCAN_CHUNK = 8192

#: What a reader gets: a slice of a batch (views of its columns) or a lost-event record.
Chunk = EnrichedBatch | LostEvent
#: A row selection over a batch: a boolean mask (a filter's `FilterSet.mask`).
Mask = Callable[[EnrichedBatch], np.ndarray]


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


def chunk_events(chunk: Chunk, mask: Mask | None = None) -> list[Event]:
    """A chunk as events: a lost-event record as itself (never filtered out), a batch
    slice as the Flows of the rows `mask` selects (all rows without one)."""
    if isinstance(chunk, LostEvent):
        return [chunk]
    if mask is None:
        return list(chunk.to_flows())
    rows = mask(chunk)
    return list((chunk if rows.all() else chunk.take(rows)).to_flows())


class FlowRing:
    """Holds the newest `capacity` events. Thread-safe for one writer and many readers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = validate_capacity(capacity)
        # Parallel lists from `_first` on: the first sequence number of each entry and the
        # entry (a batch or one LostEvent). Entries before `_first` are gone; the lists are
        # compacted when that dead prefix grows past half.
        self._starts: list[int] = []
        self._items: list[Chunk | None] = []
        self._first = 0
        self._head = 0  # sequence number of the next write
        self._lock = threading.Lock()

    # -- writer ----------------------------------------------------------------

    def write_batch(self, batch: EnrichedBatch, lost: Sequence[LostEvent] = ()) -> None:
        """The collector's write: the read's lost-event records, then its enriched rows."""
        with self._lock:
            for ev in lost:
                self._append(ev, 1)
            if len(batch):
                self._append(batch, len(batch))
            self._trim()

    def write(self, ev: Event) -> None:
        self.write_many([ev])

    def write_many(self, evs: Iterable[Event]) -> None:
        """Events as objects (tests, imports): runs of Flows become batches, in order."""
        items = evs if isinstance(evs, list) else list(evs)
        chunks: list[Chunk] = []
        run: list[Flow] = []
        for ev in items:
            if isinstance(ev, Flow):
                run.append(ev)
                continue
            if run:
                chunks.extend(batches_from_flows(run))
                run = []
            chunks.append(ev)
        if run:
            chunks.extend(batches_from_flows(run))
        with self._lock:
            for c in chunks:
                self._append(c, 1 if isinstance(c, LostEvent) else len(c))
            self._trim()

    def _append(self, item: Chunk, n: int) -> None:
        self._starts.append(self._head)
        self._items.append(item)
        self._head += n

    def _trim(self) -> None:
        """Drop entries wholly older than the capacity; caller holds the lock."""
        oldest = self._head - self._capacity
        i = self._first
        starts = self._starts
        while i + 1 < len(starts) and starts[i + 1] <= oldest:
            i += 1
        if i < len(starts) and self._end(i) <= oldest:
            i += 1  # the newest entry is gone too (a write bigger than the ring)
        if i != self._first:
            for j in range(self._first, i):
                self._items[j] = None  # let it be freed
            self._first = i
            if self._first > 1024 and self._first * 2 > len(starts):
                del self._starts[:self._first], self._items[:self._first]
                self._first = 0

    def _end(self, i: int) -> int:
        return self._starts[i + 1] if i + 1 < len(self._starts) else self._head

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

    def _slice(self, start: int, stop: int) -> list[Chunk]:
        """The chunks holding sequence numbers [start, stop); caller holds the lock."""
        out: list[Chunk] = []
        if stop <= start:
            return out
        i = max(self._first, bisect.bisect_right(self._starts, start, lo=self._first) - 1)
        while i < len(self._starts) and self._starts[i] < stop:
            s, item = self._starts[i], self._items[i]
            assert item is not None  # entries from _first on are live
            if isinstance(item, LostEvent):
                if s >= start:
                    out.append(item)
            else:
                lo, hi = max(start - s, 0), min(stop - s, len(item))
                if hi > lo:
                    out.append(item if (lo, hi) == (0, len(item)) else item.slice(lo, hi))
            i += 1
        return out

    def read_chunks(self, seq: int, max_n: int = 1024) -> tuple[list[Chunk], int]:
        """Chunks from `seq` on (at most `max_n` events) and the sequence to ask for next.

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
            chunks = self._slice(start, stop)
        if lost:
            chunks.insert(0, LostEvent(time_ns=time.time_ns(),
                                       source=LostEventSource.HUBBLE_RING_BUFFER,
                                       num_events_lost=lost))
        return chunks, stop

    def read_since(self, seq: int, max_n: int = 1024) -> tuple[list[Event], int]:
        """`read_chunks` as events (every row a Flow): for readers that want them all."""
        chunks, stop = self.read_chunks(seq, max_n)
        return [ev for c in chunks for ev in chunk_events(c)], stop

    def last(self, n: int, mask: Mask | None = None, *, before: int | None = None,
             lost: bool = True) -> list[Event]:
        """The newest `n` events that match, oldest first, from those before `before`
        (default: the head now). Lost-event records always match unless `lost` is False.

        Scans backwards in chunks, taking each under the lock and filtering it
        outside, so a slow filter never blocks the writer. Events overwritten
        during the scan end it: they are older than everything already found.
        A live reader that starts at the same `before` sees every later event
        exactly once.
        """
        if n <= 0:
            return []
        with self._lock:
            stop = self._head if before is None else min(before, self._head)
        found: list[Event] = []  # newest first
        while len(found) < n:
            with self._lock:
                oldest = max(0, self._head - self._capacity)
                start = max(stop - _SCAN_CHUNK, oldest)
                if start >= stop:
                    break
                chunks = self._slice(start, stop)
            for chunk in reversed(chunks):
                if isinstance(chunk, LostEvent) and not lost:
                    continue
                evs = chunk_events(chunk, mask)
                found.extend(reversed(evs[-(n - len(found)):]))
                if len(found) >= n:
                    break
            stop = start
        found.reverse()
        return found

    def first(self, n: int, mask: Mask | None = None) -> list[Event]:
        """The oldest `n` events that match, read forward from the tail.

        The scan stops at the head as it was when called, so a busy writer cannot
        keep it running; events overwritten under the scan are skipped without a
        marker (they are simply no longer the oldest).
        """
        out: list[Event] = []
        with self._lock:
            end = self._head
        seq = self.oldest
        while len(out) < n and seq < end:
            with self._lock:
                seq = max(seq, self._head - self._capacity)
                stop = min(end, seq + _SCAN_CHUNK)
                chunks = self._slice(seq, stop)
            for chunk in chunks:
                out.extend(chunk_events(chunk, mask)[:n - len(out)])
                if len(out) >= n:
                    break
            seq = stop
        return out

    def flows(self, mask: Mask) -> list[Flow]:
        """Every flow held now (no lost-event records) that `mask` selects, oldest first."""
        out: list[Flow] = []
        with self._lock:
            end = self._head
        seq = self.oldest
        while seq < end:
            with self._lock:
                seq = max(seq, self._head - self._capacity)
                stop = min(end, seq + _SCAN_CHUNK)
                chunks = self._slice(seq, stop)
            for chunk in chunks:
                if not isinstance(chunk, LostEvent):
                    out.extend(chunk.take(mask(chunk)).to_flows())
            seq = stop
        return out

    def time_bounds(self) -> tuple[int, int] | None:
        """(oldest, newest) flow time held, or None when no flow is held."""
        with self._lock:
            chunks = self._slice(max(0, self._head - self._capacity), self._head)
        spans = [(int(c.time_ns.min()), int(c.time_ns.max())) for c in chunks
                 if not isinstance(c, LostEvent)]
        if not spans:
            return None
        return min(lo for lo, _ in spans), max(hi for _, hi in spans)
