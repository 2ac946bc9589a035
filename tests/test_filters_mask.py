"""Every filter's numpy mask selects exactly the rows its predicate selects. No kernel.

The live ring filters column batches with `FilterSet.mask`, and history filters
with SQL; both must say what `FilterSet.matches` says of the same Flow. Batches
are built from the flows (`batches_from_flows`, one per node), so every
table-coded column (endpoints, addresses, services) and every code column is
exercised the way the collector's batches are.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.filters import FILTER_SETS, filter_values, spread
from support.store import any_flows

from spyglass.collector.enriched import EnrichedBatch, batches_from_flows
from spyglass.collector.filters import FIELDS, FilterSet, FlowFilter
from spyglass.collector.uuids import UuidSource
from spyglass.model.flow import Flow

NODES = ["", "node-a", "node-b.lab", "c1/node-a", "w1"]


def masked(fs: FilterSet, flows: list[Flow]) -> list[bool]:
    """The mask over the flows' batches, row for row."""
    out: list[bool] = []
    for batch in batches_from_flows(flows):
        m = fs.mask(batch)
        assert m.dtype == np.bool_ and m.shape == (len(batch),)
        out += m.tolist()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=st.lists(st.tuples(any_flows(), st.sampled_from(NODES)), max_size=40),
       filter_sets=st.lists(FILTER_SETS, min_size=1, max_size=4))
def test_mask_selects_what_the_predicate_selects(drawn: list[tuple[Flow, str]],
                                                 filter_sets: list[FilterSet]) -> None:
    flows = [dataclasses.replace(f, node_name=node) for f, node in drawn]
    for fs in filter_sets:
        assert masked(fs, flows) == [fs.matches(f) for f in flows], fs.describe()


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in FIELDS])
def test_every_field_on_its_own(field: str) -> None:
    """Each value of each field, alone, as an allow and as a deny filter."""
    flows = spread(random.Random(field))
    for value in filter_values(field):
        one = FlowFilter(**{field: (value,)})
        for fs in (FilterSet((one,)), FilterSet(deny=(one,))):
            want = [fs.matches(f) for f in flows]
            assert masked(fs, flows) == want, (field, value, fs.describe())


def test_the_spread_makes_every_field_select_some_rows_and_not_others() -> None:
    """So that the per-field test cannot pass with masks that are all True or all False."""
    flows = spread(random.Random(7)) + spread(random.Random(8))
    for field in FIELDS:
        hits = [sum(FilterSet((FlowFilter(**{field: (v,)}),)).matches(f) for f in flows)
                for v in filter_values(field)]
        assert any(0 < h < len(flows) for h in hits), field


def test_allow_and_deny_combine_as_hubble_says() -> None:
    flows = spread(random.Random(3))
    web = FlowFilter(source_pod=("web",))
    udp = FlowFilter(protocol=("udp",))
    fs = FilterSet((web, udp), deny=(FlowFilter(verdict=("DROPPED",)),))
    assert masked(fs, flows) == [fs.matches(f) for f in flows]
    assert any(masked(fs, flows)) and not all(masked(fs, flows))


def test_an_empty_batch_and_an_empty_filter() -> None:
    empty = EnrichedBatch.empty("node-a")
    for fs in (FilterSet(), FilterSet((FlowFilter(source_pod=("shop/",)),)),
               FilterSet(deny=(FlowFilter(protocol=("tcp",)),))):
        assert fs.mask(empty).shape == (0,)
    flows = spread(random.Random(1))
    assert all(masked(FilterSet(), flows))


def test_uuid_mask_over_the_collectors_own_ids() -> None:
    """Batches from the enricher keep ids as counters (never formatted to be filtered):
    the mask must find exactly the rows whose formatted id was asked for."""
    flows = spread(random.Random(5))[:50]
    batch = dataclasses.replace(EnrichedBatch.from_flows(flows, "node-a"),
                                uuid=UuidSource(prefix=0x1234).take(len(flows)))
    ids = batch.uuids
    other = UuidSource(prefix=0x9999).take(3).tolist()  # another node's, same counters
    for wanted in ([ids[0]], [ids[7], ids[49]], [other[0]], [ids[3], other[1]], ["u0001"],
                   [ids[5].upper()]):
        fs = FilterSet((FlowFilter(uuid=tuple(wanted)),))
        assert fs.mask(batch).tolist() == [u in wanted for u in ids], wanted
    assert FilterSet((FlowFilter(uuid=(ids[7],)),)).mask(batch).sum() == 1
