"""The flow ring: bounded, overwriting, and honest with readers that fall behind."""

from __future__ import annotations

import threading

import pytest
from support import flow

from spyglass.collector.ring import FlowRing
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
    assert FlowRing().capacity == 65535


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


@pytest.mark.parametrize(("n", "predicate", "want"), [
    pytest.param(3, None, [17, 18, 19], id="newest-three"),
    pytest.param(0, None, [], id="none"),
    pytest.param(3, lambda e: isinstance(e, Flow) and number(e) % 2 == 0, [14, 16, 18],
                 id="even-only"),
    pytest.param(100, lambda e: isinstance(e, Flow) and number(e) % 5 == 0, [5, 10, 15],
                 id="fewer-than-asked"),
    pytest.param(5, lambda e: False, [], id="nothing-matches"),
])
def test_last(n: int, predicate: object, want: list[int]) -> None:
    ring = FlowRing(15)  # holds 5..19
    ring.write_many([flow(i) for i in range(20)])
    assert numbers(ring.last(n, predicate)) == want


def test_last_scans_past_one_chunk() -> None:
    ring = FlowRing(16383)
    ring.write_many([flow(i) for i in range(10000)])
    got = ring.last(2, lambda e: isinstance(e, Flow) and number(e) < 3)
    assert numbers(got) == [1, 2]


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
