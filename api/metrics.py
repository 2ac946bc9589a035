"""Prometheus `/metrics`: Hubble's flow metrics under `spyglass_`, plus the store writer.

Counters are fed by `FlowMetrics.observe(batch)`, which the collector calls once per
enriched batch: whole-column groupings, so the cost is one counter increment per distinct
label set in the batch, not per flow (the labelled children are cached: `Counter.labels` is
slow enough to matter at 100k flows/s). Everything that is a state rather than an event
(losses the agent already counts, the writer's queue and lag) is read at scrape time from
the source, so the two can never disagree. Each app gets its own registry: no global state,
and tests can build as many apps as they like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spyglass.collector.enriched import REPLY_YES, EnrichedBatch
from spyglass.collector.lost import LossLedger
from spyglass.model.enums import (
    POLICY_MATCH_TEXT,
    TCP_FLAG_BITS,
    DropReason,
    EventType,
    ObservationPoint,
    PolicyMatchType,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import protocol_name
from spyglass.storage.writer import WriterStats

PREFIX = "spyglass"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TYPE_NAME = {EventType.TRACE: "Trace", EventType.DROP: "Drop",
              EventType.POLICY_VERDICT: "PolicyVerdict"}


def _type_name(code: int) -> str:
    etype = EventType(code) if code in EventType._value2member_map_ else EventType.UNSPEC
    return _TYPE_NAME.get(etype, etype.name.title())


def _subtype(point: int) -> str:
    """Hubble labels trace events by observation point, e.g. `to-endpoint` (0: none)."""
    return ObservationPoint(point).name.lower().replace("_", "-") if point else ""


def _groups(*columns: np.ndarray) -> Iterator[tuple[tuple[int, ...], int]]:
    """Each distinct combination of the columns' values and how many rows have it."""
    if not len(columns[0]):
        return
    keys, counts = np.unique(np.stack([c.astype(np.int64) for c in columns]), axis=1,
                             return_counts=True)
    for j, n in enumerate(counts.tolist()):
        yield tuple(int(k) for k in keys[:, j].tolist()), n


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

    def observe(self, b: EnrichedBatch) -> None:
        """Count one enriched batch, by whole columns: a handful of `np.unique` groups per
        batch, whatever its size (lost events are counted by the agent's ledger instead)."""
        if not len(b):
            return
        trace = b.event_type == int(EventType.TRACE)
        point = np.where(trace, b.observation_point, 0)
        for (etype, pt, verdict), n in _groups(b.event_type, point, b.verdict):
            self._inc(self.flows_processed,
                      (_type_name(etype), _subtype(pt), Verdict(verdict).name), n)
        dropped = b.verdict == int(Verdict.DROPPED)
        if dropped.any():
            for (reason, proto), n in _groups(b.drop_reason[dropped], b.protocol[dropped]):
                self._inc(self.drops, (DropReason(reason).name, protocol_name(proto)), n)
        pv = b.event_type == int(EventType.POLICY_VERDICT)
        if pv.any():
            for (tdir, match, verdict), n in _groups(b.traffic_direction[pv],
                                                     b.policy_match_type[pv], b.verdict[pv]):
                self._inc(self.policy_verdicts, (
                    TrafficDirection(tdir).name.lower().replace("traffic_direction_", ""),
                    POLICY_MATCH_TEXT.get(PolicyMatchType(match), "none").lower(),
                    Verdict(verdict).name.lower()), n)
        flagged = b.tcp_flags[b.tcp_flags != 0]
        if len(flagged):
            for name, bit in TCP_FLAG_BITS:
                n = int(np.count_nonzero(flagged & bit))
                if n:
                    self._inc(self.tcp_flags, (name,), n)
        ports = ((b.verdict == int(Verdict.FORWARDED)) & (b.is_reply != REPLY_YES)
                 & (b.destination_port != 0)
                 & (b.observation_point != int(ObservationPoint.FROM_ENDPOINT)))
        if ports.any():
            for (proto, port), n in _groups(b.protocol[ports], b.destination_port[ports]):
                self._inc(self.ports, (protocol_name(proto), str(port)), n)

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
