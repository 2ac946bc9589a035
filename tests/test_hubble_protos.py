"""Our Hubble schema (api/hubble): its generated modules, its wire facts and strict JSON.

- The committed *_pb2 modules are exactly what scripts/gen_protos.py writes from the
  .proto files, so the schema and the code cannot drift apart unnoticed.
- Field numbers, types, oneofs, enum values and method paths are Cilium v1.19's, read
  back through the descriptors: a renumbered field would break every Hubble client.
- Hubble's proto3 JSON parses strictly: what Hubble writes is read, what it lacks is not.
"""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from support import flow

from spyglass.api.hubble import flow_pb2, observer_pb2, observer_pb2_grpc, peer_pb2, peer_pb2_grpc
from spyglass.api.hubble.json import parse_get_flows_response
from spyglass.model import enums
from spyglass.model.flow import LostEvent, event_to_response
from spyglass.model.hubble_json import HUBBLE_LOST_SOURCES, hubble_response

ROOT = Path(__file__).resolve().parent.parent
HUBBLE = ROOT / "api" / "hubble"
REGENERATE = ".venv/bin/python scripts/gen_protos.py"
POOL = observer_pb2.DESCRIPTOR.pool  # flow, relay, observer and peer all load into it
assert peer_pb2.DESCRIPTOR.pool is POOL


# -- drift: the committed modules are what the generator writes -----------------------------

def test_committed_modules_are_what_gen_protos_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out",
                    str(tmp_path)], check=True, capture_output=True, cwd=ROOT)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in HUBBLE.iterdir() if "_pb2" in p.name}
    assert fresh, "gen_protos.py wrote nothing"
    stale = sorted(n for n in fresh.keys() | committed.keys()
                   if fresh.get(n) != committed.get(n))
    assert not stale, (f"api/hubble/{', '.join(stale)} do not match api/hubble/*.proto: "
                       f"run `{REGENERATE}` and commit the result")


# -- wire facts (Cilium v1.19) ---------------------------------------------------------------

_SCALARS = {getattr(FieldDescriptor, f"TYPE_{t.upper()}"): t for t in
            ("bool", "string", "bytes", "double", "float", "int32", "int64", "uint32",
             "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64")}


def _shape(field: FieldDescriptor) -> str:
    """A field's type as a .proto file spells it: "repeated flow.Policy", "uint32"."""
    if field.message_type is not None:
        name = field.message_type.full_name
    elif field.enum_type is not None:
        name = field.enum_type.full_name
    else:
        name = _SCALARS[field.type]
    return f"repeated {name}" if field.is_repeated else name


def _message(name: str) -> Descriptor:
    return POOL.FindMessageTypeByName(name)


def _enum(name: str) -> EnumDescriptor:
    return POOL.FindEnumTypeByName(name)


#: Every field of flow.Flow that Spyglass serves: (name, number, type).
FLOW_FIELDS = [
    ("time", 1, "google.protobuf.Timestamp"), ("uuid", 34, "string"),
    ("emitter", 41, "flow.Emitter"), ("verdict", 2, "flow.Verdict"),
    ("drop_reason", 3, "uint32"), ("drop_reason_desc", 25, "flow.DropReason"),
    ("auth_type", 35, "flow.AuthType"), ("ethernet", 4, "flow.Ethernet"),
    ("IP", 5, "flow.IP"), ("l4", 6, "flow.Layer4"), ("tunnel", 39, "flow.Tunnel"),
    ("source", 8, "flow.Endpoint"), ("destination", 9, "flow.Endpoint"),
    ("source_names", 13, "repeated string"), ("destination_names", 14, "repeated string"),
    ("source_service", 20, "flow.Service"), ("destination_service", 21, "flow.Service"),
    ("Type", 10, "flow.FlowType"), ("node_name", 11, "string"),
    ("node_labels", 37, "repeated string"), ("l7", 15, "flow.Layer7"), ("reply", 16, "bool"),
    ("is_reply", 26, "google.protobuf.BoolValue"), ("event_type", 19, "flow.CiliumEventType"),
    ("traffic_direction", 22, "flow.TrafficDirection"), ("policy_match_type", 23, "uint32"),
    ("trace_observation_point", 24, "flow.TraceObservationPoint"),
    ("trace_reason", 36, "flow.TraceReason"), ("file", 38, "flow.FileInfo"),
    ("ip_trace_id", 40, "flow.IPTraceID"), ("debug_capture_point", 27, "flow.DebugCapturePoint"),
    ("interface", 28, "flow.NetworkInterface"), ("proxy_port", 29, "uint32"),
    ("trace_context", 30, "flow.TraceContext"),
    ("sock_xlate_point", 31, "flow.SocketTranslationPoint"), ("socket_cookie", 32, "uint64"),
    ("cgroup_id", 33, "uint64"), ("Summary", 100000, "string"),
    ("extensions", 150000, "google.protobuf.Any"),
    ("egress_allowed_by", 21001, "repeated flow.Policy"),
    ("ingress_allowed_by", 21002, "repeated flow.Policy"),
    ("egress_denied_by", 21004, "repeated flow.Policy"),
    ("ingress_denied_by", 21005, "repeated flow.Policy"),
    ("policy_log", 21006, "repeated string"), ("aggregate", 21007, "flow.Aggregate"),
]

