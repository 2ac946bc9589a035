"""The collector loop with a fake reader: flows reach the ring, losses are told."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from spyglass.collector.abi import EVENT_TRACE, pack_event
from spyglass.collector.collector import BatchHook, Collector
from spyglass.collector.decoder import ClockOffset, DecodedBatch, Decoder
from spyglass.collector.enrich import Enricher
from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.lost import LossLedger, PerfLoss
from spyglass.collector.perf import ReadBatch, parse_records, sample_record
from spyglass.collector.ring import FlowRing
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Event, Flow, LostEvent
from spyglass.model.getters import NoopGetter

PERF = LostEventSource.PERF_EVENT_RING_BUFFER


def read_of(ports: list[int], *, cpu: int = 0, lost: dict[int, int] | None = None,
            malformed: int = 0, bad: int = 0) -> ReadBatch:
    events = [pack_event(type=EVENT_TRACE, sport=p, ts_ns=p) for p in ports]
    events += [pack_event(type=99)] * bad
    recs = parse_records(b"".join(sample_record(e) for e in events)).records
    return ReadBatch(recs, np.full(len(recs), cpu, dtype=np.uint16), dict(lost or {}), malformed)


class FakeReader:
    """Hands out queued reads, then empty ones; thread-safe enough for the loop test."""

    def __init__(self, reads: list[ReadBatch] | None = None) -> None:
        self.reads: deque[ReadBatch] = deque(reads or [])
        #: Served only to non-blocking reads, i.e. the drain at stop().
        self.late: deque[ReadBatch] = deque()
        self.lock = threading.Lock()
        self.calls = 0
        self.commits = 0
        self.closed = False

    def push(self, rb: ReadBatch) -> None:
        with self.lock:
            self.reads.append(rb)

    def close(self) -> None:
        self.closed = True

    def commit(self) -> None:
        self.commits += 1

    def read(self, timeout_ms: int = 50) -> ReadBatch:
        assert not self.closed, "read after close"
        with self.lock:
            self.calls += 1
            if self.reads:
                return self.reads.popleft()
            if self.late and timeout_ms == 0:
                return self.late.popleft()
        if timeout_ms:
            threading.Event().wait(min(timeout_ms, 5) / 1000)
        return ReadBatch()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Counters:
    """The datapath's cumulative per-CPU perf_submit failure counters."""

    def __init__(self, values: list[int]) -> None:
        self.values = values

    def __call__(self) -> list[int]:
        return list(self.values)


def make(reader: FakeReader, *, counters: Counters | None = None,
         clock: FakeClock | None = None, enricher: Enricher | None = None,
         capacity: int = 1023, hooks: Sequence[BatchHook] = (),
         **kw: Any) -> tuple[Collector, FlowRing]:
    ring = FlowRing(capacity)
    n = NoopGetter()
    c = Collector(reader, Decoder(ClockOffset(0)), enricher or Enricher(n, n, n, "node-a"), ring,
                  submit_failures=counters, clock=clock or FakeClock(),
                  counters_interval_s=0.0, on_batch=hooks, **kw)
    return c, ring


def everything(ring: FlowRing) -> list[Event]:
    return ring.read_since(ring.oldest, 1 << 20)[0]


def lost_events(ring: FlowRing) -> list[LostEvent]:
    return [e for e in everything(ring) if isinstance(e, LostEvent)]


def test_batches_become_flows_in_the_ring() -> None:
    c, ring = make(FakeReader([read_of([1, 2, 3]), read_of([4, 5], cpu=1)]))
    assert c.run_once() == 3
    assert c.run_once() == 2
    flows = everything(ring)
    assert [f.source_port for f in flows if isinstance(f, Flow)] == [1, 2, 3, 4, 5]
    assert all(isinstance(f, Flow) and f.node_name == "node-a" for f in flows)
    assert c.snapshot().seen_flows == 5


def test_decode_errors_and_malformed_records_show_in_stats() -> None:
    c, ring = make(FakeReader([read_of([1], bad=2, malformed=3)]))
    c.run_once()
    s = c.snapshot()
    assert s.decode_errors["UNKNOWN_TYPE"] == 2
    assert s.perf_malformed == 3
    assert len(ring) == 1


