"""The service map on a real chDB store: connections and their final verdicts, not only events.

A denied TCP connection shows FORWARDED events (the client's SYN leaving its own veth, at
from-endpoint) next to the DROPPED ones (at the server's ingress); counted by events the
edge looks half open. These flows are shaped like the datapath's and go through the real
writer path (`flows_to_arrow` + `insert_arrow`) into the real store.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from support.store import T0, clear, open_store, store_params

from spyglass.model.enums import (
    DropReason,
    EventType,
    ObservationPoint,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow, PolicyRef, Workload
from spyglass.storage import FlowStore, flows_to_arrow

S = 10**9
MS = 10**6
SYN, SYN_ACK, ACK = 0x02, 0x12, 0x10


def _pod(ns: str, name: str, identity: int, ip: str) -> tuple[Endpoint, str]:
    app = name.rsplit("-", 1)[0]
    return (Endpoint(ID=identity % 1000, identity=identity, namespace=ns, pod_name=name,
                     labels=(f"k8s:app={app}",), workloads=(Workload(app),)), ip)


LOADGEN = _pod("ops", "loadgen-0", 20004, "10.244.0.21")
LOADGEN_1 = _pod("ops", "loadgen-1", 20004, "10.244.0.23")
CATALOG = _pod("shop", "catalog-0", 20006, "10.244.0.15")
FRONTEND = _pod("shop", "frontend-0", 20001, "10.244.0.11")
DENY = PolicyRef("catalog-allow-frontend", "shop", "CiliumNetworkPolicy")
_uuid = itertools.count()


def event(src: tuple[Endpoint, str], dst: tuple[Endpoint, str], t: int, *,
          sport: int = 40001, dport: int = 8080, verdict: Verdict = Verdict.FORWARDED,
          point: ObservationPoint = ObservationPoint.FROM_ENDPOINT, flags: int = SYN,
          reply: bool = False, protocol: int = Protocol.TCP, nbytes: int = 74) -> Flow:
    """One event as the datapath reports it: a drop is a DROP event at the server's ingress."""
    dropped = verdict == Verdict.DROPPED
    return Flow(
        time_ns=t, uuid=f"sm-{next(_uuid)}", verdict=verdict,
        drop_reason=DropReason.POLICY_DENIED if dropped else DropReason.DROP_REASON_UNKNOWN,
        event_type=EventType.DROP if dropped else EventType.TRACE,
        observation_point=ObservationPoint.UNKNOWN_POINT if dropped else point,
        traffic_direction=(TrafficDirection.INGRESS if dropped or
                           point == ObservationPoint.TO_ENDPOINT else TrafficDirection.EGRESS),
        source=src[0], source_ip=src[1], destination=dst[0], destination_ip=dst[1],
        protocol=protocol, source_port=sport, destination_port=dport,
        tcp_flags=flags if protocol == Protocol.TCP else 0, is_reply=reply, bytes=nbytes,
        ingress_denied_by=(DENY,) if dropped else ())


def denied(t: int, *, sport: int = 40001, src: tuple[Endpoint, str] = LOADGEN,
           tries: int = 3) -> list[Flow]:
    """A SYN and its retries (1 s, 2 s later …): each FORWARDED leaving the client's veth,
    then DROPPED at the server's ingress by policy."""
    out: list[Flow] = []
    for i in range(tries):
        at = t + (2**i - 1) * S
        out.append(event(src, CATALOG, at, sport=sport))
        out.append(event(src, CATALOG, at + 30_000, sport=sport, verdict=Verdict.DROPPED))
    return out


def allowed(t: int, *, sport: int = 41001, src: tuple[Endpoint, str] = FRONTEND) -> list[Flow]:
    """A handshake and one request: both ends see each packet; the server's answers are
    replies."""
    out: list[Flow] = []
    for i, flags in enumerate((SYN, ACK, ACK)):
        at = t + i * MS
        out.append(event(src, CATALOG, at, sport=sport, flags=flags))
        out.append(event(src, CATALOG, at + 20_000, sport=sport, flags=flags,
                         point=ObservationPoint.TO_ENDPOINT))
    out.append(event(CATALOG, src, t + 100_000, sport=8080, dport=sport, flags=SYN_ACK,
                     reply=True, point=ObservationPoint.FROM_ENDPOINT))
    return out


