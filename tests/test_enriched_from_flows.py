"""`EnrichedBatch.from_flows` and `take`: Flows into columns and back, unchanged. No kernel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.flows import flows
from support.store import any_flows

from spyglass.collector.enriched import EnrichedBatch, batches_from_flows
from spyglass.model.flow import Flow


@settings(max_examples=60, deadline=None)
@given(st.lists(any_flows(), max_size=30), st.data())
def test_flows_survive_columns_and_any_selection(drawn: list[Flow], data: st.DataObject) -> None:
    node = [dataclasses.replace(x, node_name="n1") for x in drawn]
    batch = EnrichedBatch.from_flows(node)
    assert batch.to_flows() == node
    rows = data.draw(st.lists(st.integers(0, max(0, len(node) - 1)), max_size=len(node))
                     if node else st.just([]))
    picked = batch.take(np.array(rows, dtype=np.int64))
    assert picked.to_flows() == [node[i] for i in rows]
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(node),
                                       max_size=len(node))), dtype=bool)
    assert batch.take(mask).to_flows() == [f for f, m in zip(node, mask, strict=True) if m]


def test_one_batch_per_node_run() -> None:
    a, b = flows(3), [dataclasses.replace(x, node_name="other") for x in flows(2, start=3)]
    parts = batches_from_flows([*a, *b, *a])
    assert [(len(p), p.node_name) for p in parts] == [(3, a[0].node_name), (2, "other"),
                                                      (3, a[0].node_name)]
    assert [f for p in parts for f in p.to_flows()] == [*a, *b, *a]
    with pytest.raises(ValueError, match="one node's flows"):
        EnrichedBatch.from_flows([*a, *b])
    assert len(EnrichedBatch.from_flows([])) == 0 and batches_from_flows([]) == []
