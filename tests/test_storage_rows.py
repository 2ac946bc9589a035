"""Flow -> Arrow row -> Flow is exact, in memory and through the store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.store import T0, any_flows, clear, open_store, store_params

from spyglass.collector.filters import FilterSet
from spyglass.model.flow import Flow
from spyglass.storage import FlowStore, flows_to_arrow, table_to_flows
from spyglass.storage.rows import ip_bytes, ip_text
from spyglass.storage.schema import FLOW_SCHEMA


@pytest.fixture(scope="module", params=store_params())
def store(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    yield from open_store(request.param, tmp_path_factory)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_flows(), max_size=5))
def test_arrow_round_trip_in_memory(fs: list[Flow]) -> None:
    table = flows_to_arrow(fs)
    assert table.schema == FLOW_SCHEMA
    assert table_to_flows(table) == fs


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fs=st.lists(any_flows(), min_size=1, max_size=40, unique_by=lambda f: f.uuid))
def test_round_trip_through_the_store(store: FlowStore, fs: list[Flow]) -> None:
    clear(store)
    assert store.insert_arrow(flows_to_arrow(fs)) == len(fs)
    back, cursor = store.query_flows(FilterSet(), limit=1000, order="asc")
    assert cursor is None
    key = lambda f: (f.time_ns, f.uuid)  # noqa: E731
    assert back == sorted(fs, key=key)


@pytest.mark.parametrize(("text", "version", "back"), [
    pytest.param("10.0.0.1", 4, "10.0.0.1", id="v4"),
    pytest.param("fd00::1", 6, "fd00::1", id="v6"),
    pytest.param("", 4, "", id="empty-is-null"),
    pytest.param("not-an-ip", 4, "", id="junk-is-null"),
    pytest.param("10.0.0.1", 6, "::ffff:a00:1", id="v4-in-v6-flow-reads-as-v6"),
])
def test_addresses(text: str, version: int, back: str) -> None:
    assert ip_text(ip_bytes(text), version) == back


def test_a_value_that_does_not_fit_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ports 0-65535"):
        flows_to_arrow([Flow(time_ns=T0, source_port=70000)])
