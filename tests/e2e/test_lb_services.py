"""Services end to end: ClusterIP load balancing in the datapath, as pods come and go.

A Service selects the lab's server pods; the client reaches it by its ClusterIP, flows
name the service and keep both the VIP and the backend, and the backends follow
`spyglass lab add|scale|delete` without touching established state.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import HERE, PY, Up, start_up, stop_up

pytestmark = pytest.mark.e2e

ECHO_SERVICE = """\
    apiVersion: v1
    kind: Service
    metadata: {name: echo, namespace: e2e-a}
    spec:
      selector: {app: server}
      ports:
        - {name: tcp, port: 80, targetPort: 8080, protocol: TCP}
        - {name: udp, port: 53, targetPort: 9090, protocol: UDP}
    """


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("services"), "sgs", extra=ECHO_SERVICE)
    try:
        yield up
    finally:
        stop_up(up)


def client(up: Up, *args: str) -> dict[str, Any]:
    done = up.lab("exec", "e2e-a/client-0", "--", PY, str(HERE / "client.py"), *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def services(up: Up) -> dict[str, dict[str, Any]]:
    out = up.cli("service", "ls", "--state-dir", up.state_dir, "-o", "json")
    assert out.returncode == 0, out.stderr
    return {f"{s['namespace']}/{s['name']}": s for s in json.loads(out.stdout)}


def backends_seen(up: Up, vip: str, sports: set[int]) -> set[str]:
    flows = up.wait_flows(
        lambda fl: {f["l4"]["TCP"]["source_port"] for f in fl if "TCP" in f["l4"]} >= sports,
        "--to-service", "e2e-a/echo", "--protocol", "tcp", last=20000)
    return {f["IP"]["destination"] for f in flows
            if f["l4"]["TCP"]["source_port"] in sports
            and f.get("service_address", {}).get("ip") == vip}


def test_clusterip_reaches_the_backend_and_flows_name_the_service(svc: Up) -> None:
    vip = services(svc)["e2e-a/echo"]["cluster_ip"]
    assert vip.startswith("10.")
    res = client(svc, "tcp", f"{vip}:80", "2000")
    assert res["answer"] == 2000
    assert client(svc, "udp", f"{vip}:53")["echo"] == "ping-udp"
    server_ip = svc.pods()["e2e-a/server-0"]["ip"]
    assert backends_seen(svc, vip, {int(res["sport"])}) == {server_ip}
    # As Cilium's socket LB reports it: every event of the connection, at every point and
    # both ways, carries the backend's address and target port (what policy enforces on),
    # the service is named, and the VIP stays in Spyglass's own service_address.
    sport = int(res["sport"])
    conn = [f for f in svc.flows("--port", str(sport), "--protocol", "tcp")
            if sport in (f["l4"]["TCP"]["source_port"], f["l4"]["TCP"]["destination_port"])]
    forward = [f for f in conn if f["l4"]["TCP"]["source_port"] == sport]
    replies = [f for f in conn if f["l4"]["TCP"]["destination_port"] == sport]
    assert forward and replies
    points = {f.get("trace_observation_point") for f in forward}
    assert {"FROM_ENDPOINT", "TO_ENDPOINT"} <= points, points
    for f in forward:
        assert (f["IP"]["destination"], f["l4"]["TCP"]["destination_port"]) == (server_ip, 8080)
        assert f["destination"]["pod_name"] == "server-0"
        assert f["destination_service"] == {"name": "echo", "namespace": "e2e-a"}
        assert f["service_address"] == {"ip": vip, "port": 80}
    for f in replies:
        assert (f["IP"]["source"], f["l4"]["TCP"]["source_port"]) == (server_ip, 8080)
        assert f["source_service"] == {"name": "echo", "namespace": "e2e-a"}
        assert f["service_address"] == {"ip": vip, "port": 80}
    # Filters see the same: the backend's port and pod select the connection's requests.
    by_backend = svc.flows("--to-port", "8080", "--to-pod", "e2e-a/server-0",
                           "--from-port", str(sport))
    assert {f["uuid"] for f in by_backend} == {f["uuid"] for f in forward}
    assert svc.flows("--to-port", "80", "--from-port", str(sport)) == []
    # Hubble's JSON has no field for the VIP: -o json leaves it out.
    out = svc.cli("observe", "--server", svc.url, "--last", "5000", "-o", "json",
                  "--from-port", str(sport))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line)["flow"] for line in out.stdout.splitlines() if '"flow"' in line]
    assert lines and all("service_address" not in f for f in lines)


def test_backends_follow_lab_add_and_scale(svc: Up, tmp_path: Path) -> None:
    vip = services(svc)["e2e-a/echo"]["cluster_ip"]
    pod = tmp_path / "server-2.yaml"
    pod.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: server-2, namespace: e2e-a, labels: {{app: server, tier: api}}}}
        spec:
          containers: [{{name: echo, command: ["{PY}", "{HERE / 'echo_server.py'}"]}}]
        """))
    added = svc.cli("lab", "add", "--state-dir", svc.state_dir, "-f", str(pod))
    assert added.returncode == 0, added.stderr
    assert "added e2e-a/server-2" in added.stdout
    pods = svc.pods()
    both = {pods["e2e-a/server-0"]["ip"], pods["e2e-a/server-2"]["ip"]}
    sports = {int(client(svc, "tcp", f"{vip}:80", "10")["sport"]) for _ in range(16)}
    assert backends_seen(svc, vip, sports) == both  # 16 random picks: both, all but surely

    scaled = svc.cli("lab", "scale", "--state-dir", svc.state_dir, "e2e-a/server",
                     "--replicas", "1")
    assert scaled.returncode == 0, scaled.stderr
    assert "deleted e2e-a/server-2" in scaled.stdout
    assert "e2e-a/server-2" not in svc.pods()
    sports = {int(client(svc, "tcp", f"{vip}:80", "10")["sport"]) for _ in range(6)}
    assert backends_seen(svc, vip, sports) == {pods["e2e-a/server-0"]["ip"]}


