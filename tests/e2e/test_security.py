"""The attacks of issue 9 against a real `spyglass up`, and the local credential's lifecycle.

The lab, datapath, collector and store are real; the attacker is a web page (foreign
Origin, forged Host, simple content types), a local script without the credential, or
a SQL user, and the defender must refuse each while the CLI, as root on the host, keeps
working with the credential `up` wrote for it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import SPYGLASS, Up, start_up, stop_up
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e

DENY_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: e2e-a}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("security"), "sgs")
    try:
        up.client("tcp", str(up.pods()["e2e-a/server-0"]["ip"]), "1000")  # flows to stream
        yield up
    finally:
        stop_up(up)  # asserts that the credential is gone with the rest


def policies(up: Up) -> list[str]:
    out = up.cli("policy", "ls", "--server", up.url, "-o", "json")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if "deny-all" in line]


def test_up_writes_a_private_local_credential(sec: Up) -> None:
    path = Path(sec.state_dir) / "token"
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert len(path.read_text().strip()) >= 40


def test_a_web_page_cannot_change_policy(sec: Up, tmp_path: Path) -> None:
    """The CSRF of the issue: a deny-all POSTed as text/plain, from another origin, or bare."""
    url = sec.url + "/api/v1/policies"
    attempts = [
        httpx.post(url, content=DENY_ALL, headers={"Content-Type": "text/plain",
                                                   "Origin": "http://evil.example"}),
        httpx.post(url, content=DENY_ALL, headers={"Content-Type": "text/plain"}),
        httpx.post(url, content=DENY_ALL, headers={"Content-Type": "application/yaml"}),
        httpx.post(url, content=DENY_ALL, headers={"Content-Type": "application/yaml",
                                                   "Sec-Fetch-Site": "cross-site"}),
        httpx.delete(url + "/e2e-a/x"),
        httpx.post(sec.url + "/api/v1/flows/import", content=b'{"flow": {}}',
                   headers={"Content-Type": "text/plain"}),
    ]
    assert [r.status_code for r in attempts] == [403, 415, 401, 403, 401, 415]
    assert policies(sec) == []


def test_the_cli_changes_policy_with_the_local_credential_and_only_with_it(
        sec: Up, tmp_path: Path) -> None:
    doc = tmp_path / "deny.yaml"
    doc.write_text(DENY_ALL)
    without = subprocess.run([SPYGLASS, "policy", "apply", "--server", sec.url, "-f", str(doc)],
                             capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "SPYGLASS_TOKEN_FILE": str(tmp_path / "none")})
    assert without.returncode != 0 and "credential" in without.stderr
    applied = sec.cli("policy", "apply", "--server", sec.url, "-f", str(doc))
    assert applied.returncode == 0, applied.stderr
    deleted = sec.cli("policy", "delete", "--server", sec.url, "-n", "e2e-a", "deny-all")
    assert deleted.returncode == 0, deleted.stderr
    assert policies(sec) == []


def test_dns_rebinding_and_foreign_websockets_are_refused(sec: Up) -> None:
    port = sec.url.rsplit(":", 1)[1]
    for path in ("/api/v1/status", "/api/v1/nodes", "/api/v1/query/sql?sql=SELECT+1", "/"):
        resp = httpx.get(sec.url + path, headers={"Host": f"attacker.example:{port}"})
        assert resp.status_code == 421 and "attacker" not in resp.text
    nodes = httpx.get(sec.url + "/api/v1/nodes").json()["nodes"]
    assert nodes[0]["address"] == f"127.0.0.1:{port}"
    ws = sec.url.replace("http://", "ws://") + "/api/v1/flows/stream?last=1"
    with pytest.raises(InvalidStatus) as err, connect(ws, origin="http://evil.example",  # type: ignore[arg-type]
                                                      open_timeout=10):
        pass
    assert err.value.response.status_code == 403
    with connect(ws, origin=f"http://127.0.0.1:{port}", open_timeout=10) as own:  # type: ignore[arg-type]
        assert own.recv(timeout=10)


@pytest.mark.parametrize("sql", [
    "SELECT $$'$$ AS q, file('/etc/hostname') --'",
    "SELECT name FROM (SELECT 1) AS a, \"system\".\"tables\"",
    "SELECT * FROM system.disks",
    "SELECT * FROM schema_version",
    "SELECT 1; SELECT file('/etc/shadow')",
])
def test_query_sql_cannot_read_the_host(sec: Up, sql: str) -> None:
    out = sec.cli("query", "sql", "--server", sec.url, sql)
    assert out.returncode != 0 and "query refused" in out.stderr, out.stderr
    assert "root:" not in out.stdout + out.stderr


def test_hostile_sql_storm_leaves_status_and_the_stream_answering(sec: Up) -> None:
    heavy = ("SELECT count() FROM flows ARRAY JOIN range(1000000) AS r ARRAY JOIN range(50) "
             "AS q WHERE cityHash64(r, q, uuid) % 7 = 1")
    codes: list[int] = []

    def hostile() -> None:
        codes.append(httpx.get(sec.url + "/api/v1/query/sql", timeout=60,
                               params={"sql": heavy, "timeout_s": "3"}).status_code)

    storm = [threading.Thread(target=hostile) for _ in range(50)]
    ws = sec.url.replace("http://", "ws://") + "/api/v1/flows/stream?last=1"
    with connect(ws, open_timeout=10) as live:
        for t in storm:
            t.start()
        latencies = []
        while any(t.is_alive() for t in storm):
            t0 = time.perf_counter()
            assert httpx.get(sec.url + "/api/v1/status", timeout=30).status_code == 200
            latencies.append(time.perf_counter() - t0)
        streamed = live.recv(timeout=10)
    for t in storm:
        t.join()
    latencies.sort()
    print(f"status under 50 hostile queries: p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms,"
          f" p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms over {len(latencies)}")
    assert streamed and 429 in codes and set(codes) <= {200, 400, 429}
