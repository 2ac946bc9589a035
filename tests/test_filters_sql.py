"""Every filter's SQL selects exactly the flows its Python predicate selects.

The property test inserts generated flows into a chDB store and runs
generated filter sets both ways; the injection test sends SQL-looking text
through every filter field and checks it comes back as data.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.filters import FILTER_SETS, filter_values, spread
from support.store import T0, any_flows, clear, open_store, store_params

from spyglass.collector.filters import FIELDS, FilterError, FilterSet, FlowFilter
from spyglass.collector.filters.sql import glob_regex
from spyglass.model.flow import Flow
from spyglass.storage import FlowStore, flows_to_arrow


@pytest.fixture(scope="module", params=store_params())
def store(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    yield from open_store(request.param, tmp_path_factory)


def _selected(store: FlowStore, fs: FilterSet) -> set[str]:
    got, cursor = store.query_flows(fs, limit=10_000)
    assert cursor is None
    return {f.uuid for f in got}


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fl=st.lists(any_flows(), min_size=1, max_size=40, unique_by=lambda f: f.uuid),
       filter_sets=st.lists(FILTER_SETS, min_size=1, max_size=4))
def test_sql_selects_what_the_predicate_selects(store: FlowStore, fl: list[Flow],
                                                filter_sets: list[FilterSet]) -> None:
    clear(store)
    store.insert_arrow(flows_to_arrow(fl))
    for fs in filter_sets:
        want = {f.uuid for f in fl if fs.matches(f)}
        assert _selected(store, fs) == want, fs.describe()
        assert store.count(fs) == len(want)


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in FIELDS])
def test_every_field_on_its_own(store: FlowStore, field: str) -> None:
    """Each value of each field against a fixed spread of flows (a quick, exhaustive pass)."""
    fl = spread(random.Random(field))
    clear(store)
    store.insert_arrow(flows_to_arrow(fl))
    for value in filter_values(field):
        fs = FilterSet((FlowFilter(**{field: (value,)}),))
        assert _selected(store, fs) == {f.uuid for f in fl if fs.matches(f)}, (field, value)


INJECTIONS = ["'); DROP TABLE flows; --", "shop/'; DROP TABLE flows; --",
              "x' OR 1=1 --", "{f0:String}", "\\'; SELECT 1; --", "1); DROP TABLE flows",
              "'||'1'='1"]  # the last has no blank, ':' or '/': a uuid and an interface name


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in FIELDS])
def test_sql_injection_comes_back_as_data(store: FlowStore, field: str) -> None:
    clear(store)
    store.insert_arrow(flows_to_arrow([Flow(time_ns=T0, uuid="keep")]))
    for text in INJECTIONS:
        try:
            fs = FilterSet((FlowFilter(**{field: (text,)}),))
        except FilterError:
            continue  # refused as bad syntax: never reaches SQL
        store.query_flows(fs, limit=10)
        store.count(fs)
    assert store.count(FilterSet()) == 1  # the table is still there, with its row


def test_injection_text_reaches_sql_only_as_parameters() -> None:
    """Values that do parse (node globs, label values) are parameters, not SQL text."""
    fs = FilterSet((FlowFilter(node_name=("a*",), source_label=("app in (x,y)",)),))
    text, params = fs.sql()
    assert "'x'" not in text and "a*" not in text
    assert ["x", "y"] in params.values()


@pytest.mark.parametrize("pattern", [pytest.param(p, id=p) for p in [
    "node-a", "*", "*.lab", "w?", "[nw]*", "[!n]*", "[]x]*", "[!]x]", "[z-a]*", "[a-c-e]",
    "a[", "**b", "[!]", "x/y*", ".*", "[-a]", "[a-]"]])
def test_globs_match_like_fnmatch(store: FlowStore, pattern: str) -> None:
    names = ["node-a", "node-b.lab", "w1", "x/yz", "]x", "a[", "b", "-", "e", ".lab", "!", "z"]
    regex = glob_regex(pattern)
    rows = store._client.query("SELECT n FROM (SELECT arrayJoin({ns:Array(String)}) AS n) "
                               "WHERE match(n, {re:String})",
                               parameters={"ns": names, "re": regex}).result_rows
    assert {r[0] for r in rows} == {n for n in names if fnmatch.fnmatchcase(n, pattern)}
