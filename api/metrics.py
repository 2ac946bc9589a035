"""Prometheus `/metrics`: Hubble's flow metrics under `spyglass_`, plus the store writer.

Counters are fed by `FlowMetrics.observe(flows)`, which the agent calls once per
enriched batch, so the cost is one dictionary lookup per flow and label set
(the labelled children are cached: `Counter.labels` is slow enough to matter at
100k flows/s). Everything that is a state rather than an event (losses the agent
already counts, the writer's queue and lag) is read at scrape time from the
source, so the two can never disagree. Each app gets its own registry: no
global state, and tests can build as many apps as they like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spyglass.collector.lost import LossLedger
from spyglass.model.enums import (
    POLICY_MATCH_TEXT,
    EventType,
    ObservationPoint,
    Verdict,
)
from spyglass.model.flow import Event, Flow
from spyglass.storage.writer import WriterStats

PREFIX = "spyglass"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TYPE_NAME = {EventType.TRACE: "Trace", EventType.DROP: "Drop",
              EventType.POLICY_VERDICT: "PolicyVerdict"}


def _subtype(flow: Flow) -> str:
    """Hubble labels trace events by observation point, e.g. `to-endpoint`."""
    if flow.event_type != EventType.TRACE or not flow.observation_point:
        return ""
    return flow.observation_point.name.lower().replace("_", "-")


class FlowMetrics:
    """The counters of one app; `observe` is safe to call from the collector's thread."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.flows_processed = Counter(
            f"{PREFIX}_flows_processed", "Flows processed, by event type, subtype and verdict.",
            ["type", "subtype", "verdict"], registry=r)
        self.drops = Counter(f"{PREFIX}_drop", "Dropped flows, by drop reason and protocol.",
                             ["reason", "protocol"], registry=r)
        self.policy_verdicts = Counter(
            f"{PREFIX}_policy_verdicts", "Policy verdict events, by direction, match and action.",
            ["direction", "match", "action"], registry=r)
        self.tcp_flags = Counter(f"{PREFIX}_tcp_flags", "TCP flows by flag set.", ["flag"],
                                 registry=r)
        self.ports = Counter(
            f"{PREFIX}_port_distribution", "Forwarded requests by destination protocol and port.",
            ["protocol", "port"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _inc(self, counter: Counter, labels: tuple[str, ...], n: int = 1) -> None:
        key = (id(counter), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc(n)

    def observe(self, events: Iterable[Event]) -> None:
        """Count a batch of enriched flows (lost events are counted by the agent instead)."""
        for flow in events:
            if not isinstance(flow, Flow):
                continue
            verdict = flow.verdict.name
            etype = _TYPE_NAME.get(flow.event_type, flow.event_type.name.title())
            self._inc(self.flows_processed, (etype, _subtype(flow), verdict))
            proto = flow.protocol_name
            if flow.verdict == Verdict.DROPPED:
                self._inc(self.drops, (flow.drop_reason.name, proto))
            if flow.event_type == EventType.POLICY_VERDICT:
                self._inc(self.policy_verdicts, (
                    flow.traffic_direction.name.lower().replace("traffic_direction_", ""),
                    POLICY_MATCH_TEXT.get(flow.policy_match_type, "none").lower(),
                    verdict.lower()))
            if flow.tcp_flags:
                for name in flow.tcp_flag_names:
                    self._inc(self.tcp_flags, (name,))
            if (flow.verdict == Verdict.FORWARDED and flow.is_reply is not True
                    and flow.destination_port and flow.observation_point
                    != ObservationPoint.FROM_ENDPOINT):
                self._inc(self.ports, (proto, str(flow.destination_port)))

    def add_state(self, losses: LossLedger, writer: Callable[[], WriterStats | None]) -> None:
        """Register the scrape-time families: the loss ledger's totals, the store writer's."""
        self.registry.register(_StateCollector(losses, writer))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the agent's own totals at scrape time (see the module docstring)."""

    def __init__(self, losses: LossLedger, writer: Callable[[], WriterStats | None]) -> None:
        self.losses = losses
        self.writer = writer

    def describe(self) -> list[Metric]:
        return []  # never read the source at registration: it may not be up yet

    def collect(self) -> Iterator[Metric]:
        lost = CounterMetricFamily(f"{PREFIX}_lost_events", "Events lost, by where they were "
                                   "lost (perf ring, flow ring, store, client queue, restart).",
                                   labels=["source"])
        for source, n in sorted(self.losses.totals().items(), key=lambda kv: kv[0].name):
            lost.add_metric([source.name], float(n))
        yield lost
        w = self.writer()
        if w is None:
            return
        for name, help_text, value in (
                ("store_writer_queue_rows", "Flows waiting in the store writer's queue.",
                 w.queued_rows),
                ("store_writer_lag_seconds", "Age of the oldest flow not yet in the store.",
                 w.lag_s),
                ("store_up", "1 when the last write to the store succeeded.", w.store_up)):
            g = GaugeMetricFamily(f"{PREFIX}_{name}", help_text)
            g.add_metric([], float(value))
            yield g
        for name, help_text, count in (
                ("store_writer_written", "Flows written to the store.", w.written),
                ("store_writer_retries", "Store writes retried after a failure.", w.retries)):
            c = CounterMetricFamily(f"{PREFIX}_{name}", help_text)
            c.add_metric([], float(count))
            yield c
