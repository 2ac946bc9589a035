"""GetFlows answers what `GET /api/v1/flows` answers, for every filter field Spyglass has.

One FakeSource (a real ring of varied flows from `support.filters.spread`, and a list
store) is served twice: by the Hubble gRPC server, read with the generated stubs as a
Hubble client would, and by the REST app on a real uvicorn, read with the CLI's query
parameters (`to-pod`, `not-verdict` …, not raw FlowFilter JSON, so that the two requests
go through different parsers). For each field of `FIELDS` and each of its edge values
(`support.filters.VALUES`), the whitelist alone, the blacklist alone and both together
give the same flows in the same order as REST, and as the filter's own predicate over
the flows, so that two paths agreeing on a wrong answer still fail. Time ranges read
the store beyond the ring the same way on both. A field Spyglass cannot evaluate, and a
hostile value, is INVALID_ARGUMENT naming what is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from support import FakeSource, ListStore, collector_stats
from support.filters import filter_values, spread
from support.grpcserved import WAIT_S, Served, serve, uuids
from support.store import T0

from spyglass.api.app import create_app
from spyglass.api.hubble import flow_pb2, observer_pb2
from spyglass.api.serve import serve_in_thread
from spyglass.api.source import AgentStatus
from spyglass.collector.filters import FIELDS, FilterSet, FlowFilter
from spyglass.model.flow import Flow

S = 1_000_000_000
#: The interfaces the flows were seen on ((0, "") is none), as (index, name).
INTERFACES = [(0, ""), (3, "lxc-a"), (5, "lxc-b"), (7, "eth0")]
#: Varied flows, one a second from T0 (an hour ago, so a store keeps them), so that the
#: time-range cases can name exact instants in RFC3339.
FLOWS: list[Flow] = [
    dataclasses.replace(f, time_ns=T0 + i * S, interface_index=INTERFACES[i % 4][0],
                        interface_name=INTERFACES[i % 4][1])
    for i, f in enumerate(spread(random.Random(20251126)))]
ALL = [f.uuid for f in FLOWS]
#: Edge values of the fields that `support.filters.VALUES` does not have, or whose
#: interesting values depend on these flows (their ids and interfaces).
OWN_VALUES: dict[str, list[Any]] = {
    "uuid": ["u0003", "u0100", "u9999"],
    "interface": ["lxc-a", "lxc-b", "eth0", "lxc-zz"],
    "ip_version": ["IPv4", "IPv6", "IP_NOT_USED"],
}
#: The ring's capacity: a request for this many returns everything that matches.
EVERYTHING = 1023

# Spyglass's names for what Hubble's FlowFilter carries as numbers or messages; written
# out here (Cilium's numbers), not taken from the filter code, so that a wrong table
# there cannot agree with itself.
RESERVED_IDENTITIES = {"host": 1, "world": 2}
EVENT_TYPES = {"drop": 1, "trace": 4, "policy-verdict": 5}
TRACE_POINTS = {"to-endpoint": 0}
DIRECTIONS = {"ingress": "INGRESS", "egress": "EGRESS", "unknown": "TRAFFIC_DIRECTION_UNKNOWN"}


@dataclasses.dataclass
class Both:
    """One source behind the gRPC server (`grpc`) and the REST app (`rest`)."""

    source: FakeSource
    grpc: Served
    rest: httpx.Client


@contextlib.contextmanager
def both(source: FakeSource, tmp_path: Path) -> Iterator[Both]:
    with serve(source, tmp_path) as served, \
            serve_in_thread(create_app(source)) as (_, url), \
            httpx.Client(base_url=url, timeout=WAIT_S) as client:
        yield Both(source, served, client)


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    """Every flow of FLOWS in the ring (no time range: the store is not read)."""
    source = FakeSource(EVERYTHING, store=ListStore())
    source.ring.write_many(FLOWS)
    with both(source, tmp_path_factory.mktemp("ring")) as b:
        yield b


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    """A ring of 63 that holds FLOWS[57:], a store that holds FLOWS[:100] (the writer is
    behind by 20): a range reads flows only the store has, only the ring has, and both."""
    store = ListStore()
    store.add(FLOWS[:100])
    source = FakeSource(63, store=store)
    source.ring.write_many(FLOWS)
    assert [ev.uuid for ev in source.ring.first(EVERYTHING) if isinstance(ev, Flow)] == ALL[57:]
    with both(source, tmp_path_factory.mktemp("history")) as b:
        yield b


# -- the two requests ---------------------------------------------------------------------


def rest_param(field: str) -> str:
    """The REST query parameter (the CLI's flag) that sets exactly this FlowFilter field."""
    for side, flag in (("source_", "from-"), ("destination_", "to-")):
        if field.startswith(side):
            return flag + field.removeprefix(side)
    return "type" if field == "event_type" else field.replace("_", "-")


def rest_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def proto_value(field: str, value: Any) -> Any:
    """One value of a field as Hubble's FlowFilter message carries it."""
    base = field.removeprefix("source_").removeprefix("destination_")
    if base == "workload":
        kind, _, name = value.partition("/") if "/" in value else ("", "", value)
        return flow_pb2.Workload(kind=kind, name=name)
    if base == "identity":
        return RESERVED_IDENTITIES.get(value, value)
    if base == "port":
        return str(value)  # Hubble's FlowFilter carries ports as strings
    if field == "tcp_flags":
        return flow_pb2.TCPFlags(**{name: True for name in value.split(",")})
    if field == "event_type":
        name, colon, sub = value.partition(":")
        if not colon:
            return flow_pb2.EventTypeFilter(type=EVENT_TYPES[name])
        return flow_pb2.EventTypeFilter(type=EVENT_TYPES[name], match_sub_type=True,
                                        sub_type=TRACE_POINTS[sub] if sub in TRACE_POINTS
                                        else int(sub))
    if field == "verdict":
        return flow_pb2.Verdict.Value(value)
    if field == "drop_reason_desc":
        return flow_pb2.DropReason.Value(value)
    if field == "traffic_direction":
        return flow_pb2.TrafficDirection.Value(DIRECTIONS[value])
    if field == "ip_version":
        return flow_pb2.IPVersion.Value(value)
    if field == "interface":
        return flow_pb2.NetworkInterface(name=value)
    return value


def values_of(field: str) -> list[Any]:
    if field in OWN_VALUES:
        return OWN_VALUES[field]
    try:
        return filter_values(field)
    except KeyError:
        pytest.fail(f"no edge values for the filter field {field!r}: add them to "
                    "support.filters.VALUES (or OWN_VALUES here)")


def proto_filter(field: str, values: Sequence[Any]) -> flow_pb2.FlowFilter:
    return filter_with(field, [proto_value(field, v) for v in values])


def filter_with(field: str, values: Sequence[Any]) -> flow_pb2.FlowFilter:
    """A FlowFilter with these values (already the message's types) in one field."""
    ff = flow_pb2.FlowFilter()
    getattr(ff, field).extend(values)
    return ff


def grpc_uuids(b: Both, **request: Any) -> list[str]:
    return uuids(b.grpc.get(**request))


def rest_uuids(b: Both, params: Sequence[tuple[str, str]]) -> list[str]:
    resp = b.rest.get("/api/v1/flows", params=httpx.QueryParams(tuple(params)))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    if not any(key in ("first", "last") for key, _ in params):
        assert body["next"] is None, "a page of history was cut short: ask for more"
    return [r["flow"]["uuid"] for r in body["flows"] if "flow" in r]


def predicate(filters: FilterSet, flows: Sequence[Flow] = FLOWS) -> list[str]:
    """What the filters' own predicate keeps, oldest first: the answer both must give."""
    return [f.uuid for f in flows if filters.matches(f)]


def agree(b: Both, filters: FilterSet, request: dict[str, Any],
          params: Sequence[tuple[str, str]], what: str) -> list[str]:
    """The gRPC request and the REST query give the predicate's flows; returns them."""
    got = grpc_uuids(b, number=EVERYTHING, **request)
    rest = rest_uuids(b, [("last", str(EVERYTHING)), *params])
    want = predicate(filters)
    assert got == rest, f"{what}: gRPC and REST differ"
    assert got == want, f"{what}: not what the filter's predicate keeps"
    return got


# -- every field, whitelist, blacklist and both ------------------------------------------


def test_every_spyglass_field_is_a_hubble_flowfilter_field() -> None:
    """The mapping below is the identity on names: each Spyglass field is Hubble's."""
    names = set(flow_pb2.FlowFilter.DESCRIPTOR.fields_by_name)
    assert set(FIELDS) <= names, sorted(set(FIELDS) - names)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_get_flows_filters_as_rest_does(ring: Both, field: str) -> None:
    values = values_of(field)
    param = rest_param(field)
    picked = []
    for i, value in enumerate(values):
        other = values[(i + 1) % len(values)]
        only = FlowFilter(**{field: (value,)})
        allowed = agree(ring, FilterSet(allow=(only,)),
                        {"whitelist": [proto_filter(field, [value])]},
                        [(param, rest_value(value))], f"whitelist {field}={value!r}")
        denied = agree(ring, FilterSet(deny=(only,)),
                       {"blacklist": [proto_filter(field, [value])]},
                       [(f"not-{param}", rest_value(value))], f"blacklist {field}={value!r}")
        agree(ring, FilterSet(allow=(only,), deny=(FlowFilter(**{field: (other,)}),)),
              {"whitelist": [proto_filter(field, [value])],
               "blacklist": [proto_filter(field, [other])]},
              [(param, rest_value(value)), (f"not-{param}", rest_value(other))],
              f"whitelist {field}={value!r} blacklist {field}={other!r}")
        assert sorted(allowed + denied) == sorted(ALL), f"{field}={value!r}: not a partition"
        picked.append(len(allowed))
    # A case that picks nothing or everything cannot tell a working filter from a broken
    # one: some value of every field must pick some flows and leave others.
    assert any(0 < n < len(ALL) for n in picked), f"{field}: {picked} of {len(ALL)}"


SHOP = ("shop/",)
COMBINED = [
    pytest.param(
        FilterSet(allow=(FlowFilter(source_pod=SHOP), FlowFilter(verdict=("DROPPED",)))),
        {"whitelist": [flow_pb2.FlowFilter(source_pod=["shop/"]),
                       flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]},
        [("allowlist", '{"source_pod": ["shop/"]}'), ("allowlist", '{"verdict": ["DROPPED"]}')],
        id="two-whitelist-filters-or"),
    pytest.param(
        FilterSet(allow=(FlowFilter(source_pod=SHOP), FlowFilter(destination_pod=SHOP))),
        {"whitelist": [flow_pb2.FlowFilter(source_pod=["shop/"]),
                       flow_pb2.FlowFilter(destination_pod=["shop/"])]},
        [("pod", "shop/")], id="either-side-flag-is-two-filters"),
    pytest.param(
        FilterSet(allow=(FlowFilter(source_pod=SHOP), FlowFilter(destination_pod=SHOP))),
        {"whitelist": [flow_pb2.FlowFilter(source_pod=["shop/"]),
                       flow_pb2.FlowFilter(destination_pod=["shop/"])]},
        [("namespace", "shop")], id="namespace-is-either-side-pods"),
    pytest.param(
        FilterSet(allow=(FlowFilter(source_pod=SHOP, destination_port=(80,)),)),
        {"whitelist": [flow_pb2.FlowFilter(source_pod=["shop/"], destination_port=["80"])]},
        [("from-pod", "shop/"), ("to-port", "80")], id="two-fields-in-one-filter-and"),
    pytest.param(
        FilterSet(allow=(FlowFilter(verdict=("DROPPED", "AUDIT")),)),
        {"whitelist": [flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED, flow_pb2.AUDIT])]},
        [("verdict", "DROPPED"), ("verdict", "AUDIT")], id="two-values-of-one-field-or"),
    pytest.param(
        FilterSet(allow=(FlowFilter(protocol=("tcp",)),),
                  deny=(FlowFilter(source_pod=SHOP, verdict=("FORWARDED",)),)),
        {"whitelist": [flow_pb2.FlowFilter(protocol=["tcp"])],
         "blacklist": [flow_pb2.FlowFilter(source_pod=["shop/"],
                                           verdict=[flow_pb2.FORWARDED])]},
        [("protocol", "tcp"), ("not-from-pod", "shop/"), ("not-verdict", "FORWARDED")],
        id="blacklist-filter-with-two-fields-and"),
    pytest.param(
        FilterSet(deny=(FlowFilter(source_pod=SHOP), FlowFilter(verdict=("DROPPED",)))),
        {"blacklist": [flow_pb2.FlowFilter(source_pod=["shop/"]),
                       flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]},
        [("denylist", '{"source_pod": ["shop/"]}'), ("denylist", '{"verdict": ["DROPPED"]}')],
        id="two-blacklist-filters-or"),
]


