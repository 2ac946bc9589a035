"""`/api/v1/status` latency while 50 hostile `query sql` requests arrive at once.

    .venv/bin/python bench/api_under_sql.py         # --queries 50 --timeout 1 --flows 200000

The real app over uvicorn and a real chDB store of `--flows` flows, in a process of
its own as the agent is; the attacker is a third process that sends every query at
once, and this one polls status over one keep-alive connection, as a dashboard does,
until the storm has drained. Each hostile query is heavy enough to run into its
`--timeout`. Two configurations in the same run: Spyglass's gates (two SQL
queries admitted, the rest 429 at once), and the baseline without gates (every query
admitted, as before issue 9), where they queue on the store behind each other and fill
FastAPI's thread pool. Printed: status p50/p99/max, the polls slower than 200 ms, how
many queries were turned away, and how long the storm took to drain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from spyglass.api.app import create_app  # noqa: E402
from spyglass.api.auth import AuthConfig  # noqa: E402
from spyglass.api.gate import Gate  # noqa: E402
from spyglass.api.serve import serve_in_thread  # noqa: E402
from spyglass.api.source import AgentStatus  # noqa: E402
from spyglass.collector.filters import FilterSet  # noqa: E402
from spyglass.collector.lost import LossLedger  # noqa: E402
from spyglass.collector.ring import FlowRing  # noqa: E402
from spyglass.model.flow import Endpoint, Flow  # noqa: E402
from spyglass.storage import FlowStore, WriterStats, flows_to_arrow  # noqa: E402

#: CPU-bound and small in memory (a wide ARRAY JOIN hits the 2 GiB cap in milliseconds).
HEAVY = ("SELECT count() FROM flows AS a CROSS JOIN flows AS b "
         "WHERE cityHash64(a.uuid, b.uuid) % 7 = 1")


class Source:
    """The agent as the API sees it (api.source.FlowSource), over the bench's store."""

    def __init__(self, store: FlowStore) -> None:
        self.ring = FlowRing(65535)
        self.node_name = "bench"
        self.losses = LossLedger()
        self.store: FlowStore | None = store
        self.store_dsn: str | None = "chdb://bench"
        self.started_ns = time.time_ns()

    def status(self) -> AgentStatus:
        return AgentStatus(version="bench", uptime_ns=time.time_ns() - self.started_ns)

    def writer_stats(self) -> WriterStats | None:
        return None

    def live_namespaces(self) -> list[str]:
        return []


def fill(store: FlowStore, n: int) -> None:
    now = time.time_ns()
    web = Endpoint(identity=300, namespace="shop", pod_name="web-0")
    for start in range(0, n, 50_000):
        store.insert_arrow(flows_to_arrow([
            Flow(time_ns=now - (n - i) * 1_000_000, uuid=f"b{i}", source=web, bytes=i)
            for i in range(start, min(n, start + 50_000))]))


def fire(url: str, queries: int, timeout_s: float) -> None:
    """The attacker's side, in a process of its own: every query at once, codes on stdout."""
    clients = [httpx.Client(timeout=600) for _ in range(queries)]
    codes: list[int] = []
    go = threading.Event()

    def hostile(client: httpx.Client) -> None:
        go.wait()
        codes.append(client.get(url + "/api/v1/query/sql", params={
            "sql": HEAVY, "timeout_s": str(timeout_s)}).status_code)

    threads = [threading.Thread(target=hostile, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()
    go.set()
    for t in threads:
        t.join()
    print(json.dumps(codes), flush=True)


def storm(url: str, queries: int, timeout_s: float) -> dict[str, float]:
    """Poll status (one keep-alive client, as a dashboard would) while `fire` attacks."""
    with httpx.Client(timeout=600) as poll:
        poll.get(url + "/api/v1/status").raise_for_status()  # warm up both routes
        poll.get(url + "/api/v1/query/sql", params={"sql": "SELECT 1"})
        cmd = [sys.executable, __file__, "--fire", url, "--queries", str(queries),
               "--timeout", str(timeout_s)]
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) as attacker:
            assert attacker.stdin is not None and attacker.stdout is not None
            assert attacker.stdout.readline().strip() == "ready"
            t0 = time.perf_counter()
            attacker.stdin.write("go\n")
            attacker.stdin.flush()
            lat = []
            while attacker.poll() is None:
                a = time.perf_counter()
                poll.get(url + "/api/v1/status").raise_for_status()
                lat.append(time.perf_counter() - a)
            drained = time.perf_counter() - t0
            codes = json.loads(attacker.stdout.read().strip().splitlines()[-1])
    lat.sort()
    return {"p50": statistics.median(lat) * 1e3, "p99": lat[int(len(lat) * 0.99)] * 1e3,
            "max": lat[-1] * 1e3, "n": len(lat), "slow": sum(x > 0.2 for x in lat),
            "refused": codes.count(429), "drained": drained}


def serve(path: str, flows: int, unbounded: bool) -> None:
    """The agent's side: open the store, fill it once, serve until stdin closes."""
    store = FlowStore.open(f"chdb://{path}")
    if store.count(FilterSet()) == 0:
        fill(store, flows)
    app = create_app(Source(store), auth=AuthConfig(local_token="b" * 32))
    if unbounded:
        app.state.sql_gate = Gate(10_000, "SQL queries")
    with serve_in_thread(app) as (_, url):
        print(url, flush=True)
        sys.stdin.read()
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--fire", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--unbounded", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.flows, args.unbounded)
        return
    if args.fire:
        fire(args.fire, args.queries, args.timeout)
        return
    tmp = tempfile.mkdtemp(prefix="sg-bench-sql-")
    try:
        print(f"{args.queries} hostile queries at once, each up to {args.timeout:g} s, over "
              f"{args.flows:,} flows; status polled meanwhile (load average "
              f"{os.getloadavg()[0]:.2f})")
        print(f"{'configuration':<24}{'status p50':>11}{'p99':>9}{'max':>9}{'polls':>7}"
              f"{'>200ms':>7}{'429s':>6}{'drained':>9}")
        results = {}
        for name, unbounded in (("gates (Spyglass)", False), ("no gates (baseline)", True)):
            cmd = [sys.executable, __file__, "--serve", f"{tmp}/flows", "--flows",
                   str(args.flows), *(["--unbounded"] if unbounded else [])]
            with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True) as agent:
                assert agent.stdout is not None and agent.stdin is not None
                url = agent.stdout.readline().strip()
                r = results[name] = storm(url, args.queries, args.timeout)
                agent.stdin.close()
                agent.wait(timeout=120)
            print(f"{name:<24}{r['p50']:>9.1f}ms{r['p99']:>7.1f}ms{r['max']:>7.0f}ms"
                  f"{r['n']:>7.0f}{r['slow']:>7.0f}{r['refused']:>6.0f}{r['drained']:>8.1f}s")
        gated, base = results["gates (Spyglass)"], results["no gates (baseline)"]
        print(f"status max: {gated['max']:.0f} ms with gates vs {base['max']:.0f} ms without "
              f"({base['max'] / gated['max']:.0f}x); p99 {gated['p99']:.1f} ms, target "
              f"< 200 ms: {'met' if gated['p99'] < 200 else 'missed'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