@pytest.fixture(scope="module", params=store_params())
def store(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    yield from open_store(request.param, tmp_path_factory)


def edges(store: FlowStore, *flows: Flow, batches: list[list[Flow]] | None = None,
          ) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """Write the flows (each batch its own insert, so its own part) and read the map back,
    keyed by (source workload, destination workload, port, protocol)."""
    clear(store)
    for batch in ([list(flows)] if flows else []) + (batches or []):
        store.insert_arrow(flows_to_arrow(batch))
    df = store.service_map(since_ns=T0 - 60 * S, until_ns=T0 + 3600 * S)
    out = {}
    for rec in df.to_dict("records"):
        key = (rec["src_workload"], rec["dst_workload"], rec["dst_port"], rec["protocol"])
        assert key not in out, f"two rows for one edge: {key}"
        out[key] = rec
    return out


def counts(rec: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (rec["connections"], rec["forwarded"], rec["dropped"], rec["audit"], rec["events"])


def test_the_columns_and_their_order(store: FlowStore) -> None:
    clear(store)
    store.insert_arrow(flows_to_arrow(denied(T0)))
    df = store.service_map(since_ns=T0 - S, until_ns=T0 + 3600 * S)
    assert list(df.columns) == [
        "src_namespace", "src_workload", "dst_namespace", "dst_workload", "dst_port",
        "protocol", "connections", "forwarded", "dropped", "audit", "events", "bytes",
        "first_seen", "last_seen"]


def test_a_denied_connection_is_one_dropped_connection_not_half_forwarded(
        store: FlowStore) -> None:
    flows = denied(T0, tries=3)
    assert sum(f.verdict == Verdict.FORWARDED for f in flows) == 3  # what fooled the map
    rec = edges(store, *flows)[("loadgen", "catalog", 8080, "TCP")]
    assert counts(rec) == (1, 0, 1, 0, 6)
    assert rec["bytes"] == 6 * 74
    assert rec["first_seen"].value == T0
    assert rec["last_seen"].value == T0 + 3 * S + 30_000


def test_an_allowed_connection_is_forwarded_and_its_replies_make_no_edge(
        store: FlowStore) -> None:
    got = edges(store, *allowed(T0))
    assert set(got) == {("frontend", "catalog", 8080, "TCP")}, "a reply made an edge"
    assert counts(got[("frontend", "catalog", 8080, "TCP")]) == (1, 1, 0, 0, 6)


def test_connections_on_one_edge_are_told_apart_by_source_port_and_address(
        store: FlowStore) -> None:
    got = edges(store, *denied(T0, sport=40001), *denied(T0 + S, sport=40002),
                *denied(T0 + 2 * S, sport=40001, src=LOADGEN_1))
    # Two pods of one workload, one edge: three 5-tuples.
    assert counts(got[("loadgen", "catalog", 8080, "TCP")]) == (3, 0, 3, 0, 18)


def test_an_edge_with_both_shows_each_connection_once(store: FlowStore) -> None:
    got = edges(store, *allowed(T0, sport=41001, src=LOADGEN), *denied(T0, sport=41002))
    assert counts(got[("loadgen", "catalog", 8080, "TCP")]) == (2, 1, 1, 0, 12)


def test_replies_alone_are_neither_connections_nor_events(store: FlowStore) -> None:
    replies = [event(CATALOG, FRONTEND, T0 + i * MS, sport=8080, dport=41001 + i,
                     flags=SYN_ACK, reply=True) for i in range(5)]
    assert edges(store, *replies) == {}


def test_the_last_event_decides_a_connection(store: FlowStore) -> None:
    # Denied, then let through once a policy allowed it: the connection ended forwarded.
    flows = denied(T0, tries=2) + [
        event(LOADGEN, CATALOG, T0 + 5 * S, flags=SYN),
        event(LOADGEN, CATALOG, T0 + 5 * S + 30_000, flags=SYN,
              point=ObservationPoint.TO_ENDPOINT)]
    assert counts(edges(store, *flows)[("loadgen", "catalog", 8080, "TCP")]) == (1, 1, 0, 0, 6)


@pytest.mark.parametrize("first", [Verdict.FORWARDED, Verdict.DROPPED], ids=lambda v: v.name)
def test_a_tie_in_time_goes_to_dropped_whatever_the_read_order(
        store: FlowStore, first: Verdict) -> None:
    fwd = event(LOADGEN, CATALOG, T0)
    drop = event(LOADGEN, CATALOG, T0, verdict=Verdict.DROPPED)
    # Separate inserts make separate parts, so each order is read as written.
    batches = [[fwd], [drop]] if first == Verdict.FORWARDED else [[drop], [fwd]]
    got = edges(store, batches=batches)
    assert counts(got[("loadgen", "catalog", 8080, "TCP")]) == (1, 0, 1, 0, 2)


def test_a_tie_between_audit_and_forwarded_goes_to_audit(store: FlowStore) -> None:
    got = edges(store, event(LOADGEN, CATALOG, T0),
                event(LOADGEN, CATALOG, T0, verdict=Verdict.AUDIT,
                      point=ObservationPoint.TO_ENDPOINT))
    assert counts(got[("loadgen", "catalog", 8080, "TCP")]) == (1, 0, 0, 1, 2)


def test_icmp_is_one_connection_per_address_pair(store: FlowStore) -> None:
    pings = [event(src, CATALOG, T0 + i * S, sport=0, dport=0, protocol=Protocol.ICMP)
             for i in range(4) for src in (LOADGEN, LOADGEN_1)]
    got = edges(store, *pings)
    assert counts(got[("loadgen", "catalog", 0, "ICMPv4")]) == (2, 2, 0, 0, 8)


def test_only_events_inside_the_range_count(store: FlowStore) -> None:
    # `until` cuts the denied connection after its first event, its SYN leaving the
    # client: what the range saw of it was forwarded.
    clear(store)
    store.insert_arrow(flows_to_arrow(allowed(T0, src=LOADGEN) + denied(T0 + 10 * S)))
    df = store.service_map(since_ns=T0, until_ns=T0 + 10 * S + 1)
    assert [counts(r) for r in df.to_dict("records")] == [(2, 2, 0, 0, 7)]
