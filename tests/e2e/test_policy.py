"""Policy end to end: manifest policies enforced, drops named, explain, apply, live changes.

A NetworkPolicy in the manifest lets e2e-a/server-0 accept only TCP 8080 from the client,
so the client's UDP is dropped by default deny. `spyglass explain` must say so and hand
back YAML that, applied with `spyglass policy apply`, lets exactly that traffic through.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PY, Up, start_up, stop_up

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent

SERVER_INGRESS = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: server-ingress, namespace: e2e-a}
    spec:
      podSelector: {matchLabels: {app: server}}
      ingress:
        - from: [{podSelector: {matchLabels: {app: client}}}]
          ports: [{protocol: TCP, port: 8080}]
    """


@pytest.fixture(scope="module")
def pol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("policy"), "sgp", extra=SERVER_INGRESS)
    try:
        yield up
    finally:
        stop_up(up)


def server_ip(up: Up, ref: str = "e2e-a/server-0") -> str:
    return str(up.pods()[ref]["ip"])


def probe(up: Up, kind: str, *args: str) -> dict[str, Any]:
    done = up.lab("exec", "e2e-a/client-0", "--", PY, str(HERE / "client.py"), kind, *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def apply(up: Up, path: Path) -> subprocess.CompletedProcess[str]:
    return up.cli("policy", "apply", "--server", up.url, "-f", str(path))


def test_tcp_allowed_udp_dropped_by_default_deny_with_the_policy_name(pol: Up) -> None:
    ip = server_ip(pol)
    assert probe(pol, "tcp", ip, "100", "3")["answer"] == 100
    assert probe(pol, "udp", ip, "0.5")["error"] == "TimeoutError"
    drops = pol.wait_flows(lambda fl: bool(fl), "--verdict", "DROPPED", "--protocol", "udp")
    assert drops, "no UDP drop observed"
    d = drops[-1]
    assert d["drop_reason_desc"] == "POLICY_DENIED"
    assert d["ingress_denied_by"] == [{"name": "server-ingress", "namespace": "e2e-a",
                                       "kind": "NetworkPolicy"}]
    assert d["destination"]["pod_name"] == "server-0"
    # the compact line names the policy when asked, as `observe --print-policy-names`
    out = pol.cli("observe", "--server", pol.url, "--verdict", "DROPPED", "--protocol", "udp",
                  "--last", "1", "--print-policy-names")
    assert "DROPPED BY e2e-a/server-ingress (NetworkPolicy)" in out.stdout, out.stdout
    verdicts = pol.flows("--type", "policy-verdict", "--protocol", "tcp", "--to-pod",
                         "e2e-a/server-0")
    assert any(f["verdict"] == "FORWARDED" and f.get("policy_match_type") == 2
               for f in verdicts), verdicts  # L3-L4 allow


def test_explain_suggests_yaml_that_allows_exactly_that_traffic(pol: Up, tmp_path: Path) -> None:
    ip = server_ip(pol)
    out = pol.cli("explain", "--server", pol.url, "--from", "e2e-a/client-0", "--to",
                  "e2e-a/server-0", "--port", "9090", "--protocol", "udp", "-o", "json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["verdict"] == "DROPPED"
    assert "spyglass policy apply -f" in body["text"]
    yaml_path = tmp_path / "allow.yaml"
    yaml_path.write_text(body["suggestion"]["yaml"])
    done = apply(pol, yaml_path)
    assert done.returncode == 0, done.stderr
    t0 = time.monotonic()
    assert probe(pol, "udp", ip, "2")["echo"] == "ping-udp"
    print(f"policy apply -> UDP allowed: {time.monotonic() - t0:.3f}s after apply returned; "
          f"{done.stdout.strip()}")
    again = pol.cli("explain", "--server", pol.url, "--from", "e2e-a/client-0", "--to",
                    "e2e-a/server-0", "--port", "9090", "--protocol", "udp")
    assert again.stdout.startswith("Verdict: FORWARDED"), again.stdout
    # exactly that traffic: another port stays dropped
    other = pol.cli("explain", "--server", pol.url, "--from", "e2e-a/client-0", "--to",
                    "e2e-a/server-0", "--port", "9091", "--protocol", "udp")
    assert other.stdout.startswith("Verdict: DROPPED"), other.stdout


def test_explain_a_flow_by_uuid(pol: Up) -> None:
    flows = pol.flows("--verdict", "DROPPED")
    assert flows
    out = pol.cli("explain", "--server", pol.url, "--flow", flows[-1]["uuid"])
    assert out.returncode == 0, out.stderr
    assert "e2e-a/client-0" in out.stdout and "e2e-a/server-0" in out.stdout


def test_bad_policy_is_refused_whole(pol: Up, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: fine, namespace: e2e-b}\nspec: {podSelector: {}}\n---\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: broken, namespace: e2e-b}\n"
        "spec: {podSelector: {}, ingress: [{ports: [{port: 99999}]}]}\n")
    done = apply(pol, bad)
    assert done.returncode != 0
    assert "document 2" in done.stderr and "broken" in done.stderr, done.stderr
    listed = pol.cli("policy", "ls", "--server", pol.url, "-o", "json")
    names = {p["name"] for p in json.loads(listed.stdout)}
    assert "fine" not in names  # nothing half-applied