#: Fields of the other messages: (message, field, number, type).
FIELDS = [
    ("flow.IP", "source", 1, "string"), ("flow.IP", "destination", 2, "string"),
    ("flow.IP", "ipVersion", 3, "flow.IPVersion"), ("flow.IP", "encrypted", 4, "bool"),
    ("flow.IP", "source_xlated", 5, "string"),
    ("flow.Endpoint", "ID", 1, "uint32"), ("flow.Endpoint", "identity", 2, "uint32"),
    ("flow.Endpoint", "namespace", 3, "string"), ("flow.Endpoint", "labels", 4, "repeated string"),
    ("flow.Endpoint", "pod_name", 5, "string"),
    ("flow.Endpoint", "workloads", 6, "repeated flow.Workload"),
    ("flow.Endpoint", "cluster_name", 7, "string"),
    ("flow.TCP", "source_port", 1, "uint32"), ("flow.TCP", "destination_port", 2, "uint32"),
    ("flow.TCP", "flags", 3, "flow.TCPFlags"), ("flow.TCPFlags", "SYN", 2, "bool"),
    ("flow.TCPFlags", "NS", 9, "bool"), ("flow.IGMP", "group_address", 2, "string"),
    ("flow.VRRP", "priority", 3, "uint32"), ("flow.Tunnel", "protocol", 1, "flow.Tunnel.Protocol"),
    ("flow.Tunnel", "IP", 2, "flow.IP"), ("flow.Tunnel", "l4", 3, "flow.Layer4"),
    ("flow.Tunnel", "vni", 4, "uint32"), ("flow.IPTraceID", "trace_id", 1, "uint64"),
    ("flow.IPTraceID", "ip_option_type", 2, "uint32"), ("flow.Emitter", "version", 2, "string"),
    ("flow.Policy", "kind", 5, "string"), ("flow.Aggregate", "unknown_direction_flow_count", 3,
                                           "uint32"),
    ("flow.Layer7", "latency_ns", 2, "uint64"), ("flow.Layer7", "http", 101, "flow.HTTP"),
    ("flow.LostEvent", "source", 1, "flow.LostEventSource"),
    ("flow.LostEvent", "num_events_lost", 2, "uint64"),
    ("flow.LostEvent", "cpu", 3, "google.protobuf.Int32Value"),
    ("flow.LostEvent", "first", 4, "google.protobuf.Timestamp"),
    ("flow.LostEvent", "last", 5, "google.protobuf.Timestamp"),
    ("flow.FlowFilter", "uuid", 29, "repeated string"),
    ("flow.FlowFilter", "source_ip_xlated", 34, "repeated string"),
    ("flow.FlowFilter", "drop_reason_desc", 33, "repeated flow.DropReason"),
    ("flow.FlowFilter", "interface", 35, "repeated flow.NetworkInterface"),
    ("flow.FlowFilter", "event_type", 6, "repeated flow.EventTypeFilter"),
    ("flow.FlowFilter", "http_header", 32, "repeated flow.HTTPHeader"),
    ("flow.FlowFilter", "node_labels", 36, "repeated string"),
    ("flow.FlowFilter", "source_cluster_name", 37, "repeated string"),
    ("flow.FlowFilter", "destination_cluster_name", 38, "repeated string"),
    ("flow.FlowFilter", "ip_trace_id", 39, "repeated uint64"),
    ("flow.FlowFilter", "encrypted", 40, "repeated bool"),
    ("flow.FlowFilter", "experimental", 999, "flow.FlowFilter.Experimental"),
    ("flow.FlowFilter.Experimental", "cel_expression", 1, "repeated string"),
    ("flow.EventTypeFilter", "match_sub_type", 2, "bool"),
    ("observer.GetFlowsRequest", "number", 1, "uint64"),
    ("observer.GetFlowsRequest", "follow", 3, "bool"),
    ("observer.GetFlowsRequest", "blacklist", 5, "repeated flow.FlowFilter"),
    ("observer.GetFlowsRequest", "whitelist", 6, "repeated flow.FlowFilter"),
    ("observer.GetFlowsRequest", "since", 7, "google.protobuf.Timestamp"),
    ("observer.GetFlowsRequest", "until", 8, "google.protobuf.Timestamp"),
    ("observer.GetFlowsRequest", "first", 9, "bool"),
    ("observer.GetFlowsRequest", "field_mask", 10, "google.protobuf.FieldMask"),
    ("observer.GetFlowsRequest", "experimental", 999, "observer.GetFlowsRequest.Experimental"),
    ("observer.GetFlowsRequest", "extensions", 150000, "google.protobuf.Any"),
    ("observer.GetFlowsResponse", "node_name", 1000, "string"),
    ("observer.GetFlowsResponse", "time", 1001, "google.protobuf.Timestamp"),
    ("observer.ServerStatusResponse", "num_flows", 1, "uint64"),
    ("observer.ServerStatusResponse", "max_flows", 2, "uint64"),
    ("observer.ServerStatusResponse", "seen_flows", 3, "uint64"),
    ("observer.ServerStatusResponse", "uptime_ns", 4, "uint64"),
    ("observer.ServerStatusResponse", "num_connected_nodes", 5, "google.protobuf.UInt32Value"),
    ("observer.ServerStatusResponse", "num_unavailable_nodes", 6, "google.protobuf.UInt32Value"),
    ("observer.ServerStatusResponse", "unavailable_nodes", 7, "repeated string"),
    ("observer.ServerStatusResponse", "version", 8, "string"),
    ("observer.ServerStatusResponse", "flows_rate", 9, "double"),
    ("observer.GetAgentEventsRequest", "follow", 2, "bool"),
    ("observer.GetDebugEventsRequest", "first", 9, "bool"),
    ("observer.GetNodesResponse", "nodes", 1, "repeated observer.Node"),
    ("observer.Node", "state", 4, "relay.NodeState"), ("observer.Node", "tls", 5, "observer.TLS"),
    ("observer.Node", "seen_flows", 9, "uint64"), ("observer.TLS", "server_name", 2, "string"),
    ("observer.GetNamespacesResponse", "namespaces", 1, "repeated observer.Namespace"),
    ("observer.Namespace", "cluster", 1, "string"),
    ("observer.Namespace", "namespace", 2, "string"),
    ("relay.NodeStatusEvent", "state_change", 1, "relay.NodeState"),
    ("relay.NodeStatusEvent", "node_names", 2, "repeated string"),
    ("relay.NodeStatusEvent", "message", 3, "string"),
    ("peer.ChangeNotification", "name", 1, "string"),
    ("peer.ChangeNotification", "address", 2, "string"),
    ("peer.ChangeNotification", "type", 3, "peer.ChangeNotificationType"),
    ("peer.ChangeNotification", "tls", 4, "peer.TLS"), ("peer.TLS", "server_name", 1, "string"),
]

