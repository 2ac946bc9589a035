"""Live clients under a flood: does a 1%-filtered `spyglass observe -f` keep up at the
sender's maximum, and is a client with no filter told exactly what it missed? Run as root.

    sudo .venv/bin/python bench/live_clients.py      # --seconds 5

The e2e tests' lab (tests/e2e/harness.py) and an agent with aggregation none and no
store. Two senders in e2e-a/client-0 (bench/flood_sender.c) flood e2e-b/server-1: one as
fast as it can from port 40000, one paced at 1% of the first's measured maximum from port
40002. Two real CLI clients follow the stream: A with `--from-port 40002` (the 1%), B
with no filter; each counts the flows it prints and the losses it is told, by source.
Printed: what each sender sent, what the collector delivered and lost, what each client
received and was told, and whether each client's count closes: A received = 2 events per
1% packet; B received + told lost = everything delivered while it followed.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE.parent / "tests"))

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
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)


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
            clients = {"A --from-port 40002": Client(up, "--from-port", "40002"),
                       "B no filter": Client(up)}
            time.sleep(2.0)  # connected and idle
            before = snapshot(up)
            out: dict[str, dict[str, int]] = {}
            threads = [threading.Thread(target=lambda k=k, r=r, p=p: out.__setitem__(
                k, flood(up, sender, ip, r, a.seconds, p)))
                for k, r, p in (("max", 0, 40000), ("1%", one_pct, 40002))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(2.0)
            after = snapshot(up)
            time.sleep(1.0)
            for c in clients.values():
                c.stop()
        finally:
            down(up)
    ok, failed, delivered, lost = (x - y for x, y in zip(after, before, strict=True))
    print(f"senders: max {out['max']['sent']:,} packets, 1% {out['1%']['sent']:,} packets "
          f"({one_pct:,}/s)")
    print(f"collector: offered {ok + failed:,}, delivered {delivered:,}, lost {lost:,}")
    for name, c in clients.items():
        told = sum(c.lost.values())
        print(f"client {name}: received {c.flows:,} flows, told lost {dict(c.lost)}")
        if name.startswith("A"):
            want = 2 * out["1%"]["sent"]
            verdict = "keeps up" if c.flows == want and not told else "MISSED"
            print(f"  expected {want:,}: {verdict}")
        else:
            closes = c.flows + told - c.lost.get("PERF_EVENT_RING_BUFFER", 0)
            print(f"  received + told lost (client's own) = {closes:,} of {delivered:,} "
                  f"delivered: {'exact' if closes == delivered else 'OFF'}")


if __name__ == "__main__":
    main()
