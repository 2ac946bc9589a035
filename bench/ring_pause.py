"""Perf ring sizing: does a ring of N pages hold a reader that stops for 100-200 ms at 200k
events/s? Run as root.

    sudo .venv/bin/python bench/ring_pause.py        # --pages 1024,2048 --pauses 100,150,200

For each ring size: the e2e tests' lab (tests/e2e/harness.py: `spyglass lab up`, then
`spyglass agent --monitor-aggregation none --store none --perf-ring-pages N`), and
bench/flood_sender.c in e2e-a/client-0 sending 100k UDP packets/s (200k events/s) for 5 s
to e2e-b/server-1. During the flood the agent is stopped three times with SIGSTOP for the
pause (SIGCONT after it): nothing reads the rings meanwhile, and what the kernel cannot
write is counted as a failed submit. Printed per pause: events offered (the datapath's
pinned counters), delivered, lost (the agent's ledger).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import Up, build_flood_sender, down, lab_up, start_agent  # noqa: E402
from test_flood_accounting import snapshot  # noqa: E402

RATE = 100_000  # packets/s; 2 events each with aggregation none
SECONDS = 5


def stop_three_times(up: Up, pause_s: float) -> None:
    time.sleep(1.5)
    for _ in range(3):
        os.kill(up.proc.pid, signal.SIGSTOP)
        time.sleep(pause_s)
        os.kill(up.proc.pid, signal.SIGCONT)
        time.sleep(0.8)


def run(pages: int, pauses: list[int], sender: str, tmp: Path) -> None:
    up = lab_up(tmp / f"p{pages}", f"sgp{pages}"[:6])
    try:
        start_agent(up, "--monitor-aggregation", "none", "--perf-ring-pages", str(pages),
                    store="none")
        ip = up.pods()["e2e-b/server-1"]["ip"]
        for ms in pauses:
            before = snapshot(up)
            th = threading.Thread(target=stop_three_times, args=(up, ms / 1000))
            th.start()
            done = up.lab("exec", "e2e-a/client-0", "--", sender, ip, "9999", str(RATE),
                          str(SECONDS))
            th.join()
            if done.returncode != 0:
                raise SystemExit(f"the sender failed: {done.stderr}")
            time.sleep(1.5)
            ok, failed, delivered, lost = (a - b for a, b in
                                           zip(snapshot(up), before, strict=True))
            print(f"  {pages:>5} pages  3 stops of {ms:>3} ms  offered {ok + failed:>10,}  "
                  f"delivered {delivered:>10,}  lost {lost:>7,}", flush=True)
    finally:
        down(up)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", default="1024,2048")
    ap.add_argument("--pauses", default="100,150,200", help="milliseconds")
    a = ap.parse_args()
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {RATE:,} packets/s for {SECONDS} s, aggregation none")
    with tempfile.TemporaryDirectory(prefix="sg-ring-pause-") as d:
        tmp = Path(d)
        sender = build_flood_sender(tmp)
        for pages in (int(p) for p in a.pages.split(",")):
            run(pages, [int(p) for p in a.pauses.split(",")], sender, tmp)


if __name__ == "__main__":
    main()
