"""The printer renders Hubble's shapes exactly: golden strings per output format."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from spyglass.cli.printer import Printer, format_timestamp, identity_text
from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    PolicyMatchType,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import (
    Endpoint,
    Event,
    Flow,
    LostEvent,
    PolicyRef,
    Service,
    event_from_response,
    event_to_response,
)
from spyglass.model.hubble_json import hubble_response

T0 = 1_764_165_988_576_123_456  # Nov 26 14:06:28.576 UTC
TS = "Nov 26 14:06:28.576"
FRONT = Endpoint(ID=3, identity=4321, namespace="shop", pod_name="frontend-1")
CART = Endpoint(ID=5, identity=5678, namespace="shop", pod_name="cart-0")
DB = Endpoint(ID=6, identity=7777, namespace="shop", pod_name="db-0")
WORLD = Endpoint(identity=2)
HOST = Endpoint(identity=1)


def tcp(**kw: object) -> Flow:
    base: dict[str, object] = dict(
        time_ns=T0, protocol=Protocol.TCP, source_ip="10.244.0.2", destination_ip="10.244.0.3",
        source_port=35010, destination_port=8080, tcp_flags=0x02, source=FRONT,
        destination=CART, is_reply=False, observation_point=ObservationPoint.TO_ENDPOINT,
        node_name="node-a")
    base.update(kw)
    return Flow(**base)  # type: ignore[arg-type,unused-ignore]


SYN = tcp()
REPLY = tcp(source=CART, destination=FRONT, source_ip="10.244.0.3", destination_ip="10.244.0.2",
            source_port=8080, destination_port=35010, tcp_flags=0x12, is_reply=True)
UDP = Flow(time_ns=T0, protocol=Protocol.UDP, source_ip="10.244.0.2", destination_ip="8.8.8.8",
           source_port=5353, destination_port=53, source=FRONT, destination=WORLD,
           observation_point=ObservationPoint.TO_STACK)
ICMP = Flow(time_ns=T0, protocol=Protocol.ICMP, icmp_type=8, source_ip="10.244.0.2",
            destination_ip="10.244.0.3", source=FRONT, destination=CART, is_reply=False,
            observation_point=ObservationPoint.FROM_ENDPOINT, node_name="node-a")
FROM_WORLD = tcp(source=WORLD, source_ip="1.2.3.4", source_port=44444, destination_port=443)
FROM_HOST = tcp(source=HOST, source_ip="10.244.0.1", source_port=40000)
DROP = tcp(destination=DB, destination_ip="10.244.0.4", destination_port=5432,
           verdict=Verdict.DROPPED, drop_reason=DropReason.POLICY_DENIED,
           event_type=EventType.DROP, event_subtype=133,
           observation_point=ObservationPoint.UNKNOWN_POINT)
VERDICT = tcp(destination=DB, destination_ip="10.244.0.4", destination_port=5432,
              verdict=Verdict.DROPPED, event_type=EventType.POLICY_VERDICT,
              policy_match_type=PolicyMatchType.L3_L4,
              traffic_direction=TrafficDirection.INGRESS,
              ingress_denied_by=(PolicyRef("deny-db", "shop"),),
              observation_point=ObservationPoint.UNKNOWN_POINT)
ERRORED = tcp(destination=DB, destination_ip="10.244.0.4", destination_port=5432,
              verdict=Verdict.ERROR, event_type=EventType.POLICY_VERDICT,
              policy_match_type=PolicyMatchType.L3_L4,
              traffic_direction=TrafficDirection.INGRESS,
              observation_point=ObservationPoint.UNKNOWN_POINT)
ALLOWED = tcp(event_type=EventType.POLICY_VERDICT, policy_match_type=PolicyMatchType.ALL,
              traffic_direction=TrafficDirection.EGRESS,
              observation_point=ObservationPoint.UNKNOWN_POINT)
IPV6 = tcp(ip_version=6, source=Endpoint(identity=2), source_ip="fd00::1",
           destination=Endpoint(identity=2), destination_ip="fd00::2", destination_port=80)
TO_SERVICE = tcp(destination=Endpoint(identity=9000), destination_ip="10.96.0.10",
                 destination_port=80, destination_service=Service("cart", "shop"))
LOST = LostEvent(time_ns=T0, source=LostEventSource.HUBBLE_RING_BUFFER, num_events_lost=7)
LOST_CPU = LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                     num_events_lost=3, cpu=1)


def render(events: list[Event], output: str = "compact", **kw: Any) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=200, color_system=None, force_terminal=False)
    printer = Printer(output, console=console, **kw)  # type: ignore[arg-type,unused-ignore]
    for ev in events:
        printer.print(ev)
    printer.close()
    return buf.getvalue()


@pytest.mark.parametrize(("event", "kw", "line"), [
    pytest.param(SYN, {}, f"{TS}: shop/frontend-1:35010 (ID:4321) -> shop/cart-0:8080 (ID:5678) "
                 "to-endpoint FORWARDED (TCP Flags: SYN)", id="tcp-syn"),
    pytest.param(REPLY, {}, f"{TS}: shop/frontend-1:35010 (ID:4321) <- shop/cart-0:8080 "
                 "(ID:5678) to-endpoint FORWARDED (TCP Flags: SYN, ACK)", id="reply-swapped"),
    pytest.param(UDP, {}, f"{TS}: shop/frontend-1:5353 (ID:4321) <> 8.8.8.8:53 (world) "
                 "to-stack FORWARDED (UDP)", id="udp-reply-unknown"),
    pytest.param(ICMP, {}, f"{TS}: shop/frontend-1 (ID:4321) -> shop/cart-0 (ID:5678) "
                 "from-endpoint FORWARDED (ICMPv4 EchoRequest)", id="icmp"),
    pytest.param(FROM_WORLD, {}, f"{TS}: 1.2.3.4:44444 (world) -> shop/cart-0:443 (ID:5678) "
                 "to-endpoint FORWARDED (TCP Flags: SYN)", id="world"),
    pytest.param(FROM_HOST, {}, f"{TS}: 10.244.0.1:40000 (host) -> shop/cart-0:8080 (ID:5678) "
                 "to-endpoint FORWARDED (TCP Flags: SYN)", id="host"),
    pytest.param(DROP, {}, f"{TS}: shop/frontend-1:35010 (ID:4321) -> shop/db-0:5432 (ID:7777) "
                 "Policy denied DROPPED (TCP Flags: SYN)", id="policy-drop"),
    pytest.param(VERDICT, {}, f"{TS}: shop/frontend-1:35010 (ID:4321) -> shop/db-0:5432 "
                 "(ID:7777) policy-verdict:L3-L4 INGRESS DENIED (TCP Flags: SYN)",
                 id="policy-verdict-denied"),
    pytest.param(VERDICT, {"print_policy_names": True}, f"{TS}: shop/frontend-1:35010 (ID:4321) "
                 "-> shop/db-0:5432 (ID:7777) policy-verdict:L3-L4 INGRESS DENIED BY "
                 "shop/deny-db (NetworkPolicy) (TCP Flags: SYN)", id="policy-names"),
    pytest.param(ERRORED, {}, f"{TS}: shop/frontend-1:35010 (ID:4321) -> shop/db-0:5432 "
                 "(ID:7777) policy-verdict:L3-L4 INGRESS DENIED (TCP Flags: SYN)",
                 id="policy-verdict-error-reads-denied-as-in-hubble"),
    pytest.param(ALLOWED, {"print_policy_names": True}, f"{TS}: shop/frontend-1:35010 "
                 "(ID:4321) -> shop/cart-0:8080 (ID:5678) policy-verdict:all EGRESS ALLOWED "
                 "(TCP Flags: SYN)", id="policy-allowed-no-names"),
    pytest.param(IPV6, {}, f"{TS}: [fd00::1]:35010 (world) -> [fd00::2]:80 (world) "
                 "to-endpoint FORWARDED (TCP Flags: SYN)", id="ipv6"),
    pytest.param(TO_SERVICE, {}, f"{TS}: shop/frontend-1:35010 (ID:4321) -> shop/cart:80 "
                 "(ID:9000) to-endpoint FORWARDED (TCP Flags: SYN)", id="service-name"),
    pytest.param(SYN, {"print_node_name": True}, f"{TS} [node-a]: shop/frontend-1:35010 "
                 "(ID:4321) -> shop/cart-0:8080 (ID:5678) to-endpoint FORWARDED "
                 "(TCP Flags: SYN)", id="node-name"),
    pytest.param(LOST, {}, f"{TS}: EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 7", id="lost-event"),
    pytest.param(LOST_CPU, {}, f"{TS}: EVENTS LOST: PERF_EVENT_RING_BUFFER CPU(1) 3",
                 id="lost-event-cpu"),
    pytest.param(SYN, {"time_format": "RFC3339"}, "2025-11-26T14:06:28Z: shop/frontend-1:35010 "
                 "(ID:4321) -> shop/cart-0:8080 (ID:5678) to-endpoint FORWARDED "
                 "(TCP Flags: SYN)", id="rfc3339"),
])
def test_compact(event: Event, kw: dict[str, Any], line: str) -> None:
    assert render([event], **kw) == line + "\n"


def test_compact_lost_event_node_name_comes_from_the_response() -> None:
    buf = io.StringIO()
    printer = Printer("compact", console=Console(file=buf, color_system=None),
                      print_node_name=True)
    printer.print(LOST, node_name="node-b")
    assert buf.getvalue() == f"{TS} [node-b]: EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 7\n"


def test_dict() -> None:
    assert render([SYN, LOST], "dict") == (
        f"  TIMESTAMP: {TS}\n"
        "     SOURCE: shop/frontend-1:35010\n"
        "DESTINATION: shop/cart-0:8080\n"
        "       TYPE: to-endpoint\n"
        "    VERDICT: FORWARDED\n"
        "    SUMMARY: TCP Flags: SYN\n"
        "------------\n"
        f"  TIMESTAMP: {TS}\n"
        "     SOURCE: HUBBLE_RING_BUFFER\n"
        "       TYPE: EVENTS LOST\n"
        "    VERDICT: \n"
        "    SUMMARY: CPU(0) - 7\n"
    )


def test_dict_node_name() -> None:
    assert render([DROP], "dict", print_node_name=True) == (
        f"  TIMESTAMP: {TS}\n"
        "       NODE: node-a\n"
        "     SOURCE: shop/frontend-1:35010\n"
        "DESTINATION: shop/db-0:5432\n"
        "       TYPE: Policy denied\n"
        "    VERDICT: DROPPED\n"
        "    SUMMARY: TCP Flags: SYN\n"
    )


def test_table_aligns_at_close() -> None:
    assert render([SYN, UDP, LOST], "table") == (
        "TIMESTAMP             SOURCE                  DESTINATION        TYPE          "
        "VERDICT     SUMMARY\n"
        f"{TS}   shop/frontend-1:35010   shop/cart-0:8080   to-endpoint   "
        "FORWARDED   TCP Flags: SYN\n"
        f"{TS}   shop/frontend-1:5353    8.8.8.8:53         to-stack      "
        "FORWARDED   UDP\n"
        f"{TS}   HUBBLE_RING_BUFFER                         EVENTS LOST               "
        "CPU(0) - 7\n"
    )


def test_table_node_name_column() -> None:
    assert render([ICMP], "table", print_node_name=True) == (
        "TIMESTAMP             NODE     SOURCE            DESTINATION   TYPE            "
        "VERDICT     SUMMARY\n"
        f"{TS}   node-a   shop/frontend-1   shop/cart-0   from-endpoint   "
        "FORWARDED   ICMPv4 EchoRequest\n"
    )


def test_table_follow_streams_rows_and_widens() -> None:
    # Each row is printed at once; columns only ever widen, so earlier rows stay put.
    assert render([ICMP, SYN], "table", follow=True) == (
        "TIMESTAMP             SOURCE            DESTINATION   TYPE            "
        "VERDICT     SUMMARY\n"
        f"{TS}   shop/frontend-1   shop/cart-0   from-endpoint   "
        "FORWARDED   ICMPv4 EchoRequest\n"
        f"{TS}   shop/frontend-1:35010   shop/cart-0:8080   to-endpoint     "
        "FORWARDED   TCP Flags: SYN\n"
    )


def test_empty_table_prints_nothing() -> None:
    assert render([], "table") == ""


@pytest.mark.parametrize("output", [pytest.param("json", id="json"),
                                    pytest.param("jsonpb", id="jsonpb")])
def test_json_lines_round_trip(output: str) -> None:
    """-o json is Hubble's response; with Spyglass's fields it reads back exactly."""
    events: list[Event] = [SYN, REPLY, DROP, LOST]
    want = [event_to_response(ev, ev.node_name if isinstance(ev, Flow) else "")
            for ev in events]
    lines = render(events, output).splitlines()
    assert [json.loads(line) for line in lines] == [hubble_response(r) for r in want]
    full = render(events, output, spyglass_fields=True).splitlines()
    assert [json.loads(line) for line in full] == want
    assert [event_from_response(json.loads(line)) for line in full] == events


@pytest.mark.parametrize(("layout", "text"), [
    pytest.param("StampMilli", "Nov 26 14:06:28.576", id="stamp-milli"),
    pytest.param("Stamp", "Nov 26 14:06:28", id="stamp"),
    pytest.param("StampMicro", "Nov 26 14:06:28.576123", id="stamp-micro"),
    pytest.param("StampNano", "Nov 26 14:06:28.576123456", id="stamp-nano"),
    pytest.param("RFC3339", "2025-11-26T14:06:28Z", id="rfc3339"),
    pytest.param("RFC3339Milli", "2025-11-26T14:06:28.576Z", id="rfc3339-milli"),
    pytest.param("RFC3339Nano", "2025-11-26T14:06:28.576123456Z", id="rfc3339-nano"),
    pytest.param("RFC1123Z", "Wed, 26 Nov 2025 14:06:28 +0000", id="rfc1123z"),
])
def test_time_formats(layout: str, text: str) -> None:
    assert format_timestamp(T0, layout) == text


@pytest.mark.parametrize(("ns", "layout", "text"), [
    pytest.param(1_764_000_000_100_000_000, "RFC3339Milli", "2025-11-24T16:00:00.1Z",
                 id="go-trims-trailing-zeros"),
    pytest.param(1_764_000_000_000_000_000, "RFC3339Nano", "2025-11-24T16:00:00Z",
                 id="go-drops-empty-fraction"),
    pytest.param(1_762_300_800_005_000_000, "StampMilli", "Nov  5 00:00:00.005",
                 id="day-space-padded"),
])
def test_time_format_edges(ns: int, layout: str, text: str) -> None:
    assert format_timestamp(ns, layout) == text


@pytest.mark.parametrize(("identity", "text"), [
    pytest.param(0, "(ID:0)", id="unknown"),
    pytest.param(1, "(host)", id="host"),
    pytest.param(2, "(world)", id="world"),
    pytest.param(6, "(remote-node)", id="remote-node"),
    pytest.param(123456, "(ID:123456)", id="cluster-local"),
])
def test_identity_text(identity: int, text: str) -> None:
    assert identity_text(identity) == text


def test_color_always_styles_verdict_and_names() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True, color_system="standard")
    printer = Printer("compact", color="always", console=console)
    printer.print(SYN)
    printer.print(DROP)
    out = buf.getvalue()
    assert "\x1b[32mFORWARDED\x1b[0m" in out
    assert "\x1b[31mDROPPED\x1b[0m" in out
    assert "\x1b[36mshop/frontend-1\x1b[0m" in out
    assert "\x1b[35m(ID:4321)\x1b[0m" in out


def test_color_never_on_a_terminal_is_plain() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True, color_system="standard")
    Printer("compact", color="never", console=console).print(SYN)
    assert "\x1b" not in buf.getvalue()


@pytest.mark.parametrize(("kw", "message"), [
    pytest.param({"output": "yaml"}, "unknown output 'yaml': use one of compact, dict, json, "
                 "jsonpb, table", id="output"),
    pytest.param({"color": "sometimes"}, "unknown color mode 'sometimes': use one of auto, "
                 "always, never", id="color"),
    pytest.param({"time_format": "Kitchen"}, "unknown time format 'Kitchen': use one of "
                 "StampMilli, Stamp, StampMicro, StampNano, RFC3339, RFC3339Milli, "
                 "RFC3339Micro, RFC3339Nano, RFC1123Z", id="time-format"),
])
def test_bad_options_say_what_is_valid(kw: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Printer(**kw)  # type: ignore[arg-type,unused-ignore]
    assert str(err.value) == message
