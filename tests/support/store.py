"""Shared pieces of the storage tests: a chDB store per module and Hypothesis flows.

`from support.store import T0, any_flows, clear, open_store, store_params`. A chDB path
admits one engine per process, so each test module opens one store and closes it at the
end (other modules may open their own paths). Flow times are recent: the tables' TTL
would drop anything older than the retention, so this `T0` is an hour ago, not
`support.T0` (pass it as `flow(i, t0=T0)` for flows that go to a store).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import strategies as st

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
from spyglass.storage import FlowStore

#: A minute boundary an hour ago: inside the retention, and stable within a run.
T0 = (time.time_ns() // 60_000_000_000) * 60_000_000_000 - 3600 * 10**9

SERVER_URL = os.environ.get("SPYGLASS_CLICKHOUSE_URL")


def store_params() -> list[object]:
    """chDB always; a ClickHouse server when SPYGLASS_CLICKHOUSE_URL is set."""
    return [
        pytest.param("chdb", id="chdb"),
        pytest.param("server", id="server", marks=pytest.mark.skipif(
            not SERVER_URL, reason="server mode: set SPYGLASS_CLICKHOUSE_URL="
                                   "http://user:pass@host:8123/db to run against ClickHouse")),
    ]


def open_store(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    if kind == "chdb":
        path = tmp_path_factory.mktemp("sg-store") / "flows"
        dsn = f"chdb://{path}"
    else:
        assert SERVER_URL
        dsn = SERVER_URL
    store = FlowStore.open(dsn)
    try:
        yield store
    finally:
        store.close()


def clear(store: FlowStore) -> None:
    store._client.command("TRUNCATE TABLE flows")
    store._client.command("TRUNCATE TABLE lost_events")


# -- Hypothesis ------------------------------------------------------------------------

NAMES = st.sampled_from(["", "web", "web-1", "web-2", "db-0", "cart", "a.b", "x"])
NAMESPACES = st.sampled_from(["", "shop", "kube-system", "default", "shop2"])
LABELS = st.lists(st.sampled_from([
    "k8s:app=web", "k8s:app=db", "app=web", "k8s:tier=front", "reserved:world",
    "reserved:host", "k8s:io.kubernetes.pod.namespace=shop", "cidr:10.0.0.0/8",
    "k8s:canary", "x:y:app=web", "k8s:app=", "k8s:version=1.2"]), max_size=4, unique=True)
WORKLOADS = st.lists(st.builds(Workload, st.sampled_from(["web", "db", "cart"]),
                               st.sampled_from(["Deployment", "StatefulSet", "deployment"])),
                     max_size=2)
POLICIES = st.lists(st.builds(PolicyRef, st.sampled_from(["allow-web", "deny-db"]),
                              st.sampled_from(["", "shop"]),
                              st.sampled_from(["NetworkPolicy", "CiliumNetworkPolicy"])),
                    max_size=2)
SERVICES = st.none() | st.builds(Service, st.sampled_from(["", "web", "db-svc"]), NAMESPACES)
IDENTITIES = st.sampled_from([0, 1, 2, 300, 301, 16777217, 4294967295])


def endpoints() -> st.SearchStrategy[Endpoint]:
    return st.builds(Endpoint, ID=st.integers(0, 70000), identity=IDENTITIES,
                     namespace=NAMESPACES, labels=LABELS.map(tuple), pod_name=NAMES,
                     workloads=WORKLOADS.map(tuple))


def _ips(version: int) -> st.SearchStrategy[str]:
    if version == 4:
        return st.sampled_from(["", "10.0.0.1", "10.0.0.2", "10.1.2.3", "192.0.2.7",
                                "0.0.0.0", "255.255.255.255"])
    return st.sampled_from(["", "fd00::1", "fd00::2", "2001:db8::5", "::",
                            str(ipaddress.IPv6Address("::ffff:10.0.0.1"))])


@st.composite
def any_flows(draw: st.DrawFn, uuid: str | None = None) -> Flow:
    """Any flow a store must keep exactly (every field drawn, times near T0)."""
    version = draw(st.sampled_from([4, 6]))
    return Flow(
        time_ns=T0 + draw(st.integers(0, 3600 * 10**9)),
        uuid=uuid if uuid is not None else draw(st.uuids()).hex,
        verdict=draw(st.sampled_from(Verdict)),
        drop_reason=draw(st.sampled_from(DropReason)),
        event_type=draw(st.sampled_from(EventType)),
        event_subtype=draw(st.integers(0, 255)),
        observation_point=draw(st.sampled_from(ObservationPoint)),
        trace_reason=draw(st.sampled_from(TraceReason)),
        traffic_direction=draw(st.sampled_from(TrafficDirection)),
        ip_version=version,
        source_ip=draw(_ips(version)), destination_ip=draw(_ips(version)),
        service_ip=draw(_ips(version)),
        protocol=draw(st.sampled_from([0, 1, 6, 17, 58, 132, 47])),
        source_port=draw(st.sampled_from([0, 53, 80, 443, 8080, 65535])),
        destination_port=draw(st.sampled_from([0, 53, 80, 443, 8080, 65535])),
        service_port=draw(st.integers(0, 65535)),
        tcp_flags=draw(st.integers(0, 255)),
        icmp_type=draw(st.integers(0, 255)), icmp_code=draw(st.integers(0, 255)),
        source=draw(endpoints()), destination=draw(endpoints()),
        is_reply=draw(st.none() | st.booleans()),
        node_name=draw(st.sampled_from(["", "node-a", "node-b.lab", "c1/node-a", "w1"])),
        interface_index=draw(st.integers(0, 2**32 - 1)),
        interface_name=draw(st.sampled_from(["", "lxc0001"])),
        packets=draw(st.integers(0, 2**40)), bytes=draw(st.integers(0, 2**40)),
        policy_match_type=draw(st.sampled_from(PolicyMatchType)),
        ingress_allowed_by=tuple(draw(POLICIES)), egress_allowed_by=tuple(draw(POLICIES)),
        ingress_denied_by=tuple(draw(POLICIES)), egress_denied_by=tuple(draw(POLICIES)),
        source_service=draw(SERVICES), destination_service=draw(SERVICES),
    )