@pytest.mark.parametrize(("filters", "request_fields", "params"), COMBINED)
def test_filters_combine_as_rest_does(ring: Both, filters: FilterSet,
                                      request_fields: dict[str, Any],
                                      params: list[tuple[str, str]]) -> None:
    got = agree(ring, filters, request_fields, params, str(filters))
    assert 0 < len(got) < len(ALL), f"{len(got)} of {len(ALL)}: the case cannot fail"


@pytest.mark.skipif("interface" not in FIELDS, reason="Spyglass does not filter interfaces")
def test_an_interface_by_index_is_the_rest_allowlist(ring: Both) -> None:
    """The hubble CLI's --interface gives a name; the message can give only an index,
    which REST takes as raw allowlist JSON."""
    got = agree(ring, FilterSet(allow=(FlowFilter.from_dict({"interface": [{"index": 5}]}),)),
                {"whitelist": [filter_with("interface", [flow_pb2.NetworkInterface(index=5)])]},
                [("allowlist", '{"interface": [{"index": 5}]}')], "interface index 5")
    assert 0 < len(got) < len(ALL)


def test_number_and_first_pick_the_same_end_as_last_and_first(ring: Both) -> None:
    dropped = [flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
    want = predicate(FilterSet(allow=(FlowFilter(verdict=("DROPPED",)),)))
    assert len(want) > 6
    newest = grpc_uuids(ring, number=3, whitelist=dropped)
    oldest = grpc_uuids(ring, number=3, first=True, whitelist=dropped)
    assert newest == rest_uuids(ring, [("last", "3"), ("verdict", "DROPPED")]) == want[-3:]
    assert oldest == rest_uuids(ring, [("first", "3"), ("verdict", "DROPPED")]) == want[:3]


# -- time ranges: the store beyond the ring --------------------------------------------


def rfc3339(ns: int) -> str:
    whole = dt.datetime.fromtimestamp(ns // S, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{ns % S:09d}Z"


def timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // S, nanos=ns % S)


VERDICT_DROPPED = FlowFilter(verdict=("DROPPED",))


@pytest.mark.parametrize(("since", "until", "number", "first", "deny"), [
    pytest.param(30, None, 0, False, False, id="since-store-then-ring"),
    pytest.param(30, 110, 0, False, False, id="since-until-across-the-boundary"),
    pytest.param(None, 50, 0, False, False, id="until-store-only"),
    pytest.param(95, None, 0, False, False, id="since-ring-only-and-both"),
    pytest.param(10, None, 5, False, False, id="since-newest-five"),
    pytest.param(10, None, 5, True, False, id="since-oldest-five"),
    pytest.param(20, 115, 0, False, True, id="range-with-a-blacklist"),
    pytest.param(20, 115, 4, False, True, id="range-newest-four-with-a-blacklist"),
])
def test_time_ranges_read_the_store_as_rest_does(history: Both, since: int | None,
                                                 until: int | None, number: int, first: bool,
                                                 deny: bool) -> None:
    lo = T0 + since * S if since is not None else None
    hi = T0 + until * S if until is not None else None
    request: dict[str, Any] = {"number": number, "first": first}
    params: list[tuple[str, str]] = []
    if lo is not None:
        request["since"] = timestamp(lo)
        params.append(("since", rfc3339(lo)))
    if hi is not None:
        request["until"] = timestamp(hi)
        params.append(("until", rfc3339(hi)))
    if number:
        params.append(("first" if first else "last", str(number)))
    filters = FilterSet(deny=(VERDICT_DROPPED,) if deny else ())
    if deny:
        request["blacklist"] = [flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
        params.append(("not-verdict", "DROPPED"))
    in_range = [f for f in FLOWS if (lo is None or f.time_ns >= lo)
                and (hi is None or f.time_ns < hi)]
    want = predicate(filters, in_range)
    if number:
        want = want[:number] if first else want[-number:]
    got = uuids(history.grpc.get(**request))
    assert got == rest_uuids(history, params), "gRPC and REST differ"
    assert got == want
    assert got and len(got) < len(ALL)


def test_a_range_without_a_store_is_failed_precondition_as_rest_is_503(
        tmp_path: Path) -> None:
    source = FakeSource()
    source.ring.write_many(FLOWS[:5])
    with both(source, tmp_path) as b:
        with pytest.raises(grpc.RpcError) as err:
            b.grpc.get(since=timestamp(T0))
        resp = b.rest.get("/api/v1/flows", params={"since": rfc3339(T0)})
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert resp.status_code == 503 and resp.json()["error"] == err.value.details()


# -- what Spyglass cannot evaluate, and hostile values -----------------------------------

UNEVALUATED = sorted(set(flow_pb2.FlowFilter.DESCRIPTOR.fields_by_name) - set(FIELDS))


def with_field_set(name: str) -> flow_pb2.FlowFilter:
    """A FlowFilter with only `name` set, to a value of its type."""
    ff = flow_pb2.FlowFilter()
    fd = ff.DESCRIPTOR.fields_by_name[name]
    value = getattr(ff, name)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.is_repeated:
            value.add()
        else:
            value.SetInParent()
    elif fd.type == FieldDescriptor.TYPE_STRING:
        value.append("x")
    elif fd.type == FieldDescriptor.TYPE_BOOL:
        value.append(True)
    else:  # numbers and enums
        value.append(1)
    return ff


def test_the_unevaluated_fields_are_hubbles_l7_and_the_rest() -> None:
    """Which Hubble fields are refused: a new Spyglass field must leave this list."""
    assert {"http_status_code", "dns_query", "source_fqdn"} <= set(UNEVALUATED)
    assert not set(UNEVALUATED) & set(FIELDS)


@pytest.mark.parametrize("where", ["whitelist", "blacklist"])
@pytest.mark.parametrize("name", UNEVALUATED)
def test_a_field_spyglass_cannot_evaluate_is_refused_naming_it(ring: Both, name: str,
                                                                where: str) -> None:
    ff = with_field_set(name)
    with pytest.raises(grpc.RpcError) as err:
        ring.grpc.get(number=1, **{where: [flow_pb2.FlowFilter(), ff]})
    details = str(err.value.details())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{where}[1]" in details and repr(name) in details, details
    # REST refuses the same filter as raw JSON, naming the field too
    raw = json.dumps(json_format.MessageToDict(ff, preserving_proto_field_name=True))
    resp = ring.rest.get("/api/v1/flows", params={"allowlist": raw})
    assert resp.status_code == 400 and repr(name) in resp.json()["error"]


@pytest.mark.parametrize(("field", "bad", "rest"), [
    pytest.param("destination_ip", ["10.0.0.0/33"], ("to-ip", "10.0.0.0/33"), id="bad-cidr"),
    pytest.param("source_ip", ["10.0.0.256"], ("from-ip", "10.0.0.256"), id="bad-address"),
    pytest.param("source_label", ["app in (web"], ("from-label", "app in (web"),
                 id="bad-label-selector"),
    pytest.param("source_port", ["-1"], ("from-port", "-1"), id="negative-port"),
    pytest.param("destination_port", ["65536"], ("to-port", "65536"), id="port-too-big"),
    pytest.param("event_type",
                 [flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=-1)],
                 ("type", "trace:-1"), id="negative-sub-type"),
    pytest.param("event_type", [flow_pb2.EventTypeFilter(type=-7)], ("type", "-7"),
                 id="negative-event-type"),
    pytest.param("destination_pod", ["shop/a/b"], ("to-pod", "shop/a/b"), id="bad-pod"),
    pytest.param("node_name", ["a b"], ("node-name", "a b"), id="bad-node-glob"),
    pytest.param("tcp_flags", [flow_pb2.TCPFlags()], None, id="no-tcp-flag"),
    pytest.param("source_workload", [flow_pb2.Workload()], None, id="empty-workload"),
    pytest.param("verdict", [99], None, id="verdict-not-in-the-enum"),
])
def test_a_hostile_value_is_invalid_argument_saying_what_is_wrong(
        ring: Both, field: str, bad: list[Any], rest: tuple[str, str] | None) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ring.grpc.get(number=1, whitelist=[filter_with(field, bad)])
    details = str(err.value.details())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"whitelist[0] field '{field}': "), details
    problem = details.split(": ", 1)[1].split("; ")[0]
    assert "; " in details and len(details) < 1000  # the problem, then how to fix it
    if rest is not None:
        resp = ring.rest.get("/api/v1/flows", params=[rest])
        assert resp.status_code == 400
        assert resp.json()["error"].split(": ", 1)[1].split("; ")[0] == problem


def test_a_huge_list_is_refused_naming_the_field(ring: Both) -> None:
    huge = flow_pb2.FlowFilter(source_pod=[f"p{i}" for i in range(20_000)])
    with pytest.raises(grpc.RpcError) as err:
        ring.grpc.get(number=1, whitelist=[huge])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source_pod" in str(err.value.details()) and "4096" in str(err.value.details())


# -- ServerStatus and GetNodes are /api/v1/status and /api/v1/nodes ------------------------


def status_fields(st: observer_pb2.ServerStatusResponse) -> dict[str, Any]:
    return {"num_flows": st.num_flows, "max_flows": st.max_flows,
            "seen_flows": st.seen_flows, "uptime_ns": st.uptime_ns, "version": st.version,
            "flows_rate": st.flows_rate}


def test_server_status_is_the_rest_status_of_an_agent(tmp_path: Path) -> None:
    source = FakeSource(63)
    source.ring.write_many(FLOWS)  # 120 written, 63 held
    source.agent = AgentStatus(version="9.9", uptime_ns=83 * S,
                               collector=collector_stats(seen_flows=500, flows_rate=12.5))
    with both(source, tmp_path) as b:
        st = b.grpc.observer.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=WAIT_S)
        rest = b.rest.get("/api/v1/status").json()
    assert status_fields(st) == {k: rest[k] for k in status_fields(st)} == {
        "num_flows": 63, "max_flows": 63, "seen_flows": 500, "uptime_ns": 83 * S,
        "version": "9.9", "flows_rate": 12.5}
    assert (st.num_connected_nodes.value, st.num_unavailable_nodes.value) == (1, 0)
    assert st.HasField("num_connected_nodes") and st.HasField("num_unavailable_nodes")
    assert list(st.unavailable_nodes) == []


