"""Issue 12's "done means", for real: `spyglass up --demo`, read by a Hubble client.

The client knows only Cilium's protos (our generated stubs, nothing of Spyglass's own
API): ServerStatus, GetNodes, and GetFlows filtered, with number, with follow and with
since 10m reach the agent's gRPC port and answer what the demo is doing. Everything that
claims to be Hubble JSON (`observe -o json`, `export`, the gRPC stream as protojson)
parses strictly as `observer.GetFlowsResponse`, and connections through the demo's
Services carry the backend's address, never the ClusterIP, as Cilium's socket LB
reports them.

The demo runs with names of this module only (netns and link prefix `sgd`, its own pod
and service CIDRs, state dir, pin dir, REST port, gRPC port and socket), so it never
touches a user's `make demo` or another test; the fixture's finaliser stops it with
Ctrl-C and checks that nothing of it is left (`harness.stop_up`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from harness import SPYGLASS, Up, free_port, pod_cidr, stop_up, wait_serving

from spyglass.api.hubble import flow_pb2, observer_pb2, observer_pb2_grpc, relay_pb2
from spyglass.api.hubble.json import parse_get_flows_response

pytestmark = pytest.mark.e2e

NAME = "sgd"
NODE = "e2e-demo"
SERVICE_CIDR = "10.199.13.0/24"
#: Small, so that the demo's ~100 flows/s overflow it within seconds and `since` must
#: read the store for what the ring no longer holds.
RING = 1023
S = 1_000_000_000
WAIT_S = 30
#: The demo's Services (lab/manifests/demo.yaml) and the port their backends listen on:
#: what a translated connection must show instead of the service port.
TARGET_PORTS = {"shop/frontend": 8080, "shop/cart": 8080, "shop/catalog": 8080,
                "shop/db": 5432, "ops/statsd": 8125}
#: The demo's denied traffic (its two policies): (source pod, destination pod, port).
DENIED = {("ops/loadgen-0", "shop/catalog-0", 8080), ("ops/monitor-0", "shop/db-0", 5432)}

Flow = flow_pb2.Flow
Response = observer_pb2.GetFlowsResponse


@dataclass
class Demo:
    """The running demo, a channel to its gRPC port, and its pods and services."""

    up: Up
    observer: Any  # observer_pb2_grpc.ObserverStub (the gRPC plugin writes no types)
    pods: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]

    def get(self, **request: Any) -> list[Response]:
        return list(self.observer.GetFlows(observer_pb2.GetFlowsRequest(**request),
                                           timeout=WAIT_S))

    def status(self) -> observer_pb2.ServerStatusResponse:
        st: observer_pb2.ServerStatusResponse = self.observer.ServerStatus(
            observer_pb2.ServerStatusRequest(), timeout=WAIT_S)
        return st

    def backends(self, service: str) -> set[str]:
        """The IPs of the pods the service selects (by the lab's own records)."""
        selector = self.services[service]["selector"]
        ns = service.split("/")[0]
        return {p["ip"] for p in self.pods.values() if p["namespace"] == ns
                and all(p["labels"].get(k) == v for k, v in selector.items())}


def start_demo(tmp: Path) -> Up:
    port = free_port()
    up = Up(proc=None, url=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
            state_dir=str(tmp / "state"), pin_dir=f"/sys/fs/bpf/spyglass-{NAME}-{os.getpid()}",
            prefix=NAME, log=tmp / "up.log", started=time.monotonic())
    with up.log.open("wb") as log:
        up.proc = subprocess.Popen(
            [SPYGLASS, "up", "--demo", "--listen", f"127.0.0.1:{port}",
             "--state-dir", up.state_dir, "--pin-dir", up.pin_dir, "--prefix", NAME,
             "--link-prefix", NAME, "--pod-cidr", pod_cidr(NAME), "--service-cidr",
             SERVICE_CIDR, "--node-name", NODE, "--store", f"chdb://{tmp / 'store'}",
             "--ring-capacity", str(RING), *up.grpc_args()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return up


def wait_for(what: str, check: Any, up: Up, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"the demo did not {what} within {timeout:g} s:\n"
                        f"{up.log.read_text()[-4000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    up = start_demo(tmp_path_factory.mktemp("demo"))
    channel: grpc.Channel | None = None
    try:
        up.ready_after_s = wait_serving(up, 90, "spyglass up --demo")
        channel = grpc.insecure_channel(up.grpc)
        observer = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
        services = {f"{s['namespace']}/{s['name']}": s for s in json.loads(
            up.cli("service", "ls", "--state-dir", up.state_dir, "-o", "json").stdout)}
        d = Demo(up, observer, up.pods(), services)
        # The ring has overflowed (history is beyond it), and the denied traffic is in.
        wait_for("overflow its ring", lambda: d.status().seen_flows > RING + 200, up)
        wait_for("drop its denied traffic", lambda: bool(d.get(
            number=1, whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])])), up)
        yield d
    finally:
        if channel is not None:
            channel.close()
        stop_up(up)  # Ctrl-C, then nothing of it left: netns, links, pins, processes
        assert not os.path.exists(up.grpc_socket), "the gRPC socket outlived the agent"


def flows_of(responses: list[Response]) -> list[Flow]:
    return [r.flow for r in responses if r.HasField("flow")]


def name(ep: flow_pb2.Endpoint) -> str:
    return f"{ep.namespace}/{ep.pod_name}"


def ns_of(ts: Timestamp) -> int:
    return int(ts.seconds) * S + int(ts.nanos)


def ago(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns() - int(seconds * S))
    return ts


def strict(line: str) -> Response:
    """One line parsed both ways a strict Hubble client would: they must agree."""
    msg = parse_get_flows_response(line)
    plain = Response()
    json_format.Parse(line, plain, ignore_unknown_fields=False)
    assert plain == msg
    return msg


# -- ServerStatus, GetNodes, GetNamespaces -------------------------------------------------


def test_server_status_counts_the_demos_flows(demo: Demo) -> None:
    st = demo.status()
    assert st.num_flows > 0 and st.max_flows == RING and st.num_flows <= st.max_flows
    assert st.seen_flows > RING  # the fixture waited for the ring to overflow
    assert (st.num_connected_nodes.value, st.num_unavailable_nodes.value) == (1, 0)
    assert st.uptime_ns > 0 and st.version
    rest = httpx.get(demo.up.url + "/api/v1/status", timeout=WAIT_S).json()
    assert (rest["max_flows"], rest["version"]) == (st.max_flows, st.version)


def test_get_nodes_is_this_one_node_connected(demo: Demo) -> None:
    for target in (demo.up.grpc, f"unix:{demo.up.grpc_socket}"):
        with grpc.insecure_channel(target) as ch:
            stub = observer_pb2_grpc.ObserverStub(ch)  # type: ignore[no-untyped-call]
            nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=WAIT_S).nodes
        assert [(n.name, n.state, n.address) for n in nodes] == [
            (NODE, relay_pb2.NODE_CONNECTED, demo.up.grpc)], target
        assert nodes[0].num_flows > 0 and nodes[0].max_flows == RING
    spaces = demo.observer.GetNamespaces(observer_pb2.GetNamespacesRequest(), timeout=WAIT_S)
    assert {n.namespace for n in spaces.namespaces} == {"ops", "shop"}


