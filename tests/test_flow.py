"""The Flow contract: Hubble-shaped JSON that round-trips exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import flows

from spyglass.collector.enriched import EnrichedBatch
from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import (
    Endpoint,
    Event,
    Flow,
    LostEvent,
    PolicyRef,
    Service,
    Workload,
    event_from_response,
    event_to_response,
    format_time_ns,
    parse_time_ns,
    responses,
)

SRC = Endpoint(ID=3, identity=4321, namespace="shop", pod_name="frontend-1",
               labels=("k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"),
               workloads=(Workload("frontend"),))
DST = Endpoint(ID=5, identity=5678, namespace="shop", pod_name="cart-0")
T0 = 1_764_165_988_576_123_456

FLOWS = [
    pytest.param(Flow(time_ns=T0, uuid="u1", protocol=Protocol.TCP, source_port=35010,
                      destination_port=8080, tcp_flags=0x02, source=SRC, destination=DST,
                      source_ip="10.244.0.2", destination_ip="10.244.0.3", is_reply=False,
                      observation_point=ObservationPoint.TO_ENDPOINT,
                      traffic_direction=TrafficDirection.INGRESS, node_name="n1",
                      interface_index=7, interface_name="lxc0123", packets=3, bytes=180),
                 id="tcp-syn"),
    pytest.param(Flow(time_ns=T0, protocol=Protocol.UDP, source_port=5353, destination_port=53,
                      source_ip="10.244.0.2", destination_ip="8.8.8.8"), id="udp-unknown-reply"),
    pytest.param(Flow(time_ns=T0, protocol=Protocol.ICMP, icmp_type=8, source_ip="10.244.0.2",
                      destination_ip="10.244.0.3", is_reply=True), id="icmp-echo"),
    pytest.param(Flow(time_ns=T0, verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
                      event_type=EventType.DROP, event_subtype=133, protocol=Protocol.TCP,
                      ingress_denied_by=(PolicyRef("deny-db", "shop"),),
                      destination_service=Service("cart", "shop"),
                      service_ip="10.244.0.9"), id="drop-with-policy"),
]


@pytest.mark.parametrize("flow", FLOWS)
def test_json_round_trip(flow: Flow) -> None:
    assert Flow.from_dict(flow.to_dict()) == flow


def test_hubble_field_names() -> None:
    d = FLOWS[0].values[0].to_dict()
    assert d["l4"] == {"TCP": {"source_port": 35010, "destination_port": 8080,
                               "flags": {"SYN": True}}}
    assert d["source"]["pod_name"] == "frontend-1"
    assert d["source"]["labels"][0] == "k8s:app=frontend"
    assert d["trace_observation_point"] == "TO_ENDPOINT"
    assert d["traffic_direction"] == "INGRESS"
    assert d["is_reply"] is False
    assert d["time"] == "2025-11-26T14:06:28.576123456Z"
    assert d["Summary"] == "TCP Flags: SYN"


@pytest.mark.parametrize(
    ("flags", "summary"),
    [pytest.param(0x12, "TCP Flags: SYN, ACK", id="syn-ack"),
     pytest.param(0x11, "TCP Flags: ACK, FIN", id="ack-fin"),
     pytest.param(0x18, "TCP Flags: ACK, PSH", id="ack-psh")],
)
def test_tcp_summary_order_is_hubbles(flags: int, summary: str) -> None:
    assert Flow(time_ns=0, protocol=Protocol.TCP, tcp_flags=flags).summary == summary


def test_lost_event_response_round_trip() -> None:
    ev = LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                   num_events_lost=7, cpu=1)
    resp = event_to_response(ev, "node-a")
    assert resp["lost_events"] == {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": 7,
                                   "cpu": 1}
    assert event_from_response(resp) == ev


@pytest.mark.parametrize("body", [
    pytest.param({"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "7", "cpu": 1},
                 id="hubble-protojson"),
    pytest.param({"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": 7,
                  "cpu": {"value": 1}}, id="spyglass-before"),
    pytest.param({"source": 1, "num_events_lost": 7, "cpu": 1}, id="numeric-source"),
])
def test_lost_event_reads_every_json_shape(body: dict[str, Any]) -> None:
    assert LostEvent.from_dict(body, T0) == LostEvent(
        time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER, num_events_lost=7, cpu=1)


@pytest.mark.parametrize(
    "text",
    [pytest.param("2025-11-26T14:06:28.576123456Z", id="nanos"),
     pytest.param("2025-11-26T14:06:28.576123456+00:00", id="offset")],
)
def test_time_parse(text: str) -> None:
    assert parse_time_ns(text) == T0
    assert format_time_ns(T0) == "2025-11-26T14:06:28.576123456Z"


def test_bad_response_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="expected a 'flow' or 'lost_events' key"):
        event_from_response({"nope": 1})


def test_responses_of_a_batch_equal_one_response_per_event() -> None:
    """The batch form shares endpoint JSON between flows; what it says is the same."""
    evs: list[Event] = [*flows(5), LostEvent(time_ns=7, source=LostEventSource.CLIENT_QUEUE,
                                             num_events_lost=2), *flows(3, start=1)]
    batch = EnrichedBatch.from_flows([e for e in evs if isinstance(e, Flow)]).to_flows()
    shared: list[Event] = [*batch[:5], evs[5], *batch[5:]]
    want = [event_to_response(e, "n1") for e in evs]
    assert responses(evs, "n1") == want
    assert responses(shared, "n1") == want
    assert json.dumps(responses(shared, "n1")) == json.dumps(want)