def test_perf_lost_records_become_a_lost_event_with_cpu() -> None:
    c, ring = make(FakeReader([read_of([1], lost={1: 40})]))
    c.run_once()
    (lost,) = lost_events(ring)
    assert (lost.source, lost.cpu, lost.num_events_lost) == (PERF, 1, 40)
    assert c.lost.totals() == {PERF: 40}
    assert c.snapshot().perf_reported == 40


def test_kernel_counters_count_from_start_and_are_not_double_counted() -> None:
    counters = Counters([100, 7])  # losses from before we started: not ours
    clock = FakeClock()
    reader = FakeReader()
    c, ring = make(reader, counters=counters, clock=clock)
    c.run_once()
    assert lost_events(ring) == []
    counters.values = [130, 7]  # 30 perf_submit failures on CPU 0
    reader.push(read_of([1]))
    c.run_once()
    (lost,) = lost_events(ring)
    assert (lost.cpu, lost.num_events_lost) == (0, 30)
    # The perf ring reports 25 of those later: already told, nothing new.
    clock.t += 5
    reader.push(read_of([2], lost={0: 25}))
    c.run_once()
    assert len(lost_events(ring)) == 1
    s = c.snapshot()
    assert (s.perf_kernel_counted, s.perf_reported) == (30, 25)
    assert s.lost_by_cpu[0] == PerfLoss(kernel_counted=30, perf_reported=25)
    assert c.lost.totals() == {PERF: 30}


def test_lost_events_are_rate_limited_and_aggregated() -> None:
    counters = Counters([0, 0])
    clock = FakeClock()
    c, ring = make(FakeReader(), counters=counters, clock=clock)
    for step in range(1, 11):  # 10 losses of 3 each, 0.1 s apart
        counters.values = [3 * step, 0]
        clock.t += 0.1
        c.run_once(0)
    told = lost_events(ring)
    assert [e.num_events_lost for e in told] == [3]  # the first, then the limit holds
    clock.t += 1.0
    c.run_once(0)
    told = lost_events(ring)
    assert [e.num_events_lost for e in told] == [3, 27]  # nothing dropped, just aggregated


def test_a_batch_that_fails_to_enrich_is_counted_as_lost() -> None:
    class Broken(Enricher):
        def enrich_batch(self, b: DecodedBatch) -> EnrichedBatch:
            raise RuntimeError("boom")

    n = NoopGetter()
    c, ring = make(FakeReader([read_of([1, 2, 3])]), enricher=Broken(n, n, n, "x"))
    assert c.run_once() == 0
    (lost,) = lost_events(ring)
    assert (lost.source, lost.num_events_lost) == (LostEventSource.UNKNOWN_LOST_EVENT_SOURCE, 3)
    assert c.snapshot().failed_batches == 1


def test_hooks_get_the_enriched_batch_the_ring_holds() -> None:
    seen: list[EnrichedBatch] = []
    c, ring = make(FakeReader([read_of([1, 2, 3])]), hooks=[seen.append])
    c.run_once()
    (batch,) = seen
    flows = [e for e in everything(ring) if isinstance(e, Flow)]
    assert batch.to_flows() == flows
    assert batch.uuids == [f.uuid for f in flows]  # the store names each flow as the ring does
    assert batch.source_port.tolist() == [1, 2, 3]
    chunks, _ = ring.read_chunks(0, 10)
    assert chunks == [batch]  # the ring holds the batch itself: nothing copied or built


def test_a_failing_hook_costs_only_its_own_output() -> None:
    later: list[int] = []

    def broken(_b: EnrichedBatch) -> None:
        raise RuntimeError("store is on fire")

    c, ring = make(FakeReader([read_of([1, 2]), read_of([3])]),
                   hooks=[broken, lambda b: later.append(len(b))])
    assert c.run_once() == 2 and c.run_once() == 1
    assert [f.source_port for f in everything(ring) if isinstance(f, Flow)] == [1, 2, 3]
    assert later == [2, 1]  # the hook after the broken one still runs
    assert c.hook_errors == 2 and c.snapshot().hook_errors == 2
    assert c.snapshot().failed_batches == 0


def test_flows_rate_over_the_window() -> None:
    clock = FakeClock()
    reader = FakeReader()
    c, _ = make(reader, clock=clock)
    for _ in range(20):  # 10 flows every 0.5 s = 20 flows/s
        reader.push(read_of(list(range(10))))
        c.run_once()
        clock.t += 0.5
    assert c.snapshot().flows_rate == pytest.approx(20.0, rel=0.1)
    for _ in range(30):  # then 15 s of silence
        c.run_once(0)
        clock.t += 0.5
    assert c.snapshot().flows_rate == 0.0