#: Oneofs: (message, oneof, its members by number).
ONEOFS = [
    ("flow.Layer4", "protocol",
     {"TCP": 1, "UDP": 2, "ICMPv4": 3, "ICMPv6": 4, "SCTP": 5, "VRRP": 6, "IGMP": 7}),
    ("flow.Layer7", "record", {"dns": 100, "http": 101, "kafka": 102}),
    ("observer.GetFlowsResponse", "response_types",
     {"flow": 1, "node_status": 2, "lost_events": 3}),
]

#: Enum values: (enum, {name: number}) (a subset where the enum is long).
ENUMS = [
    ("flow.Verdict", {"VERDICT_UNKNOWN": 0, "FORWARDED": 1, "DROPPED": 2, "ERROR": 3,
                      "AUDIT": 4, "REDIRECTED": 5, "TRACED": 6, "TRANSLATED": 7}),
    ("flow.LostEventSource", {"UNKNOWN_LOST_EVENT_SOURCE": 0, "PERF_EVENT_RING_BUFFER": 1,
                              "OBSERVER_EVENTS_QUEUE": 2, "HUBBLE_RING_BUFFER": 3}),
    ("flow.DropReason", {"DROP_REASON_UNKNOWN": 0, "POLICY_DENIED": 133,
                         "STALE_OR_UNROUTABLE_IP": 151, "POLICY_DENY": 181,
                         "AUTH_REQUIRED": 189, "DROP_PUNT_PROXY": 205}),
    ("flow.TraceObservationPoint", {"UNKNOWN_POINT": 0, "TO_PROXY": 1, "TO_OVERLAY": 4,
                                    "TO_ENDPOINT": 101, "FROM_ENDPOINT": 5, "TO_NETWORK": 11,
                                    "FROM_CRYPTO": 12, "TO_CRYPTO": 13}),
    ("flow.TraceReason", {"TRACE_REASON_UNKNOWN": 0, "NEW": 1, "REPLY": 3, "SRV6_DECAP": 7,
                          "ENCRYPT_OVERLAY": 8}),
    ("flow.FlowType", {"UNKNOWN_TYPE": 0, "L3_L4": 1, "L7": 2, "SOCK": 3}),
    ("flow.AuthType", {"DISABLED": 0, "SPIRE": 1, "TEST_ALWAYS_FAIL": 2}),
    ("flow.IPVersion", {"IP_NOT_USED": 0, "IPv4": 1, "IPv6": 2}),
    ("flow.TrafficDirection", {"TRAFFIC_DIRECTION_UNKNOWN": 0, "INGRESS": 1, "EGRESS": 2}),
    ("flow.DebugCapturePoint", {"DBG_CAPTURE_POINT_UNKNOWN": 0, "DBG_CAPTURE_DELIVERY": 4,
                                "DBG_CAPTURE_SNAT_POST": 11}),
    ("flow.SocketTranslationPoint", {"SOCK_XLATE_POINT_UNKNOWN": 0,
                                     "SOCK_XLATE_POINT_POST_DIRECTION_REV": 4}),
    ("flow.L7FlowType", {"UNKNOWN_L7_TYPE": 0, "REQUEST": 1, "RESPONSE": 2, "SAMPLE": 3}),
    ("flow.Tunnel.Protocol", {"UNKNOWN": 0, "VXLAN": 1, "GENEVE": 2}),
    ("relay.NodeState", {"UNKNOWN_NODE_STATE": 0, "NODE_CONNECTED": 1, "NODE_UNAVAILABLE": 2,
                         "NODE_GONE": 3, "NODE_ERROR": 4}),
    ("peer.ChangeNotificationType", {"UNKNOWN": 0, "PEER_ADDED": 1, "PEER_DELETED": 2,
                                     "PEER_UPDATED": 3}),
]

