"""Hubble's JSON lines, both ways: export for `hubble observe --input-file`, import from Hubble.

Hubble's exporter and `hubble observe -o json` write one GetFlowsResponse per
line: `{"flow": {...}, "node_name": ..., "time": ...}`. Lines that are not
flows (lost events, node status, agent events) are skipped and counted. A
flow from a newer Cilium may carry names Spyglass does not know (a new drop
reason, an L7 event type); those read as the UNKNOWN value instead of failing
the whole import, and are counted as `approximated` so nothing is hidden.
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from spyglass.model.enums import (
    DropReason,
    EventType,
    LostEventSource,
    ObservationPoint,
    PolicyMatchType,
    TraceReason,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Flow, format_time_ns
from spyglass.model.safeload import loads_json

#: Keys of Spyglass's flow JSON that Hubble's Flow message does not have.
SPYGLASS_ONLY_KEYS = ("packets", "bytes", "service_address")
#: Written by Spyglass before 0.2 (the backend of a translated flow); dropped if present.
SPYGLASS_ONLY_IP_KEYS = ("destination_xlated",)
#: Errors kept per import; the count says how many there were in all.
MAX_ERRORS = 20
#: How far past this host's clock an imported flow may be: another node's clock may run a
#: little ahead; a flow hours ahead is a wrong clock or time zone, and is refused.
MAX_FUTURE_NS = 3600 * 10**9

_NAMED: tuple[tuple[str, type[Any], str], ...] = (
    ("verdict", Verdict, "VERDICT_UNKNOWN"),
    ("drop_reason_desc", DropReason, "DROP_REASON_UNKNOWN"),
    ("trace_observation_point", ObservationPoint, "UNKNOWN_POINT"),
    ("trace_reason", TraceReason, "TRACE_REASON_UNKNOWN"),
    ("traffic_direction", TrafficDirection, "TRAFFIC_DIRECTION_UNKNOWN"),
)


#: LostEventSource names Hubble's enum has; Spyglass's own sources go out as their number
#: (proto3 enums are open, so a strict parser keeps an unknown number).
HUBBLE_LOST_SOURCES = frozenset(s.name for s in LostEventSource
                                if s <= LostEventSource.HUBBLE_RING_BUFFER)


def hubble_flow(flow: dict[str, Any]) -> dict[str, Any]:
    """A flow's JSON with what Spyglass adds to Hubble's Flow removed."""
    out = {k: v for k, v in flow.items() if k not in SPYGLASS_ONLY_KEYS}
    if isinstance(out.get("IP"), dict):
        out["IP"] = {k: v for k, v in out["IP"].items() if k not in SPYGLASS_ONLY_IP_KEYS}
    return out


def hubble_response(response: dict[str, Any]) -> dict[str, Any]:
    """A GetFlowsResponse from the API as Hubble's schema has it, so that a strict protobuf
    JSON parser (unknown fields rejected) reads it as `observer.GetFlowsResponse`: the
    flow without Spyglass's fields, a loss count as the string protojson writes for a
    uint64, and a loss source Hubble's enum lacks as its number."""
    out = dict(response)
    if isinstance(out.get("flow"), dict):
        out["flow"] = hubble_flow(out["flow"])
    lost = out.get("lost_events")
    if isinstance(lost, dict):
        lost = dict(lost)
        if "num_events_lost" in lost:
            lost["num_events_lost"] = str(lost["num_events_lost"])
        source = lost.get("source")
        if isinstance(source, str) and source not in HUBBLE_LOST_SOURCES:
            lost["source"] = int(LostEventSource[source])
        out["lost_events"] = lost
    return out


def export_line(response: dict[str, Any]) -> str | None:
    """A GetFlowsResponse from the API as one Hubble line; None for non-flow events."""
    flow = response.get("flow")
    if not isinstance(flow, dict):
        return None
    out = hubble_flow(flow)
    line = {"flow": out, "node_name": response.get("node_name", out.get("node_name", "")),
            "time": response.get("time", out.get("time"))}
    return json.dumps(line, separators=(",", ":"))


@dataclass
class ImportResult:
    """What an import read: flows, skipped non-flow lines, approximations and bad lines."""

    flows: list[Flow] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0
    approximated: int = 0
    error_count: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def add_error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((line, message))

    def error_text(self) -> str:
        shown = "; ".join(f"line {n}: {m}" for n, m in self.errors)
        more = (f" (and {self.error_count - len(self.errors)} more)"
                if self.error_count > len(self.errors) else "")
        return (f"{self.error_count} line(s) are not Hubble flow JSON: {shown}{more}. Each line "
                "must be one JSON object like {\"flow\": {...}, \"node_name\": ..., \"time\": "
                "...}, as written by Hubble's exporter or `hubble observe -o json`")


