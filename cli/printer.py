"""Turn flow events into terminal text, the way `hubble observe` prints them.

The printer is separate from the commands so that the same code renders live
streams, history and tests, and so that its output is testable as exact text:
tests hand it a colourless fixed-width `rich` console and compare strings.
Shapes, words and spacing follow Hubble's printer (compact line, dict blocks,
tab-aligned table, one GetFlowsResponse JSON per line) so that people's eyes
and scripts carry over. The dashboard writes the same words (ui/static/js/flowfmt.js);
tests/fixtures/flow_text.json holds the expected texts, and one test per side reads it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from rich.console import Console
from rich.text import Text

from spyglass.model.enums import (
    POLICY_MATCH_TEXT,
    TRACE_SUBTYPE_TO_POINT,
    EventType,
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
    event_to_response,
)
from spyglass.model.hubble_json import hubble_response

Output = Literal["compact", "dict", "json", "jsonpb", "table"]
ColorMode = Literal["auto", "always", "never"]
OUTPUTS: tuple[str, ...] = ("compact", "dict", "json", "jsonpb", "table")
COLOR_MODES: tuple[str, ...] = ("auto", "always", "never")

#: Cilium's reserved identity names, printed as `(world)` instead of `(ID:2)`.
RESERVED_IDENTITY_NAMES: dict[int, str] = {
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
    8: "ingress",
    9: "world-ipv4",
    10: "world-ipv6",
}

# Styles as Hubble colours them: hosts cyan, ports yellow, identities magenta,
# verdicts green / red / yellow.
_HOST, _PORT, _IDENTITY = "cyan", "yellow", "magenta"
_VERDICT_STYLE: dict[Verdict, str] = {
    Verdict.FORWARDED: "green",
    Verdict.REDIRECTED: "green",
    Verdict.DROPPED: "red",
    Verdict.ERROR: "red",
    Verdict.AUDIT: "yellow",
    Verdict.TRACED: "yellow",
    Verdict.TRANSLATED: "yellow",
}
_PORTED = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)

DICT_SEPARATOR = "------------"
TABLE_PADDING = 3
TABLE_HEADER = ("TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

#: Hubble's `--time-format` names (Go layout names). Times are printed in UTC,
#: as Hubble prints a protobuf Timestamp.
TIME_FORMATS: tuple[str, ...] = (
    "StampMilli", "Stamp", "StampMicro", "StampNano",
    "RFC3339", "RFC3339Milli", "RFC3339Micro", "RFC3339Nano", "RFC1123Z",
)


def format_timestamp(ns: int, layout: str = "StampMilli") -> str:
    """Format epoch nanoseconds with a Go layout name, e.g. `Nov 26 14:06:28.576`."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = dt.datetime.fromtimestamp(secs, tz=dt.UTC)
    clock = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    stamp = f"{_MONTHS[t.month - 1]} {t.day:>2} {clock}"
    date = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{clock}"
    digits = f"{frac:09d}"
    if layout == "StampMilli":
        return f"{stamp}.{digits[:3]}"
    if layout == "Stamp":
        return stamp
    if layout == "StampMicro":
        return f"{stamp}.{digits[:6]}"
    if layout == "StampNano":
        return f"{stamp}.{digits}"
    if layout == "RFC3339":
        return f"{date}Z"
    if layout in ("RFC3339Milli", "RFC3339Micro", "RFC3339Nano"):
        # Go's ".999" layouts drop trailing zeros (and the dot when nothing is left).
        keep = {"RFC3339Milli": 3, "RFC3339Micro": 6, "RFC3339Nano": 9}[layout]
        trimmed = digits[:keep].rstrip("0")
        return f"{date}.{trimmed}Z" if trimmed else f"{date}Z"
    if layout == "RFC1123Z":
        return (f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
                f"{clock} +0000")
    raise ValueError(
        f"unknown time format {layout!r}: use one of {', '.join(TIME_FORMATS)}"
    )


def identity_text(identity: int) -> str:
    """`(world)` for reserved identities, `(ID:1234)` otherwise, like Hubble."""
    name = RESERVED_IDENTITY_NAMES.get(identity)
    return f"({name})" if name else f"(ID:{identity})"


def host_name(ip: str, ep: Endpoint, svc: Service | None) -> str:
    """The name Hubble shows for one side: `ns/pod`, else `ns/service`, else the IP."""
    if ep.pod_name:
        return f"{ep.namespace}/{ep.pod_name}" if ep.namespace else ep.pod_name
    if svc is not None and svc.name:
        return f"{svc.namespace}/{svc.name}" if svc.namespace else svc.name
    return ip


def flow_type(f: Flow) -> str:
    """Hubble's TYPE column: the observation point, the drop reason, or the policy match."""
    if f.event_type == EventType.TRACE:
        point = f.observation_point or TRACE_SUBTYPE_TO_POINT.get(f.event_subtype)
        return point.name.lower().replace("_", "-") if point else str(f.event_subtype)
    if f.event_type == EventType.DROP:
        return f.drop_reason_text if f.drop_reason else "Unknown drop reason"
    if f.event_type == EventType.POLICY_VERDICT:
        match = POLICY_MATCH_TEXT.get(PolicyMatchType(f.policy_match_type), "none")
        return f"policy-verdict:{match} {TrafficDirection(f.traffic_direction).name}"
    return "UNKNOWN"