#: Every method: (path, request, response, server streaming).
METHODS = [
    ("/observer.Observer/GetFlows", "observer.GetFlowsRequest", "observer.GetFlowsResponse", True),
    ("/observer.Observer/GetAgentEvents", "observer.GetAgentEventsRequest",
     "observer.GetAgentEventsResponse", True),
    ("/observer.Observer/GetDebugEvents", "observer.GetDebugEventsRequest",
     "observer.GetDebugEventsResponse", True),
    ("/observer.Observer/GetNodes", "observer.GetNodesRequest", "observer.GetNodesResponse",
     False),
    ("/observer.Observer/GetNamespaces", "observer.GetNamespacesRequest",
     "observer.GetNamespacesResponse", False),
    ("/observer.Observer/ServerStatus", "observer.ServerStatusRequest",
     "observer.ServerStatusResponse", False),
    ("/peer.Peer/Notify", "peer.NotifyRequest", "peer.ChangeNotification", True),
]


@pytest.mark.parametrize(("name", "number", "shape"), FLOW_FIELDS, ids=[f[0] for f in FLOW_FIELDS])
def test_flow_field(name: str, number: int, shape: str) -> None:
    field = flow_pb2.Flow.DESCRIPTOR.fields_by_name[name]
    assert (field.number, _shape(field)) == (number, shape)


