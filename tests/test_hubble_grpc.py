"""Hubble's gRPC API (observer.Observer, peer.Peer) served from a ring and a store.

A real grpc.aio server on loopback and on a unix socket, real stubs as the hubble CLI
and Relay use them; the source is the tests' FakeSource (a real FlowRing) with the
list-backed store, so history and the ring's hand-over can be staged exactly.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from support import NODE, FakeSource, ListStore, flow, flows
from support.grpcserved import WAIT_S, Served, serve, uuids
from support.store import any_flows

from spyglass.api.hubble import observer_pb2, observer_pb2_grpc, peer_pb2
from spyglass.api.hubble.json import parse_get_flows_response
from spyglass.api.hubble_grpc import HubbleServer, messages, to_message
from spyglass.api.stream import StreamHub
from spyglass.model.enums import LostEventSource, Verdict
from spyglass.model.flow import Flow, LostEvent, event_from_response, event_to_response

NOW = time.time_ns()
T0 = NOW - 600 * 1_000_000_000


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(FakeSource(store=ListStore(), namespaces=["shop", "db"]), tmp_path) as s:
        yield s


def get(s: Served, **fields: object) -> list[observer_pb2.GetFlowsResponse]:
    return s.get(**fields)


def test_get_flows_number_is_the_newest_oldest_first(served: Served) -> None:
    served.source.ring.write_many(flows(10, t0=T0))
    got = get(served, number=3)
    assert uuids(got) == ["u000007", "u000008", "u000009"]
    # the wire message is exactly the flow's Hubble JSON, strictly parsed
    want = to_message(event_to_response(flow(7, t0=T0), NODE))
    assert got[0] == want
    assert got[0].node_name == NODE and got[0].flow.source.pod_name == "frontend-7"
    assert uuids(get(served, number=2, first=True)) == ["u000000", "u000001"]


def test_every_response_is_strict_hubble_json(served: Served) -> None:
    lost = LostEvent(time_ns=T0 + 5, source=LostEventSource.CLIENT_QUEUE, num_events_lost=4)
    served.source.ring.write_many([flow(0, t0=T0, verdict=Verdict.DROPPED), lost,
                                   flow(1, t0=T0, service_ip="10.96.0.10", service_port=80)])
    got = get(served, number=10)
    assert len(got) == 3 and got[1].lost_events.num_events_lost == 4
    assert got[1].lost_events.source == int(LostEventSource.CLIENT_QUEUE)  # Spyglass's own
    for msg in got:
        text = json_format.MessageToJson(msg, preserving_proto_field_name=True)
        assert parse_get_flows_response(text) == msg


def test_whitelist_and_blacklist_are_the_rest_apis_filters(served: Served) -> None:
    served.source.ring.write_many(
        [flow(0, t0=T0), flow(1, t0=T0, dport=80), flow(2, t0=T0, verdict=Verdict.DROPPED),
         flow(3, t0=T0, dport=80, verdict=Verdict.DROPPED)])
    allow = [observer_pb2.flow__pb2.FlowFilter(destination_port=["80"]),
             observer_pb2.flow__pb2.FlowFilter(verdict=[Verdict.DROPPED])]
    deny = [observer_pb2.flow__pb2.FlowFilter(source_pod=["shop/frontend-3"])]
    assert uuids(get(served, number=10, whitelist=allow, blacklist=deny)) == [
        "u000001", "u000002"]


def test_a_bad_request_says_what_is_wrong(served: Served) -> None:
    bad = observer_pb2.flow__pb2.FlowFilter(destination_port=["http"])
    with pytest.raises(grpc.RpcError) as err:
        get(served, number=1, whitelist=[bad])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "whitelist[0]" in str(err.value.details()) and "http" in str(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        get(served, follow=True, first=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_since_reads_the_store_beyond_the_ring(served: Served) -> None:
    store = served.source.store
    assert isinstance(store, ListStore)
    store.add(flows(8, t0=T0))                          # history the ring no longer holds
    served.source.ring.write_many(flows(4, start=6, t0=T0))  # 6, 7 in both; 8, 9 not yet
    req = {"since": {"seconds": (NOW - 3600 * 10**9) // 10**9}}
    got = get(served, **{"since": observer_pb2.google_dot_protobuf_dot_timestamp__pb2
                         .Timestamp(**req["since"])})
    assert uuids(got) == [f"u{i:06d}" for i in range(10)]
    last = get(served, number=3, since=observer_pb2.google_dot_protobuf_dot_timestamp__pb2
               .Timestamp(**req["since"]))
    assert uuids(last) == ["u000007", "u000008", "u000009"]


def test_since_without_a_store_is_refused(tmp_path: Path) -> None:
    source = FakeSource()
    server = HubbleServer(source, StreamHub(source.losses), listen="127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = observer_pb2_grpc.ObserverStub(ch)  # type: ignore[no-untyped-call]
            req = observer_pb2.GetFlowsRequest()
            req.since.seconds = 1
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetFlows(req, timeout=WAIT_S))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "flow store" in str(err.value.details())
    finally:
        server.stop()


def test_follow_streams_live_flows_and_lost_events_inline(served: Served) -> None:
    ring = served.source.ring
    ring.write_many(flows(3, t0=T0))
    call = served.observer.GetFlows(observer_pb2.GetFlowsRequest(number=1, follow=True),
                                    timeout=WAIT_S)
    got: list[observer_pb2.GetFlowsResponse] = []

    def read() -> None:
        try:
            for msg in call:
                got.append(msg)
                if len(got) == 4:
                    call.cancel()
        except grpc.RpcError as exc:  # the cancel above ends the iteration this way
            assert exc.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + WAIT_S
    while served.server.hub.active < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    lost = LostEvent(time_ns=T0 + 9, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                     num_events_lost=5, cpu=1)
    ring.write_many([flow(3, t0=T0), lost, flow(4, t0=T0)])
    reader.join(WAIT_S)
    assert uuids(got) == ["u000002", "u000003", "u000004"]  # the backlog, then live
    assert got[2].lost_events.num_events_lost == 5 and got[2].lost_events.cpu.value == 1


def test_server_status_nodes_and_namespaces(served: Served) -> None:
    served.source.ring.write_many(flows(5, t0=T0))
    st = served.observer.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=WAIT_S)
    assert (st.num_flows, st.max_flows, st.seen_flows) == (5, 1023, 5)
    assert st.version == "test" and st.uptime_ns > 0
    assert (st.num_connected_nodes.value, st.num_unavailable_nodes.value) == (1, 0)
    nodes = served.observer.GetNodes(observer_pb2.GetNodesRequest(), timeout=WAIT_S).nodes
    assert [(n.name, n.address, n.num_flows) for n in nodes] == [
        (NODE, f"127.0.0.1:{served.server.port}", 5)]
    assert nodes[0].state == 1  # relay.NodeState NODE_CONNECTED
    ns = served.observer.GetNamespaces(observer_pb2.GetNamespacesRequest(), timeout=WAIT_S)
    assert [n.namespace for n in ns.namespaces] == ["db", "shop"]


@pytest.mark.parametrize("method", ["GetAgentEvents", "GetDebugEvents"])
def test_agent_and_debug_events_are_unimplemented_with_a_reason(served: Served,
                                                                method: str) -> None:
    request = getattr(observer_pb2, f"{method}Request")()
    with pytest.raises(grpc.RpcError) as err:
        list(getattr(served.observer, method)(request, timeout=WAIT_S))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Spyglass" in str(err.value.details())


def test_peer_notify_names_this_node(served: Served) -> None:
    call = served.peer.Notify(peer_pb2.NotifyRequest(), timeout=WAIT_S)
    first = next(iter(call))
    call.cancel()
    assert (first.name, first.address, first.type) == (
        NODE, f"127.0.0.1:{served.server.port}", peer_pb2.PEER_ADDED)


def test_the_unix_socket_is_owner_only_and_serves(served: Served) -> None:
    path = served.server.socket_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    served.source.ring.write_many(flows(2, t0=T0))
    with grpc.insecure_channel(f"unix:{path}") as ch:
        stub = observer_pb2_grpc.ObserverStub(ch)  # type: ignore[no-untyped-call]
        got = list(stub.GetFlows(observer_pb2.GetFlowsRequest(number=5), timeout=WAIT_S))
    assert uuids(got) == ["u000000", "u000001"]
    served.server.stop()
    assert not os.path.exists(path)


def test_since_with_follow_hands_over_to_live_without_gap_or_repeat(served: Served) -> None:
    store = served.source.store
    assert isinstance(store, ListStore)
    store.add(flows(8, t0=T0))
    ring = served.source.ring
    ring.write_many(flows(4, start=6, t0=T0))  # 6 and 7 are in both
    req = observer_pb2.GetFlowsRequest(follow=True)
    req.since.seconds = (NOW - 3600 * 10**9) // 10**9
    call = served.observer.GetFlows(req, timeout=WAIT_S)
    got: list[str] = []

    def read() -> None:
        try:
            for msg in call:
                got.append(msg.flow.uuid)
                if len(got) == 12:
                    call.cancel()
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + WAIT_S
    while len(got) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    ring.write_many(flows(2, start=10, t0=T0))  # live, after the hand-over
    reader.join(WAIT_S)
    assert got == [f"u{i:06d}" for i in range(12)]


# -- the wire message is the Hubble JSON ------------------------------------------------

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "flow_text.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_built_messages_equal_the_parsed_hubble_json(case: dict[str, Any]) -> None:
    f = event_from_response(case["response"])
    assert isinstance(f, Flow)
    assert messages([f], NODE) == [to_message(event_to_response(f, NODE))]


@settings(max_examples=200, deadline=None)
@given(st.lists(any_flows(), min_size=1, max_size=5))
def test_built_messages_equal_the_parsed_hubble_json_for_any_flow(fs: list[Flow]) -> None:
    assert messages(list(fs), "n") == [to_message(event_to_response(f, "n")) for f in fs]
