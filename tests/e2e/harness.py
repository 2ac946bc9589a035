"""Harness for end-to-end tests: a real `spyglass up`, and the proof that it leaves nothing.

Each run uses its own netns prefix, link prefix, pod CIDR, state dir, pin dir and port,
so it can never touch a demo or another test's resources. The finaliser stops `up` with
SIGINT (as a user's Ctrl-C), then asserts that every netns, link, pinned map and process
it made is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
SPYGLASS = str(Path(sys.executable).with_name("spyglass"))
PY = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest_text(extra: str = "") -> str:
    server = ["/usr/bin/python3", str(HERE / "echo_server.py")]
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Namespace
        metadata: {{name: e2e-a, labels: {{team: a}}}}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {{name: e2e-b}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: client-0, namespace: e2e-a, labels: {{app: client}}}}
        spec: {{containers: [{{name: idle, command: [sleep, infinity]}}]}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: server-0, namespace: e2e-a, labels: {{app: server, tier: api}}}}
        spec: {{containers: [{{name: echo, command: {json.dumps(server)}}}]}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: server-1, namespace: e2e-b, labels: {{app: server, tier: db}}}}
        spec: {{containers: [{{name: echo, command: {json.dumps(server)}}}]}}
        """) + (f"---\n{textwrap.dedent(extra)}" if extra else "")


@dataclass
class Up:
    """A running `spyglass up` and the names it was told to use."""

    proc: subprocess.Popen[bytes]
    url: str
    state_dir: str
    pin_dir: str
    prefix: str
    log: Path
    started: float
    ready_after_s: float = 0.0
    grpc: str = ""  # Hubble's gRPC API, host:port

    @property
    def grpc_socket(self) -> str:
        return os.path.join(self.state_dir, "hubble.sock")

    def grpc_args(self) -> list[str]:
        """A port and a socket of this run's own, never the host's 4244."""
        if not self.grpc:
            self.grpc = f"127.0.0.1:{free_port()}"
        return ["--grpc-listen", self.grpc, "--grpc-socket", self.grpc_socket]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the CLI as a user on this host would: it finds this run's local credential."""
        env = {**os.environ, "SPYGLASS_TOKEN_FILE": os.path.join(self.state_dir, "token")}
        return subprocess.run([SPYGLASS, *args], capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)

    def lab(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("lab", args[0], "--state-dir", self.state_dir, *args[1:])

    def pods(self) -> dict[str, dict[str, Any]]:
        out = self.lab("ls", "-o", "json")
        assert out.returncode == 0, out.stderr
        return {f"{p['namespace']}/{p['name']}": p for p in json.loads(out.stdout)}

    def client(self, *args: str) -> dict[str, Any]:
        """Run tests/e2e/client.py in e2e-a/client-0; returns what it printed."""
        done = self.lab("exec", "e2e-a/client-0", "--", PY, str(HERE / "client.py"), *args)
        assert done.returncode == 0, f"client failed: {done.stderr}"
        return dict(json.loads(done.stdout))

    def flows(self, *filters: str, last: int = 5000) -> list[dict[str, Any]]:
        out = self.cli("observe", "--server", self.url, "--last", str(last), "-o", "json",
                       "--with-spyglass-fields", *filters)
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["flow"] for line in out.stdout.splitlines()
                if '"flow"' in line[:10]]

    def wait_flows(self, pred: Callable[[list[dict[str, Any]]], bool], *filters: str,
                   timeout: float = 10.0, last: int = 5000) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.flows(*filters, last=last)
            if pred(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.3)


