"""Store benchmark: ingest through enriched_to_arrow + StoreWriter into chDB, and history
queries over N stored flows, each against a baseline measured in the same run.

    .venv/bin/python bench/store.py                 # --flows 10000000 --ingest 2000000

Ingest: decoded batches (16384 synthetic perf samples each, 64 pods) are enriched once
(`enrich_batch`, as the collector does), go through `enriched_to_arrow` and the writer
until the store has them all; the baseline inserts the
same rows with `client.insert` from Python lists. Queries: p50/p95 of a filtered
time-range query (one pod, last hour, limit 100), the service map and the drops summary,
against the same computations in pandas over the same rows in memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collector import LabGetters, synthetic_records  # noqa: E402
from spyglass.collector.abi import RECORD_DTYPE  # noqa: E402
from spyglass.collector.decoder import ClockOffset, DecodedBatch, Decoder  # noqa: E402
from spyglass.collector.enrich import Enricher  # noqa: E402
from spyglass.collector.filters import build_from_flags  # noqa: E402
from spyglass.storage import FlowStore, StoreWriter, enriched_to_arrow  # noqa: E402

HOUR = 3600 * 10**9


def batches(records: bytes, size: int, offset_ns: int) -> list[DecodedBatch]:
    arr = np.frombuffer(records, dtype=RECORD_DTYPE)
    dec = Decoder(ClockOffset(offset_ns))
    return [dec.decode(arr[i:i + size]) for i in range(0, len(arr), size)]


def pct(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.95))]


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ingest(store: FlowStore, enricher: Enricher, decoded: list[DecodedBatch], total: int,
           ) -> tuple[float, float, float]:
    """(flows/s end to end through the writer, flows/s of enrich_batch + enriched_to_arrow,
    flows/s of enriched_to_arrow alone)."""
    w = StoreWriter(store, max_rows=4_000_000, flush_rows=200_000, flush_interval_s=1.0)
    n = 0
    enrich = conv = 0.0
    t0 = time.perf_counter()
    while n < total:
        for b in decoded:
            c0 = time.perf_counter()
            eb = enricher.enrich_batch(b)
            c1 = time.perf_counter()
            rb = enriched_to_arrow(eb)
            conv += time.perf_counter() - c1
            enrich += c1 - c0
            w.submit(rb)
            n += len(b)
            if n >= total:
                break
    w.close(timeout=120)
    elapsed = time.perf_counter() - t0
    s = w.stats()
    assert s.written == n and s.lost == 0, s
    return n / elapsed, n / (enrich + conv), n / conv


def baseline_insert(store: FlowStore, table: pa.Table) -> float:
    """The same rows through client.insert from Python lists (one object per value)."""
    cols = table.column_names
    rows = [list(r.values()) for r in table.to_pylist()]
    t = time.perf_counter()
    store._client.insert("flows", rows, column_names=cols)
    return len(rows) / (time.perf_counter() - t)


def load(store: FlowStore, base: pa.Table, n: int, now_ns: int) -> pa.Table:
    """n rows spread over the last 24 h, copies of `base` with fresh times and uuids."""
    rng = np.random.default_rng(1)
    parts = []
    for k in range((n + base.num_rows - 1) // base.num_rows):
        t = base.slice(0, min(base.num_rows, n - k * base.num_rows))
        times = now_ns - rng.integers(0, 24 * HOUR, t.num_rows, dtype=np.int64)
        t = t.set_column(0, "time", pa.array(times, pa.timestamp("ns", tz="UTC")))
        t = t.set_column(1, "uuid", pc.binary_join_element_wise(
            pa.array([f"{k:06x}"] * t.num_rows), t.column("uuid"), "-"))
        store.insert_arrow(t)
        parts.append(t)
    return pa.concat_tables(parts)


def to_pandas(t: pa.Table) -> pd.DataFrame:
    """The columns the three queries need, strings as categoricals (pandas' best case).

    The bench pods have no workloads, so the map's node is the pod name on both sides.
    """
    return pd.DataFrame({
        "time": t.column("time").cast(pa.int64()).to_numpy(),
        "src_ns": t.column("source_namespace").to_pandas().astype("category"),
        "src_pod": t.column("source_pod_name").to_pandas().astype("category"),
        "dst_ns": t.column("destination_namespace").to_pandas().astype("category"),
        "dst_pod": t.column("destination_pod_name").to_pandas().astype("category"),
        "verdict": t.column("verdict").to_numpy(), "drop": t.column("drop_reason").to_numpy(),
        "dport": t.column("destination_port").to_numpy(),
        "proto": t.column("protocol").to_numpy(), "bytes": t.column("bytes").to_numpy(),
        "reply": t.column("is_reply").to_pandas().fillna(False).astype(bool),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, default=10_000_000, help="stored flows to query")
    ap.add_argument("--ingest", type=int, default=2_000_000, help="flows for the ingest rate")
    ap.add_argument("--baseline", type=int, default=200_000, help="rows for client.insert")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--pandas-max", type=int, default=10_000_000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="sg-bench-store-")
    try:
        run(a, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(a: argparse.Namespace, root: str) -> None:
    now = time.time_ns()
    g = LabGetters()
    enricher = Enricher(g, g, g, "bench-node")
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    records = synthetic_records(200_000)
    decoded = batches(records, 16384, now - 10**9 * 60)
    store = FlowStore.open(f"chdb://{root}/ingest")
    rate, both, conv = ingest(store, enricher, decoded, a.ingest)
    base = pa.Table.from_batches([enriched_to_arrow(enricher.enrich_batch(b)) for b in decoded])
    store._client.command("TRUNCATE TABLE flows")
    base_rate = baseline_insert(store, base.slice(0, a.baseline))
    store.close()
    print(f"\ningest ({a.ingest:,} flows, 16384-event batches)")
    print(f"  enrich + to_arrow + StoreWriter -> chDB{rate:>12,.0f} flows/s")
    print(f"  enrich_batch + enriched_to_arrow       {both:>12,.0f} flows/s")
    print(f"  enriched_to_arrow alone                {conv:>12,.0f} flows/s")
    print(f"  client.insert from Python lists        {base_rate:>12,.0f} flows/s  "
          f"({a.baseline:,} rows)  -> {rate / base_rate:.1f}x")

    store = FlowStore.open(f"chdb://{root}/query")
    t = time.perf_counter()
    data = load(store, base, a.flows, now)
    print(f"\nloaded {a.flows:,} flows over 24 h in {time.perf_counter() - t:.1f} s")
    store._client.command("OPTIMIZE TABLE flows FINAL")
    since = now - HOUR
    pod = build_from_flags([("pod", "ns1/pod-5")])
    pods_n = min(a.flows, a.pandas_max)
    t = time.perf_counter()
    df = to_pandas(data.slice(0, pods_n))
    print(f"pandas frame of {pods_n:,} rows built in {time.perf_counter() - t:.1f} s, "
          f"{df.memory_usage(deep=True).sum() / 2**20:,.0f} MiB")
    del data

    def pd_filtered() -> object:
        m = (df.time >= since) & (((df.src_ns == "ns1") & (df.src_pod == "pod-5"))
                                  | ((df.dst_ns == "ns1") & (df.dst_pod == "pod-5")))
        return df[m].nlargest(100, "time")

    def pd_map() -> object:
        d = df[~df.reply]
        return d.groupby(["src_ns", "src_pod", "dst_ns", "dst_pod", "dport", "proto"],
                         observed=True).agg(flows=("time", "size"), bytes=("bytes", "sum"),
                                            first=("time", "min"), last=("time", "max"),
                                            dropped=("verdict", lambda v: (v == 2).sum()))

    def pd_drops() -> object:
        return df[df.verdict == 2].groupby("drop").agg(drops=("time", "size"),
                                                       bytes=("bytes", "sum"))

    cases: list[tuple[str, Callable[[], object], Callable[[], object], float]] = [
        ("filtered: one pod, last hour, limit 100",
         lambda: store.query_flows(pod, since_ns=since, until_ns=now + 1, limit=100),
         pd_filtered, 0.1),
        ("service map (24 h)", lambda: store.service_map(), pd_map, 1.0),
        ("drops by reason (24 h)", lambda: store.drops(by="reason"), pd_drops, 1.0),
    ]
    print(f"\nqueries over {a.flows:,} flows, {a.repeat} runs each "
          f"(pandas over {pods_n:,} rows in memory)")
    print(f"  {'query':<42}{'chDB p50':>10}{'p95':>9}{'pandas p50':>12}{'p95':>9}  target")
    for name, ch, pdq, target in cases:
        ch()  # warm
        c50, c95 = pct(timed(ch, a.repeat))
        p50, p95 = pct(timed(pdq, max(3, a.repeat // 4)))
        ok = "ok" if c50 < target else "MISSED"
        print(f"  {name:<42}{c50 * 1e3:>8.0f}ms{c95 * 1e3:>7.0f}ms{p50 * 1e3:>10.0f}ms"
              f"{p95 * 1e3:>7.0f}ms  p50<{target * 1e3:.0f}ms {ok}")
    store.close()


if __name__ == "__main__":
    main()