def test_thread_start_stop_drains_and_tells_pending_losses() -> None:
    reader = FakeReader()
    counters = Counters([0])
    c, ring = make(reader, counters=counters)
    c.start()
    with pytest.raises(RuntimeError, match="already running"):
        c.start()
    reader.push(read_of([1, 2]))
    deadline = threading.Event()
    for _ in range(400):
        if ring.seen >= 2:
            break
        deadline.wait(0.005)
    assert ring.seen == 2
    # Left in the rings when stop() is called: only the drain sees them.
    reader.late.extend([read_of([3]), read_of([4])])
    counters.values = [5]  # whenever the loop or the drain sees it, it is told once
    c.stop()
    assert not c.running and not reader.closed  # its owner closes it (or keeps the rings)
    evs = everything(ring)
    assert [e.source_port for e in evs if isinstance(e, Flow)] == [1, 2, 3, 4]
    assert [e.num_events_lost for e in evs if isinstance(e, LostEvent)] == [5]


def test_a_read_is_committed_after_it_is_delivered_then_on_read_runs() -> None:
    order: list[str] = []
    reader = FakeReader([read_of([1, 2]), read_of([3])])
    c, ring = make(reader, hooks=[lambda b: order.append(f"hook {len(b)} @{reader.commits}")],
                   on_read=lambda: order.append(f"on_read @{reader.commits} seen {ring.seen}"))
    c.run_once()
    c.run_once()
    # The hook sees the batch before its commit; on_read sees it committed and in the ring.
    assert order == ["hook 2 @0", "on_read @1 seen 2", "hook 1 @1", "on_read @2 seen 3"]


def test_a_failing_on_read_does_not_stop_the_loop() -> None:
    def broken() -> None:
        raise OSError("the pinned map went away")

    c, ring = make(FakeReader([read_of([1]), read_of([2])]), on_read=broken)
    assert c.run_once() == 1 and c.run_once() == 1
    assert ring.seen == 2


def test_stop_commits_the_drained_reads() -> None:
    reader = FakeReader()
    c, _ = make(reader)
    reader.late.extend([read_of([1]), read_of([2])])
    c.stop()
    assert reader.commits == 3  # two reads and the empty one that ends the drain


def test_a_kernel_baseline_tells_the_failures_no_earlier_agent_told() -> None:
    """An adopted datapath: 100 failures on CPU 0 were told by the last agent, 130 happened."""
    c, ring = make(FakeReader([read_of([1])]), counters=Counters([130, 7]),
                   kernel_baseline=[100, 7])
    c.run_once()
    (lost,) = lost_events(ring)
    assert (lost.cpu, lost.num_events_lost) == (0, 30)
    assert c.lost.kernel_told() == {0: 130, 1: 7}


def test_kernel_told_holds_back_what_the_interval_delays() -> None:
    counters = Counters([0])
    clock = FakeClock()
    c, ring = make(FakeReader(), counters=counters, clock=clock)
    counters.values = [4]
    c.run_once(0)
    assert c.lost.kernel_told() == {0: 4}
    counters.values = [9]  # within the interval: counted, not told yet
    clock.t += 0.1
    c.run_once(0)
    assert c.lost.totals() == {PERF: 9} and c.lost.kernel_told() == {0: 4}
    c.stop()  # the drain tells everything
    assert c.lost.kernel_told() == {0: 9}
    assert [e.num_events_lost for e in lost_events(ring)] == [4, 5]


def test_a_shared_ledger_tells_other_sources_once_and_counts_untold_ones() -> None:
    losses = LossLedger()
    c, ring = make(FakeReader(), losses=losses)
    losses.add(LostEventSource.AGENT_RESTART, 12)
    losses.add(LostEventSource.CLIENT_QUEUE, 5, tell=False)  # the slow client was told
    c.run_once(0)
    c.run_once(0)
    told = [(e.source, e.num_events_lost) for e in lost_events(ring)]
    assert told == [(LostEventSource.AGENT_RESTART, 12)]
    assert losses.totals() == {LostEventSource.AGENT_RESTART: 12, LostEventSource.CLIENT_QUEUE: 5}


def test_perf_losses_cannot_be_added_by_hand() -> None:
    with pytest.raises(ValueError, match="kernel_counters"):
        LossLedger().add(PERF, 1)