# -- GetFlows: filtered, follow, since ---------------------------------------------------


def test_get_flows_to_a_backend_with_number(demo: Demo) -> None:
    to_catalog = flow_pb2.FlowFilter(destination_pod=["shop/catalog-0"])
    got = flows_of(demo.get(number=50, whitelist=[to_catalog]))
    assert len(got) == 50
    assert {name(f.destination) for f in got} == {"shop/catalog-0"}
    assert {f.IP.destination for f in got} == {demo.pods["shop/catalog-0"]["ip"]}
    assert all(f.node_name == NODE for f in got)
    times = [ns_of(f.time) for f in got]
    assert times == sorted(times)  # the newest 50, oldest first


def test_get_flows_dropped_is_the_demos_denied_traffic(demo: Demo) -> None:
    dropped = flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])
    got = flows_of(demo.get(number=200, whitelist=[dropped]))
    assert got
    seen = {(name(f.source), name(f.destination), f.l4.TCP.destination_port) for f in got}
    assert seen <= DENIED
    assert ("ops/loadgen-0", "shop/catalog-0", 8080) in seen  # every ~1 s
    assert {f.verdict for f in got} == {flow_pb2.DROPPED}
    assert {f.drop_reason_desc for f in got} == {flow_pb2.POLICY_DENIED}
    # whitelist minus blacklist: the loadgen's drops, less catalog's, leave only the db's
    no_catalog = flow_pb2.FlowFilter(destination_pod=["shop/catalog-0"])
    rest = flows_of(demo.get(number=200, whitelist=[dropped], blacklist=[no_catalog]))
    assert {name(f.destination) for f in rest} <= {"shop/db-0"}


