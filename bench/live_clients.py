"""Live clients under a flood: does a 1%-filtered `spyglass observe -f` keep up at the
sender's maximum, and is a client with no filter told exactly what it missed? Run as root.

    sudo .venv/bin/python bench/live_clients.py      # --seconds 5

The e2e tests' lab (tests/e2e/harness.py) and an agent with aggregation none and no
store. Two senders in e2e-a/client-0 (bench/flood_sender.c) flood e2e-b/server-1: one as
fast as it can from port 40000, one paced at 1% of the first's measured maximum from port
40002. Two real CLI clients follow the stream: A with `--from-port 40002` (the 1%), B
with no filter; each counts the flows it prints and the losses it is told, by source.
Printed: what each sender sent, what the collector delivered and lost, what each client
received and was told, the CPU each client process used, and whether each client's count
closes: A received = 2 events per 1% packet; B received + told lost = everything
delivered while it followed.

`--protocol ws,grpc` runs the same flood twice against the same agent: once with the CLI
clients (WebSocket, the baseline), once with Hubble gRPC clients (bench/grpc_client.py,
GetFlows with follow, as `hubble observe -f` asks), so the two APIs compare in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE.parent / "tests"))

from collector_e2e import cpu_seconds  # noqa: E402
from harness import SPYGLASS, Up, build_flood_sender, down, lab_up, start_agent  # noqa: E402
from test_flood_accounting import snapshot  # noqa: E402


class Client:
    """`spyglass observe -f -o json` in the background, its lines counted as they come."""

    def __init__(self, up: Up, *filters: str) -> None:
        env = {**os.environ, "SPYGLASS_TOKEN_FILE": os.path.join(up.state_dir, "token")}
        self.proc = subprocess.Popen(
            [SPYGLASS, "observe", "-f", "--server", up.url, "-o", "json", "--with-spyglass-fields",
             *filters],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.flows = 0
        self.lost: Counter[str] = Counter()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith('{"flow"'):
                self.flows += 1
            elif '"lost_events"' in line:
                body = json.loads(line)["lost_events"]
                self.lost[body["source"]] += int(body["num_events_lost"])

    def stop(self) -> None:
        self.cpu_s = cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)


class GrpcClient:
    """bench/grpc_client.py in the background: GetFlows follow, counted by the client."""

    def __init__(self, up: Up, *source_ports: str) -> None:
        args = [a for p in source_ports for a in ("--source-port", p)]
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "grpc_client.py"), up.grpc, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.flows = 0
        self.lost: Counter[str] = Counter()
        self.cpu_s = 0.0

    def stop(self) -> None:
        self.cpu_s = cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        last = (out.strip().splitlines() or ["{}"])[-1]
        body = json.loads(last)
        if "error" in body or "flows" not in body:
            raise SystemExit(f"the gRPC client failed: {body.get('error') or err}")
        self.flows = int(body["flows"])
        self.lost.update({k: int(v) for k, v in body["lost"].items()})


def flood(up: Up, sender: str, ip: str, rate: int, seconds: int, sport: int) -> dict[str, int]:
    """One flood_sender run; its JSON line (`sent`, ...)."""
    done = up.lab("exec", "e2e-a/client-0", "--", sender, ip, "9999", str(rate), str(seconds),
                  "64", str(sport), str(sport + 1), "0")
    if done.returncode != 0:
        raise SystemExit(f"the sender failed: {done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--protocol", default="ws,grpc",
                    help="which clients follow the flood, one round each: ws (the CLI over "
                    "the WebSocket), grpc (Hubble's GetFlows), or ws,grpc")
    ap.add_argument("--agent-arg", action="append", default=[],
                    help="one more option for `spyglass agent` (repeatable), e.g. "
                    "--agent-arg=--ring-capacity=262143")
    a = ap.parse_args()
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; aggregation none, no store, {a.seconds} s")
    with tempfile.TemporaryDirectory(prefix="sg-live-clients-") as d:
        tmp = Path(d)
        sender = build_flood_sender(tmp)
        up = lab_up(tmp, "sglc")
        try:
            start_agent(up, "--monitor-aggregation", "none", *a.agent_arg, store="none")
            ip = up.pods()["e2e-b/server-1"]["ip"]
            probe = flood(up, sender, ip, 0, 1, 40000)  # the sender's maximum, measured
            one_pct = max(1, probe["sent"] // 100)
            rounds = [(proto, run_round(up, sender, ip, proto, one_pct, a.seconds))
                      for proto in a.protocol.split(",")]
        finally:
            down(up)
    for proto, (out, delta, clients) in rounds:
        report(proto, out, delta, clients, one_pct, a.seconds)


def run_round(up: Up, sender: str, ip: str, proto: str, one_pct: int, seconds: int
              ) -> tuple[dict[str, dict[str, int]], tuple[float, ...], dict[str, Any]]:
    """One flood with two clients of `proto` following it: (senders, collector delta,
    clients)."""
    make: Any = {"ws": Client, "grpc": GrpcClient}[proto]
    clients = {"A --from-port 40002": make(up, "--from-port", "40002") if proto == "ws"
               else make(up, "40002"),
               "B no filter": make(up)}
    time.sleep(2.0)  # connected and idle
    assert up.proc is not None
    before = snapshot(up)
    agent_cpu = cpu_seconds(up.proc.pid)
    out: dict[str, dict[str, int]] = {}
    threads = [threading.Thread(target=lambda k=k, r=r, p=p: out.__setitem__(
        k, flood(up, sender, ip, r, seconds, p)))
        for k, r, p in (("max", 0, 40000), ("1%", one_pct, 40002))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(2.0)
    after = snapshot(up)
    agent_cpu = cpu_seconds(up.proc.pid) - agent_cpu
    time.sleep(1.0)
    for c in clients.values():
        c.stop()
    delta = tuple(x - y for x, y in zip(after, before, strict=True))
    return out, (*delta, agent_cpu), clients


def report(proto: str, out: dict[str, dict[str, int]], delta: tuple[float, ...],
           clients: dict[str, Any], one_pct: int, seconds: int) -> None:
    ok, failed, delivered, lost, agent_cpu = delta
    print(f"--- {proto}: senders: max {out['max']['sent']:,} packets, 1% "
          f"{out['1%']['sent']:,} packets ({one_pct:,}/s)")
    print(f"collector: offered {ok + failed:,.0f}, delivered {delivered:,.0f}, lost {lost:,.0f}; "
          f"agent CPU {agent_cpu:.2f} s over the flood and 2 s after")
    for name, c in clients.items():
        told = sum(c.lost.values())
        print(f"client {name}: received {c.flows:,} flows ({c.flows / seconds:,.0f}/s of the "
              f"flood), told lost {dict(c.lost)}, CPU {c.cpu_s:.2f} s "
              f"({c.cpu_s / seconds * 100:.0f}% of a core)")
        if name.startswith("A"):
            want = 2 * out["1%"]["sent"]
            verdict = "keeps up" if c.flows == want and not told else "MISSED"
            print(f"  expected {want:,}: {verdict}")
        else:
            closes = c.flows + told - c.lost.get("PERF_EVENT_RING_BUFFER", 0)
            print(f"  received + told lost (client's own) = {closes:,} of {delivered:,.0f} "
                  f"delivered: {'exact' if closes == delivered else 'OFF'}")

if __name__ == "__main__":
    main()