def test_server_status_is_the_rest_status_of_a_ring(tmp_path: Path) -> None:
    """Without a collector both count the ring, and each measures its own rate."""
    source = FakeSource(63)
    source.ring.write_many(FLOWS)
    with both(source, tmp_path) as b:
        st = b.grpc.observer.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=WAIT_S)
        rest = b.rest.get("/api/v1/status").json()
    got = status_fields(st)
    for key in ("num_flows", "max_flows", "seen_flows", "version"):
        assert got[key] == rest[key], key
    assert (got["num_flows"], got["max_flows"], got["seen_flows"]) == (63, 63, 120)
    assert 0 < got["uptime_ns"] and abs(got["uptime_ns"] - rest["uptime_ns"]) < 60 * S
    assert math.isfinite(got["flows_rate"]) and got["flows_rate"] >= 0
    assert (st.num_connected_nodes.value, st.num_unavailable_nodes.value) == (1, 0)


def test_get_nodes_is_the_rest_nodes(ring: Both) -> None:
    nodes = ring.grpc.observer.GetNodes(observer_pb2.GetNodesRequest(), timeout=WAIT_S).nodes
    rest = ring.rest.get("/api/v1/nodes").json()["nodes"]
    assert len(nodes) == len(rest) == 1
    got = {k: getattr(nodes[0], k) for k in ("name", "version", "num_flows", "max_flows",
                                               "seen_flows")}
    assert got == {k: rest[0][k] for k in got}
    assert got["num_flows"] == len(ALL)
    assert nodes[0].state == 1  # relay.NodeState NODE_CONNECTED