def test_flow_serves_exactly_the_listed_fields() -> None:
    """A field added to flow.proto gets its Cilium number checked here first."""
    assert sorted(f.name for f in flow_pb2.Flow.DESCRIPTOR.fields) == sorted(
        name for name, _, _ in FLOW_FIELDS)


#: Every FlowFilter field (1.19 uses 1..40, each once, and 999).
FLOW_FILTER = {
    "source_ip": 1, "source_pod": 2, "destination_ip": 3, "destination_pod": 4, "verdict": 5,
    "event_type": 6, "source_fqdn": 7, "destination_fqdn": 8, "http_status_code": 9,
    "source_label": 10, "destination_label": 11, "protocol": 12, "source_port": 13,
    "destination_port": 14, "reply": 15, "source_service": 16, "destination_service": 17,
    "dns_query": 18, "source_identity": 19, "destination_identity": 20, "http_method": 21,
    "http_path": 22, "tcp_flags": 23, "node_name": 24, "ip_version": 25, "source_workload": 26,
    "destination_workload": 27, "trace_id": 28, "uuid": 29, "traffic_direction": 30,
    "http_url": 31, "http_header": 32, "drop_reason_desc": 33, "source_ip_xlated": 34,
    "interface": 35, "node_labels": 36, "source_cluster_name": 37,
    "destination_cluster_name": 38, "ip_trace_id": 39, "encrypted": 40, "experimental": 999,
}


def test_flow_filter_has_every_field_of_cilium_1_19s() -> None:
    fields = flow_pb2.FlowFilter.DESCRIPTOR.fields
    assert {f.name: f.number for f in fields} == FLOW_FILTER


@pytest.mark.parametrize(("message", "name", "number", "shape"), FIELDS,
                         ids=[f"{m}.{n}" for m, n, _, _ in FIELDS])
def test_field(message: str, name: str, number: int, shape: str) -> None:
    field = _message(message).fields_by_name[name]
    assert (field.number, _shape(field)) == (number, shape)


@pytest.mark.parametrize(("message", "oneof", "members"), ONEOFS, ids=[o[0] for o in ONEOFS])
def test_oneof(message: str, oneof: str, members: dict[str, int]) -> None:
    fields = _message(message).oneofs_by_name[oneof].fields
    assert {f.name: f.number for f in fields} == members


@pytest.mark.parametrize(("name", "values"), ENUMS, ids=[e[0] for e in ENUMS])
def test_enum_values(name: str, values: dict[str, int]) -> None:
    got = {v.name: v.number for v in _enum(name).values}
    assert {k: got.get(k) for k in values} == values


def test_drop_reasons_are_all_of_cilium_1_19s() -> None:
    """130..205 without 159 (never assigned), plus 0 for "not a drop"."""
    numbers = {v.number for v in _enum("flow.DropReason").values}
    assert numbers == {0, *range(130, 159), *range(160, 206)}


def test_retired_numbers_stay_reserved() -> None:
    """Numbers Cilium removed must never be given to another field."""
    flow_desc = flow_pb2.Flow.DESCRIPTOR
    assert not {7, 12, 17, 18} & {f.number for f in flow_desc.fields}
    assert 2 not in {f.number for f in _message("observer.GetFlowsRequest").fields}
    assert not _message("observer.GetFlowsRequest.Experimental").fields
    assert not {1, 2, 3} & {v.number for v in _enum("flow.DebugCapturePoint").values}


@pytest.mark.parametrize(("path", "request_type", "response_type", "streams"), METHODS,
                         ids=[m[0] for m in METHODS])
def test_method(path: str, request_type: str, response_type: str, streams: bool) -> None:
    _, service, method = path.split("/")
    desc = POOL.FindServiceByName(service).methods_by_name[method]
    assert (desc.input_type.full_name, desc.output_type.full_name) == (request_type,
                                                                        response_type)
    assert (desc.server_streaming, desc.client_streaming) == (streams, False)


