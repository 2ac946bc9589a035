"""The hot path: enriched_to_arrow gives exactly the rows flows_to_arrow gives for the
batch's own flows, from the one enrichment, without asking a getter again."""

from __future__ import annotations

import random
import socket
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import flow

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
from spyglass.collector.enrich import Enricher
from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.ring import FlowRing
from spyglass.collector.uuids import UuidSource
from spyglass.model.flow import Flow, PolicyRef, Service, Workload
from spyglass.model.getters import EndpointInfo
from spyglass.storage import enriched_to_arrow, flows_to_arrow, store_hook
from spyglass.storage.batch import uuid_array

PODS = [EndpointInfo(id=i, identity=256 + i, namespace=("shop", "db", "kube-system")[i % 3],
                     pod_name=f"pod-{i}", labels=(f"k8s:app=a{i % 4}",),
                     ips=(f"10.244.0.{i}",), workloads=(Workload(f"w{i % 5}"),) if i % 2 else ())
        for i in range(1, 12)]


class Getters:
    """Dict-backed getters with a few misses, and one that raises now and then; every call
    is counted."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        self.calls["endpoint_by_ip"] += 1
        return {p.ips[0]: p for p in PODS}.get(ip)

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        self.calls["endpoint_by_id"] += 1
        if ep_id == 13:
            raise RuntimeError("flaky backend")
        return {p.id: p for p in PODS}.get(ep_id)

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        self.calls["labels_of"] += 1
        return {16777217: ("cidr:192.0.2.0/24", "reserved:world")}.get(identity)

    def ifname(self, ifindex: int) -> str:
        self.calls["ifname"] += 1
        return f"lxc{ifindex:04d}" if ifindex % 3 else ""

    def service_by_id(self, service_id: int) -> Service | None:
        self.calls["service_by_id"] += 1
        return {3: Service("cart", "shop"), 4: Service("db", "db")}.get(service_id)

    def service_by_addr(self, ip: str, port: int) -> Service | None:
        self.calls["service_by_addr"] += 1
        return Service("by-addr", "shop") if port == 8080 else None

    def policies_by_cookie(self, cookie: int) -> tuple[PolicyRef, ...]:
        self.calls["policies_by_cookie"] += 1
        return {41: (PolicyRef("allow-web", "shop"),), 42: (PolicyRef("deny-db", "db"),),
                43: (PolicyRef("a", "shop"), PolicyRef("b", "shop", "CiliumNetworkPolicy"))
                }.get(cookie, ())


def enricher(prefix: int = 0xC0FFEE, g: Getters | None = None) -> Enricher:
    g = g if g is not None else Getters()
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


V4_ADDRS = [f"10.244.0.{i}" for i in range(1, 14)] + ["192.0.2.5", "10.96.0.10"]
V6_ADDRS = ["fd00::1", "fd00::2", "2001:db8::9", "fd00::a"]


@st.composite
def events(draw: st.DrawFn) -> bytes:
    """One raw event, every rare case in reach: policy verdicts (audited too), cookies,
    translated rows and their replies, service ids, IPv6, ICMP, aggregation."""
    v6 = draw(st.booleans())
    addr = st.sampled_from(V6_ADDRS if v6 else V4_ADDRS).map(
        lambda a: socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, a))
    flags = ((F_IPV6 if v6 else 0)
             | draw(st.sampled_from([0, F_REPLY_KNOWN, F_REPLY_KNOWN | F_IS_REPLY, F_IS_REPLY]))
             | draw(st.sampled_from([0, F_XLATED, F_XLATED_REPLY, F_XLATED | F_XLATED_REPLY]))
             | draw(st.sampled_from([0, F_AUDITED])))
    return pack_event(
        type=draw(st.sampled_from([EVENT_TRACE, EVENT_DROP, EVENT_POLICY_VERDICT])),
        subtype=draw(st.sampled_from([0, 5, 7, 13, 133, 181, 196, 250])), flags=flags,
        ts_ns=draw(st.integers(0, 10**6)), saddr=draw(addr), daddr=draw(addr),
        orig_daddr=draw(addr), orig_dport=draw(st.sampled_from([0, 80, 8080])),
        src_ep=draw(st.sampled_from([0, 1, 2, 13, 99])), dst_ep=draw(st.sampled_from([0, 4, 13])),
        src_identity=draw(st.sampled_from([0, 1, 2, 257, 16777217])),
        dst_identity=draw(st.sampled_from([0, 2, 260, 16777217])),
        ifindex=draw(st.sampled_from([0, 4, 5, 6])), orig_len=draw(st.integers(0, 2**32 - 1)),
        sport=draw(st.integers(0, 65535)), dport=draw(st.sampled_from([0, 53, 80, 8080])),
        proto=draw(st.sampled_from([6, 17, 1, 58, 132, 47])), tcp_flags=draw(st.integers(0, 255)),
        reason=draw(st.sampled_from([0, 1, 3, 9])), direction=draw(st.integers(0, 4)),
        match_type=draw(st.sampled_from([0, 1, 4, 9])), verdict=draw(st.integers(0, 3)),
        policy_cookie=draw(st.sampled_from([0, 41, 42, 43, 44])),
        service_id=draw(st.sampled_from([0, 3, 4, 5])),
        agg_packets=draw(st.sampled_from([0, 1, 7])), agg_bytes=draw(st.integers(0, 2**32 - 1)))


def decode(raw: Sequence[bytes]) -> DecodedBatch:
    return Decoder(ClockOffset(1_000)).decode_bytes(b"".join(raw))


def _diff(a: pa.Table, b: pa.Table) -> list[str]:
    return [name for name in a.column_names if not a.column(name).equals(b.column(name))]


def assert_rows_are_the_flows(eb: EnrichedBatch) -> None:
    want = flows_to_arrow(eb.to_flows())
    got = pa.Table.from_batches([enriched_to_arrow(eb)])
    assert got.schema == want.schema
    assert _diff(got, want) == []


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(40)])
def test_store_rows_are_the_batch_flows(seed: int) -> None:
    assert_rows_are_the_flows(enricher().enrich_batch(random_batch(seed, n=1 + seed * 7)))


@settings(max_examples=150, deadline=None)
@given(st.lists(events(), min_size=1, max_size=40))
def test_store_rows_are_the_batch_flows_for_drawn_events(raw: list[bytes]) -> None:
    assert_rows_are_the_flows(enricher().enrich_batch(decode(raw)))


def test_the_store_rows_ask_no_getter_and_keep_the_flows_uuids() -> None:
    g = Getters()
    eb = enricher(prefix=1, g=g).enrich_batch(random_batch(7, 300))
    asked = Counter(g.calls)
    assert asked["policies_by_cookie"] and asked["service_by_id"]  # the rare rows were there
    rows = enriched_to_arrow(eb)
    flows = eb.to_flows()
    assert g.calls == asked  # neither the rows nor the flows enrich again
    assert rows.column("uuid").to_pylist() == eb.uuids == [f.uuid for f in flows]
    assert len(set(eb.uuids)) == len(eb) == 300


def test_an_empty_batch_has_no_rows() -> None:
    for eb in (EnrichedBatch.empty("node-a"), enricher().enrich_batch(random_batch(1, 0))):
        assert len(eb) == 0 and eb.to_flows() == []
        rows = enriched_to_arrow(eb)
        assert rows.num_rows == 0 and rows.schema == flows_to_arrow([]).schema


class _Writer:
    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def submit(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)


def test_uuid_column_formats_like_the_flows_and_keeps_given_ids() -> None:
    eb = enricher(prefix=0x0123456789ABCDEF).enrich_batch(random_batch(4, 50))
    assert uuid_array(eb.uuid).to_pylist() == eb.uuids == [f.uuid for f in eb.to_flows()]
    assert eb.uuids[0] == "01234567-89ab-cdef-0000-000000000001"
    assert uuid_array(eb.take(np.array([5, 2])).uuid).to_pylist() == [eb.uuids[5], eb.uuids[2]]
    odd = EnrichedBatch.from_flows([flow(1), flow(2)])  # ids of another shape, kept as given
    assert uuid_array(odd.uuid).to_pylist() == [flow(1).uuid, flow(2).uuid]
    for i in (0, 17, 49):
        assert np.flatnonzero(eb.uuid.matches(eb.uuids[i])).tolist() == [i]
    for other in ("01234567-89ab-cdef-0000-0000000000zz", "short", eb.uuids[3].upper(),
                  "ffffffff-89ab-cdef-0000-000000000001"):
        assert not eb.uuid.matches(other).any()
    assert odd.uuid.matches(flow(2).uuid).tolist() == [False, True]


def test_store_hook_feeds_the_writer_the_batch_rows() -> None:
    eb = enricher().enrich_batch(random_batch(3, 20))
    fl: Sequence[Flow] = eb.to_flows()
    w = _Writer()
    hook = store_hook(w)  # type: ignore[arg-type]
    hook(eb)
    hook(EnrichedBatch.empty("node-a"))  # nothing to store: nothing submitted
    (rows,) = w.batches
    assert rows.column("uuid").to_pylist() == [f.uuid for f in fl]
    assert np.array_equal(rows.column("time").cast(pa.int64()).to_numpy(),
                          [f.time_ns for f in fl])


def test_arrow_of_ring_slices_equals_the_ring_rows() -> None:
    """The ring hands out slices of the collector's batches; each slice's Arrow rows are
    exactly the rows of the Flows the ring reads back for the same sequence numbers."""
    ring = FlowRing(127)
    en = enricher()
    for seed in range(5):
        ring.write_batch(en.enrich_batch(random_batch(seed, 40)))  # 200 rows: 73 cut
    chunks, _ = ring.read_chunks(ring.oldest + 17, 90)
    slices = [c for c in chunks if isinstance(c, EnrichedBatch)]
    assert len(slices) >= 3 and sum(map(len, slices)) == 90
    got = pa.Table.from_batches([enriched_to_arrow(c) for c in slices])
    flows, _ = ring.read_since(ring.oldest + 17, 90)
    want = flows_to_arrow([f for f in flows if isinstance(f, Flow)])
    assert got.schema == want.schema and _diff(got, want) == []
    for c in slices:
        assert_rows_are_the_flows(c)
