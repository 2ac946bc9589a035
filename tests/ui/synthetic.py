"""Synthetic flows for the fast UI tests: a small shop, its drops, the world and the host.

The flows are real `Flow` records written into a real `FlowRing`, served by the
real API app, so the browser sees exactly the JSON a running agent sends.
"""

from __future__ import annotations

import itertools
import threading
import time

from support import FakeSource

from spyglass.collector.ring import FlowRing
from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Event, Flow, LostEvent, PolicyRef, Workload

NODE = "ui-node"
_IPS = {"frontend-0": "10.244.0.11", "frontend-1": "10.244.0.12", "cart-0": "10.244.0.13",
        "db-0": "10.244.0.14", "loadgen-0": "10.244.0.21", "monitor-0": "10.244.0.22"}
_IDS = {"frontend": 20001, "cart": 20002, "db": 20003, "loadgen": 20004, "monitor": 20005}
DENY_POLICY = PolicyRef("db-allow-cart-only", "shop", "NetworkPolicy")


def pod(ns: str, name: str) -> Endpoint:
    app = name.rsplit("-", 1)[0]
    return Endpoint(ID=100 + len(name), identity=_IDS[app], namespace=ns,
                    labels=(f"k8s:app={app}", f"k8s:io.kubernetes.pod.namespace={ns}"),
                    pod_name=name, workloads=(Workload(app, "Deployment"),))


WORLD = Endpoint(identity=2, labels=("reserved:world",))
HOST = Endpoint(identity=1, labels=("reserved:host",))

_seq = itertools.count()


def tcp(src: tuple[str, str], dst: tuple[str, str], dport: int, *, t: int,
        verdict: Verdict = Verdict.FORWARDED, flags: int = 0x02) -> Flow:
    n = next(_seq)
    dropped = verdict == Verdict.DROPPED
    return Flow(
        time_ns=t, uuid=f"uuid-{n}", verdict=verdict,
        drop_reason=DropReason.POLICY_DENIED if dropped else DropReason.DROP_REASON_UNKNOWN,
        event_type=EventType.DROP if dropped else EventType.TRACE,
        observation_point=(ObservationPoint.UNKNOWN_POINT if dropped
                           else ObservationPoint.TO_ENDPOINT),
        traffic_direction=TrafficDirection.INGRESS if dropped else TrafficDirection.EGRESS,
        source_ip=_IPS[src[1]], destination_ip=_IPS[dst[1]], protocol=Protocol.TCP,
        source_port=40000 + n % 20000, destination_port=dport, tcp_flags=flags,
        source=pod(*src), destination=pod(*dst), is_reply=False, node_name=NODE,
        packets=1, bytes=74,
        ingress_denied_by=(DENY_POLICY,) if dropped else ())


def world_flow(t: int) -> Flow:
    n = next(_seq)
    return Flow(time_ns=t, uuid=f"uuid-{n}", source_ip="203.0.113.9",
                destination_ip=_IPS["frontend-0"], protocol=Protocol.TCP, source_port=51000,
                destination_port=8080, tcp_flags=0x02, source=WORLD,
                destination=pod("shop", "frontend-0"), is_reply=False, node_name=NODE,
                observation_point=ObservationPoint.TO_ENDPOINT,
                traffic_direction=TrafficDirection.INGRESS)


def host_flow(t: int) -> Flow:
    n = next(_seq)
    return Flow(time_ns=t, uuid=f"uuid-{n}", source_ip="10.244.0.1",
                destination_ip=_IPS["cart-0"], protocol=Protocol.TCP, source_port=52000,
                destination_port=8080, tcp_flags=0x02, source=HOST,
                destination=pod("shop", "cart-0"), is_reply=False, node_name=NODE,
                observation_point=ObservationPoint.TO_ENDPOINT,
                traffic_direction=TrafficDirection.INGRESS)


def udp(src: tuple[str, str], dst: tuple[str, str], dport: int, *, t: int) -> Flow:
    n = next(_seq)
    return Flow(time_ns=t, uuid=f"uuid-{n}", source_ip=_IPS[src[1]],
                destination_ip=_IPS[dst[1]], protocol=Protocol.UDP,
                source_port=41000 + n % 1000, destination_port=dport, source=pod(*src),
                destination=pod(*dst), is_reply=False, node_name=NODE,
                observation_point=ObservationPoint.TO_ENDPOINT,
                traffic_direction=TrafficDirection.EGRESS)


def shop_events(now_ns: int | None = None, rounds: int = 10) -> list[Event]:
    """A few rounds of the shop's traffic, ending at `now_ns`, with one lost-events record."""
    now = time.time_ns() if now_ns is None else now_ns
    step = 50_000_000
    t = now - rounds * 8 * step
    out: list[Event] = []
    for r in range(rounds):
        for ev in (
            tcp(("ops", "loadgen-0"), ("shop", "frontend-0"), 8080, t=t),
            tcp(("ops", "loadgen-0"), ("shop", "frontend-1"), 8080, t=t + 1),
            tcp(("shop", "frontend-0"), ("shop", "cart-0"), 8080, t=t + 2),
            tcp(("shop", "cart-0"), ("shop", "db-0"), 5432, t=t + 3),
            tcp(("shop", "frontend-1"), ("shop", "db-0"), 5432, t=t + 4,
                verdict=Verdict.DROPPED),
            udp(("shop", "frontend-0"), ("ops", "monitor-0"), 8125, t=t + 5),
            world_flow(t + 6),
            host_flow(t + 7),
        ):
            out.append(ev)
            t += step
        if r == rounds // 2:
            out.append(LostEvent(time_ns=t, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                                 num_events_lost=7, cpu=1))
    return out


def synthetic_source(capacity: int = 65535) -> FakeSource:
    """The UI's FlowSource: an empty ring on `ui-node`, and a perf ring that lost 7 events
    (as the lost-events record in `shop_events()` says), so status shows a loss."""
    source = FakeSource(capacity, node_name=NODE)
    source.losses.perf_lost({1: 7})
    return source


class Firehose:
    """Writes shop flows into a ring at a steady rate from a thread (the throughput test)."""

    def __init__(self, ring: FlowRing, per_second: int) -> None:
        self.ring = ring
        self.per_second = per_second
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-firehose", daemon=True)

    def __enter__(self) -> Firehose:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        tick = 0.05
        per_tick = max(1, int(self.per_second * tick))
        nxt = time.monotonic()
        while not self._stop.is_set():
            now = time.time_ns()
            batch = [tcp(("ops", "loadgen-0"), ("shop", "frontend-0"), 8080, t=now + i)
                     for i in range(per_tick)]
            self.ring.write_many(batch)
            self.written += len(batch)
            nxt += tick
            self._stop.wait(max(0.0, nxt - time.monotonic()))