def test_live_changes_keep_allowed_connections_and_deny_new_ones(pol: Up,
                                                                 tmp_path: Path) -> None:
    ip = server_ip(pol)
    result: dict[str, Any] = {}

    def long_conn() -> None:
        result.update(probe(pol, "tcp-slow", ip, "3"))

    t = threading.Thread(target=long_conn)
    t.start()
    time.sleep(1.0)
    still_allowed = tmp_path / "also-allow.yaml"
    still_allowed.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
        "metadata: {name: client-tcp, namespace: e2e-a}\n"
        "spec:\n  endpointSelector: {matchLabels: {app: server}}\n"
        "  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n"
        "    toPorts: [{ports: [{port: '8080', protocol: TCP}]}]\n")
    assert apply(pol, still_allowed).returncode == 0
    t.join(timeout=20)
    assert result.get("answer", 0) >= 20_000, result  # the connection ran to its end

    deny = tmp_path / "deny.yaml"
    deny.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
        "metadata: {name: no-client-tcp, namespace: e2e-a}\n"
        "spec:\n  endpointSelector: {matchLabels: {app: server}}\n"
        "  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n"
        "    toPorts: [{ports: [{port: '8080', protocol: TCP}]}]\n")
    assert apply(pol, deny).returncode == 0
    assert probe(pol, "tcp", ip, "10", "1")["error"] in ("TimeoutError", "timeout")
    drops = pol.wait_flows(
        lambda fl: any(f.get("drop_reason_desc") == "POLICY_DENY" for f in fl),
        "--verdict", "DROPPED", "--protocol", "tcp")
    deny_drops = [f for f in drops if f.get("drop_reason_desc") == "POLICY_DENY"]
    assert deny_drops, drops
    assert deny_drops[-1]["ingress_denied_by"][0]["name"] == "no-client-tcp"
    deleted = pol.cli("policy", "delete", "--server", pol.url, "e2e-a/no-client-tcp")
    assert deleted.returncode == 0, deleted.stderr
    assert probe(pol, "tcp", ip, "10", "3")["answer"] == 10


def test_unknown_policy_delete_is_a_clear_error(pol: Up) -> None:
    done = pol.cli("policy", "delete", "--server", pol.url, "e2e-a/nope")
    assert done.returncode == 1
    assert "no policy e2e-a/nope is applied" in done.stderr




def test_audit_mode_lets_traffic_through_and_reports_what_would_drop(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    up = start_up(tmp_path_factory.mktemp("audit"), "sga", extra=SERVER_INGRESS,
                  audit_namespaces=("e2e-a",))
    try:
        assert probe(up, "udp", server_ip(up), "2")["echo"] == "ping-udp"  # not dropped
        audited = up.wait_flows(lambda fl: bool(fl), "--verdict", "AUDIT")
        assert audited, "no AUDIT verdict reported"
        f = audited[-1]
        assert f["event_type"]["type"] == 5  # a policy verdict
        assert f["ingress_denied_by"][0]["name"] == "server-ingress"
        assert f["drop_reason_desc"] == "POLICY_DENIED"  # what enforcement would have done
        assert not up.flows("--verdict", "DROPPED")
    finally:
        stop_up(up)
