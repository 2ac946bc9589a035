"""Enrichment: decoded columns become Flows with pods, identities and names."""

from __future__ import annotations

import dataclasses
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
from spyglass.collector.enrich import Enricher
from spyglass.collector.enriched import NO_IP, EnrichedBatch
from spyglass.collector.uuids import UuidSource
from spyglass.model.enums import (
    DropReason,
    EventType,
    ObservationPoint,
    PolicyMatchType,
    TraceReason,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow, PolicyRef, Service, Workload
from spyglass.model.getters import EndpointInfo

FRONTEND = EndpointInfo(
    id=7, identity=1234, namespace="shop", pod_name="frontend-1",
    labels=("k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"),
    ips=("10.244.0.2",), ifname="lxc0002", workloads=(Workload("frontend"),))
CART = EndpointInfo(
    id=9, identity=5678, namespace="shop", pod_name="cart-0",
    labels=("k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop"), ips=("10.244.0.3",))
CIDR_LABELS = ("cidr:192.0.2.0/24", "reserved:world")


@dataclass
class FakeGetters:
    """Endpoints, identities, interfaces, services and policies, counting every call."""

    calls: Counter[str] = field(default_factory=Counter)
    fail: bool = False

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.fail:
            raise RuntimeError("getter backend is down")

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        self._call("endpoint_by_ip")
        return {e.ips[0]: e for e in (FRONTEND, CART)}.get(ip)

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        self._call("endpoint_by_id")
        return {e.id: e for e in (FRONTEND, CART)}.get(ep_id)

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        self._call("labels_of")
        return {16777217: CIDR_LABELS}.get(identity)

    def ifname(self, ifindex: int) -> str:
        self._call("ifname")
        return {12: "lxc0002", 13: "lxc0003"}.get(ifindex, "")

    def service_by_id(self, service_id: int) -> Service | None:
        self._call("service_by_id")
        return {3: Service("cart", "shop")}.get(service_id)

    def service_by_addr(self, ip: str, port: int) -> Service | None:
        self._call("service_by_addr")
        return {("10.96.0.10", 80): Service("cart", "shop")}.get((ip, port))

    def policies_by_cookie(self, cookie: int) -> tuple[PolicyRef, ...]:
        self._call("policies_by_cookie")
        return {41: (PolicyRef("allow-frontend", "shop"),), 42: (PolicyRef("deny-db", "shop"),),
                43: (PolicyRef("db-ingress", "shop"), PolicyRef("db-audit", "shop"))}.get(
            cookie, ())


def v4(text: str) -> bytes:
    return socket.inet_aton(text)


POD = dict(saddr=v4("10.244.0.2"), src_ep=7, src_identity=1234, ifindex=12, ts_ns=100)


def batch(*events: bytes) -> DecodedBatch:
    return Decoder(ClockOffset(1_000)).decode_bytes(b"".join(events))


def enricher(g: FakeGetters) -> Enricher:
    return Enricher(g, g, g, "node-a", services=g, policies=g, uuids=UuidSource(prefix=0xAB))


def one(**fields: Any) -> Flow:
    flows = enricher(FakeGetters()).enrich(batch(pack_event(**fields)))
    assert len(flows) == 1
    return flows[0]


SRC = Endpoint(ID=7, identity=1234, namespace="shop", pod_name="frontend-1",
               labels=FRONTEND.labels, workloads=(Workload("frontend"),))
DST = Endpoint(ID=9, identity=5678, namespace="shop", pod_name="cart-0", labels=CART.labels)


@pytest.mark.parametrize(("fields", "expect"), [
    pytest.param(dict(POD, type=EVENT_TRACE, subtype=5, daddr=v4("10.244.0.3"), dst_ep=9,
                      dst_identity=5678, proto=6, sport=35010, dport=8080, tcp_flags=0x02,
                      reason=1, direction=2, flags=F_REPLY_KNOWN, agg_packets=3, agg_bytes=222),
                 dict(time_ns=1_100, verdict=Verdict.FORWARDED, event_type=EventType.TRACE,
                      observation_point=ObservationPoint.FROM_ENDPOINT,
                      trace_reason=TraceReason.NEW, traffic_direction=TrafficDirection.EGRESS,
                      source_ip="10.244.0.2", destination_ip="10.244.0.3", protocol=6,
                      source_port=35010, destination_port=8080, tcp_flags=2, is_reply=False,
                      source=SRC, destination=DST, node_name="node-a", interface_index=12,
                      interface_name="lxc0002", packets=3, bytes=222),
                 id="pod-to-pod"),
    pytest.param(dict(POD, type=EVENT_TRACE, subtype=5, daddr=v4("8.8.8.8"), dst_identity=2,
                      proto=17, sport=5353, dport=53, orig_len=80),
                 dict(destination_ip="8.8.8.8", is_reply=None, packets=1, bytes=80,
                      destination=Endpoint(identity=2, labels=("reserved:world",))),
                 id="pod-to-world"),
    pytest.param(dict(type=EVENT_TRACE, subtype=0, saddr=v4("192.0.2.9"), daddr=v4("10.244.0.2"),
                      src_identity=16777217, dst_ep=7, dst_identity=1234, proto=6, dport=443,
                      direction=1, reason=3, flags=F_REPLY_KNOWN | F_IS_REPLY),
                 # a reply entering the pod belongs to a connection the pod opened:
                 # Hubble calls that EGRESS (the hook's own direction, flipped)
                 dict(is_reply=True, trace_reason=TraceReason.REPLY,
                      observation_point=ObservationPoint.TO_ENDPOINT,
                      traffic_direction=TrafficDirection.EGRESS,
                      source=Endpoint(identity=16777217, labels=CIDR_LABELS), destination=SRC),
                 id="reply-from-cidr-identity"),
    pytest.param(dict(POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"), proto=1,
                      sport=(8 << 8) | 0),
                 dict(protocol=1, icmp_type=8, icmp_code=0, source_port=0, destination_port=0,
                      destination=DST),
                 id="icmp-echo-request"),
    pytest.param(dict(POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"), proto=1,
                      sport=(3 << 8) | 3),
                 dict(icmp_type=3, icmp_code=3), id="icmp-port-unreachable"),
    pytest.param(dict(POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"), proto=17, sport=40000,
                      dport=53, reason=2),
                 dict(protocol=17, source_port=40000, destination_port=53,
                      trace_reason=TraceReason.ESTABLISHED), id="udp"),
    pytest.param(dict(POD, type=EVENT_DROP, subtype=133, daddr=v4("10.244.0.3"), proto=6,
                      direction=2, policy_cookie=42),
                 dict(verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
                      event_type=EventType.DROP, event_subtype=133,
                      observation_point=ObservationPoint.UNKNOWN_POINT,
                      egress_denied_by=(PolicyRef("deny-db", "shop"),)),
                 id="policy-drop"),
    pytest.param(dict(POD, type=EVENT_DROP, subtype=250, daddr=v4("10.244.0.3")),
                 dict(verdict=Verdict.DROPPED, drop_reason=DropReason.DROP_REASON_UNKNOWN,
                      event_subtype=250), id="drop-code-we-do-not-name"),
    pytest.param(dict(POD, type=EVENT_POLICY_VERDICT, daddr=v4("10.244.0.3"), direction=1,
                      match_type=2, verdict=0, policy_cookie=41),
                 dict(verdict=Verdict.FORWARDED, policy_match_type=PolicyMatchType.L3_L4,
                      ingress_allowed_by=(PolicyRef("allow-frontend", "shop"),)),
                 id="policy-verdict-allowed"),
    pytest.param(dict(POD, type=EVENT_POLICY_VERDICT, daddr=v4("10.244.0.3"), direction=1,
                      match_type=4, verdict=1, policy_cookie=42),
                 dict(verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
                      policy_match_type=PolicyMatchType.ALL,
                      ingress_denied_by=(PolicyRef("deny-db", "shop"),)),
                 id="policy-verdict-denied"),
    pytest.param(dict(POD, type=EVENT_POLICY_VERDICT, subtype=181, daddr=v4("10.244.0.3"),
                      direction=2, match_type=2, verdict=1, policy_cookie=42),
                 dict(verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENY,
                      egress_denied_by=(PolicyRef("deny-db", "shop"),)),
                 id="policy-verdict-denied-by-deny-rule"),
    pytest.param(dict(POD, type=EVENT_DROP, subtype=133, daddr=v4("10.244.0.3"), proto=6,
                      direction=1, policy_cookie=43),
                 dict(verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
                      ingress_denied_by=(PolicyRef("db-ingress", "shop"),
                                         PolicyRef("db-audit", "shop"))),
                 id="default-deny-names-the-selecting-policies"),
    pytest.param(dict(POD, type=EVENT_POLICY_VERDICT, subtype=133, daddr=v4("10.244.0.3"),
                      direction=1, verdict=2, flags=F_AUDITED, policy_cookie=42),
                 dict(verdict=Verdict.AUDIT, drop_reason=DropReason.POLICY_DENIED,
                      ingress_denied_by=(PolicyRef("deny-db", "shop"),)),
                 id="policy-verdict-audited-says-what-would-drop"),
    pytest.param(dict(POD, type=EVENT_TRACE, subtype=5, daddr=v4("10.244.0.3"), dport=8080,
                      proto=6, flags=F_XLATED, orig_daddr=v4("10.96.0.10"), orig_dport=80,
                      service_id=3),
                 dict(destination_ip="10.244.0.3", destination_port=8080,
                      service_ip="10.96.0.10", service_port=80,
                      destination_service=Service("cart", "shop"), destination=DST),
                 id="service-translated-reports-the-backend"),
    pytest.param(dict(POD, type=EVENT_TRACE, subtype=0, saddr=v4("10.244.0.3"), sport=8080,
                      daddr=v4("10.244.0.2"), dport=40000, proto=6, flags=F_XLATED_REPLY,
                      orig_daddr=v4("10.96.0.10"), orig_dport=80),
                 dict(source_ip="10.244.0.3", source_port=8080, destination_ip="10.244.0.2",
                      service_ip="10.96.0.10", service_port=80,
                      source_service=Service("cart", "shop"), destination_service=None),
                 id="service-reply-comes-from-the-backend"),
    pytest.param(dict(type=EVENT_TRACE, flags=F_IPV6, src_identity=2,
                      saddr=socket.inet_pton(socket.AF_INET6, "fd00::1"),
                      daddr=socket.inet_pton(socket.AF_INET6, "2001:db8::2")),
                 dict(ip_version=6, source_ip="fd00::1", destination_ip="2001:db8::2",
                      source=Endpoint(identity=2, labels=("reserved:world",))),
                 id="ipv6"),
])
def test_flow_fields(fields: dict[str, Any], expect: dict[str, Any]) -> None:
    flow = one(**fields)
    for name, want in expect.items():
        assert getattr(flow, name) == want, name


def test_lookups_are_made_once_per_distinct_value_in_a_batch() -> None:
    g = FakeGetters()
    ev = pack_event(**POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"), dst_ep=9, dst_identity=5678)
    world = pack_event(**POD, type=EVENT_TRACE, daddr=v4("1.1.1.1"), dst_identity=2)
    flows = enricher(g).enrich(batch(*([ev] * 500 + [world] * 500)))
    assert len(flows) == 1000
    assert g.calls == Counter(endpoint_by_id=2, endpoint_by_ip=1, labels_of=1, ifname=1)
    assert flows[0].source is flows[999].source  # shared, not rebuilt


def test_a_failing_getter_is_a_counted_miss() -> None:
    g = FakeGetters(fail=True)
    e = enricher(g)
    flows = e.enrich(batch(pack_event(**POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"))))
    assert flows[0].source == Endpoint(ID=7, identity=1234)
    assert flows[0].interface_name == ""
    assert e.getter_errors == sum(g.calls.values()) > 0


def test_uuids_are_unique_and_uuid_shaped() -> None:
    flows = enricher(FakeGetters()).enrich(batch(*[pack_event(type=EVENT_TRACE)] * 3))
    ids = [f.uuid for f in flows]
    assert len(set(ids)) == 3
    shape = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    assert all(shape.match(u) for u in ids)
    assert ids[0] == "00000000-0000-00ab-0000-000000000001"
    assert UuidSource().take(1) != UuidSource().take(1)  # random prefixes


def test_flows_round_trip_through_json() -> None:
    flow = one(**POD, type=EVENT_DROP, subtype=133, daddr=v4("10.244.0.3"), proto=6,
               direction=2, policy_cookie=42)
    assert Flow.from_dict(flow.to_dict()) == flow


def test_empty_batch() -> None:
    assert enricher(FakeGetters()).enrich(batch()) == []


def _at(k: int, **fields: Any) -> bytes:
    """The k-th event of a batch: decoding sorts by time, so times keep the order."""
    return pack_event(**{**fields, "ts_ns": 100 + k})


MIXED = [  # one of each kind of row: common, ICMP, reply, policy, translated and its reply
    _at(0, **POD, type=EVENT_TRACE, subtype=5, daddr=v4("10.244.0.3"), dst_ep=9,
        dst_identity=5678, proto=6, sport=35010, dport=8080, flags=F_REPLY_KNOWN,
        agg_packets=3, agg_bytes=222),
    _at(1, **POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"), proto=1, sport=(3 << 8) | 3),
    _at(2, type=EVENT_TRACE, saddr=v4("10.244.0.3"), src_ep=9, src_identity=5678,
        daddr=v4("10.244.0.2"), dst_ep=7, dst_identity=1234, direction=1,
        flags=F_REPLY_KNOWN | F_IS_REPLY),
    _at(3, **POD, type=EVENT_POLICY_VERDICT, daddr=v4("10.244.0.3"), direction=1,
        match_type=4, verdict=1, policy_cookie=42),
    _at(4, **POD, type=EVENT_DROP, subtype=133, daddr=v4("10.244.0.3"), direction=2,
        policy_cookie=43),
    _at(5, **POD, type=EVENT_TRACE, daddr=v4("10.244.0.3"), dport=8080, proto=6,
        flags=F_XLATED, orig_daddr=v4("10.96.0.10"), orig_dport=80, service_id=3),
    _at(6, type=EVENT_TRACE, saddr=v4("10.244.0.3"), daddr=v4("10.244.0.2"), sport=8080,
        flags=F_XLATED_REPLY, orig_daddr=v4("10.96.0.10"), orig_dport=80),
    _at(7, type=EVENT_TRACE, flags=F_IPV6, proto=58, sport=128 << 8,
        saddr=socket.inet_pton(socket.AF_INET6, "fd00::1"),
        daddr=socket.inet_pton(socket.AF_INET6, "2001:db8::2")),
]


def test_every_column_holds_what_its_flow_field_holds() -> None:
    eb = enricher(FakeGetters()).enrich_batch(batch(*MIXED))
    flows = eb.to_flows()
    assert len(eb) == len(flows) == len(MIXED)
    enums = ("verdict", "drop_reason", "event_type", "observation_point", "trace_reason",
             "traffic_direction", "policy_match_type")
    plain = ("time_ns", "event_subtype", "ip_version", "protocol", "source_port",
             "destination_port", "service_port", "tcp_flags", "icmp_type",
             "icmp_code", "interface_index", "packets", "bytes")
    for i, f in enumerate(flows):
        assert f.uuid == eb.uuids[i] and f.node_name == eb.node_name == "node-a"
        for name in enums + plain:
            assert int(getattr(eb, name)[i]) == int(getattr(f, name)), name
        assert eb.ip_table[eb.source_ip[i]] == f.source_ip
        assert eb.ip_table[eb.destination_ip[i]] == f.destination_ip
        xlated = int(eb.service_ip[i])
        assert (eb.ip_table[xlated] if xlated != NO_IP else "") == f.service_ip
        assert eb.endpoint_table[eb.source[i]] is f.source
        assert eb.endpoint_table[eb.destination[i]] is f.destination
        assert {-1: None, 0: False, 1: True}[int(eb.is_reply[i])] == f.is_reply
        assert eb.ifname_table[eb.interface_name[i]] == f.interface_name
        assert eb.service_table[eb.source_service[i]] == f.source_service
        assert eb.service_table[eb.destination_service[i]] == f.destination_service
        for key, codes in eb.policy_columns().items():
            assert eb.policy_table[codes[i]] == getattr(f, key), key
    # the rare rows are patched in the columns themselves
    assert flows[3].verdict == Verdict.DROPPED and flows[3].ingress_denied_by
    assert flows[4].egress_denied_by == (PolicyRef("db-ingress", "shop"),
                                         PolicyRef("db-audit", "shop"))
    assert (flows[5].destination_ip, flows[5].service_ip) == ("10.244.0.3", "10.96.0.10")
    assert (flows[5].destination_port, flows[5].service_port) == (8080, 80)
    assert flows[5].destination_service == Service("cart", "shop")
    assert flows[6].destination_ip == "10.244.0.2"  # a reply keeps its addresses
    assert flows[2].traffic_direction == TrafficDirection.EGRESS  # a reply flips
    assert (flows[7].icmp_type, flows[7].source_port) == (128, 0)


def test_one_endpoint_on_both_sides_is_one_table_entry() -> None:
    g = FakeGetters()
    eb = enricher(g).enrich_batch(batch(MIXED[0], MIXED[2]))  # a request and its reply
    assert eb.endpoint_table == [SRC, DST] or eb.endpoint_table == [DST, SRC]
    assert eb.source.tolist() == eb.destination.tolist()[::-1]
    assert g.calls["endpoint_by_id"] == 2


def test_flows_are_read_from_the_batch_not_enriched_again() -> None:
    g = FakeGetters()
    eb = enricher(g).enrich_batch(batch(*MIXED))
    asked = Counter(g.calls)
    assert eb.to_flows() == eb.to_flows()
    assert g.calls == asked


def test_a_column_of_the_wrong_length_is_refused() -> None:
    eb = enricher(FakeGetters()).enrich_batch(batch(*MIXED))
    with pytest.raises(ValueError, match="source_port"):
        dataclasses.replace(eb, source_port=np.zeros(1, dtype=np.uint16))
    assert len(EnrichedBatch.empty()) == 0
