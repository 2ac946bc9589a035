"""Each filter dimension on its own: what matches, what doesn't, and exact errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import json_format
from support import flow

from spyglass.api.hubble import flow_pb2
from spyglass.collector.filters import FilterError, FilterSet, FlowFilter, build_from_flags
from spyglass.collector.filters.interface import NetworkInterface
from spyglass.model.enums import (
    DropReason,
    EventType,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow, Service, Workload

SYN, ACK, FIN = 0x02, 0x10, 0x01


def ep(ns: str = "", pod: str = "", labels: tuple[str, ...] = (), identity: int = 0,
       workloads: tuple[Workload, ...] = ()) -> Endpoint:
    return Endpoint(identity=identity, namespace=ns, labels=labels, pod_name=pod,
                    workloads=workloads)


FRONT = ep("shop", "frontend-7d9c", ("k8s:app=frontend", "k8s:tier=web",
                                     "k8s:io.kubernetes.pod.namespace=shop"), 4242,
           (Workload("frontend", "Deployment"),))
BACK = ep("shop", "backend-55f", ("k8s:app=backend", "k8s:io.kubernetes.pod.namespace=shop"),
          5151, (Workload("backend", "StatefulSet"),))
DNS = ep("kube-system", "coredns-1", ("k8s:k8s-app=kube-dns",), 300)
WORLD = ep(labels=("reserved:world",), identity=2)


#: The flow every case looks at: a forwarded TCP SYN frontend -> backend:8080 on
#: worker-1.lab, traced from-endpoint (subtype 5), egress, to the backend service. A case
#: that needs something else changes just that with replace().
F = flow(source=FRONT, destination=BACK, source_ip="10.0.1.5", destination_ip="10.0.2.7",
         source_port=41000, node="worker-1.lab", event_type=EventType.TRACE, event_subtype=5,
         traffic_direction=TrafficDirection.EGRESS, destination_service=Service("backend", "shop"))
#: F as seen on the backend's veth, ifindex 5 (F itself has no interface).
FI = replace(F, interface_index=5, interface_name="lxc1a2b3c4d")
#: F over IPv6.
F6 = replace(F, ip_version=6, source_ip="fd00::5", destination_ip="fd00::7")


def matches(fields: dict[str, Any], f: Flow) -> bool:
    return FilterSet(allow=(FlowFilter(**fields),)).matches(f)


CASES = [
    # pod
    pytest.param({"source_pod": ["shop/front"]}, F, True, id="pod-ns-prefix"),
    pytest.param({"source_pod": ["shop/back"]}, F, False, id="pod-ns-wrong-prefix"),
    pytest.param({"source_pod": ["other/front"]}, F, False, id="pod-wrong-ns"),
    pytest.param({"source_pod": ["shop/"]}, F, True, id="pod-whole-namespace"),
    pytest.param({"source_pod": ["front"]}, F, True, id="pod-bare-prefix-any-ns"),
    pytest.param({"source_pod": ["front"]}, replace(F, source=DNS), False, id="pod-bare-no-match"),
    pytest.param({"destination_pod": ["shop/backend"]}, F, True, id="pod-destination"),
    pytest.param({"source_pod": ["kube-system/", "shop/front"]}, F, True,
                 id="pod-values-or"),
    pytest.param({"source_pod": ["shop/"]}, replace(F, source=WORLD), False, id="pod-world-never"),
    # service
    pytest.param({"destination_service": ["shop/back"]}, F, True, id="service-prefix"),
    pytest.param({"destination_service": ["back"]}, F, True, id="service-any-ns"),
    pytest.param({"destination_service": ["other/"]}, F, False, id="service-wrong-ns"),
    pytest.param({"source_service": ["shop/"]}, F, False, id="service-none-on-flow"),
    # workload
    pytest.param({"source_workload": ["frontend"]}, F, True, id="workload-name"),
    pytest.param({"source_workload": ["deployment/frontend"]}, F, True,
                 id="workload-kind-any-case"),
    pytest.param({"source_workload": ["StatefulSet/frontend"]}, F, False,
                 id="workload-wrong-kind"),
    pytest.param({"destination_workload": ["StatefulSet/"]}, F, True,
                 id="workload-kind-only"),
    pytest.param({"destination_workload": [{"name": "backend"}]}, F, True,
                 id="workload-json-form"),
    # label
    pytest.param({"source_label": ["app=frontend"]}, F, True, id="label-any-source"),
    pytest.param({"source_label": ["k8s:app=frontend"]}, F, True, id="label-k8s-source"),
    pytest.param({"source_label": ["container:app=frontend"]}, F, False,
                 id="label-other-source"),
    pytest.param({"source_label": ["app=backend"]}, F, False, id="label-wrong-value"),
    pytest.param({"source_label": ["app=backend", "tier=web"]}, F, True,
                 id="label-selectors-or"),
    pytest.param({"source_label": ["app=frontend,tier!=web"]}, F, False,
                 id="label-comma-is-and"),
    pytest.param({"destination_label": ["reserved:world"]}, replace(F, destination=WORLD), True,
                 id="label-reserved-exists"),
    # identity
    pytest.param({"source_identity": [4242]}, F, True, id="identity-number"),
    pytest.param({"source_identity": ["4242"]}, F, True, id="identity-string"),
    pytest.param({"destination_identity": ["world"]}, replace(F, destination=WORLD), True,
                 id="identity-world"),
    pytest.param({"destination_identity": ["host"]}, replace(F, destination=WORLD), False,
                 id="identity-host-no"),
    # ip
    pytest.param({"source_ip": ["10.0.1.5"]}, F, True, id="ip-exact"),
    pytest.param({"source_ip": ["10.0.1.6"]}, F, False, id="ip-exact-no"),
    pytest.param({"source_ip": ["10.0.0.0/16"]}, F, True, id="ip-cidr"),
    pytest.param({"destination_ip": ["10.0.1.0/24"]}, F, False, id="ip-cidr-no"),
    pytest.param({"source_ip": ["fd00::/64"]},
                 replace(F, source_ip="fd00::5", ip_version=6), True, id="ip-v6-cidr"),
    pytest.param({"source_ip": ["10.0.0.0/8"]},
                 replace(F, source_ip="fd00::5", ip_version=6), False, id="ip-v4-net-v6-addr"),
    pytest.param({"source_ip": ["10.0.0.0/8"]}, replace(F, source_ip=""), False,
                 id="ip-empty-flow"),
    # port
    pytest.param({"destination_port": [8080]}, F, True, id="port-dst"),
    pytest.param({"source_port": ["8080"]}, F, False, id="port-src-no"),
    pytest.param({"destination_port": [53, 8080]}, F, True, id="port-or"),
    pytest.param({"destination_port": [0]}, replace(F, protocol=Protocol.ICMP, destination_port=0),
                 False, id="port-never-icmp"),
    pytest.param({"destination_port": [53]},
                 replace(F, protocol=Protocol.UDP, destination_port=53), True, id="port-udp"),
    # protocol
    pytest.param({"protocol": ["TCP"]}, F, True, id="proto-tcp-any-case"),
    pytest.param({"protocol": ["udp"]}, F, False, id="proto-udp-no"),
    pytest.param({"protocol": ["icmp"]}, replace(F, protocol=Protocol.ICMPV6), True,
                 id="proto-icmp-is-both"),
    pytest.param({"protocol": ["icmpv4"]}, replace(F, protocol=Protocol.ICMPV6), False,
                 id="proto-icmpv4-not-v6"),
    pytest.param({"protocol": ["sctp", "udp"]}, replace(F, protocol=Protocol.SCTP), True,
                 id="proto-or"),
    # verdict, drop reason, direction
    pytest.param({"verdict": ["dropped"]}, replace(F, verdict=Verdict.DROPPED), True,
                 id="verdict-any-case"),
    pytest.param({"verdict": ["DROPPED"]}, F, False, id="verdict-no"),
    pytest.param({"verdict": [2]}, replace(F, verdict=Verdict.DROPPED), True, id="verdict-number"),
    pytest.param({"drop_reason_desc": ["POLICY_DENIED"]},
                 replace(F, verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED), True,
                 id="drop-reason"),
    pytest.param({"drop_reason_desc": ["policy_deny"]},
                 replace(F, verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED), False,
                 id="drop-reason-other"),
    pytest.param({"traffic_direction": ["egress"]}, F, True, id="direction-egress"),
    pytest.param({"traffic_direction": ["INGRESS"]}, F, False, id="direction-no"),
    # event type
    pytest.param({"event_type": ["trace"]}, F, True, id="type-trace"),
    pytest.param({"event_type": ["trace:from-endpoint"]}, F, True, id="type-trace-sub"),
    pytest.param({"event_type": ["trace:to-endpoint"]}, F, False, id="type-trace-sub-no"),
    pytest.param({"event_type": ["trace:5"]}, F, True, id="type-trace-numeric-sub"),
    pytest.param({"event_type": ["drop"]}, F, False, id="type-drop-no"),
    pytest.param({"event_type": ["drop:133"]},
                 replace(F, event_type=EventType.DROP, event_subtype=133), True,
                 id="type-drop-sub"),
    pytest.param({"event_type": [{"type": 4, "match_sub_type": True}]},
                 replace(F, event_subtype=0), True, id="type-json-sub-zero"),
    pytest.param({"event_type": ["policy-verdict"]},
                 replace(F, event_type=EventType.POLICY_VERDICT), True, id="type-policy-verdict"),
    # tcp flags
    pytest.param({"tcp_flags": ["SYN"]}, F, True, id="flags-syn"),
    pytest.param({"tcp_flags": ["SYN,ACK"]}, F, False, id="flags-all-must-be-set"),
    pytest.param({"tcp_flags": ["syn,ack"]}, replace(F, tcp_flags=SYN | ACK), True,
                 id="flags-all-set"),
    pytest.param({"tcp_flags": ["FIN", "SYN,ACK"]}, replace(F, tcp_flags=FIN | ACK), True,
                 id="flags-values-or"),
    pytest.param({"tcp_flags": ["SYN"]}, replace(F, protocol=Protocol.UDP), False,
                 id="flags-never-udp"),
    # reply
    pytest.param({"reply": [False]}, F, True, id="reply-false"),
    pytest.param({"reply": ["true"]}, F, False, id="reply-true-no"),
    pytest.param({"reply": [True, False]}, replace(F, is_reply=None), False, id="reply-unknown"),
    # node
    pytest.param({"node_name": ["*.lab"]}, F, True, id="node-glob"),
    pytest.param({"node_name": ["worker-?.lab"]}, F, True, id="node-glob-char"),
    pytest.param({"node_name": ["worker-1"]}, F, False, id="node-exact-no"),
    pytest.param({"node_name": ["default/worker-*"]}, F, True, id="node-default-cluster"),
    pytest.param({"node_name": ["prod/*"]}, F, False, id="node-other-cluster"),
    pytest.param({"node_name": ["prod/*"]}, replace(F, node_name="prod/n1"), True,
                 id="node-cluster-form"),
    pytest.param({"node_name": ["*"]}, replace(F, node_name=""), False, id="node-unknown-never"),
    # ip version
    pytest.param({"ip_version": ["IPv4"]}, F, True, id="ipv-v4"),
    pytest.param({"ip_version": ["v6"]}, F, False, id="ipv-v6-no"),
    pytest.param({"ip_version": ["v6"]}, F6, True, id="ipv-v6"),
    pytest.param({"ip_version": [2]}, F6, True, id="ipv-enum-number"),
    pytest.param({"ip_version": ["4", "6"]}, F6, True, id="ipv-or"),
    pytest.param({"ip_version": ["none"]}, F, False, id="ipv-none-no"),
    pytest.param({"ip_version": ["IP_NOT_USED"]},
                 replace(F, ip_version=0, source_ip="", destination_ip=""), True,
                 id="ipv-not-used"),
    # interface
    pytest.param({"interface": ["lxc1a2b3c4d"]}, FI, True, id="iface-name"),
    pytest.param({"interface": ["eth0"]}, FI, False, id="iface-name-no"),
    pytest.param({"interface": [{"index": 5}]}, FI, True, id="iface-index"),
    pytest.param({"interface": [{"index": "5"}]}, FI, True, id="iface-index-string"),
    pytest.param({"interface": [{"index": 6}]}, FI, False, id="iface-index-no"),
    pytest.param({"interface": [{"index": 5, "name": "lxc1a2b3c4d"}]}, FI, True,
                 id="iface-both"),
    pytest.param({"interface": [{"index": 5, "name": "eth0"}]}, FI, False,
                 id="iface-both-name-wrong"),
    pytest.param({"interface": [{"index": 6, "name": "lxc1a2b3c4d"}]}, FI, False,
                 id="iface-both-index-wrong"),
    pytest.param({"interface": [{"index": 6}, "lxc1a2b3c4d"]}, FI, True, id="iface-or"),
    pytest.param({"interface": ["lxc1a2b3c4d"]}, replace(FI, interface_index=0), False,
                 id="iface-none-never"),
    # uuid
    pytest.param({"uuid": ["u000000"]}, F, True, id="uuid"),
    pytest.param({"uuid": ["u000001"]}, F, False, id="uuid-other"),
    pytest.param({"uuid": ["U000000"]}, F, False, id="uuid-case-sensitive"),
    pytest.param({"uuid": [" u000000\n"]}, F, True, id="uuid-trimmed"),
    pytest.param({"uuid": ["x", "u000000"]}, F, True, id="uuid-or"),
]


@pytest.mark.parametrize(("fields", "f", "expected"), CASES)
def test_dimension_matches(fields: dict[str, Any], f: Flow, expected: bool) -> None:
    assert matches(fields, f) is expected


ERRORS = [
    pytest.param("port", "http",
                 "--port: 'http' is not a port number (0-65535); use a number like --port 8080",
                 id="port-name"),
    pytest.param("port", "65536",
                 "--port: '65536' is not a port number (0-65535); use a number like --port 8080",
                 id="port-range"),
    pytest.param("to-port", "-1",
                 "--to-port: '-1' is not a port number (0-65535); use a number like "
                 "--to-port 8080", id="port-negative"),
    pytest.param("pod", "",
                 "--pod: the pod name is empty; give '[namespace/]pod-prefix' (or 'namespace/' "
                 "for all of it) like --pod shop/frontend", id="pod-empty"),
    pytest.param("pod", "a/b/c",
                 "--pod: 'a/b/c' has more than one '/'; use 'namespace/pod-prefix' like "
                 "--pod shop/frontend", id="pod-slashes"),
    pytest.param("from-pod", "/web",
                 "--from-pod: '/web' has an empty namespace before '/'; drop the '/' to match "
                 "any namespace, or name one like --from-pod shop/frontend", id="pod-empty-ns"),
    pytest.param("ip", "10.0.0.300",
                 "--ip: '10.0.0.300' is not an IP address or CIDR; use an IPv4/IPv6 address "
                 "or a network like --ip 10.0.0.0/8", id="ip-bad"),
    pytest.param("to-ip", "10.0.0.0/33",
                 "--to-ip: '10.0.0.0/33' is not an IP address or CIDR; use an IPv4/IPv6 "
                 "address or a network like --to-ip 10.0.0.0/8", id="ip-bad-prefix"),
    pytest.param("protocol", "http",
                 "--protocol: 'http' is not a known protocol; use one of tcp, udp, sctp, icmp, "
                 "icmpv4, icmpv6 like --protocol tcp", id="protocol-unknown"),
    pytest.param("verdict", "DROP",
                 "--verdict: 'DROP' is not a verdict; use one of VERDICT_UNKNOWN, FORWARDED, "
                 "DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED like --verdict DROPPED",
                 id="verdict-unknown"),
    pytest.param("identity", "nobody",
                 "--identity: 'nobody' is not a security identity; use a number "
                 "(0-4294967295) or one of host, world like --identity 12345",
                 id="identity-name"),
    pytest.param("tcp-flags", "SYN,NOPE",
                 "--tcp-flags: 'NOPE' is not a TCP flag; use a comma list of SYN, ACK, RST, "
                 "FIN, PSH, URG, ECE, CWR like --tcp-flags SYN,ACK", id="tcp-flag-unknown"),
    pytest.param("traffic-direction", "sideways",
                 "--traffic-direction: 'SIDEWAYS' is not a traffic direction; use one of "
                 "TRAFFIC_DIRECTION_UNKNOWN, INGRESS, EGRESS like --traffic-direction ingress",
                 id="direction-unknown"),
    pytest.param("drop-reason-desc", "BAD_LUCK",
                 "--drop-reason-desc: 'BAD_LUCK' is not a drop reason; use one of "
                 "DROP_REASON_UNKNOWN, INVALID_SOURCE_IP, POLICY_DENIED, INVALID_PACKET_DROPPED, "
                 "CT_TRUNCATED_OR_INVALID_HEADER, CT_MISSING_TCP_ACK_FLAG, CT_UNKNOWN_L4_PROTOCOL, "
                 "UNSUPPORTED_L3_PROTOCOL, MISSED_TAIL_CALL, UNKNOWN_L4_PROTOCOL, "
                 "STALE_OR_UNROUTABLE_IP, CT_MAP_INSERTION_FAILED, IP_FRAGMENTATION_NOT_SUPPORTED, "
                 "SERVICE_BACKEND_NOT_FOUND, NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT, "
                 "UNKNOWN_CONNECTION_TRACKING_STATE, FIB_LOOKUP_FAILED, INVALID_IDENTITY, "
                 "UNKNOWN_SENDER, DENIED_BY_LB_SRC_RANGE_CHECK, POLICY_DENY, VLAN_FILTERED, "
                 "AUTH_REQUIRED, CT_NO_MAP_FOUND, TTL_EXCEEDED like --drop-reason-desc "
                 "POLICY_DENIED", id="drop-reason-unknown"),
    pytest.param("type", "capture",
                 "--type: 'capture' is a Hubble event type that Spyglass does not produce; use "
                 "drop, policy-verdict, trace or trace:<point> with a point from to-endpoint, "
                 "to-proxy, to-host, to-stack, to-overlay, from-endpoint, from-proxy, from-host, "
                 "from-stack, from-overlay, from-network, to-network, from-crypto, to-crypto "
                 "like --type trace:to-endpoint", id="type-hubble-only"),
    pytest.param("type", "trace:sideways",
                 "--type: 'sideways' is not a sub-type of 'trace'; use a number (0-255) or one "
                 "of to-endpoint, to-proxy, to-host, to-stack, to-overlay, from-endpoint, "
                 "from-proxy, from-host, from-stack, from-overlay, from-network, to-network, "
                 "from-crypto, to-crypto like --type trace:to-endpoint", id="type-bad-sub"),
    pytest.param("type", "drop:x",
                 "--type: 'x' is not a sub-type of 'drop'; use a number (0-255) like "
                 "--type trace:to-endpoint", id="type-drop-bad-sub"),
    pytest.param("node-name", "a b",
                 "--node-name: 'a b' is not a node name pattern; use letters, digits, '.', '-' "
                 "and the globs * ? [..], optionally after 'cluster/' like --node-name *.lab",
                 id="node-bad"),
    pytest.param("reply", "maybe",
                 "--reply: 'maybe' is not true or false; use true or false like --reply true",
                 id="reply-bad"),
    pytest.param("workload", "a/b/c",
                 "--workload: 'a/b/c' is not '[kind/]name'; use one '/' after the kind like "
                 "--workload Deployment/frontend", id="workload-bad"),
    pytest.param("namespace", "shop/web",
                 "--namespace: 'shop/web' is not a namespace name; to select a pod use --pod "
                 "shop/web; a namespace looks like --namespace kube-system", id="namespace-pod"),
    pytest.param("label", "",
                 "--label: the label selector is empty; give a selector like --label "
                 "app=frontend", id="label-empty"),
    pytest.param("ip-version", "v5",
                 "--ip-version: 'v5' is not an IP version; use v4, v6 or none (or 4, 6, 0; or "
                 "IPv4, IPv6, IP_NOT_USED) like --ip-version v6", id="ipv-bad"),
    pytest.param("ip-version", " ",
                 "--ip-version: the IP version is empty; use v4, v6 or none (or 4, 6, 0; or "
                 "IPv4, IPv6, IP_NOT_USED) like --ip-version v6", id="ipv-empty"),
    pytest.param("interface", "eth0:1",
                 "--interface: 'eth0:1' is not an interface name; Linux interface names have no "
                 "'/', ':', blanks or control characters like --interface lxc1a2b3c4d",
                 id="iface-colon"),
    pytest.param("interface", "lxc1a2b3c4d5e6f7",
                 "--interface: 'lxc1a2b3c4d5e6f7' is 16 characters long; give the name as `ip "
                 "link` shows it (at most 15 characters) like --interface lxc1a2b3c4d",
                 id="iface-long"),
    pytest.param("interface", "",
                 "--interface: the interface name is empty; give an interface name like "
                 "--interface lxc1a2b3c4d", id="iface-empty"),
    pytest.param("uuid", "",
                 "--uuid: the flow UUID is empty; give a flow's uuid, as `observe -o json` "
                 "prints it like --uuid 3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a", id="uuid-empty"),
    pytest.param("uuid", "a b",
                 "--uuid: 'a b' has a blank or control character ' '; give one flow uuid per "
                 "value, without spaces like --uuid 3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a",
                 id="uuid-blank"),
    pytest.param("uuid", "a\x1bb",
                 "--uuid: 'a\\x1bb' has a blank or control character '\\x1b'; give one flow "
                 "uuid per value, without spaces like --uuid "
                 "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a", id="uuid-control"),
    pytest.param("uuid", "x" * 129,
                 "--uuid: the flow UUID is 129 characters long; give a flow's uuid (36 "
                 "characters; at most 128 are accepted) like --uuid "
                 "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a", id="uuid-long"),
    pytest.param("label", "app in a",
                 "--label: label selector 'app in a': expected '(' after in/notin at position "
                 "7; write it like 'app=frontend', 'k8s:app!=db', 'tier in (web,api)', 'app' or "
                 "'!canary'", id="label-bad"),
]


@pytest.mark.parametrize(("flag", "value", "message"), ERRORS)
def test_dimension_errors(flag: str, value: str, message: str) -> None:
    with pytest.raises(FilterError) as e:
        build_from_flags([(flag, value)])
    assert str(e.value) == message


CANONICAL = [
    pytest.param("source_ip", "10.0.0.1/24", "10.0.0.0/24", id="ip-cidr-masked"),
    pytest.param("source_ip", "10.0.0.1/32", "10.0.0.1", id="ip-host-cidr"),
    pytest.param("source_ip", "FD00:0::1", "fd00::1", id="ip-v6-compressed"),
    pytest.param("source_port", " 080 ", 80, id="port-int"),
    pytest.param("verdict", "dropped", "DROPPED", id="verdict-upper"),
    pytest.param("tcp_flags", "ack,syn", "SYN,ACK", id="flags-hubble-order"),
    pytest.param("tcp_flags", {"ACK": True, "FIN": False}, "ACK", id="flags-json"),
    pytest.param("event_type", "4:0", "trace:to-endpoint", id="type-numeric"),
    pytest.param("event_type", "TRACE", "trace", id="type-case"),
    pytest.param("source_identity", "reserved:host", 1, id="identity-reserved-label"),
    pytest.param("source_label", "app == web , tier  in (b, a)", "app=web,tier in (a,b)",
                 id="label-reprinted"),
    pytest.param("source_workload", {"kind": "Deployment", "name": "web"}, "Deployment/web",
                 id="workload-json"),
    pytest.param("traffic_direction", "egress", "EGRESS", id="direction-upper"),
    pytest.param("reply", "yes", True, id="reply-yes"),
    pytest.param("ip_version", "v4", "IPv4", id="ipv-v4"),
    pytest.param("ip_version", "IP6", "IPv6", id="ipv-ip6"),
    pytest.param("ip_version", 2, "IPv6", id="ipv-enum-number"),
    pytest.param("ip_version", "None", "IP_NOT_USED", id="ipv-none"),
    pytest.param("interface", " lxc1 ", NetworkInterface(0, "lxc1"), id="iface-name"),
    pytest.param("interface", {"index": 5}, NetworkInterface(5), id="iface-index"),
    pytest.param("interface", {"index": "5", "name": "lxc1"}, NetworkInterface(5, "lxc1"),
                 id="iface-both"),
    pytest.param("interface", {"index": 0, "name": "lxc1"}, NetworkInterface(0, "lxc1"),
                 id="iface-index-zero-is-unset"),
    pytest.param("uuid", " u1 ", "u1", id="uuid-trimmed"),
]


@pytest.mark.parametrize(("field", "raw", "canonical"), CANONICAL)
def test_values_are_canonical_and_stable(field: str, raw: Any, canonical: Any) -> None:
    ff = FlowFilter(**{field: (raw,)})
    assert getattr(ff, field) == (canonical,)
    assert FlowFilter(**{field: getattr(ff, field)}) == ff  # canonical parses to itself


def test_duplicate_values_collapse() -> None:
    assert FlowFilter(source_port=("80", 80)).source_port == (80,)


def test_junk_flow_values_do_not_crash() -> None:
    fs = FilterSet(allow=(FlowFilter(source_ip=("10.0.0.0/8",), node_name=("*",)),))
    assert fs.matches(replace(F, source_ip="not-an-ip")) is False


JSON_ERRORS = [
    pytest.param({"ip_version": [4]},
                 "filter field 'ip_version': 4 is not an IPVersion number (0 IP_NOT_USED, 1 IPv4, "
                 "2 IPv6); use v4, v6 or none (or 4, 6, 0; or IPv4, IPv6, IP_NOT_USED) like 'v6'",
                 id="ipv-number-is-the-enums"),
    pytest.param({"ip_version": [True]},
                 "filter field 'ip_version': True is not an IP version; use v4, v6 or none (or "
                 "4, 6, 0; or IPv4, IPv6, IP_NOT_USED) like 'v6'", id="ipv-bool"),
    pytest.param({"interface": [{}]},
                 "filter field 'interface': the interface has neither a name nor an index; set "
                 "name, or a non-zero index, or both like '{\"index\": 5, \"name\": "
                 "\"lxc1a2b3c4d\"}'", id="iface-empty-message"),
    pytest.param({"interface": [{"idx": 5}]},
                 "filter field 'interface': unknown interface keys ['idx']; use index and name "
                 "like '{\"index\": 5, \"name\": \"lxc1a2b3c4d\"}'", id="iface-unknown-key"),
    pytest.param({"interface": [{"index": -1}]},
                 "filter field 'interface': '-1' is not an interface index (0-4294967295); give "
                 "a number like '{\"index\": 5, \"name\": \"lxc1a2b3c4d\"}'",
                 id="iface-negative"),
    pytest.param({"interface": [{"index": 2**32}]},
                 "filter field 'interface': '4294967296' is not an interface index "
                 "(0-4294967295); give a number like '{\"index\": 5, \"name\": "
                 "\"lxc1a2b3c4d\"}'", id="iface-too-big"),
    pytest.param({"interface": [{"index": True}]},
                 "filter field 'interface': True is not an interface index; give a number like "
                 "'{\"index\": 5, \"name\": \"lxc1a2b3c4d\"}'", id="iface-bool"),
    pytest.param({"interface": [{"name": 5}]},
                 "filter field 'interface': 5 is not an interface name; give the name as text "
                 "like 'lxc1a2b3c4d'", id="iface-name-number"),
    pytest.param({"uuid": [5]},
                 "filter field 'uuid': 5 is not a flow UUID; give the id as text like "
                 "'3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a'", id="uuid-number"),
]


@pytest.mark.parametrize(("d", "message"), JSON_ERRORS)
def test_flowfilter_json_errors(d: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError) as e:
        FlowFilter.from_dict(d)
    assert str(e.value) == message


@pytest.mark.parametrize("names", [pytest.param(True, id="proto-names"),
                                   pytest.param(False, id="camel-case")])
def test_grpc_filter_json_parses(names: bool) -> None:
    """What `filters_from` hands over: a FlowFilter proto through MessageToDict. The enum
    list arrives as names, the interfaces as dicts without their unset parts."""
    uid = "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a"
    msg = flow_pb2.FlowFilter(uuid=[uid], ip_version=[flow_pb2.IPv6],
                              interface=[flow_pb2.NetworkInterface(index=3),
                                         flow_pb2.NetworkInterface(index=5, name="lxc1")])
    d = json_format.MessageToDict(msg, preserving_proto_field_name=names)
    ff = FlowFilter.from_dict(d)
    assert ff == FlowFilter(uuid=(uid,), ip_version=("IPv6",),
                            interface=(NetworkInterface(3), NetworkInterface(5, "lxc1")))
    assert FlowFilter.from_dict({"interface": [{"index": 3}], "ip_version": ["IPv6"],
                                 "uuid": [uid]}) == replace(ff, interface=(NetworkInterface(3),))
    # ... and to_dict is that JSON again, which a strict proto parser takes back.
    assert json_format.ParseDict(ff.to_dict(), flow_pb2.FlowFilter()) == msg
    assert FilterSet((ff,)).matches(replace(F6, uuid=uid, interface_index=3))
    assert not FilterSet((ff,)).matches(replace(F, uuid=uid, interface_index=3))
