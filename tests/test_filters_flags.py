"""Composition: flags → left/right FlowFilters, --not, allow minus deny, and round trips."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import flow

from spyglass.collector.filters import (
    FILTER_FLAGS,
    FilterError,
    FilterSet,
    FlowFilter,
    build_from_flags,
    build_from_query,
)
from spyglass.collector.filters.interface import NetworkInterface
from spyglass.model.enums import Verdict
from spyglass.model.flow import Endpoint, Flow

Items = list[tuple[str, str | None]]


def ep(ns: str, pod: str) -> Endpoint:
    return Endpoint(namespace=ns, pod_name=pod, labels=(f"k8s:app={pod.split('-')[0]}",))


A, B, C = ep("shop", "a-1"), ep("shop", "b-1"), ep("kube-system", "coredns-1")


#: shop/a-1:40000 -> shop/b-1:80, forwarded TCP, and the same flow the other way round;
#: the cases change one thing more with replace().
AB = flow(source=A, destination=B, source_port=40000, dport=80, source_ip="10.0.0.1",
          destination_ip="10.0.0.2")
BA = replace(AB, source=B, destination=A)


# -- how flags become filters ---------------------------------------------------

SHAPES = [
    pytest.param([("pod", "shop/a")],
                 [FlowFilter(source_pod=("shop/a",)), FlowFilter(destination_pod=("shop/a",))],
                 [], id="either-side-two-filters"),
    pytest.param([("pod", "shop/a"), ("port", "80")],
                 [FlowFilter(source_pod=("shop/a",), source_port=(80,)),
                  FlowFilter(destination_pod=("shop/a",), destination_port=(80,))],
                 [], id="either-sides-pair-up"),
    pytest.param([("from-pod", "shop/a"), ("to-port", "80")],
                 [FlowFilter(source_pod=("shop/a",), destination_port=(80,))], [],
                 id="from-to-collapse-to-one"),
    pytest.param([("verdict", "DROPPED"), ("protocol", "tcp")],
                 [FlowFilter(verdict=("DROPPED",), protocol=("tcp",))], [], id="both-one-filter"),
    pytest.param([("pod", "shop/a"), ("verdict", "DROPPED")],
                 [FlowFilter(source_pod=("shop/a",), verdict=("DROPPED",)),
                  FlowFilter(destination_pod=("shop/a",), verdict=("DROPPED",))], [],
                 id="both-goes-to-left-and-right"),
    pytest.param([("from-pod", "shop/a"), ("from-pod", "shop/b")],
                 [FlowFilter(source_pod=("shop/a", "shop/b"))], [], id="repeat-appends"),
    pytest.param([("namespace", "shop")],
                 [FlowFilter(source_pod=("shop/",)), FlowFilter(destination_pod=("shop/",))], [],
                 id="namespace-whole"),
    pytest.param([("namespace", "shop"), ("pod", "web")],
                 [FlowFilter(source_pod=("shop/web",)),
                  FlowFilter(destination_pod=("shop/web",))], [], id="namespace-applied-to-pod"),
    pytest.param([("pod", "web"), ("namespace", "a"), ("namespace", "b")],
                 [FlowFilter(source_pod=("a/web", "b/web")),
                  FlowFilter(destination_pod=("a/web", "b/web"))], [],
                 id="namespaces-multiply-pods"),
    pytest.param([("from-namespace", "shop"), ("to-namespace", "kube-system")],
                 [FlowFilter(source_pod=("shop/",), destination_pod=("kube-system/",))], [],
                 id="from-to-namespace"),
    pytest.param([("from-namespace", "shop"), ("from-service", "front")],
                 [FlowFilter(source_service=("shop/front",))], [],
                 id="namespace-applied-to-service"),
    pytest.param([("not", None), ("namespace", "kube-system")], [],
                 [FlowFilter(source_pod=("kube-system/",)),
                  FlowFilter(destination_pod=("kube-system/",))], id="not-namespace"),
    pytest.param([("verdict", "DROPPED"), ("not", None), ("to-port", "53")],
                 [FlowFilter(verdict=("DROPPED",))], [FlowFilter(destination_port=(53,))],
                 id="not-applies-to-next-only"),
    pytest.param([("not", None), ("from-pod", "shop/a"), ("not", None), ("from-pod", "shop/b")],
                 [], [FlowFilter(source_pod=("shop/a", "shop/b"))], id="not-twice-ors-in-field"),
    pytest.param([("allowlist", '{"source_pod":["shop/"]}'), ("verdict", "DROPPED")],
                 [FlowFilter(verdict=("DROPPED",)), FlowFilter(source_pod=("shop/",))], [],
                 id="raw-allowlist-appended"),
    pytest.param([("denylist", '[{"verdict":["ERROR"]},{"protocol":["udp"]}]')], [],
                 [FlowFilter(verdict=("ERROR",)), FlowFilter(protocol=("udp",))],
                 id="raw-denylist-list"),
    pytest.param([("ipv4", None), ("pod", "shop/a")],
                 [FlowFilter(ip_version=("IPv4",), source_pod=("shop/a",)),
                  FlowFilter(ip_version=("IPv4",), destination_pod=("shop/a",))], [],
                 id="ipv4-goes-to-both"),
    pytest.param([("ip-version", "4"), ("ipv6", None), ("ip-version", "v6")],
                 [FlowFilter(ip_version=("IPv4", "IPv6"))], [], id="ip-versions-or"),
    pytest.param([("ipv4", "")], [FlowFilter(ip_version=("IPv4",))], [],
                 id="ipv4-empty-value-from-a-query"),
    pytest.param([("verdict", "DROPPED"), ("not", None), ("ipv6", None)],
                 [FlowFilter(verdict=("DROPPED",))], [FlowFilter(ip_version=("IPv6",))],
                 id="not-ipv6"),
    pytest.param([("interface", "lxc1"), ("interface", "eth0"), ("uuid", "u1")],
                 [FlowFilter(interface=(NetworkInterface(0, "lxc1"), NetworkInterface(0, "eth0")),
                             uuid=("u1",))], [], id="interface-and-uuid-go-to-both"),
    pytest.param([("not", None), ("uuid", "u1")], [], [FlowFilter(uuid=("u1",))],
                 id="not-uuid"),
    pytest.param([], [], [], id="nothing"),
]


@pytest.mark.parametrize(("items", "allow", "deny"), SHAPES)
def test_flags_build_hubble_shapes(items: Items, allow: list[FlowFilter],
                                   deny: list[FlowFilter]) -> None:
    fs = build_from_flags(items)
    assert fs == FilterSet(tuple(allow), tuple(deny))


NOT_EACH = [pytest.param(f.name, f.example, id=f"not-{f.name}") for f in FILTER_FLAGS
            if f.takes_value and f.mode not in ("allowlist", "denylist")]


@pytest.mark.parametrize(("name", "example"), NOT_EACH)
def test_not_moves_every_kind_to_the_denylist(name: str, example: str) -> None:
    plain = build_from_flags([(name, example)])
    negated = build_from_flags([("not", None), (name, example)])
    assert negated.allow == ()
    assert negated.deny == plain.allow and plain.deny == ()


# -- matching: AND, OR, deny ------------------------------------------------------

MATCHING = [
    pytest.param([("pod", "shop/a"), ("port", "80")], AB, False,
                 id="pod-port-src-pod-dst-port-no"),
    pytest.param([("pod", "shop/a"), ("port", "80")],
                 replace(AB, source_port=80, destination_port=5000), True,
                 id="pod-port-both-source"),
    pytest.param([("pod", "shop/a"), ("port", "80")], BA, True,
                 id="pod-port-both-destination"),
    pytest.param([("from-pod", "shop/a"), ("to-port", "80")], AB, True,
                 id="from-pod-to-port"),
    pytest.param([("from-pod", "shop/a"), ("to-port", "80")], BA, False,
                 id="from-pod-to-port-reversed"),
    pytest.param([("from-pod", "shop/a"), ("from-pod", "kube-system/")],
                 replace(AB, source=C), True, id="or-within-field"),
    pytest.param([("from-pod", "shop/a"), ("verdict", "DROPPED")], AB, False,
                 id="and-across-fields"),
    pytest.param([("from-pod", "shop/a"), ("verdict", "DROPPED")],
                 replace(AB, verdict=Verdict.DROPPED), True, id="and-across-fields-yes"),
    pytest.param([("allowlist", '{"source_pod":["kube-system/"]}'),
                  ("allowlist", '{"destination_port":["80"]}')], AB, True,
                 id="or-across-filters"),
    pytest.param([("not", None), ("namespace", "kube-system")], replace(AB, destination=C), False,
                 id="deny-either-side"),
    pytest.param([("not", None), ("namespace", "kube-system")], AB, True,
                 id="deny-other-passes"),
    pytest.param([("namespace", "shop"), ("not", None), ("to-port", "80")], AB, False,
                 id="allow-minus-deny"),
    pytest.param([("namespace", "shop"), ("not", None), ("to-port", "53")], AB, True,
                 id="allow-not-denied"),
    pytest.param([("label", "app=a")], BA, True, id="label-either-side"),
    pytest.param([("from-label", "app=a")], BA, False, id="from-label"),
    pytest.param([], AB, True, id="empty-matches-all"),
]


@pytest.mark.parametrize(("items", "f", "expected"), MATCHING)
def test_flags_match(items: Items, f: Flow, expected: bool) -> None:
    assert build_from_flags(items).matches(f) is expected


# -- errors of composition --------------------------------------------------------

COMPOSE_ERRORS = [
    pytest.param([("verdict", "DROPPED"), ("not", None)],
                 "--not at the end has no filter after it; put it before the filter to negate, "
                 "like --not --namespace kube-system", id="trailing-not"),
    pytest.param([("not", None), ("not", None), ("pod", "a")],
                 "two --not in a row; one --not negates the filter after it", id="double-not"),
    pytest.param([("not", "x")],
                 "--not takes no value (got 'x'); put it before the filter to negate, like "
                 "--not --namespace kube-system", id="not-with-value"),
    pytest.param([("pod", None)], "--pod needs a value, like --pod shop/frontend",
                 id="missing-value"),
    pytest.param([("pods", "a")],
                 "unknown filter flag --pods; did you mean 'pod'? valid filters are not, pod, "
                 "from-pod, to-pod, namespace, from-namespace, to-namespace, ip, from-ip, to-ip, "
                 "label, from-label, to-label, identity, from-identity, to-identity, service, "
                 "from-service, to-service, workload, from-workload, to-workload, port, "
                 "from-port, to-port, protocol, verdict, type, node-name, tcp-flags, "
                 "traffic-direction, drop-reason-desc, reply, ip-version, ipv4, ipv6, interface, "
                 "uuid, allowlist, denylist", id="unknown-flag"),
    pytest.param([("ipv4", "v6")],
                 "--ipv4 takes no value (got 'v6'); it means --ip-version v4 (give --ip-version "
                 "to choose another)", id="ipv4-with-value"),
    pytest.param([("ipv4", None), ("not", None)],
                 "--not at the end has no filter after it; put it before the filter to negate, "
                 "like --not --namespace kube-system", id="ipv4-then-trailing-not"),
    pytest.param([("port", "80"), ("to-port", "81")],
                 "filters --port and --to-port cannot be combined; use --from-port and "
                 "--to-port instead of --port", id="conflict-port"),
    pytest.param([("namespace", "shop"), ("from-pod", "a")],
                 "filters --namespace and --from-pod cannot be combined; use --from-namespace, "
                 "or put the namespace in the pod (ns/name)", id="conflict-ns-from-pod"),
    pytest.param([("ip", "10.0.0.1"), ("pod", "a")],
                 "filters --ip and --pod cannot be combined; select an endpoint by IP or by "
                 "pod, not both", id="conflict-ip-pod"),
    pytest.param([("namespace", "shop"), ("pod", "other/x")],
                 "pod 'other/x' is in namespace 'other', but the namespace filter says shop; "
                 "drop one of them, or leave the namespace out of the pod name",
                 id="namespace-mismatch"),
    pytest.param([("not", None), ("allowlist", "{}")],
                 "--not cannot negate --allowlist; use --denylist for filters whose flows "
                 "should be left out", id="not-allowlist"),
    pytest.param([("allowlist", "{source_pod}")],
                 "--allowlist: not valid JSON (Expecting property name enclosed in double quotes "
                 "at column 2); write it like --allowlist '{\"source_pod\":[\"shop/\"]}'",
                 id="allowlist-bad-json"),
    pytest.param([("allowlist", '{"source_pods":["a"]}')],
                 "--allowlist: unknown FlowFilter field 'source_pods'; valid fields are "
                 "source_pod, destination_pod, source_service, destination_service, "
                 "source_workload, destination_workload, source_label, destination_label, "
                 "source_identity, destination_identity, source_ip, destination_ip, "
                 "source_port, destination_port, protocol, tcp_flags, verdict, drop_reason_desc, "
                 "event_type, traffic_direction, reply, node_name, ip_version, interface, uuid",
                 id="allowlist-unknown-key"),
    pytest.param([("denylist", '{"source_port":["http"]}')],
                 "--denylist field 'source_port': 'http' is not a port number (0-65535); use a "
                 "number like '8080'", id="denylist-bad-value"),
    pytest.param([("allowlist", '"shop/"')],
                 "--allowlist: a FlowFilter must be a JSON object, got 'shop/'; write it like "
                 "{\"source_pod\": [\"shop/\"]}", id="allowlist-not-object"),
]


@pytest.mark.parametrize(("items", "message"), COMPOSE_ERRORS)
def test_compose_errors(items: Items, message: str) -> None:
    with pytest.raises(FilterError) as e:
        build_from_flags(items)
    assert str(e.value) == message


def test_not_conflicts_are_per_tracker() -> None:
    # --port in the allowlist and --to-port in the denylist do not collide (as in Hubble).
    fs = build_from_flags([("port", "80"), ("not", None), ("to-port", "81")])
    assert fs.deny == (FlowFilter(destination_port=(81,)),)


# -- query parameters ---------------------------------------------------------------

QUERY = [
    pytest.param([("from_pod", "shop/a")], [("from-pod", "shop/a")], id="underscore"),
    pytest.param([("not-namespace", "kube-system")],
                 [("not", None), ("namespace", "kube-system")], id="not-prefix"),
    pytest.param([("not_to_port", "53"), ("verdict", "DROPPED")],
                 [("not", None), ("to-port", "53"), ("verdict", "DROPPED")],
                 id="not-underscore"),
    pytest.param([("allowlist", '{"verdict":["DROPPED"]}')],
                 [("allowlist", '{"verdict":["DROPPED"]}')], id="raw-json"),
    pytest.param([("ip_version", "v6"), ("interface", "lxc1"), ("not_uuid", "u1")],
                 [("ip-version", "v6"), ("interface", "lxc1"), ("not", None), ("uuid", "u1")],
                 id="new-fields"),
    pytest.param([("ipv4", "")], [("ipv4", None)], id="valueless-flag"),
    pytest.param([("allowlist", '{"interface":[{"index":5}],"ipVersion":[1]}')],
                 [("allowlist", '{"interface":[{"index":5}],"ip_version":["IPv4"]}')],
                 id="raw-json-interface-index"),
]


@pytest.mark.parametrize(("params", "items"), QUERY)
def test_query_means_the_same_as_flags(params: list[tuple[str, str]], items: Items) -> None:
    assert build_from_query(params) == build_from_flags(items)


def test_query_unknown_name() -> None:
    with pytest.raises(FilterError) as e:
        build_from_query([("last", "20")])
    assert str(e.value).startswith("unknown filter query parameter 'last'; ")


# -- round trips ------------------------------------------------------------------

ROUND = [
    pytest.param([("pod", "shop/a"), ("port", "80"), ("not", None), ("namespace", "kube-system")],
                 id="either-and-deny"),
    pytest.param([("from-label", "app in (x,y),!canary"), ("to-ip", "fd00::/64"),
                  ("type", "trace:to-endpoint"), ("tcp-flags", "syn,ack"), ("reply", "false"),
                  ("node-name", "*.lab"), ("traffic-direction", "ingress"),
                  ("drop-reason-desc", "policy_denied"), ("to-identity", "world"),
                  ("to-workload", "Deployment/web"), ("from-service", "shop/"),
                  ("ip-version", "none"), ("ipv6", None), ("interface", "lxc1"),
                  ("uuid", "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a")],
                 id="every-kind"),
    pytest.param([("allowlist", '{"interface":[{"index":5},{"index":6,"name":"eth0"}]}'),
                  ("not", None), ("ipv4", None)], id="interface-json"),
    pytest.param([("type", "drop:133"), ("type", "policy-verdict"), ("protocol", "icmp")],
                 id="types"),
    pytest.param([], id="empty"),
]


@pytest.mark.parametrize("items", ROUND)
def test_to_params_round_trip(items: Items) -> None:
    fs = build_from_flags(items)
    assert build_from_query(fs.to_params()) == fs
    for ff in fs.allow + fs.deny:
        assert FlowFilter.from_dict(ff.to_dict()) == ff
        assert FlowFilter.from_dict(json.loads(json.dumps(ff.to_dict()))) == ff


def test_to_dict_is_hubble_json() -> None:
    ff = build_from_flags([("from-port", "80"), ("type", "trace:to-endpoint"),
                           ("tcp-flags", "SYN")]).allow[0]
    assert ff.to_dict() == {
        "source_port": ["80"],
        "tcp_flags": [{"SYN": True}],
        "event_type": [{"type": 4, "match_sub_type": True, "sub_type": 0}],
    }


def test_from_dict_accepts_protojson_camel_case() -> None:
    ff = FlowFilter.from_dict({"sourcePod": ["shop/"], "destinationPort": ["80"]})
    assert ff == FlowFilter(source_pod=("shop/",), destination_port=(80,))


_FLAG_VALUES: dict[str, st.SearchStrategy[str]] = {
    "pod": st.sampled_from(["shop/a", "shop/", "b", "kube-system/core"]),
    "ip": st.sampled_from(["10.0.0.1", "10.0.0.0/8", "fd00::/64", "::1"]),
    "label": st.sampled_from(["app=a", "k8s:app!=b", "tier in (x,y)", "!canary,app"]),
    "port": st.integers(0, 65535).map(str),
    "identity": st.sampled_from(["host", "world", "4242"]),
    "verdict": st.sampled_from(["DROPPED", "forwarded", "AUDIT"]),
    "protocol": st.sampled_from(["tcp", "UDP", "icmp", "icmpv6"]),
    "type": st.sampled_from(["trace", "drop", "trace:from-stack", "drop:133", "4:3"]),
    "tcp-flags": st.sampled_from(["SYN", "ack,syn", "FIN,RST"]),
    "ip-version": st.sampled_from(["v4", "6", "none", "IPv6"]),
    "interface": st.sampled_from(["lxc1", "eth0", "cilium_host"]),
    "uuid": st.sampled_from(["u1", "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a"]),
}


@st.composite
def _items(draw: Any) -> Items:
    out: Items = []
    for _ in range(draw(st.integers(0, 6))):
        base = draw(st.sampled_from(sorted(_FLAG_VALUES)))
        sided = base in ("pod", "ip", "label", "port", "identity")
        name = draw(st.sampled_from(["from-", "to-"])) + base if sided else base
        if draw(st.booleans()):
            out.append(("not", None))
        out.append((name, draw(_FLAG_VALUES[base])))
    return out


@settings(max_examples=150, deadline=None)
@given(_items())
def test_round_trip_property(items: Items) -> None:
    try:
        fs = build_from_flags(items)
    except FilterError:
        return  # e.g. Hubble's --from-ip/--from-pod conflict; covered above
    assert build_from_query(fs.to_params()) == fs


def test_describe() -> None:
    fs = build_from_flags([("pod", "shop/front"), ("verdict", "DROPPED"), ("not", None),
                           ("to-port", "53")])
    assert fs.describe() == (
        "(source pod in shop/front* AND verdict is DROPPED) OR "
        "(destination pod in shop/front* AND verdict is DROPPED) EXCEPT (destination port is 53)")
    assert build_from_flags([]).describe() == "all flows"
    assert build_from_flags([("from-pod", "web"), ("from-pod", "api")]).describe() == (
        "(source pod in */web* or */api*)")


def test_empty() -> None:
    assert build_from_flags([]).empty
    assert FilterSet(allow=(FlowFilter(),)).empty
    assert not build_from_flags([("verdict", "DROPPED")]).empty
    assert not build_from_flags([("not", None), ("verdict", "DROPPED")]).empty
