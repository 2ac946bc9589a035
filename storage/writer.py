"""`StoreWriter`: the one thread that writes flows to the store.

The collector must never wait on ClickHouse, so `submit` only appends an
Arrow batch to a bounded in-memory queue. The thread flushes when
`flush_rows` are waiting or `flush_interval_s` has passed, and on close it
flushes all it can. When the store is slow or down it keeps up to
`max_rows` rows and retries with backoff (100 ms doubling to 5 s); past the
bound it drops the OLDEST rows, because the newest are what people look at,
and counts them as lost with source STORE, told through `lost_events()` and
`stats()` so that nothing disappears silently.

Each write is one MergeTree part, and ClickHouse merges parts in the background,
so few big writes cost less than many small ones: at 300k flows/s into chDB,
50k-row writes cost 3.0 µs of CPU per row (merges included) and 300k-row writes
2.5 µs. Hence a flush at 250k rows, or each second, whichever comes first.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from spyglass.model.enums import LostEventSource
from spyglass.model.flow import LostEvent
from spyglass.storage.schema import FLOW_SCHEMA
from spyglass.storage.store import FlowStore

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class WriterStats:
    """The writer's counters, as `spyglass status` shows them."""

    queued_rows: int  # waiting or being written
    lag_s: float  # age of the oldest unwritten flow
    written: int
    lost: int  # dropped past the bound or at close (also told as STORE lost events)
    retries: int
    last_error: str  # "" when the last write succeeded
    store_up: bool  # whether the store took the last write (or, before one, opened)