def verdict_text(f: Flow) -> str:
    """The verdict word; policy-verdict events say ALLOWED / DENIED / AUDITED as in Hubble.

    Hubble counts an ERROR verdict of a policy-verdict event as DENIED too (`getVerdict`).
    """
    if f.event_type == EventType.POLICY_VERDICT:
        if f.verdict in (Verdict.FORWARDED, Verdict.REDIRECTED):
            return "ALLOWED"
        if f.verdict in (Verdict.DROPPED, Verdict.ERROR):
            return "DENIED"
        if f.verdict == Verdict.AUDIT:
            return "AUDITED"
    return str(Verdict(f.verdict).name)


def policy_names(f: Flow) -> str:
    """` BY name (kind)` for the policies behind the verdict, or "" when none are known."""
    denied = f.verdict in (Verdict.DROPPED, Verdict.AUDIT)
    if f.traffic_direction == TrafficDirection.EGRESS:
        refs = f.egress_denied_by if denied else f.egress_allowed_by
    elif f.traffic_direction == TrafficDirection.INGRESS:
        refs = f.ingress_denied_by if denied else f.ingress_allowed_by
    else:
        refs = (f.ingress_denied_by + f.egress_denied_by if denied
                else f.ingress_allowed_by + f.egress_allowed_by)
    return " BY " + ", ".join(_policy_ref(p) for p in refs) if refs else ""


def _policy_ref(p: PolicyRef) -> str:
    name = f"{p.namespace}/{p.name}" if p.namespace else p.name
    return f"{name} ({p.kind})" if p.kind else name


