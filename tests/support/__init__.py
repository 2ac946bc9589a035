"""Fakes and builders shared by the tests (`from support import FakeSource, flow`).

One copy of each: a FlowSource that the API accepts as it accepts the agent, and a flow
builder whose defaults are a plain forwarded TCP SYN between two shop pods. A test says
only what it is about (`flow(3, verdict=Verdict.DROPPED)`), and every fake implements the
whole protocol it stands in for, so mypy checks it like the real thing.

The storage tests' pieces (a chDB store per module, Hypothesis flows, a recent T0) are
in `support.store`, imported on its own: it needs pytest and Hypothesis.
"""

from support.flows import NODE, T0, endpoint, flow, flows
from support.liststore import ListStore
from support.sources import FakeSource, collector_stats

__all__ = ["NODE", "T0", "FakeSource", "ListStore", "collector_stats", "endpoint", "flow",
           "flows"]