def test_get_flows_follow_streams_live_flows_then_cancels(demo: Demo) -> None:
    asked = time.time_ns()
    loadgen = flow_pb2.FlowFilter(source_pod=["ops/loadgen-0"])
    call = demo.observer.GetFlows(
        observer_pb2.GetFlowsRequest(number=3, follow=True, whitelist=[loadgen]),
        timeout=WAIT_S)
    got: list[Response] = []
    try:
        for msg in call:
            assert not msg.HasField("lost_events"), msg
            got.append(msg)
            if len(got) == 10:
                break
    finally:
        call.cancel()
    flows = flows_of(got)
    assert len(flows) == 10 and len({f.uuid for f in flows}) == 10
    assert {name(f.source) for f in flows} == {"ops/loadgen-0"}
    assert all(ns_of(f.time) <= asked for f in flows[:3])  # the backlog of 3
    # then live flows: none older than the ring's per-CPU disorder (5 s) before the call
    assert all(ns_of(f.time) >= asked - 5 * S for f in flows[3:])
    assert call.code() == grpc.StatusCode.CANCELLED
    for msg in got:
        assert strict(json_format.MessageToJson(msg)) == msg


def test_get_flows_since_10m_reads_history_beyond_the_ring(demo: Demo) -> None:
    since = ago(600)
    ring_oldest = flows_of(demo.get(number=RING, first=True))[0]
    got = demo.get(since=since)
    flows = flows_of(got)
    times = [ns_of(f.time) for f in flows]
    assert len(flows) > RING, "no more than the ring holds: the store was not read"
    assert times[0] < ns_of(ring_oldest.time), "nothing older than the ring's oldest"
    assert min(times) >= ns_of(since) and times == sorted(times)
    assert len({f.uuid for f in flows}) == len(flows)
    for msg in got:  # every gRPC response, as protojson, is strict Hubble JSON
        assert strict(json_format.MessageToJson(msg)) == msg


def test_get_flows_over_a_past_range_equals_rest(demo: Demo) -> None:
    """Over a range that has ended, the store and ring hold still: one answer, both APIs."""
    until = ago(6)
    since = ago(20)
    to_frontend = flow_pb2.FlowFilter(destination_pod=["shop/frontend-"])
    got = flows_of(demo.get(since=since, until=until, whitelist=[to_frontend]))
    params = {"since": since.ToJsonString(), "until": until.ToJsonString(),
              "to-pod": "shop/frontend-", "first": "10000"}
    body = httpx.get(demo.up.url + "/api/v1/flows", params=params, timeout=WAIT_S).json()
    assert got and [f.uuid for f in got] == [r["flow"]["uuid"] for r in body["flows"]]


# -- Hubble JSON, strictly ----------------------------------------------------------------


def test_observe_json_is_strict_hubble_json(demo: Demo) -> None:
    out = demo.up.cli("observe", "--server", demo.up.url, "-o", "json", "--last", "200")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 200
    parsed = [strict(line) for line in lines]
    assert all(m.node_name == NODE for m in parsed)


def test_export_is_strict_hubble_json(demo: Demo) -> None:
    out = demo.up.cli("export", "--server", demo.up.url, "--since", "10m")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) > RING  # history: the store, beyond the ring
    kinds = {strict(line).WhichOneof("response_types") for line in lines}
    assert "flow" in kinds


# -- the translated-flow rule -------------------------------------------------------------


def test_service_connections_carry_the_backend_never_the_cluster_ip(demo: Demo) -> None:
    flows = flows_of(demo.get(since=ago(600)))
    vips = {s["cluster_ip"] for s in demo.services.values()}
    assert not {f.IP.destination for f in flows} & vips, "a flow shows a ClusterIP"
    assert not {f.IP.source for f in flows} & vips, "a reply shows a ClusterIP"
    named: dict[str, int] = {}
    for f in flows:
        for svc, ip, port, side in (
                (f.destination_service, f.IP.destination, _port(f, "destination"), "to"),
                (f.source_service, f.IP.source, _port(f, "source"), "from")):
            if not svc.name:
                continue
            key = f"{svc.namespace}/{svc.name}"
            assert ip in demo.backends(key), f"{side} {key}: {ip} is no backend ({f.uuid})"
            assert port == TARGET_PORTS[key], f"{side} {key}: port {port} ({f.uuid})"
            named[key] = named.get(key, 0) + 1
    # every Service of the demo was used, and reported as such
    assert set(named) == set(TARGET_PORTS), named


def _port(f: Flow, side: str) -> int:
    for proto in ("TCP", "UDP"):
        if f.l4.HasField(proto):
            return int(getattr(getattr(f.l4, proto), f"{side}_port"))
    return 0
