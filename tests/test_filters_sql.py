"""Every filter's SQL selects exactly the flows its Python predicate selects.

The property test inserts generated flows into a chDB store and runs
generated filter sets both ways; the injection test sends SQL-looking text
through every filter field and checks it comes back as data.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.store import T0, any_flows, clear, open_store, store_params

from spyglass.collector.filters import FIELDS, FilterError, FilterSet, FlowFilter
from spyglass.collector.filters.sql import glob_regex
from spyglass.model.enums import DropReason, EventType, TrafficDirection, Verdict
from spyglass.model.flow import Endpoint, Flow, Service, Workload
from spyglass.storage import FlowStore, flows_to_arrow

VALUES: dict[str, list[Any]] = {
    "pod": ["shop/", "shop/web", "web", "kube-system/db", "x", "default/web-1"],
    "service": ["shop/", "shop/db", "web", "db-svc", "kube-system/"],
    "workload": ["web", "Deployment/web", "statefulset/", "StatefulSet/db", "deployment/cart"],
    "label": ["app=web", "k8s:app=web", "app in (web,db)", "!canary", "canary", "app!=web",
              "tier notin (front)", "any:app=web", "app=", "reserved:world", "y:app=web",
              "io.kubernetes.pod.namespace=shop,app"],
    "identity": [0, 1, 2, 300, "world", "host", 4294967295],
    "ip": ["10.0.0.1", "10.0.0.0/24", "10.0.0.0/8", "fd00::/64", "fd00::1", "::/0",
           "0.0.0.0/0", "::ffff:10.0.0.1", "::ffff:0:0/96", "255.255.255.255"],
    "port": [53, 80, 0, 65535],
    "protocol": ["tcp", "udp", "icmp", "icmpv4", "icmpv6", "sctp"],
    "tcp_flags": ["SYN", "SYN,ACK", "FIN", "RST,PSH", "CWR"],
    "verdict": ["FORWARDED", "DROPPED", "AUDIT", "VERDICT_UNKNOWN", "TRANSLATED"],
    "drop_reason_desc": ["POLICY_DENIED", "DROP_REASON_UNKNOWN", "TTL_EXCEEDED", "POLICY_DENY"],
    "event_type": ["drop", "trace", "policy-verdict", "trace:to-endpoint", "drop:133",
                   "trace:5", "trace:0"],
    "traffic_direction": ["ingress", "egress", "unknown"],
    "reply": [True, False],
    "node_name": ["node-a", "node-*", "*.lab", "c1/*", "default/node-a", "w?", "[nw]*",
                  "[!n]*", "*/*", "node-[a-b]", "[z-a]*", "c1/node-a"],
}


def _values(field: str) -> list[Any]:
    return VALUES[field.removeprefix("source_").removeprefix("destination_")]


@st.composite
def flow_filters(draw: st.DrawFn) -> FlowFilter:
    fields = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    return FlowFilter(**{f: tuple(draw(st.lists(st.sampled_from(_values(f)), min_size=1,
                                                max_size=3, unique=True)))
                         for f in fields})


FILTER_SETS = st.builds(FilterSet, st.lists(flow_filters(), max_size=2).map(tuple),
                        st.lists(flow_filters(), max_size=1).map(tuple))


@pytest.fixture(scope="module", params=store_params())
def store(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowStore]:
    yield from open_store(request.param, tmp_path_factory)


def _selected(store: FlowStore, fs: FilterSet) -> set[str]:
    got, cursor = store.query_flows(fs, limit=10_000)
    assert cursor is None
    return {f.uuid for f in got}


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fl=st.lists(any_flows(), min_size=1, max_size=40, unique_by=lambda f: f.uuid),
       filter_sets=st.lists(FILTER_SETS, min_size=1, max_size=4))
def test_sql_selects_what_the_predicate_selects(store: FlowStore, fl: list[Flow],
                                                filter_sets: list[FilterSet]) -> None:
    clear(store)
    store.insert_arrow(flows_to_arrow(fl))
    for fs in filter_sets:
        want = {f.uuid for f in fl if fs.matches(f)}
        assert _selected(store, fs) == want, fs.describe()
        assert store.count(fs) == len(want)


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in FIELDS])
def test_every_field_on_its_own(store: FlowStore, field: str) -> None:
    """Each value of each field against a fixed spread of flows (a quick, exhaustive pass)."""
    fl = _spread(random.Random(field))
    clear(store)
    store.insert_arrow(flows_to_arrow(fl))
    for value in _values(field):
        fs = FilterSet((FlowFilter(**{field: (value,)}),))
        assert _selected(store, fs) == {f.uuid for f in fl if fs.matches(f)}, (field, value)


def _spread(rnd: random.Random) -> list[Flow]:
    """Deterministic, varied flows that hit the edges each field cares about."""
    out = []
    pods = ["", "web", "web-1", "db-0", "cart"]
    nss = ["", "shop", "kube-system", "default"]
    ips4 = ["", "10.0.0.1", "10.0.0.2", "10.1.2.3", "255.255.255.255"]
    ips6 = ["", "fd00::1", "2001:db8::5", "::ffff:a00:1"]
    labels = [(), ("k8s:app=web",), ("app=web", "k8s:canary"), ("reserved:world",),
              ("k8s:app=db", "k8s:tier=front"), ("y:app=web",), ("k8s:app=",),
              ("k8s:io.kubernetes.pod.namespace=shop", "k8s:app=cart")]
    for i in range(120):
        v6 = rnd.random() < 0.3
        ips = ips6 if v6 else ips4
        ep = lambda: Endpoint(  # noqa: E731
            identity=rnd.choice([0, 1, 2, 300, 4294967295]), namespace=rnd.choice(nss),
            pod_name=rnd.choice(pods), labels=rnd.choice(labels),
            workloads=rnd.choice([(), (Workload("web"),), (Workload("db", "StatefulSet"),),
                                  (Workload("cart", "deployment"),)]))
        out.append(Flow(
            time_ns=T0 + i, uuid=f"u{i:04d}", verdict=rnd.choice(list(Verdict)),
            drop_reason=rnd.choice(list(DropReason)), event_type=rnd.choice(list(EventType)),
            event_subtype=rnd.choice([0, 5, 133, 7]),
            traffic_direction=rnd.choice(list(TrafficDirection)), ip_version=6 if v6 else 4,
            source_ip=rnd.choice(ips), destination_ip=rnd.choice(ips),
            protocol=rnd.choice([1, 6, 17, 58, 132, 0]),
            source_port=rnd.choice([0, 53, 80, 65535]),
            destination_port=rnd.choice([0, 53, 80, 65535]), tcp_flags=rnd.randrange(256),
            source=ep(), destination=ep(), is_reply=rnd.choice([None, True, False]),
            node_name=rnd.choice(["", "node-a", "node-b.lab", "c1/node-a", "w1", "x/y/z"]),
            source_service=rnd.choice([None, Service("db-svc", "shop"), Service("", "")]),
            destination_service=rnd.choice([None, Service("web", "kube-system")])))
    return out


INJECTIONS = ["'); DROP TABLE flows; --", "shop/'; DROP TABLE flows; --",
              "x' OR 1=1 --", "{f0:String}", "\\'; SELECT 1; --", "1); DROP TABLE flows"]


@pytest.mark.parametrize("field", [pytest.param(f, id=f) for f in FIELDS])
def test_sql_injection_comes_back_as_data(store: FlowStore, field: str) -> None:
    clear(store)
    store.insert_arrow(flows_to_arrow([Flow(time_ns=T0, uuid="keep")]))
    for text in INJECTIONS:
        try:
            fs = FilterSet((FlowFilter(**{field: (text,)}),))
        except FilterError:
            continue  # refused as bad syntax: never reaches SQL
        store.query_flows(fs, limit=10)
        store.count(fs)
    assert store.count(FilterSet()) == 1  # the table is still there, with its row


def test_injection_text_reaches_sql_only_as_parameters() -> None:
    """Values that do parse (node globs, label values) are parameters, not SQL text."""
    fs = FilterSet((FlowFilter(node_name=("a*",), source_label=("app in (x,y)",)),))
    text, params = fs.sql()
    assert "'x'" not in text and "a*" not in text
    assert ["x", "y"] in params.values()


@pytest.mark.parametrize("pattern", [pytest.param(p, id=p) for p in [
    "node-a", "*", "*.lab", "w?", "[nw]*", "[!n]*", "[]x]*", "[!]x]", "[z-a]*", "[a-c-e]",
    "a[", "**b", "[!]", "x/y*", ".*", "[-a]", "[a-]"]])
def test_globs_match_like_fnmatch(store: FlowStore, pattern: str) -> None:
    names = ["node-a", "node-b.lab", "w1", "x/yz", "]x", "a[", "b", "-", "e", ".lab", "!", "z"]
    regex = glob_regex(pattern)
    rows = store._client.query("SELECT n FROM (SELECT arrayJoin({ns:Array(String)}) AS n) "
                               "WHERE match(n, {re:String})",
                               parameters={"ns": names, "re": regex}).result_rows
    assert {r[0] for r in rows} == {n for n in names if fnmatch.fnmatchcase(n, pattern)}