def _running(pid: int) -> bool:
    """Whether `pid` still runs. A zombie does not: it holds nothing, and its parent (the
    host's init, for the lab's orphaned workloads) reaps it when it gets to it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _ours_left(up: Up, links: list[str], pids: list[int]) -> list[str]:
    """Everything of this run still on the host: by the names and PIDs it was given."""
    left = []
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    left += [f"netns {n}" for n in netns if n.startswith(up.prefix + "-")]
    left += [f"link {n}" for n in links if os.path.exists(f"/sys/class/net/{n}")]
    if os.path.exists(up.pin_dir):
        left.append(f"pins {up.pin_dir}: {os.listdir(up.pin_dir)}")
    left += [f"process {pid}" for pid in pids if _running(pid)]
    if os.path.exists(os.path.join(up.state_dir, "lab.json")):
        left.append("state file")
    if os.path.exists(os.path.join(up.state_dir, "lab")):
        left.append("pod logs")
    if os.path.exists(os.path.join(up.state_dir, "token")):
        left.append("the local credential")
    for record in ("agent.json", "policies.json", "perf-rings.sock", "lab.lock"):
        if os.path.exists(os.path.join(up.state_dir, record)):
            left.append(f"{record} in the state dir")
    return left


def _recorded_pids(up: Up) -> tuple[list[str], list[int]]:
    """The links and processes this run's records name: pods' processes, the agent and
    the ring keeper (read before anything is stopped, since stopping removes them)."""
    state: dict[str, Any] = {}
    state_file = os.path.join(up.state_dir, "lab.json")
    if os.path.exists(state_file):
        with open(state_file) as f:
            state = json.load(f)
    links = [p["host_ifname"] for p in state.get("pods", ())]
    pids = [pr["pid"] for p in state.get("pods", ()) for pr in p.get("processes", ())]
    agent_file = os.path.join(up.state_dir, "agent.json")
    if os.path.exists(agent_file):
        with open(agent_file) as f:
            record = json.load(f)
        pids += [int(record.get("pid", 0)), int(record.get("keeper_pid", 0))]
    return links, [p for p in pids if p]


def wait_serving(up: Up, timeout: float, what: str) -> float:
    """Poll the API until it answers 200; returns the seconds it took. Fails the test with
    `what`'s log if the process exits first or the time runs out."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + timeout:
        if up.proc.poll() is not None:
            log = up.log.read_text() if up.log.exists() else ""
            pytest.fail(f"{what} exited with {up.proc.returncode}:\n{log}")
        try:
            if httpx.get(up.url + "/api/v1/status", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    log = up.log.read_text() if up.log.exists() else ""
    pytest.fail(f"{what} did not serve the API within {timeout:g} s:\n{log}")


def pod_cidr(name: str) -> str:
    """A /24 of its own per run name, so that runs of different modules never clash."""
    return f"10.198.{zlib.crc32(name.encode()) % 201 + 10}.0/24"


def start_up(tmp: Path, name: str, aggregation: str = "medium", extra: str = "",
             store: str | None = None, audit_namespaces: tuple[str, ...] = ()) -> Up:
    """`spyglass up` on a test manifest; `store` defaults to a fresh chDB under `tmp`."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    manifest = tmp / "manifest.yaml"
    manifest.write_text(manifest_text(extra))
    state_dir = str(tmp / "state")
    up = Up(proc=None, url=f"http://127.0.0.1:{port}", state_dir=state_dir,  # type: ignore[arg-type]
            pin_dir=f"/sys/fs/bpf/spyglass-{name}-{os.getpid()}", prefix=name,
            log=tmp / "up.log", started=time.monotonic())
    with up.log.open("wb") as log:
        up.proc = subprocess.Popen(
            [SPYGLASS, "up", "--manifest", str(manifest), "--listen", f"127.0.0.1:{port}",
             "--monitor-aggregation", aggregation, "--state-dir", state_dir,
             "--pin-dir", up.pin_dir, "--prefix", name, "--link-prefix", name,
             "--pod-cidr", pod_cidr(name), "--node-name", "e2e-node",
             "--store", store or f"chdb://{tmp / 'store'}", *up.grpc_args(),
             *[a for ns in audit_namespaces for a in ("--policy-audit-namespace", ns)]],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        up.ready_after_s = wait_serving(up, 90, "spyglass up")
    finally:
        if not up.ready_after_s and up.proc.poll() is None:
            up.proc.send_signal(signal.SIGINT)  # it hangs: end it (the failure says why)
            up.proc.wait(timeout=30)
    return up


def stop_up(up: Up) -> None:
    """Ctrl-C, then check nothing of ours is left; clean up by name if it is."""
    links, pids = _recorded_pids(up)
    pids.append(up.proc.pid)
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGINT)
        try:
            up.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.proc.kill()
            up.proc.wait()
    left = _ours_left(up, links, pids)
    if left:  # clean up anyway, then fail: the test must never leave the host dirty
        subprocess.run([SPYGLASS, "down", "--state-dir", up.state_dir, "--pin-dir", up.pin_dir,
                        "--link-prefix", up.prefix], check=False)
        pytest.fail(f"`spyglass up` left behind after Ctrl-C: {left}\n{up.log.read_text()}")


# -- the split lifecycle: `spyglass lab up`, then agents that come and go -----------------

FLOOD_SENDER_C = HERE.parents[1] / "bench" / "flood_sender.c"


def build_flood_sender(directory: Path) -> str:
    """bench/flood_sender.c compiled into `directory` (gcc, which setup installs)."""
    out = str(directory / "flood_sender")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", out, str(FLOOD_SENDER_C)], check=True)
    return out


def lab_up(tmp: Path, name: str, extra: str = "") -> Up:
    """`spyglass lab up` on the test manifest (it returns once the pods run); no agent yet.

    `Up.proc` is the agent of the moment (`start_agent`), None until one runs.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    manifest = tmp / "manifest.yaml"
    manifest.write_text(manifest_text(extra))
    up = Up(proc=None, url=f"http://127.0.0.1:{free_port()}",  # type: ignore[arg-type]
            state_dir=str(tmp / "state"), pin_dir=f"/sys/fs/bpf/spyglass-{name}-{os.getpid()}",
            prefix=name, log=tmp / "agent.log", started=time.monotonic())
    done = subprocess.run(
        [SPYGLASS, "lab", "up", "--manifest", str(manifest), "--state-dir", up.state_dir,
         "--prefix", name, "--link-prefix", name, "--pod-cidr", pod_cidr(name)],
        capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        down(up)
        pytest.fail(f"spyglass lab up failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return up


def start_agent(up: Up, *args: str, store: str | None = None, timeout: float = 60) -> float:
    """Start `spyglass agent` for the lab and wait until it serves; returns how long it took."""
    host_port = up.url.removeprefix("http://")
    with up.log.open("ab") as log:
        log.write(f"\n=== spyglass agent at {time.time():.3f}\n".encode())
        log.flush()
        up.proc = subprocess.Popen(
            [SPYGLASS, "agent", "--listen", host_port, "--state-dir", up.state_dir,
             "--pin-dir", up.pin_dir, "--link-prefix", up.prefix, "--node-name", "e2e-node",
             "--store", store or f"chdb://{Path(up.state_dir).parent / 'store'}",
             *up.grpc_args(), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return wait_serving(up, timeout, "spyglass agent")


def kill_agent(up: Up) -> None:
    """SIGKILL the agent: no teardown of any kind runs."""
    assert up.proc is not None and up.proc.poll() is None, "no agent is running"
    up.proc.kill()
    up.proc.wait(timeout=10)


def down(up: Up) -> None:
    """`spyglass down` (stops any agent, the keeper, the lab, the datapath), then check
    that nothing of this run is left: netns, links, pins, processes, records."""
    links, pids = _recorded_pids(up)
    if up.proc is not None:
        pids.append(up.proc.pid)
    done = subprocess.run([SPYGLASS, "down", "--state-dir", up.state_dir, "--pin-dir",
                           up.pin_dir, "--link-prefix", up.prefix],
                          capture_output=True, text=True, timeout=120, check=False)
    if up.proc is not None and up.proc.poll() is None:
        up.proc.wait(timeout=30)
    left = _ours_left(up, links, pids)
    if done.returncode != 0 or left:
        log = up.log.read_text() if up.log.exists() else ""
        pytest.fail(f"`spyglass down` ({done.returncode}) left behind: {left}\n"
                    f"{done.stdout}{done.stderr}\n{log}")
