"""The writer: batches flush by size, by time and at close; a store that goes away costs
nothing inside the bound and a counted, told loss past it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest
from support.store import T0, clear, open_store

from spyglass.collector.filters import FilterSet
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Flow
from spyglass.storage import FlowStore, StoreWriter, WriterStats, flows_to_arrow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    yield from open_store("chdb", tmp_path_factory)


@pytest.fixture
def empty(store: FlowStore) -> FlowStore:
    clear(store)
    return store


def rows(start: int, n: int) -> pa.RecordBatch:
    t = flows_to_arrow([Flow(time_ns=T0 + i, uuid=f"w{i:07d}") for i in range(start, start + n)])
    return t.to_batches()[0]


def wait_for(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def stored(store: FlowStore) -> list[str]:
    fl, _ = store.query_flows(FilterSet(), limit=100_000, order="asc")
    return [f.uuid for f in fl]


def test_flushes_by_size(empty: FlowStore) -> None:
    w = StoreWriter(empty, flush_rows=100, flush_interval_s=60)
    try:
        w.submit(rows(0, 60))
        w.submit(rows(60, 60))
        # Past flush_rows a flush of at most flush_rows goes out; the rest waits its turn.
        wait_for(lambda: w.stats().written == 60)
        assert w.stats().queued_rows == 60
        assert stored(empty) == [f"w{i:07d}" for i in range(60)]
    finally:
        w.close()


def test_flushes_by_time_and_at_close(empty: FlowStore) -> None:
    w = StoreWriter(empty, flush_rows=10_000, flush_interval_s=0.2)
    w.submit(rows(0, 5))
    wait_for(lambda: w.stats().written == 5)
    w2 = StoreWriter(empty, flush_rows=10_000, flush_interval_s=60)
    w2.submit(rows(5, 7))
    w2.close()
    w.close()
    assert w2.stats().written == 7 and w2.stats().queued_rows == 0
    assert len(stored(empty)) == 12


class FlakyFactory:
    """A store factory that fails while `down` is set (the store went away)."""

    def __init__(self, store: FlowStore) -> None:
        self.store = store
        self.down = True
        self.calls = 0

    def __call__(self) -> FlowStore:
        self.calls += 1
        if self.down:
            raise ConnectionError("ClickHouse at 10.0.0.9:8123 refused the connection")
        return _Unclosable(self.store)  # type: ignore[return-value]


class _Unclosable:
    """Shares the module's store with the writer without letting it close it."""

    def __init__(self, store: FlowStore) -> None:
        self._s = store

    def insert_arrow(self, table: pa.Table) -> int:
        return self._s.insert_arrow(table)

    def close(self) -> None:
        pass


def test_store_down_then_back_loses_nothing_inside_the_bound(empty: FlowStore) -> None:
    f = FlakyFactory(empty)
    w = StoreWriter(f, max_rows=1000, flush_rows=50, flush_interval_s=0.05)
    try:
        for k in range(10):
            w.submit(rows(k * 50, 50))
        wait_for(lambda: w.stats().retries >= 2)
        s = w.stats()
        assert s.store_up is False and "refused" in s.last_error
        assert s.queued_rows == 500 and s.lag_s > 0
        assert w.pending_rows() == 500  # the cheap count agrees with the snapshot
        f.down = False
        wait_for(lambda: w.stats().written == 500)
        assert w.stats().lost == 0 and w.stats().store_up is True
        assert w.lost_events() == []
        assert stored(empty) == [f"w{i:07d}" for i in range(500)]
    finally:
        w.close()


def test_past_the_bound_the_oldest_are_dropped_and_counted(empty: FlowStore) -> None:
    f = FlakyFactory(empty)
    w = StoreWriter(f, max_rows=300, flush_rows=100, flush_interval_s=0.05)
    try:
        for k in range(10):
            w.submit(rows(k * 100, 100))
        assert w.stats().queued_rows == 300
        assert w.stats().lost == 700
        lost = w.lost_events()
        assert [(e.source, e.num_events_lost) for e in lost] == [(LostEventSource.STORE, 700)]
        assert w.lost_events() == []  # told once
        f.down = False
        wait_for(lambda: w.stats().written == 300)
        assert stored(empty) == [f"w{i:07d}" for i in range(700, 1000)]  # the newest survive
    finally:
        w.close()


def test_close_with_the_store_down_counts_what_it_gives_up(empty: FlowStore) -> None:
    w = StoreWriter(FlakyFactory(empty), max_rows=1000, flush_rows=10, flush_interval_s=0.05)
    w.submit(rows(0, 40))
    w.close(timeout=0.5)
    assert w.stats() == WriterStats(queued_rows=0, lag_s=0.0, written=0, lost=40,
                                    retries=w.retries, last_error=w.last_error, store_up=False)
    assert w.pending_rows() == 0 and w.retries >= 1 and "refused" in w.last_error
    assert w.lost_events()[0].num_events_lost == 40


def test_a_batch_with_the_wrong_columns_is_refused_at_submit(empty: FlowStore) -> None:
    w = StoreWriter(empty)
    try:
        with pytest.raises(ValueError, match="enriched_to_arrow"):
            w.submit(pa.record_batch({"x": [1]}))
    finally:
        w.close()