def test_a_service_without_backends_drops_with_reason_158(svc: Up, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: nobody, namespace: e2e-a}\n"
                     "spec: {selector: {app: nobody}, ports: [{port: 81, targetPort: 8080}]}\n")
    applied = svc.cli("service", "apply", "--state-dir", svc.state_dir, "-f", str(empty))
    assert applied.returncode == 0, applied.stderr
    vip = services(svc)["e2e-a/nobody"]["cluster_ip"]
    assert client(svc, "tcp", f"{vip}:81", "10", "1")["error"] == "TimeoutError"
    drops = svc.wait_flows(lambda fl: bool(fl), "--verdict", "DROPPED",
                           "--drop-reason-desc", "SERVICE_BACKEND_NOT_FOUND")
    assert drops and drops[-1]["IP"]["destination"] == vip
    deleted = svc.cli("service", "delete", "--state-dir", svc.state_dir, "e2e-a/nobody")
    assert deleted.returncode == 0, deleted.stderr


def test_an_unknown_clusterip_never_leaves_the_host(svc: Up) -> None:
    # in the service CIDR but no service: dropped in the datapath, not routed away
    assert client(svc, "tcp", "10.111.255.254:80", "10", "1")["error"] == "TimeoutError"
    drops = svc.wait_flows(
        lambda fl: any(f["IP"]["destination"] == "10.111.255.254" for f in fl),
        "--verdict", "DROPPED", "--to-ip", "10.111.255.254")
    assert drops and drops[-1]["drop_reason_desc"] == "SERVICE_BACKEND_NOT_FOUND"


def test_hubble_grpc_serves_the_same_flows_as_hubble_would(svc: Up) -> None:
    """The real agent's gRPC API: a ClusterIP connection reads as Cilium reports it, every
    response parses as strict Hubble JSON, and the unix socket answers as the port does."""
    import grpc
    from google.protobuf import json_format

    from spyglass.api.hubble import observer_pb2, observer_pb2_grpc
    from spyglass.api.hubble.json import parse_get_flows_response

    vip = services(svc)["e2e-a/echo"]["cluster_ip"]
    res = client(svc, "tcp", f"{vip}:80", "100")
    sport = int(res["sport"])
    server_ip = svc.pods()["e2e-a/server-0"]["ip"]
    svc.wait_flows(lambda fl: any(f["l4"].get("TCP", {}).get("source_port") == sport
                                  for f in fl), "--from-port", str(sport))
    want = observer_pb2.flow__pb2.FlowFilter(source_port=[str(sport)])
    for target in (svc.grpc, f"unix:{svc.grpc_socket}"):
        with grpc.insecure_channel(target) as ch:
            stub = observer_pb2_grpc.ObserverStub(ch)  # type: ignore[no-untyped-call]
            got = list(stub.GetFlows(observer_pb2.GetFlowsRequest(number=1000,
                                                                  whitelist=[want]),
                                     timeout=30))
            status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=30)
        flows = [r.flow for r in got if r.HasField("flow")]
        assert flows, target
        for r in got:
            assert parse_get_flows_response(json_format.MessageToJson(r)) == r
        for f in flows:
            assert (f.IP.destination, f.l4.TCP.destination_port) == (server_ip, 8080)
            assert (f.destination_service.name, f.destination.pod_name) == ("echo", "server-0")
            assert f.node_name == "e2e-node"
        assert status.num_flows > 0 and status.max_flows > 0
