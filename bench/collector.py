"""The collector's columnar path, stage by stage, in events per CPU-second. No kernel.

Run: .venv/bin/python bench/collector.py [--events 200000] [--batches 256,2048,16384]

Synthetic perf samples go through what the agent runs: `parse_records` and
`Decoder.decode` per read, `Enricher.enrich_batch`, the flow ring's
`write_batch`, and readers: a live client's filtered read (`read_chunks`, the
filter's numpy mask, Flows for the selected 1% only), the same with no filter
(a Flow per event), and the store's `enriched_to_arrow`. Baselines in the same
run: per-event ctypes decoding (what a bcc-style callback does), and the path
before the columnar ring, which built a Flow per event for the ring
(`to_flows` + `write_many`). Times are CPU time of this process
(`time.process_time`), so the figures are events per CPU-second.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from spyglass.collector.abi import (
    EVENT_DROP,
    EVENT_TRACE,
    EVENT_VERSION,
    F_IS_REPLY,
    F_REPLY_KNOWN,
    SgEvent,
    pack_event,
)
from spyglass.collector.decoder import ClockOffset, Decoder
from spyglass.collector.enrich import Enricher
from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters import FilterSet, build_from_flags
from spyglass.collector.perf import parse_records, sample_record
from spyglass.collector.ring import FlowRing
from spyglass.model.getters import EndpointInfo
from spyglass.storage import enriched_to_arrow

PODS = 64


class LabGetters:
    """Dict-backed getters shaped like the lab's: the cheap case enrichment should hit."""

    def __init__(self) -> None:
        self.by_ip: dict[str, EndpointInfo] = {}
        self.by_id: dict[int, EndpointInfo] = {}
        for i in range(PODS):
            ep = EndpointInfo(id=i + 1, identity=1000 + i % 8, namespace=f"ns{i % 4}",
                              pod_name=f"pod-{i}", labels=(f"k8s:app=app{i % 8}",),
                              ips=(f"10.244.0.{i + 2}",), ifname=f"lxc{i:04d}")
            self.by_ip[ep.ips[0]] = ep
            self.by_id[ep.id] = ep

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return self.by_ip.get(ip)

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        return self.by_id.get(ep_id)

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        return None

    def ifname(self, ifindex: int) -> str:
        return f"lxc{ifindex:04d}"


def synthetic_records(n: int, seed: int = 1) -> bytes:
    """n perf sample records: pod-to-pod TCP/UDP/ICMP among PODS pods, some to the world."""
    rnd = random.Random(seed)
    out = bytearray()
    for i in range(n):
        s, d = rnd.randrange(PODS), rnd.randrange(PODS)
        world = rnd.random() < 0.1
        proto = rnd.choice((6, 6, 6, 17, 1))
        out += sample_record(pack_event(
            type=EVENT_DROP if rnd.random() < 0.05 else EVENT_TRACE,
            subtype=rnd.choice((0, 5)), flags=F_REPLY_KNOWN | (F_IS_REPLY if i % 2 else 0),
            src_ep=s + 1, dst_ep=0 if world else d + 1, ifindex=s + 1, orig_len=60 + i % 1400,
            ts_ns=1_000_000 + i, saddr=socket.inet_aton(f"10.244.0.{s + 2}"),
            daddr=socket.inet_aton("93.184.216.34" if world else f"10.244.0.{d + 2}"),
            sport=(8 << 8) if proto == 1 else 30000 + i % 20000,
            dport=0 if proto == 1 else rnd.choice((80, 443, 53, 8080)), proto=proto,
            tcp_flags=0x10 if proto == 6 else 0, reason=rnd.choice((1, 2, 3)),
            direction=rnd.choice((1, 2)), src_identity=1000 + s % 8,
            dst_identity=2 if world else 1000 + d % 8, agg_packets=1 + i % 5,
            agg_bytes=100 + i % 5000))
    return bytes(out)


def ctypes_decode(data: bytes) -> int:
    """The baseline: one ctypes struct per event, then what a callback would read."""
    ok = 0
    size = 128
    for off in range(0, len(data), size):
        ev = SgEvent.from_buffer_copy(data, off + 12)
        if ev.version == EVENT_VERSION and ev.len == 116 and ev.type in (1, 4, 5):
            _ = (ev.ts_ns, bytes(ev.saddr), bytes(ev.daddr), ev.sport, ev.dport, ev.proto,
                 ev.src_identity, ev.dst_identity, ev.flags, ev.agg_packets)
            ok += 1
    return ok


