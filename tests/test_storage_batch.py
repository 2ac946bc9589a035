"""The hot path: batch_to_arrow gives exactly the rows flows_to_arrow gives for enrich()."""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from spyglass.collector.abi import (
    EVENT_DROP,
    EVENT_POLICY_VERDICT,
    EVENT_TRACE,
    F_AUDITED,
    F_IPV6,
    F_IS_REPLY,
    F_REPLY_KNOWN,
    F_XLATED,
    F_XLATED_REPLY,
    pack_event,
)
from spyglass.collector.decoder import ClockOffset, DecodedBatch, Decoder
from spyglass.collector.enrich import Enricher, UuidSource
from spyglass.model.flow import Flow, PolicyRef, Service, Workload
from spyglass.model.getters import EndpointInfo
from spyglass.storage import batch_to_arrow, flows_to_arrow, store_hook

PODS = [EndpointInfo(id=i, identity=256 + i, namespace=("shop", "db", "kube-system")[i % 3],
                     pod_name=f"pod-{i}", labels=(f"k8s:app=a{i % 4}",),
                     ips=(f"10.244.0.{i}",), workloads=(Workload(f"w{i % 5}"),) if i % 2 else ())
        for i in range(1, 12)]


class Getters:
    """Dict-backed getters with a few misses, and one that raises now and then."""

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return {p.ips[0]: p for p in PODS}.get(ip)

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        if ep_id == 13:
            raise RuntimeError("flaky backend")
        return {p.id: p for p in PODS}.get(ep_id)

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        return {16777217: ("cidr:192.0.2.0/24", "reserved:world")}.get(identity)

    def ifname(self, ifindex: int) -> str:
        return f"lxc{ifindex:04d}" if ifindex % 3 else ""

    def service_by_id(self, service_id: int) -> Service | None:
        return {3: Service("cart", "shop"), 4: Service("db", "db")}.get(service_id)

    def service_by_addr(self, ip: str, port: int) -> Service | None:
        return Service("by-addr", "shop") if port == 8080 else None

    def policies_by_cookie(self, cookie: int) -> tuple[PolicyRef, ...]:
        return {41: (PolicyRef("allow-web", "shop"),), 42: (PolicyRef("deny-db", "db"),),
                43: (PolicyRef("a", "shop"), PolicyRef("b", "shop", "CiliumNetworkPolicy"))
                }.get(cookie, ())


def enricher(prefix: int = 0xC0FFEE) -> Enricher:
    g = Getters()
    return Enricher(g, g, g, "node-a", services=g, policies=g, uuids=UuidSource(prefix=prefix))


def _addr(rnd: random.Random, v6: bool) -> bytes:
    if v6:
        return socket.inet_pton(socket.AF_INET6, rnd.choice(["fd00::1", "fd00::2", "2001:db8::9"]))
    return socket.inet_aton(rnd.choice([f"10.244.0.{i}" for i in range(1, 14)] + ["192.0.2.5"]))


def random_batch(seed: int, n: int) -> DecodedBatch:
    rnd = random.Random(seed)
    events = []
    for _ in range(n):
        v6 = rnd.random() < 0.15
        etype = rnd.choice([EVENT_TRACE] * 6 + [EVENT_DROP, EVENT_POLICY_VERDICT])
        flags = (F_IPV6 if v6 else 0) | rnd.choice(
            [0, F_REPLY_KNOWN, F_REPLY_KNOWN | F_IS_REPLY, F_IS_REPLY]) | rnd.choice(
            [0] * 8 + [F_XLATED, F_AUDITED, F_XLATED_REPLY])
        events.append(pack_event(
            type=etype, subtype=rnd.choice([0, 5, 7, 133, 181, 196, 250, 101]), flags=flags,
            ts_ns=rnd.randrange(10**9), saddr=_addr(rnd, v6), daddr=_addr(rnd, v6),
            orig_daddr=_addr(rnd, v6), orig_dport=rnd.choice([80, 8080]),
            src_ep=rnd.choice([0, 1, 2, 3, 13, 99]), dst_ep=rnd.choice([0, 4, 5, 13]),
            src_identity=rnd.choice([0, 1, 2, 257, 16777217]),
            dst_identity=rnd.choice([0, 2, 260, 16777217]),
            ifindex=rnd.choice([0, 4, 5, 6]), orig_len=rnd.randrange(40, 1500),
            sport=rnd.randrange(65536), dport=rnd.choice([53, 80, 8080, 5432]),
            proto=rnd.choice([6, 17, 1, 58, 132, 47]), tcp_flags=rnd.randrange(256),
            reason=rnd.choice([0, 1, 2, 3, 9]), direction=rnd.choice([0, 1, 2, 3]),
            match_type=rnd.choice([0, 1, 2, 4, 9]), verdict=rnd.choice([0, 1, 2]),
            policy_cookie=rnd.choice([0] * 6 + [41, 42, 43, 44]),
            service_id=rnd.choice([0] * 6 + [3, 4, 5]),
            agg_packets=rnd.choice([0, 0, 3]), agg_bytes=rnd.randrange(10**6)))
    return Decoder(ClockOffset(1_000)).decode_bytes(b"".join(events))


def _diff(a: pa.Table, b: pa.Table) -> list[str]:
    return [name for name in a.column_names if not a.column(name).equals(b.column(name))]


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(40)])
def test_batch_to_arrow_matches_flows_to_arrow(seed: int) -> None:
    b = random_batch(seed, n=1 + seed * 7)
    want = flows_to_arrow(enricher().enrich(b))
    got = pa.Table.from_batches([batch_to_arrow(b, enricher())])
    assert got.schema == want.schema
    assert _diff(got, want) == []


def test_given_uuids_are_the_ring_flows_uuids() -> None:
    b = random_batch(7, 50)
    e = enricher(prefix=1)
    fl = e.enrich(b)
    got = pa.Table.from_batches([batch_to_arrow(b, enricher(prefix=2),
                                                uuids=[f.uuid for f in fl])])
    assert _diff(got, flows_to_arrow(fl)) == []


def test_empty_batch_and_wrong_uuid_count() -> None:
    empty = random_batch(1, 0)
    assert batch_to_arrow(empty, enricher()).num_rows == 0
    with pytest.raises(ValueError, match="one per event"):
        batch_to_arrow(random_batch(1, 3), enricher(), uuids=["a"])


class _Writer:
    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def submit(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)


def test_store_hook_feeds_the_writer_with_the_ring_uuids() -> None:
    b = random_batch(3, 20)
    e = enricher()
    fl: Sequence[Flow] = e.enrich(b)
    w = _Writer()
    store_hook(w, e)(b, fl)  # type: ignore[arg-type]
    assert w.batches[0].column("uuid").to_pylist() == [f.uuid for f in fl]
    assert np.array_equal(w.batches[0].column("time").cast(pa.int64()).to_numpy(),
                          [f.time_ns for f in fl])
