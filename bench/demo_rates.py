"""Demo figures: time from `spyglass up` to the first flow, and events/s with aggregation on/off.

Runs the bundled demo twice in one process run, the same traffic each time, once with
`--monitor-aggregation medium` and once with `none`, each under its own names and pod
CIDR so that it never touches a running demo. Root + bcc.

    sudo .venv/bin/python bench/demo_rates.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SPYGLASS = str(Path(sys.executable).with_name("spyglass"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(aggregation: str, seconds: float) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        name = f"sgbench{aggregation[0]}"
        argv = [SPYGLASS, "up", "--demo", "--listen", f"127.0.0.1:{port}",
                "--monitor-aggregation", aggregation, "--state-dir", tmp,
                "--pin-dir", f"/sys/fs/bpf/{name}", "--prefix", name, "--link-prefix", name,
                "--pod-cidr", "10.197.0.0/24"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            api_s = first_s = 0.0
            while time.monotonic() - t0 < 90:
                if proc.poll() is not None:
                    raise SystemExit(f"up failed: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
                try:
                    r = httpx.get(url + "/api/v1/flows", params={"last": 1}, timeout=1)
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                api_s = api_s or time.monotonic() - t0
                if r.json()["flows"]:
                    first_s = time.monotonic() - t0
                    break
                time.sleep(0.05)
            s0 = httpx.get(url + "/api/v1/status", timeout=5).json()
            time.sleep(seconds)
            s1 = httpx.get(url + "/api/v1/status", timeout=5).json()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        dt = (s1["uptime_ns"] - s0["uptime_ns"]) / 1e9
        return {
            "api_ready_s": api_s,
            "first_flow_s": first_s,
            "events_per_s": (s1["seen_flows"] - s0["seen_flows"]) / dt,
            "lost": float(sum(s1.get("lost_events", {}).values())),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (it runs `spyglass up`)")
    results = {agg: run(agg, args.seconds) for agg in ("medium", "none")}
    print(f"{'aggregation':<12} {'API ready':>10} {'first flow':>11} {'events/s':>10} {'lost':>6}")
    for agg, r in results.items():
        print(f"{agg:<12} {r['api_ready_s']:>9.2f}s {r['first_flow_s']:>10.2f}s "
              f"{r['events_per_s']:>10.1f} {r['lost']:>6.0f}")
    ratio = results["none"]["events_per_s"] / max(results["medium"]["events_per_s"], 1e-9)
    print(f"none / medium events: {ratio:.1f}x for the same demo traffic")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