def _normalise(flow: dict[str, Any], response: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A copy `Flow.from_dict` accepts; True when unknown names were replaced."""
    d = dict(flow)
    approx = False
    if "time" not in d and "time" in response:
        d["time"] = response["time"]
    if not d.get("node_name") and response.get("node_name"):
        d["node_name"] = response["node_name"]
    for key, enum_cls, unknown in _NAMED:
        value = d.get(key)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                d[key] = enum_cls(value).name
                continue
            except ValueError:
                pass
        if not isinstance(value, str) or value not in enum_cls.__members__:
            d[key] = unknown
            approx = True
    if d.get("drop_reason_desc") == "DROP_REASON_UNKNOWN":
        d.pop("drop_reason_desc")
    et = d.get("event_type")
    if isinstance(et, dict):
        try:
            EventType(int(et.get("type", 0)))
        except (ValueError, TypeError):
            d["event_type"] = {"type": 0, "sub_type": 0}
            approx = True
    pmt = d.get("policy_match_type")
    if pmt is not None:
        try:
            PolicyMatchType(int(pmt))
        except (ValueError, TypeError):
            d["policy_match_type"] = 0
            approx = True
    if not d.get("uuid"):
        # Hubble before 1.14 had no uuid: derive one from the flow so a re-import matches.
        d["uuid"] = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL,
                                      json.dumps(flow, sort_keys=True, separators=(",", ":"))))
    return d, approx


def parse_line(text: str) -> tuple[Flow | None, bool]:
    """One line -> (flow, approximated); (None, False) for a non-flow event. Raises ValueError."""
    try:
        body = loads_json(text, what="the line")
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__}, not an object")
    flow = body.get("flow")
    if flow is None:
        if {"lost_events", "node_status", "agent_event", "debug_event"} & body.keys():
            return None, False
        if "time" in body and ("verdict" in body or "IP" in body):
            flow, body = body, {}  # a bare Flow object, one per line
        else:
            raise ValueError("no `flow` key (and not a lost/agent event either)")
    if not isinstance(flow, dict):
        raise ValueError("`flow` is not an object")
    if "time" not in flow and "time" not in body:
        raise ValueError("the flow has no `time`")
    d, approx = _normalise(flow, body)
    try:
        return Flow.from_dict(d), approx
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise ValueError(f"bad flow field ({type(exc).__name__}: {exc})") from None


def time_problem(time_ns: int, now_ns: int) -> str | None:
    """Why a flow's time cannot be imported, or None.

    The store's retention reads the time as a ClickHouse DateTime, which starts at
    1970; a time from the future is a clock or time-zone mistake, not history.
    """
    if time_ns < 0:
        return (f"the flow's time {format_time_ns(time_ns)} is before 1970-01-01, outside "
                "what the store holds (ClickHouse DateTime); fix the line's `time`")
    if time_ns > now_ns + MAX_FUTURE_NS:
        return (f"the flow's time {format_time_ns(time_ns)} is in the future (this host's clock "
                f"says {format_time_ns(now_ns)}); fix the clock of the node that wrote it, or "
                "the line's `time`")
    return None


def parse_lines(lines: Iterable[str], *, first_line: int = 1,
                now_ns: int | None = None) -> ImportResult:
    """Read every line; errors are collected with their line numbers, never raised.

    `now_ns` (default: the clock) bounds flow times: see `time_problem`.
    """
    now = time.time_ns() if now_ns is None else now_ns
    result = ImportResult()
    for n, raw in enumerate(lines, start=first_line):
        text = raw.strip()
        if not text:
            continue
        result.lines += 1
        try:
            flow, approx = parse_line(text)
        except ValueError as exc:
            result.add_error(n, str(exc))
            continue
        if flow is None:
            result.skipped += 1
            continue
        problem = time_problem(flow.time_ns, now)
        if problem:
            result.add_error(n, problem)
            continue
        result.flows.append(flow)
        result.approximated += approx
    return result


def chunks(lines: Iterable[str], size: int) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) in groups of `size`, for uploads in bounded requests."""
    batch: list[str] = []
    start = 1
    for n, line in enumerate(lines, start=1):
        if not batch:
            start = n
        batch.append(line)
        if len(batch) >= size:
            yield start, batch
            batch = []
    if batch:
        yield start, batch