class Printer:
    """Writes events to a console in one of Hubble's output formats.

    Table output either collects rows and aligns them at `close()` (history),
    or, with `follow=True`, prints the header at once and each row as it comes,
    widening columns as longer values appear (a live stream never ends, so it
    cannot be aligned after the fact).
    """

    def __init__(
        self,
        output: Output | str = "compact",
        *,
        color: ColorMode | str = "auto",
        console: Console | None = None,
        time_format: str = "StampMilli",
        print_node_name: bool = False,
        print_policy_names: bool = False,
        follow: bool = False,
        spyglass_fields: bool = False,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}: use one of {', '.join(OUTPUTS)}")
        if color not in COLOR_MODES:
            raise ValueError(f"unknown color mode {color!r}: use one of auto, always, never")
        format_timestamp(0, time_format)  # fail now, not at the first flow
        self.output = "json" if output == "jsonpb" else output
        self.time_format = time_format
        self.print_node_name = print_node_name
        self.print_policy_names = print_policy_names
        self.follow = follow
        #: json only: keep what Spyglass adds to Hubble's schema (packets, bytes, the
        #: translated destination, its own loss sources by name).
        self.spyglass_fields = spyglass_fields
        if console is None:
            console = Console(
                force_terminal=True if color == "always" else None,
                no_color=color == "never",
                highlight=False,
                soft_wrap=True,
            )
        self.console = console
        self._styled = color != "never" and console.color_system is not None
        self._count = 0
        self._rows: list[list[Text]] = []
        self._widths: list[int] = []

    # -- public ---------------------------------------------------------------

    def print(self, ev: Event, node_name: str | None = None) -> None:
        """Print one event; `node_name` is the response's node (flows carry their own)."""
        node = node_name if node_name is not None else (
            ev.node_name if isinstance(ev, Flow) else "")
        if self.output == "json":
            self.print_response(event_to_response(ev, node))
            return
        if self.output == "compact":
            self._emit(self._compact(ev, node))
        elif self.output == "dict":
            self._dict(ev, node)
        else:
            self._table_row(self._row(ev, node))
        self._count += 1

    def print_response(self, body: dict[str, Any]) -> None:
        """Print a GetFlowsResponse from the server (`-o json` only): Hubble's JSON, which a
        strict parser reads as `observer.GetFlowsResponse`, or with Spyglass's fields."""
        if self.output != "json":
            raise ValueError(f"a response is printed as it is only in json output, not "
                             f"{self.output}")
        out = body if self.spyglass_fields else hubble_response(body)
        self._emit(Text(json.dumps(out, separators=(",", ":"))))
        self._count += 1

    def close(self) -> None:
        """Flush what is buffered (the aligned table); safe to call more than once."""
        if self.output == "table" and not self.follow and self._rows:
            widths = _column_widths([self._header(), *self._rows])
            for row in [self._header(), *self._rows]:
                self._emit(_align(row, widths))
            self._rows = []

    # -- formats --------------------------------------------------------------

    def _compact(self, ev: Event, node: str) -> Text:
        prefix = self._time(ev.time_ns)
        if self.print_node_name:
            prefix += f" [{node}]"
        line = Text(prefix + ": ")
        if isinstance(ev, LostEvent):
            line.append("EVENTS LOST:", style=self._s("red"))
            line.append(f" {ev.source.name} CPU({ev.cpu or 0}) {ev.num_events_lost}")
            return line
        src, dst = self._side(ev, True), self._side(ev, False)
        src_id, dst_id = identity_text(ev.source.identity), identity_text(ev.destination.identity)
        arrow = "->"
        if ev.is_reply is None:
            arrow = "<>"
        elif ev.is_reply:
            src, dst, src_id, dst_id, arrow = dst, src, dst_id, src_id, "<-"
        line.append_text(src)
        line.append(" ")
        line.append(src_id, style=self._s(_IDENTITY))
        line.append(f" {arrow} ")
        line.append_text(dst)
        line.append(" ")
        line.append(dst_id, style=self._s(_IDENTITY))
        line.append(f" {flow_type(ev)} ")
        line.append_text(self._verdict(ev))
        line.append(f" ({ev.summary})")
        return line

    def _dict(self, ev: Event, node: str) -> None:
        if self._count:
            self._emit(Text(DICT_SEPARATOR))
        fields: list[tuple[str, Text | str]] = [("TIMESTAMP", self._time(ev.time_ns))]
        if self.print_node_name:
            fields.append(("NODE", node))
        if isinstance(ev, LostEvent):
            fields += [("SOURCE", ev.source.name), ("TYPE", "EVENTS LOST"), ("VERDICT", ""),
                       ("SUMMARY", f"CPU({ev.cpu or 0}) - {ev.num_events_lost}")]
        else:
            fields += [("SOURCE", self._side(ev, True)), ("DESTINATION", self._side(ev, False)),
                       ("TYPE", flow_type(ev)), ("VERDICT", self._verdict(ev)),
                       ("SUMMARY", ev.summary)]
        for key, value in fields:
            line = Text(f"{key:>11}: ")
            line.append_text(value if isinstance(value, Text) else Text(value))
            self._emit(line)

    def _row(self, ev: Event, node: str) -> list[Text]:
        cells = [Text(self._time(ev.time_ns))]
        if self.print_node_name:
            cells.append(Text(node))
        if isinstance(ev, LostEvent):
            cells += [Text(ev.source.name), Text(""), Text("EVENTS LOST"), Text(""),
                      Text(f"CPU({ev.cpu or 0}) - {ev.num_events_lost}")]
        else:
            cells += [self._side(ev, True), self._side(ev, False), Text(flow_type(ev)),
                      self._verdict(ev), Text(ev.summary)]
        return cells

    def _header(self) -> list[Text]:
        names = list(TABLE_HEADER)
        if self.print_node_name:
            names.insert(1, "NODE")
        return [Text(n) for n in names]

    def _table_row(self, row: list[Text]) -> None:
        if not self.follow:
            self._rows.append(row)
            return
        if not self._widths:
            header = self._header()
            self._widths = _column_widths([header, row])
            self._emit(_align(header, self._widths))
        self._widths = [max(w, c.cell_len) for w, c in zip(self._widths, row, strict=True)]
        self._emit(_align(row, self._widths))

    # -- pieces ---------------------------------------------------------------

    def _time(self, ns: int) -> str:
        return format_timestamp(ns, self.time_format)

    def _side(self, f: Flow, source: bool) -> Text:
        if source:
            ip, ep, svc, port = f.source_ip, f.source, f.source_service, f.source_port
        else:
            ip, ep, svc, port = (f.destination_ip, f.destination, f.destination_service,
                                 f.destination_port)
        host = host_name(ip, ep, svc)
        text = Text()
        if port and f.protocol in _PORTED:
            text.append(f"[{host}]" if ":" in host else host, style=self._s(_HOST))
            text.append(":")
            text.append(str(port), style=self._s(_PORT))
        else:
            text.append(host, style=self._s(_HOST))
        return text

    def _verdict(self, f: Flow) -> Text:
        text = Text(verdict_text(f), style=self._s(_VERDICT_STYLE.get(Verdict(f.verdict), "")))
        if self.print_policy_names:
            text.append(policy_names(f))
        return text

    def _s(self, style: str) -> str:
        return style if self._styled else ""

    def _emit(self, line: Text) -> None:
        if not self._styled:
            # Plain text needs no rendering: write it straight through, which keeps
            # `observe -f` cheap at thousands of flows per second.
            self.console.file.write(line.plain + "\n")
            return
        self.console.print(line, soft_wrap=True, highlight=False, markup=False, emoji=False)


def _column_widths(rows: list[list[Text]]) -> list[int]:
    return [max(cell.cell_len for cell in column) for column in zip(*rows, strict=True)]


def _align(row: list[Text], widths: list[int]) -> Text:
    """Pad every cell but the last to its column width plus Hubble's three spaces."""
    out = Text()
    for i, cell in enumerate(row):
        out.append_text(cell)
        if i < len(row) - 1:
            out.append(" " * (widths[i] - cell.cell_len + TABLE_PADDING))
    return out
