"""Collector throughput: batch (numpy) decoding and enrichment against per-event ctypes.

Run: .venv/bin/python bench/collector.py [--events 200000] [--batches 256,2048,16384]

The baseline is what a straightforward bcc-style reader does per event:
`SgEvent.from_buffer_copy` on each sample, then a validity check and a field
read. The numpy path is what the collector runs: one `parse_records` over a
read's bytes and one `Decoder.decode` per batch. Enrichment is measured on its
own (it is the first per-event Python step) and end to end; `enrich_batch` alone
is the columnar part (what the store reads), `enrich` adds the ring's Flows
(`EnrichedBatch.to_flows`). No kernel needed.
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
from spyglass.collector.perf import parse_records, sample_record
from spyglass.model.flow import Flow
from spyglass.model.getters import EndpointInfo

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


def best_rate(fn: Callable[[], int], repeat: int) -> float:
    """Events per second, from the median of `repeat` timed runs."""
    times: list[float] = []
    n = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


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
    rec = 128

    def per_batch(size: int, fn: Callable[[bytes], int]) -> Callable[[], int]:
        chunks = [data[i:i + size * rec] for i in range(0, len(data), size * rec)]
        return lambda: sum(fn(c) for c in chunks)

    def np_decode(chunk: bytes) -> int:
        return len(decoder.decode(parse_records(chunk).records))

    def np_decode_enrich(chunk: bytes) -> int:
        return len(enricher.enrich(decoder.decode(parse_records(chunk).records)))

    sizes = [int(x) for x in args.batches.split(",")]
    print(f"events: {args.events}, median of {args.repeat} runs, python "
          f"{sys.version.split()[0]}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    base = best_rate(lambda: ctypes_decode(data), args.repeat)
    print(f"\n{'decode path':<40}{'events/s':>14}{'vs ctypes':>12}")
    print(f"{'ctypes from_buffer_copy per event':<40}{base:>14,.0f}{1.0:>11.1f}x")
    for size in sizes:
        r = best_rate(per_batch(size, np_decode), args.repeat)
        print(f"{f'numpy parse + decode, batch {size}':<40}{r:>14,.0f}{r / base:>11.1f}x")

    # Enrichment makes one Flow per event; the bare constructor is its floor.
    floor = best_rate(lambda: len([Flow(time_ns=i) for i in range(50_000)]), args.repeat)
    print(f"\n{'enrichment path':<40}{'events/s':>14}{'vs Flow()':>12}")
    print(f"{'bare Flow() constructor (the floor)':<40}{floor:>14,.0f}{1.0:>11.2f}x")
    for size in sizes:
        pre = [decoder.decode(parse_records(data[i:i + size * rec]).records)
               for i in range(0, len(data), size * rec)]
        r = best_rate(lambda p=pre: sum(len(enricher.enrich_batch(b)) for b in p),  # type: ignore[misc]
                      args.repeat)
        print(f"{f'enrich_batch (columns only), batch {size}':<40}{r:>14,.0f}{r / floor:>11.2f}x")
        r = best_rate(lambda p=pre: sum(len(enricher.enrich(b)) for b in p),  # type: ignore[misc]
                      args.repeat)
        print(f"{f'enrich (columns + Flows), batch {size}':<40}{r:>14,.0f}{r / floor:>11.2f}x")
    for size in sizes:
        r = best_rate(per_batch(size, np_decode_enrich), args.repeat)
        print(f"{f'parse + decode + enrich, batch {size}':<40}{r:>14,.0f}{r / floor:>11.2f}x")


if __name__ == "__main__":
    main()