def test_the_services_have_exactly_these_methods() -> None:
    paths = [f"/{s.full_name}/{m.name}" for s in (POOL.FindServiceByName("observer.Observer"),
                                                   POOL.FindServiceByName("peer.Peer"))
             for m in s.methods]
    assert sorted(paths) == sorted(m[0] for m in METHODS)


class _Channel:
    """Records the method paths a generated stub binds, instead of calling anything."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []

    def unary_unary(self, path: str, **_: Any) -> None:
        self.paths.append(("unary", path))

    def unary_stream(self, path: str, **_: Any) -> None:
        self.paths.append(("stream", path))


def test_generated_stubs_call_the_same_paths() -> None:
    channel = _Channel()
    observer_pb2_grpc.ObserverStub(channel)
    peer_pb2_grpc.PeerStub(channel)
    assert sorted(channel.paths) == sorted(
        ("stream" if streams else "unary", path) for path, _, _, streams in METHODS)


# The model's enums are written in Hubble's numbers: they must agree with the schema.
MODEL_ENUMS = [
    (enums.Verdict, "flow.Verdict"), (enums.DropReason, "flow.DropReason"),
    (enums.ObservationPoint, "flow.TraceObservationPoint"),
    (enums.TraceReason, "flow.TraceReason"), (enums.TrafficDirection, "flow.TrafficDirection"),
]


@pytest.mark.parametrize(("model", "proto"), MODEL_ENUMS, ids=[p for _, p in MODEL_ENUMS])
def test_model_enums_use_hubbles_numbers(model: type[enum.IntEnum], proto: str) -> None:
    values = _enum(proto).values_by_name
    assert {m.name: int(m) for m in model} == {m.name: values[m.name].number for m in model}


def test_hubbles_loss_sources_have_hubbles_numbers() -> None:
    """Spyglass's own sources (100 and up) go out as numbers; Hubble's by name."""
    values = _enum("flow.LostEventSource").values_by_name
    assert set(values) == HUBBLE_LOST_SOURCES
    assert all(int(enums.LostEventSource[name]) == values[name].number for name in values)


# -- strict JSON -----------------------------------------------------------------------------

HUBBLE_FLOW = {
    "flow": {
        "time": "2026-01-01T00:00:00.000000001Z",
        "uuid": "6f4a3c1e-0b7d-4d7e-9c1a-2b3c4d5e6f70",
        "verdict": "FORWARDED",
        "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": 1, "destination_port": 80, "flags": {"SYN": True}}},
        "source": {"ID": 1, "identity": 2, "namespace": "a", "labels": ["k8s:app=x"],
                   "pod_name": "p"},
        "Type": "L3_L4",
        "node_name": "n",
        "event_type": {"type": 4},
        "is_reply": False,
        "trace_observation_point": "TO_ENDPOINT",
        "Summary": "TCP Flags: SYN",
    },
    "node_name": "n",
    "time": "2026-01-01T00:00:00.000000001Z",
}

HUBBLE_LOSS = {
    "lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "3", "cpu": 1},
    "node_name": "n",
    "time": "2026-01-01T00:00:00Z",
}


def _with(base: dict[str, Any], path: tuple[str, ...], value: Any) -> str:
    """`base` as JSON text with the key at `path` set to `value`."""
    out = json.loads(json.dumps(base))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(out)


def test_reads_a_hubble_flow() -> None:
    got = parse_get_flows_response(json.dumps(HUBBLE_FLOW))
    assert got.WhichOneof("response_types") == "flow"
    f = got.flow
    assert (f.time.seconds, f.time.nanos) == (1_767_225_600, 1)
    assert f.verdict == flow_pb2.FORWARDED and f.Type == flow_pb2.L3_L4
    assert f.IP.ipVersion == flow_pb2.IPv4 and f.IP.destination == "10.0.0.2"
    assert f.l4.WhichOneof("protocol") == "TCP"
    assert (f.l4.TCP.destination_port, f.l4.TCP.flags.SYN) == (80, True)
    assert list(f.source.labels) == ["k8s:app=x"] and f.source.pod_name == "p"
    assert f.event_type.type == 4
    assert f.HasField("is_reply") and f.is_reply.value is False  # known: not a reply
    assert f.trace_observation_point == flow_pb2.TO_ENDPOINT
    assert f.Summary == "TCP Flags: SYN" and got.node_name == "n"


def test_reads_a_hubble_loss() -> None:
    got = parse_get_flows_response(json.dumps(HUBBLE_LOSS))
    lost = got.lost_events
    assert got.WhichOneof("response_types") == "lost_events"
    assert lost.source == flow_pb2.PERF_EVENT_RING_BUFFER
    assert lost.num_events_lost == 3  # a uint64 is a string in proto3 JSON
    assert lost.HasField("cpu") and lost.cpu.value == 1  # an Int32Value is a bare number


def test_what_it_reads_writes_back_the_same() -> None:
    got = parse_get_flows_response(json.dumps(HUBBLE_FLOW))
    again = json_format.MessageToJson(got, preserving_proto_field_name=True)
    assert parse_get_flows_response(again) == got


def test_field_names_are_read_in_both_proto3_spellings() -> None:
    """Hubble writes the original names; the lowerCamelCase json_names read the same."""
    camel = json.loads(json.dumps(HUBBLE_FLOW))
    camel["flow"]["l4"] = {"TCP": {"sourcePort": 1, "destinationPort": 80,
                                   "flags": {"SYN": True}}}
    camel["flow"]["isReply"] = camel["flow"].pop("is_reply")
    camel["nodeName"] = camel.pop("node_name")
    assert parse_get_flows_response(json.dumps(camel)) == parse_get_flows_response(
        json.dumps(HUBBLE_FLOW))


@pytest.mark.parametrize(("text", "names"), [
    (_with(HUBBLE_FLOW, ("flow", "packets"), 3), "packets"),
    (_with(HUBBLE_FLOW, ("flow", "IP", "destination_xlated"), "10.244.0.3"),
     "destination_xlated"),
    (_with(HUBBLE_LOSS, ("lost_events", "cpu"), {"value": 1}), "cpu"),
    (_with(HUBBLE_FLOW, ("flow", "IP", "ip_version"), "IPv4"), "ip_version"),  # only ipVersion
    (_with(HUBBLE_FLOW, ("flow", "l4"), {"tcp": {}}), "tcp"),  # the oneof member is TCP
    (_with(HUBBLE_FLOW, ("flow", "verdict"), "ALLOWED"), "verdict"),
    (_with(HUBBLE_FLOW, ("flow", "source"), []), "source"),  # a message must be an object
    (_with(HUBBLE_FLOW, ("flow", "egress_allowed_by"), [["p"]]), "egress_allowed_by"),
    ('{"node_name": "a", "node_name": "b"}', "node_name"),  # duplicate key
    ('{"flow": {}, "lost_events": {}}', "response_types"),  # two members of the oneof
    ("[]", "not an object"),
    ("{", "JSON"),
], ids=["spyglass-packets", "old-destination-xlated", "wrapped-cpu", "ip_version", "tcp",
        "unknown-verdict", "source-array", "policy-array", "duplicate-key", "two-oneofs",
        "array", "truncated"])
def test_rejects_what_hubble_does_not_have(text: str, names: str) -> None:
    with pytest.raises(ValueError, match="not a Hubble GetFlowsResponse") as err:
        parse_get_flows_response(text)
    assert names in str(err.value)


def test_spyglass_exports_what_hubble_reads() -> None:
    """`observe -o json` lines (hubble_response) parse strictly; the raw API JSON does not."""
    full = event_to_response(flow(1, service_ip="10.96.0.10", service_port=80, packets=3,
                                  bytes=180), "node-a")
    got = parse_get_flows_response(json.dumps(hubble_response(full)))
    assert got.flow.uuid == full["flow"]["uuid"] and got.node_name == "node-a"
    with pytest.raises(ValueError, match="has no field named"):  # packets, service_address
        parse_get_flows_response(json.dumps(full))
    for source in enums.LostEventSource:
        loss = LostEvent(time_ns=1_764_000_000_000_000_000, source=source, num_events_lost=2,
                         cpu=1)
        got = parse_get_flows_response(json.dumps(hubble_response(event_to_response(loss, "n"))))
        assert (got.lost_events.source, got.lost_events.cpu.value) == (int(source), 1)