def cpu_rate(fn: Callable[[], int], repeat: int) -> float:
    """Events per CPU-second, from the median CPU time of `repeat` runs."""
    times: list[float] = []
    n = 0
    for _ in range(repeat):
        t0 = time.process_time()
        n = fn()
        times.append(time.process_time() - t0)
    return n / max(statistics.median(times), 1e-9)


def read_all(ring: FlowRing, filters: FilterSet | None) -> int:
    """A live client's pass over the ring: chunks, the filter's mask, Flows for what passes."""
    mask = None if filters is None or filters.empty else filters.mask
    seq, sent = ring.oldest, 0
    while seq < ring.head:
        chunks, seq = ring.read_chunks(seq, 4096)
        for c in chunks:
            if isinstance(c, EnrichedBatch):
                rows = c if mask is None else c.take(mask(c))
                sent += len(rows.to_flows())
    return sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batches", default="256,2048,16384")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = synthetic_records(args.events)
    decoder = Decoder(ClockOffset())
    g = LabGetters()
    enricher = Enricher(g, g, g, "bench-node")
    # One pod's flows to one port: about 1% of the mix, as a user's `observe -f` filter.
    one_pct = build_from_flags([("from-pod", "ns1/pod-5"), ("port", "443")])
    sizes = [int(x) for x in args.batches.split(",")]
    n: int = args.events
    print(f"events: {n}, median of {args.repeat} runs, CPU time, python "
          f"{sys.version.split()[0]}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    base = cpu_rate(lambda: ctypes_decode(data), args.repeat)
    capacity = (1 << n.bit_length()) - 1  # the ring holds the whole run
    for size in sizes:
        chunks = [data[i:i + size * RECORD] for i in range(0, len(data), size * RECORD)]
        decoded = [decoder.decode(parse_records(c).records) for c in chunks]
        enriched = [enricher.enrich_batch(b) for b in decoded]
        ring = FlowRing(capacity)
        for eb in enriched:
            ring.write_batch(eb)
        sel = read_all(ring, one_pct)

        def append(eb: list[EnrichedBatch] = enriched) -> int:
            r = FlowRing(capacity)
            for b in eb:
                r.write_batch(b)
            return n

        def collector_thread(cs: list[bytes] = chunks) -> int:
            r = FlowRing(capacity)
            for c in cs:
                r.write_batch(enricher.enrich_batch(decoder.decode(parse_records(c).records)))
            return n

        def per_event_ring(cs: list[bytes] = chunks) -> int:
            r = FlowRing(capacity)
            for c in cs:
                r.write_many(enricher.enrich_batch(
                    decoder.decode(parse_records(c).records)).to_flows())
            return n

        rows = [
            ("ctypes from_buffer_copy per event (base)", base),
            ("parse + decode", cpu_rate(lambda cs=chunks: sum(  # type: ignore[misc]
                len(decoder.decode(parse_records(c).records)) for c in cs), args.repeat)),
            ("enrich_batch", cpu_rate(lambda d=decoded: sum(  # type: ignore[misc]
                len(enricher.enrich_batch(b)) for b in d), args.repeat)),
            ("ring write_batch", cpu_rate(append, args.repeat)),
            (f"filtered read, 1% ({sel} flows built)",
             cpu_rate(lambda r=ring: (read_all(r, one_pct), n)[1], args.repeat)),  # type: ignore[misc]
            ("unfiltered read (a Flow per event)",
             cpu_rate(lambda r=ring: read_all(r, None), args.repeat)),  # type: ignore[misc]
            ("store: enriched_to_arrow", cpu_rate(lambda e=enriched: sum(  # type: ignore[misc]
                enriched_to_arrow(b).num_rows for b in e), args.repeat)),
        ]
        col = cpu_rate(collector_thread, args.repeat)
        old = cpu_rate(per_event_ring, max(2, args.repeat // 2))
        print(f"\nbatch {size}{'events per CPU-s':>51}")
        for name, r in rows:
            print(f"  {name:<50}{r:>14,.0f}")
        print(f"  {'collector thread: decode+enrich+ring (columnar)':<50}{col:>14,.0f}")
        print(f"  {'same with a Flow per event into the ring (before)':<50}{old:>14,.0f}"
              f"  -> columnar {col / old:.1f}x")


RECORD = 128

if __name__ == "__main__":
    main()