class StoreWriter:
    """Queue + thread. `store` may be a factory, called again after a failure to reconnect."""

    def __init__(self, store: FlowStore | Callable[[], FlowStore], *, max_rows: int = 1_000_000,
                 flush_rows: int = 250_000, flush_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_rows < 1 or flush_rows < 1 or flush_interval_s <= 0:
            raise ValueError("max_rows and flush_rows must be >= 1 and flush_interval_s > 0")
        self._factory: Callable[[], FlowStore] | None = None if isinstance(store, FlowStore) \
            else store
        self._store: FlowStore | None = store if isinstance(store, FlowStore) else None
        self.max_rows = max_rows
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[float, pa.RecordBatch]] = collections.deque()
        self._queued = 0
        self._inflight: list[tuple[float, pa.RecordBatch]] = []
        self._inflight_rows = 0
        self.written = 0
        self.lost = 0
        self._lost_untold = 0
        self.retries = 0
        self.last_error = ""
        self.store_up = self._store is not None
        self._closing = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="spyglass-store-writer",
                                        daemon=True)
        self._thread.start()

    # -- the collector's side --------------------------------------------------------

    def submit(self, batch: pa.RecordBatch) -> None:
        """Queue rows for the store; never blocks on the store."""
        if batch.schema != FLOW_SCHEMA:
            raise ValueError("the batch does not have the flows table's columns; build it with "
                             "enriched_to_arrow or flows_to_arrow")
        n = batch.num_rows
        if n == 0:
            return
        with self._cond:
            if self._closing:
                self._count_lost(n)
                return
            self._queue.append((self._clock(), batch))
            self._queued += n
            self._enforce_bound()
            if self._queued >= self.flush_rows:
                self._cond.notify()

    def _enforce_bound(self) -> None:
        """Drop the oldest queued rows until the total fits (caller holds the lock)."""
        excess = self._queued + self._inflight_rows - self.max_rows
        while excess > 0 and self._queue:
            t, head = self._queue[0]
            if head.num_rows <= excess:
                self._queue.popleft()
                cut = head.num_rows
            else:
                cut = excess
                self._queue[0] = (t, head.slice(cut))
            self._queued -= cut
            excess -= cut
            self._count_lost(cut)

    def _count_lost(self, n: int) -> None:
        self.lost += n
        self._lost_untold += n

    def lost_events(self) -> list[LostEvent]:
        """Losses not yet told, as one STORE LostEvent (for the collector to put in the ring)."""
        with self._cond:
            n, self._lost_untold = self._lost_untold, 0
        if not n:
            return []
        return [LostEvent(time_ns=time.time_ns(), source=LostEventSource.STORE,
                          num_events_lost=n)]

    def pending_rows(self) -> int:
        """Rows submitted and not yet written (queued or in flight): cheap, for every read."""
        with self._cond:
            return self._queued + self._inflight_rows

    def stats(self) -> WriterStats:
        with self._cond:
            oldest = [t for t, _ in self._inflight[:1]] + [t for t, _ in
                                                          itertools.islice(self._queue, 1)]
            return WriterStats(
                queued_rows=self._queued + self._inflight_rows,
                lag_s=max(0.0, self._clock() - min(oldest)) if oldest else 0.0,
                written=self.written, lost=self.lost, retries=self.retries,
                last_error=self.last_error, store_up=self.store_up)

    # -- the writer thread -------------------------------------------------------------

    def _take(self) -> None:
        """Move up to flush_rows (at least one batch) from the queue to in-flight."""
        rows = 0
        while self._queue and (rows == 0 or rows + self._queue[0][1].num_rows <= self.flush_rows):
            item = self._queue.popleft()
            self._inflight.append(item)
            rows += item[1].num_rows
        self._queued -= rows
        self._inflight_rows = rows

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        last_flush = self._clock()
        while True:
            with self._cond:
                while not self._closing and self._queued < self.flush_rows and (
                        not self._queue or self._clock() - last_flush < self.flush_interval_s):
                    wait = self.flush_interval_s - (self._clock() - last_flush)
                    self._cond.wait(timeout=max(0.01, wait) if self._queue else
                                    self.flush_interval_s)
                if not self._queue:
                    if self._closing:
                        return
                    last_flush = self._clock()
                    continue
                self._take()
                batches = [b for _, b in self._inflight]
            ok = self._write(batches)
            with self._cond:
                if ok:
                    self.written += self._inflight_rows
                    backoff = BACKOFF_START_S
                else:
                    self._queue.extendleft(reversed(self._inflight))
                    self._queued += self._inflight_rows
                self._inflight, self._inflight_rows = [], 0
                if not ok:
                    self._enforce_bound()
                    if self._clock() >= self._deadline:
                        self._count_lost(self._queued)
                        self._queue.clear()
                        self._queued = 0
                        return
                    self._cond.wait(timeout=min(backoff, max(0.0, self._deadline -
                                                             self._clock())))
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                last_flush = self._clock()

    def _write(self, batches: list[pa.RecordBatch]) -> bool:
        try:
            if self._store is None:
                assert self._factory is not None
                self._store = self._factory()
            self._store.insert_arrow(pa.Table.from_batches(batches, schema=FLOW_SCHEMA))
        except Exception as e:
            with self._cond:
                self.retries += 1
                self.last_error = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.store_up = False
            if self.retries <= 5 or self.retries % 100 == 0:
                log.warning("writing %d flows to the store failed (%s); retrying",
                            sum(b.num_rows for b in batches), self.last_error)
            if self._factory is not None and self._store is not None:
                store, self._store = self._store, None
                try:
                    store.close()
                except Exception:
                    log.debug("closing the failed store", exc_info=True)
            return False
        with self._cond:
            self.store_up = True
            self.last_error = ""
        return True

    def close(self, timeout: float = 10) -> None:
        """Flush what the store takes within `timeout`; what is left is counted as lost."""
        with self._cond:
            self._closing = True
            self._deadline = self._clock() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1)
        with self._cond:
            if self._queue:  # the thread is stuck in a slow insert: say what we give up
                self._count_lost(self._queued)
                self._queue.clear()
                self._queued = 0
        if self._factory is not None and self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> FlowStore | None:
        return self._store
