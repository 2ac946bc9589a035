"""The spine end to end: a real `spyglass up`, real traffic between lab pods, real flows.

Traffic is made with `spyglass lab exec`, flows are read with `spyglass observe -o json`
through the API, so every layer (lab, datapath, perf reader, decoder, enrichment, ring,
filters, API, CLI) is exercised as a user would. Teardown is asserted by the fixture.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PY, SPYGLASS, Up, pod_cidr, start_up, stop_up

pytestmark = pytest.mark.e2e


def tcp_of(f: dict[str, Any]) -> dict[str, Any]:
    return dict(f.get("l4", {}).get("TCP", {}))


def of_port(flows: list[dict[str, Any]], proto: str, port: int) -> list[dict[str, Any]]:
    """Flows of one connection, identified by the client's ephemeral port."""
    return [f for f in flows if port in (f.get("l4", {}).get(proto, {}).get("source_port"),
                                         f.get("l4", {}).get(proto, {}).get("destination_port"))]


def test_up_serves_the_api_quickly(spine: Up) -> None:
    status = spine.cli("status", "--server", spine.url)
    assert status.returncode == 0, status.stderr
    assert "Healthcheck" in status.stdout and "Ok" in status.stdout
    print(f"up -> API ready in {spine.ready_after_s:.1f}s")


def test_lab_ls_lists_pods_with_identities(spine: Up) -> None:
    pods = spine.pods()
    assert set(pods) == {"e2e-a/client-0", "e2e-a/server-0", "e2e-b/server-1"}
    assert pods["e2e-a/server-0"]["labels"] == {"app": "server", "tier": "api"}
    assert all(p["ip"].startswith(pod_cidr("sge").rsplit(".", 2)[0] + ".")
               for p in pods.values())
    assert len({p["identity"] for p in pods.values()}) == 3


def test_lab_exec_passes_exit_code_and_output(spine: Up) -> None:
    done = spine.lab("exec", "e2e-a/client-0", "--", PY, "-c",
                     "import sys; print('hi from the pod'); sys.exit(3)")
    assert done.returncode == 3 and done.stdout == "hi from the pod\n"


def test_tcp_flows_carry_pods_identities_ports_flags_and_replies(spine: Up) -> None:
    pods = spine.pods()
    server = pods["e2e-a/server-0"]
    res = spine.client("tcp", server["ip"], "1000")
    assert res["answer"] == 1000
    sport = int(res["sport"])

    def done(fl: list[dict[str, Any]]) -> bool:
        return sum("FIN" in tcp_of(f).get("flags", {}) for f in of_port(fl, "TCP", sport)) >= 4

    flows = of_port(spine.wait_flows(done, "--pod", "e2e-a/client-0", "--protocol", "tcp"),
                    "TCP", sport)
    syn = [f for f in flows if tcp_of(f).get("flags") == {"SYN": True}]
    points = {f["trace_observation_point"] for f in syn}
    assert points == {"FROM_ENDPOINT", "TO_ENDPOINT"}, flows
    for f in syn:
        assert f["source"]["namespace"] == "e2e-a" and f["source"]["pod_name"] == "client-0"
        assert f["destination"]["pod_name"] == "server-0"
        assert f["source"]["identity"] == pods["e2e-a/client-0"]["identity"]
        assert f["destination"]["identity"] == server["identity"]
        assert tcp_of(f)["destination_port"] == 8080 and tcp_of(f)["source_port"] == sport
        assert f["is_reply"] is False and f["verdict"] == "FORWARDED"
        assert f["node_name"] == "e2e-node"
        assert "k8s:app=client" in f["source"]["labels"]
    synack = [f for f in flows if tcp_of(f).get("flags") == {"SYN": True, "ACK": True}]
    assert synack, flows
    for f in synack:
        assert f["is_reply"] is True
        assert f["source"]["pod_name"] == "server-0" and tcp_of(f)["source_port"] == 8080
        assert f["trace_reason"] == "REPLY"
    # Hubble's direction: the connection as the local endpoint sees it
    from_client = [f for f in syn if f["trace_observation_point"] == "FROM_ENDPOINT"]
    assert from_client[0]["traffic_direction"] == "EGRESS"
    to_server = [f for f in syn if f["trace_observation_point"] == "TO_ENDPOINT"]
    assert to_server[0]["traffic_direction"] == "INGRESS"


def test_udp_request_and_reply(spine: Up) -> None:
    target = spine.pods()["e2e-b/server-1"]
    res = spine.client("udp", target["ip"])
    assert res["echo"] == "ping-udp"
    sport = int(res["sport"])
    flows = of_port(spine.wait_flows(
        lambda fl: len(of_port(fl, "UDP", sport)) >= 4, "--protocol", "udp",
        "--namespace", "e2e-b"), "UDP", sport)
    requests = [f for f in flows if f["is_reply"] is False]
    replies = [f for f in flows if f["is_reply"] is True]
    assert {f["trace_observation_point"] for f in requests} == {"FROM_ENDPOINT", "TO_ENDPOINT"}
    assert {f["trace_observation_point"] for f in replies} == {"FROM_ENDPOINT", "TO_ENDPOINT"}
    assert all(f["destination"]["namespace"] == "e2e-b" for f in requests)
    assert all(f["l4"]["UDP"]["destination_port"] == 9090 for f in requests)
    assert all(f["source"]["pod_name"] == "server-1" for f in replies)


