"""The flow ring: bounded, overwriting, and honest with readers that fall behind."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from support import flow

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.ring import FlowRing, Mask
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Event, Flow, LostEvent


def number(f: Flow) -> int:
    """Which `flow(i)` this is (its uuid is u{i:06d})."""
    return int(f.uuid[1:])


def numbers(events: list[Event]) -> list[int]:
    return [number(e) for e in events if isinstance(e, Flow)]


@pytest.mark.parametrize("capacity", [
    pytest.param(1, id="one"),
    pytest.param(3, id="three"),
    pytest.param(4095, id="hubble-default"),
    pytest.param(65535, id="spyglass-default"),
])
def test_valid_capacities(capacity: int) -> None:
    ring = FlowRing(capacity)
    assert ring.capacity == capacity
    assert (len(ring), ring.head, ring.seen) == (0, 0, 0)


@pytest.mark.parametrize(("capacity", "hint"), [
    pytest.param(65536, "try 65535 or 131071", id="power-of-two"),
    pytest.param(100000, "try 65535 or 131071", id="round-number"),
    pytest.param(2, "try 1 or 3", id="two"),
    pytest.param(0, "try 1", id="zero"),
    pytest.param(-1, "try 1", id="negative"),
    pytest.param(1 << 30, "try 16777215", id="too-big"),
])
def test_invalid_capacities_suggest_the_nearest(capacity: int, hint: str) -> None:
    with pytest.raises(ValueError, match=f"2\\^n-1.*got {capacity}: {hint}"):
        FlowRing(capacity)


def test_default_capacity() -> None:
    assert FlowRing().capacity == 262143  # 2^18 - 1: model.defaults says why


def test_overwrite_keeps_the_newest() -> None:
    ring = FlowRing(7)
    for i in range(20):
        ring.write(flow(i))
    assert (len(ring), ring.seen, ring.head, ring.oldest) == (7, 20, 20, 13)
    assert numbers(ring.last(100)) == list(range(13, 20))


@pytest.mark.parametrize(("sizes", "want"), [
    pytest.param([3, 3], list(range(6)), id="fits"),
    pytest.param([5, 6], list(range(4, 11)), id="wraps"),
    pytest.param([20], list(range(13, 20)), id="bigger-than-capacity"),
    pytest.param([6, 0, 6], list(range(5, 12)), id="with-empty-write"),
])
def test_write_many(sizes: list[int], want: list[int]) -> None:
    ring = FlowRing(7)
    n = 0
    for size in sizes:
        ring.write_many([flow(i) for i in range(n, n + size)])
        n += size
    assert ring.seen == n
    assert numbers(ring.last(100)) == want


def test_reader_in_step_gets_everything_in_order() -> None:
    ring = FlowRing(15)
    seq = ring.head
    got: list[Event] = []
    for i in range(40):
        ring.write(flow(i))
        if i % 5 == 4:
            evs, seq = ring.read_since(seq, 100)
            got += evs
    assert numbers(got) == list(range(40))
    assert not any(isinstance(e, LostEvent) for e in got)


def test_reader_that_falls_behind_is_told_exactly_how_much_it_lost() -> None:
    ring = FlowRing(7)
    ring.write_many([flow(i) for i in range(3)])
    evs, seq = ring.read_since(0)
    assert numbers(evs) == [0, 1, 2] and seq == 3
    ring.write_many([flow(i) for i in range(3, 20)])  # 17 more; 7 are held (13..19)
    evs, seq = ring.read_since(seq)
    lost = evs[0]
    assert isinstance(lost, LostEvent)
    assert lost.source == LostEventSource.HUBBLE_RING_BUFFER
    assert lost.num_events_lost == 10  # 3..12
    assert numbers(evs[1:]) == list(range(13, 20))
    assert seq == 20


def test_read_since_respects_max_n() -> None:
    ring = FlowRing(15)
    ring.write_many([flow(i) for i in range(10)])
    evs, seq = ring.read_since(0, max_n=4)
    assert numbers(evs) == [0, 1, 2, 3] and seq == 4
    evs, seq = ring.read_since(seq, max_n=100)
    assert numbers(evs) == list(range(4, 10)) and seq == 10
    assert ring.read_since(seq) == ([], 10)


@pytest.mark.parametrize(("seq", "max_n", "match"), [
    pytest.param(-1, 10, "start at 0", id="negative-seq"),
    pytest.param(99, 10, "ahead of the ring's head", id="future-seq"),
    pytest.param(0, 0, "max_n", id="zero-max"),
])
def test_read_since_rejects_bad_arguments(seq: int, max_n: int, match: str) -> None:
    ring = FlowRing(7)
    ring.write(flow(0))
    with pytest.raises(ValueError, match=match):
        ring.read_since(seq, max_n)


def uuid_mask(keep: Callable[[int], bool]) -> Mask:
    """A row mask over a batch by the flow's number (what a filter's mask is, by hand)."""
    return lambda b: np.array([keep(int(u[1:])) for u in b.uuids], dtype=bool)


@pytest.mark.parametrize(("n", "mask", "want"), [
    pytest.param(3, None, [17, 18, 19], id="newest-three"),
    pytest.param(0, None, [], id="none"),
    pytest.param(3, uuid_mask(lambda i: i % 2 == 0), [14, 16, 18], id="even-only"),
    pytest.param(100, uuid_mask(lambda i: i % 5 == 0), [5, 10, 15], id="fewer-than-asked"),
    pytest.param(5, uuid_mask(lambda i: False), [], id="nothing-matches"),
])
@pytest.mark.parametrize("batch", [1, 3, 20], ids=lambda b: f"batches-of-{b}")
def test_last(n: int, mask: Mask | None, want: list[int], batch: int) -> None:
    ring = FlowRing(15)  # holds 5..19
    for start in range(0, 20, batch):
        ring.write_batch(EnrichedBatch.from_flows([flow(i) for i in range(start, start + batch)
                                                   if i < 20]))
    assert numbers(ring.last(n, mask)) == want


def test_last_scans_past_one_chunk() -> None:
    ring = FlowRing(16383)
    ring.write_many([flow(i) for i in range(10000)])
    got = ring.last(2, uuid_mask(lambda i: i < 3))
    assert numbers(got) == [1, 2]


def test_last_before_a_sequence_and_a_live_reader_from_it_see_each_event_once() -> None:
    ring = FlowRing(63)
    ring.write_many([flow(i) for i in range(10)])
    before = ring.head
    ring.write_many([flow(i) for i in range(10, 15)])  # written while the backlog is read
    backlog = ring.last(4, before=before)
    live, _ = ring.read_since(before, 100)
    assert numbers(backlog) + numbers(live) == list(range(6, 15))


def test_lost_records_always_match_unless_excluded() -> None:
    ring = FlowRing(63)
    lost = LostEvent(time_ns=5, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                     num_events_lost=3)
    ring.write_batch(EnrichedBatch.from_flows([flow(0), flow(1)]), lost=[lost])
    ring.write_batch(EnrichedBatch.from_flows([flow(2)]))
    nothing = uuid_mask(lambda i: False)
    assert ring.last(10, nothing) == [lost]
    assert ring.last(10, nothing, lost=False) == []
    assert ring.first(10, nothing) == [lost]
    assert [type(e) for e in ring.first(2)] == [LostEvent, Flow]
    assert numbers(ring.flows(uuid_mask(lambda i: i != 1))) == [0, 2]


def test_a_batch_cut_by_the_capacity_keeps_its_newest_rows() -> None:
    """The oldest batch is cut logically: reads start at its first row still held, and a
    reader behind it is told how many rows it missed, to the row."""
    ring = FlowRing(7)
    ring.write_batch(EnrichedBatch.from_flows([flow(i) for i in range(5)]))
    ring.write_batch(EnrichedBatch.from_flows([flow(i) for i in range(5, 10)]))
    assert len(ring) == 7 and ring.oldest == 3
    chunks, nxt = ring.read_chunks(0, 100)
    assert isinstance(chunks[0], LostEvent) and chunks[0].num_events_lost == 3
    assert [len(c) for c in chunks[1:]] == [2, 5] and nxt == 10
    assert numbers(ring.read_since(3, 100)[0]) == list(range(3, 10))
    assert numbers(ring.read_since(4, 3)[0]) == [4, 5, 6]
    assert ring.time_bounds() == (flow(3).time_ns, flow(9).time_ns)
    big = FlowRing(3)
    big.write_batch(EnrichedBatch.from_flows([flow(i) for i in range(10)]))  # bigger than it
    assert numbers(big.read_since(big.oldest, 10)[0]) == [7, 8, 9] and big.seen == 10


def test_chunks_are_the_rows_that_were_written() -> None:
    flows = [flow(i) for i in range(40)]
    ring = FlowRing(1023)
    for start in range(0, 40, 8):
        ring.write_batch(EnrichedBatch.from_flows(flows[start:start + 8]))
    chunks, _ = ring.read_chunks(5, 30)
    assert [f for c in chunks if isinstance(c, EnrichedBatch) for f in c.to_flows()] == \
        flows[5:35]


def test_many_small_batches_stay_bounded() -> None:
    """One flow per batch (an idle agent's reads): the ring's entry lists stay bounded."""
    ring = FlowRing(255)
    for i in range(5000):
        ring.write_batch(EnrichedBatch.from_flows([flow(i)]))
    assert numbers(ring.read_since(ring.oldest, 1000)[0]) == list(range(4745, 5000))
    assert len(ring._starts) < 3 * 1024


def test_concurrent_reader_never_sees_a_silent_gap() -> None:
    """Every sequence number is either delivered or counted as lost, in order."""
    ring = FlowRing(63)
    total = 20000
    seen: list[int] = []
    lost = 0
    done = threading.Event()

    def writer() -> None:
        for start in range(0, total, 7):
            ring.write_many([flow(i) for i in range(start, min(total, start + 7))])
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    seq = 0
    while not (done.is_set() and seq == ring.head):
        evs, seq = ring.read_since(seq, 50)
        for e in evs:
            if isinstance(e, LostEvent):
                lost += e.num_events_lost
            else:
                assert not seen or number(e) > seen[-1]
                seen.append(number(e))
    t.join()
    assert len(seen) + lost == total
    assert seen[-1] == total - 1
