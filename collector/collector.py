"""The collector loop: perf rings -> decode -> enrich -> flow ring, on one thread.

The loop is the ring's single writer. Everything stays in numpy columns: the ring, the store
and the metrics all take the one enriched batch, and no `Flow` is built here (readers build
them for what they send); losses on the way (perf ring overruns, perf_submit failures
counted in the kernel, samples that fail to decode, batches that fail to enrich) are counted
and, where they are events the user expected to see, written into the ring as LostEvents so
that nobody reading the stream mistakes a gap for silence.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from spyglass.collector.decoder import DecodedBatch, Decoder
from spyglass.collector.enrich import Enricher
from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.lost import LossLedger, PerfLoss
from spyglass.collector.perf import ReadBatch
from spyglass.collector.ring import FlowRing
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import LostEvent

log = logging.getLogger(__name__)

#: The window over which flows/s is measured, as `hubble status` does.
RATE_WINDOW_S = 10.0
_RATE_STEP_S = 0.1
#: At stop, read at most this many times more to drain the perf rings.
_DRAIN_READS = 64

#: Called with each enriched batch (the rows the ring got, with the same uuids), on the
#: collector thread: the store's hook (`spyglass.storage.store_hook`) and the metrics read
#: its columns, and neither enriches anything again nor builds a Flow.
BatchHook = Callable[[EnrichedBatch], None]
#: Drained every read; what it returns is told in the stream and counted (e.g. the store
#: writer's STORE losses).
LostSource = Callable[[], Sequence[LostEvent]]


class Reader(Protocol):
    """What the loop needs from a PerfReader (tests use a fake)."""

    def read(self, timeout_ms: int = 50) -> ReadBatch: ...

    def commit(self) -> None:
        """Free what the last read returned: it has been delivered."""


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """A snapshot for `status`, `/metrics` and the API."""

    seen_flows: int
    flows_rate: float
    lost_by_cpu: dict[int, PerfLoss]  # the perf ring's loss, both sides' counts, per CPU
    perf_kernel_counted: int
    perf_reported: int
    decode_errors: dict[str, int]
    perf_malformed: int
    getter_errors: int
    failed_batches: int
    reads: int
    running: bool
    hook_errors: int


class Collector:
    """Runs the loop on a daemon thread; `run_once` is the same step, for tests and tools."""

    def __init__(self, reader: Reader, decoder: Decoder, enricher: Enricher, ring: FlowRing,
                 *, submit_failures: Callable[[], list[int]] | None = None,
                 poll_timeout_ms: int = 50, lost_interval_s: float = 1.0,
                 counters_interval_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 on_batch: Sequence[BatchHook] = (),
                 lost_sources: Sequence[LostSource] = (),
                 losses: LossLedger | None = None,
                 kernel_baseline: Sequence[int] | None = None,
                 on_read: Callable[[], None] | None = None) -> None:
        """`losses` is the agent's ledger (a new one by default). `kernel_baseline` is the
        datapath's failure count per CPU that is not ours to tell (by default, what the
        counters say now). `on_read` runs on the collector thread after every read is
        processed and committed (the agent notes what it delivered)."""
        self.reader = reader
        self.decoder = decoder
        self.enricher = enricher
        self.ring = ring
        self.submit_failures = submit_failures
        self.poll_timeout_ms = poll_timeout_ms
        self.counters_interval_s = counters_interval_s
        self._clock = clock
        self.lost = losses if losses is not None else LossLedger(interval_s=lost_interval_s)
        self.on_read = on_read
        self.seen_flows = 0
        self.reads = 0
        self.perf_malformed = 0
        self.failed_batches = 0
        self.on_batch = tuple(on_batch)
        self.lost_sources = tuple(lost_sources)
        self.hook_errors = 0
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._latest = (0.0, 0)
        self._last_counters = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters that stats() reads
        if kernel_baseline is not None:
            self.lost.kernel_baseline(kernel_baseline)
        if submit_failures is not None:
            self._poll_counters(force=True)  # without a baseline: earlier losses are not ours

    # -- one step ----------------------------------------------------------------

    def run_once(self, timeout_ms: int | None = None) -> int:
        """Read, decode, enrich and write one batch, then commit it; returns the flows
        written. Committing after the batch is delivered (ring, hooks) means that a process
        killed mid-batch leaves it in the perf ring for the next reader."""
        t = self.poll_timeout_ms if timeout_ms is None else timeout_ms
        batch = self.reader.read(t)
        n = self._process(batch, force_lost=False)
        self._delivered()
        return n

    def _delivered(self) -> None:
        self.reader.commit()
        if self.on_read is not None:
            try:
                self.on_read()
            except Exception:
                log.exception("the collector's on_read callback failed")

    def _process(self, batch: ReadBatch, *, force_lost: bool) -> int:
        now = self._clock()
        enriched: EnrichedBatch | None = None
        if len(batch.records):
            try:
                decoded: DecodedBatch = self.decoder.decode(batch.records, batch.cpu)
                enriched = self.enricher.enrich_batch(decoded)
            except Exception:
                # Never let one bad batch stop the loop; say how many events it cost.
                log.exception("failed to process a batch of %d events", len(batch.records))
                with self._lock:
                    self.failed_batches += 1
                self.lost.add(LostEventSource.UNKNOWN_LOST_EVENT_SOURCE, len(batch.records))
                enriched = None
            else:
                self._run_hooks(enriched)
        n = len(enriched) if enriched is not None else 0
        for ev in self._drain_lost_sources():
            self.lost.add(ev.source, ev.num_events_lost)
        self.lost.perf_lost(batch.lost_by_cpu)
        self._poll_counters(force=force_lost, now=now)
        lost = self.lost.due(now, time.time_ns(), force=force_lost)
        with self._lock:
            self.reads += 1
            self.perf_malformed += batch.malformed
            self.seen_flows += n
            self._latest = (now, self.seen_flows)
            if not self._rate or now - self._rate[-1][0] >= _RATE_STEP_S:
                self._rate.append(self._latest)
            while len(self._rate) > 1 and now - self._rate[1][0] >= RATE_WINDOW_S:
                self._rate.popleft()
        if lost or n:
            self.ring.write_batch(enriched if enriched is not None
                                  else EnrichedBatch.empty(), lost)
        return n

    def _run_hooks(self, enriched: EnrichedBatch) -> None:
        """A hook that fails costs its own output, never the ring's flows or the loop."""
        for hook in self.on_batch:
            try:
                hook(enriched)
            except Exception:
                with self._lock:
                    self.hook_errors += 1
                    n = self.hook_errors
                if n <= 10 or n % 1000 == 0:
                    log.exception("batch hook %r failed (%d so far)", hook, n)

    def _drain_lost_sources(self) -> list[LostEvent]:
        out: list[LostEvent] = []
        for source in self.lost_sources:
            try:
                out.extend(source())
            except Exception:
                log.exception("reading lost events from %r failed", source)
        return out

    def _poll_counters(self, *, force: bool, now: float | None = None) -> None:
        if self.submit_failures is None:
            return
        now = self._clock() if now is None else now
        if not force and now - self._last_counters < self.counters_interval_s:
            return
        self._last_counters = now
        try:
            counters = self.submit_failures()
        except Exception:
            log.exception("reading the datapath's perf_submit failure counters failed")
            return
        self.lost.kernel_counters(counters)

    # -- thread ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the collector is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spyglass-collector",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                # A reader failure (e.g. the reader was closed under us) ends the loop
                # loudly rather than spinning on it.
                log.exception("the collector loop stopped on an error")
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, drain what is left in the perf rings and tell all losses.

        Draining matters: with batched wakeups up to a watermark of events can be sitting
        in each ring when we are asked to stop. The reader stays open (its owner closes
        it, and decides whether the rings go on for the next agent).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the collector thread did not stop within {timeout} s")
            self._thread = None
        for _ in range(_DRAIN_READS):
            try:
                batch = self.reader.read(0)
            except Exception:
                log.exception("draining the perf rings failed")
                break
            empty = not len(batch.records) and not batch.lost_by_cpu
            self._process(batch, force_lost=empty)
            self._delivered()
            if empty:
                break

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- status ------------------------------------------------------------------

    def flows_rate(self) -> float:
        with self._lock:
            if not self._rate:
                return 0.0
            (t0, n0), (t1, n1) = self._rate[0], self._latest
        # An idle collector still reads every poll timeout, so the window stays fresh.
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def snapshot(self) -> CollectorStats:
        rate = self.flows_rate()
        with self._lock:
            return CollectorStats(
                seen_flows=self.seen_flows,
                flows_rate=rate,
                lost_by_cpu=self.lost.by_cpu(),
                perf_kernel_counted=self.lost.kernel_counted,
                perf_reported=self.lost.perf_reported,
                decode_errors={k.value: v for k, v in self.decoder.errors.items()},
                perf_malformed=self.perf_malformed,
                getter_errors=self.enricher.getter_errors,
                failed_batches=self.failed_batches,
                reads=self.reads,
                running=self.running,
                hook_errors=self.hook_errors,
            )