def test_icmp_echo_and_reply(spine: Up) -> None:
    target = spine.pods()["e2e-a/server-0"]
    done = spine.lab("exec", "e2e-a/client-0", "--", "ping", "-c", "2", "-i", "0.2", "-W", "2",
                     target["ip"])
    assert done.returncode == 0, done.stdout + done.stderr
    flows = spine.wait_flows(
        lambda fl: any(f.get("is_reply") for f in fl), "--protocol", "icmp",
        "--from-pod", "e2e-a/server-0")
    replies = [f for f in flows if f["Summary"] == "ICMPv4 EchoReply"]
    assert replies and all(f["is_reply"] is True for f in replies)
    requests = spine.flows("--protocol", "icmp", "--from-pod", "e2e-a/client-0")
    assert any(f["Summary"] == "ICMPv4 EchoRequest" and f["is_reply"] is False
               for f in requests)


def test_filters_run_on_the_server_with_not(spine: Up) -> None:
    udp_port = int(spine.client("udp", spine.pods()["e2e-b/server-1"]["ip"])["sport"])
    tcp_port = int(spine.client("tcp", spine.pods()["e2e-a/server-0"]["ip"], "10")["sport"])
    # wait for this test's own flows, not earlier tests' ones
    everything = spine.wait_flows(
        lambda fl: bool(of_port(fl, "UDP", udp_port)) and bool(of_port(fl, "TCP", tcp_port)))
    assert of_port(everything, "UDP", udp_port) and of_port(everything, "TCP", tcp_port)
    no_udp = spine.flows("--not", "--protocol", "udp")
    assert no_udp and all("UDP" not in f["l4"] for f in no_udp)
    assert len(no_udp) < len(everything)
    assert of_port(no_udp, "TCP", tcp_port) and not of_port(no_udp, "UDP", udp_port)
    to_port = spine.flows("--to-port", "9090")
    assert to_port and all(f["l4"]["UDP"]["destination_port"] == 9090 for f in to_port)
    assert of_port(to_port, "UDP", udp_port)


def test_bad_filter_is_refused_with_a_clear_message(spine: Up) -> None:
    done = spine.cli("observe", "--server", spine.url, "--port", "http")
    assert done.returncode == 2
    assert "'http' is not a port number" in done.stderr


def _transfer_events(up: Up, size: int) -> tuple[int, int]:
    """(trace events, packets they account for) of one TCP transfer of `size` bytes."""
    server = up.pods()["e2e-a/server-0"]
    res = up.client("tcp", server["ip"], str(size))
    sport = int(res["sport"])

    def closed(fl: list[dict[str, Any]]) -> bool:
        return sum("FIN" in tcp_of(f).get("flags", {}) for f in of_port(fl, "TCP", sport)) >= 4

    flows = of_port(up.wait_flows(closed, "--pod", "e2e-a/client-0", last=65535), "TCP", sport)
    return len(flows), sum(int(f["packets"]) for f in flows)


@pytest.fixture(scope="module")
def no_aggregation(spine: Up, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    # Both use the same pod CIDR, so this one starts only once `spine` is stopped.
    stop_up(spine)
    up = start_up(tmp_path_factory.mktemp("noagg"), "sgn", aggregation="none")
    try:
        yield up
    finally:
        stop_up(up)


def test_aggregation_reports_new_connection_and_flag_changes(spine: Up) -> None:
    events, packets = _transfer_events(spine, 2_000_000)
    # SYN, SYN-ACK, ACK, PSH, FIN … at two observation points in two directions: a handful
    assert events <= 24, events
    assert packets > 5 * events, (events, packets)
    print(f"aggregation medium: {events} events for {packets} packets")


def test_no_aggregation_reports_every_packet(no_aggregation: Up) -> None:
    events, packets = _transfer_events(no_aggregation, 2_000_000)
    assert events == packets, (events, packets)  # one event per packet: nothing folded
    assert events > 4 * 24  # far more than the aggregated bound above
    print(f"aggregation none: {events} events for {packets} packets")


def test_down_cleans_a_crashed_up(tmp_path: Path, no_aggregation: Up) -> None:
    stop_up(no_aggregation)
    up = start_up(tmp_path, "sgk")
    up.proc.kill()  # a crash: no teardown ran
    up.proc.wait()
    down = subprocess.run([SPYGLASS, "down", "--state-dir", up.state_dir,
                           "--pin-dir", up.pin_dir, "--link-prefix", up.prefix],
                          capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stderr
    assert "removed" in down.stdout
    stop_up(up)  # asserts nothing is left
