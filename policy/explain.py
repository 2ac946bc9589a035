"""`spyglass explain`: why the current policy allows or drops a flow, and what would allow it.

It asks the same `PolicyTable` (built from the same CompiledPolicy the maps were loaded
from) the same two questions the datapath asks: egress at the source, then ingress at the
destination. So the answer is what the datapath does, not a second reading of the YAML.
`render()` is the CLI's text (its wording is tested exactly); `to_dict()` is the JSON of
GET /api/v1/explain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spyglass.model.enums import DROP_REASON_TEXT, POLICY_MATCH_TEXT, Protocol, Verdict
from spyglass.model.policy import Direction, RuleRef
from spyglass.policy.model import PROTO_NAMES, PROTO_NUMBERS
from spyglass.policy.suggest import (
    Suggestion,
    policy_display,
    rule_dict,
    rule_name,
    suggest,
)
from spyglass.policy.table import Decision, PolicyTable

__all__ = ["DirectionReport", "Explanation", "PodEndpoint", "explain", "suggest"]


@dataclass(frozen=True)
class PodEndpoint:
    """A flow's end: a pod (identity, labels, namespace, name) or, with only `ip`, an address."""

    identity: int
    labels: tuple[str, ...] = ()
    namespace: str = ""
    name: str = ""
    ip: str = ""

    @property
    def is_pod(self) -> bool:
        return bool(self.name)

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}" if self.is_pod else self.ip

    def to_dict(self) -> dict[str, Any]:
        if not self.is_pod:
            return {"ip": self.ip, "identity": self.identity}
        return {"namespace": self.namespace, "pod_name": self.name, "identity": self.identity,
                "labels": list(self.labels), **({"ip": self.ip} if self.ip else {})}


@dataclass(frozen=True)
class DirectionReport:
    """One direction's answer at one endpoint."""

    direction: Direction
    endpoint: PodEndpoint
    decision: Decision
    selected_by: tuple[RuleRef, ...]
    matched: RuleRef | None  # the allow or deny rule whose entry matched

    @property
    def verdict(self) -> Verdict:
        if not self.decision.allowed:
            return Verdict.DROPPED
        return Verdict.AUDIT if self.decision.audited else Verdict.FORWARDED

    def headline(self) -> str:
        where = f"{self.direction.name.capitalize()} at {self.endpoint.display}"
        reason = DROP_REASON_TEXT.get(self.decision.reason, "") if self.decision.reason else ""
        if self.verdict is Verdict.DROPPED:
            return f"{where}: DROPPED ({reason})"
        if self.verdict is Verdict.AUDIT:
            return f"{where}: AUDIT (would be dropped: {reason})"
        return f"{where}: ALLOWED"

    def statement(self, *, short: bool = False) -> str:
        """The plain-words reason: not enforced, the matching rule, or the default deny.

        `short` leaves out the selecting policies (render() lists them just above)."""
        d = self.decision
        direction = self.direction.name.lower()
        if not d.enforced:
            return (f"No policy selects {self.endpoint.display} for {direction}: "
                    f"{direction} is not enforced.")
        match = POLICY_MATCH_TEXT[d.match_type]
        if self.matched is not None and self.matched.deny:
            return f"Denied by {policy_display(self.matched)}, {rule_name(self.matched)} ({match})."
        if self.matched is not None:
            return (f"Allowed by {policy_display(self.matched)}, {rule_name(self.matched)} "
                    f"({match}).")
        if short:
            return "Nothing allows this traffic, so the default deny of the policies above applies."
        names = ", ".join(policy_display(r) for r in self.selected_by)
        return (f"Nothing allows this traffic: default deny applies ({self.endpoint.display} "
                f"is selected for {direction} by {names}).")

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        matched = [rule_dict(self.matched)] if self.matched is not None else []
        return {
            "traffic_direction": self.direction.name,
            "endpoint": self.endpoint.to_dict(),
            "enforced": d.enforced,
            "verdict": self.verdict.name,
            "drop_reason_desc": d.reason.name if d.reason is not None else None,
            "match_type": POLICY_MATCH_TEXT[d.match_type],
            "cookie": d.cookie,
            "audited": d.audited,
            "selected_by": [_policy_dict(r) for r in self.selected_by],
            "allowed_by": [] if self.matched is None or self.matched.deny else matched,
            "denied_by": matched if self.matched is not None and self.matched.deny else [],
            "statement": self.statement(),
        }


@dataclass(frozen=True)
class Explanation:
    source: PodEndpoint
    destination: PodEndpoint
    proto: int
    port: int
    egress: DirectionReport
    ingress: DirectionReport | None  # None when the destination is not a pod
    suggestion: Suggestion | None = None

    @property
    def reports(self) -> tuple[DirectionReport, ...]:
        return (self.egress,) if self.ingress is None else (self.egress, self.ingress)

    @property
    def verdict(self) -> Verdict:
        verdicts = {r.verdict for r in self.reports}
        for v in (Verdict.DROPPED, Verdict.AUDIT):
            if v in verdicts:
                return v
        return Verdict.FORWARDED

    @property
    def drop_reason(self) -> Any:
        """The first denying direction's reason (egress is checked first, at the source)."""
        return next((r.decision.reason for r in self.reports if r.decision.reason), None)

    def flow_text(self) -> str:
        proto = PROTO_NAMES.get(self.proto) or _proto_text(self.proto)
        l4 = f"{proto}/{self.port}" if self.proto in PROTO_NAMES and self.port else proto
        return (f"{self.source.display} (ID:{self.source.identity}) -> "
                f"{self.destination.display} (ID:{self.destination.identity}) {l4}")

    def render(self) -> str:
        head = self.verdict.name
        if self.drop_reason is not None:
            reason = DROP_REASON_TEXT[self.drop_reason]
            head += f" ({reason})" if self.verdict is Verdict.DROPPED else \
                f" (would be dropped: {reason})"
        lines = [f"Verdict: {head}", f"Flow: {self.flow_text()}", ""]
        for r in self.reports:
            lines.append(r.headline())
            if r.selected_by:
                lines.append("  Selected by: " + ", ".join(policy_display(p)
                                                           for p in r.selected_by))
            lines.append(f"  {r.statement(short=True)}")
        if self.ingress is None:
            lines.append(f"Ingress: not checked: {self.destination.display} is not a pod.")
        s = self.suggestion
        if s is not None and s.deny_rules:
            lines += ["", s.note, "To let this traffic through, change or delete:"]
            lines += [f"  {policy_display(r)} ({rule_name(r)})" for r in s.deny_rules]
        elif s is not None:
            lines += ["", f"To allow exactly this traffic, save this as {s.filename}:", ""]
            lines += s.yaml.rstrip("\n").splitlines()
            lines += ["", "and apply it with:", f"  {s.command}"]
            if s.note:
                lines += [f"Note: {s.note}"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.name,
            "drop_reason_desc": self.drop_reason.name if self.drop_reason else None,
            "source": self.source.to_dict(),
            "destination": self.destination.to_dict(),
            "protocol": PROTO_NAMES.get(self.proto) or _proto_text(self.proto),
            "port": self.port,
            "egress": self.egress.to_dict(),
            "ingress": self.ingress.to_dict() if self.ingress is not None else None,
            "suggestion": self.suggestion.to_dict() if self.suggestion is not None else None,
        }


def _proto_text(proto: int) -> str:
    try:
        return str(Protocol(proto).name)
    except ValueError:
        return f"proto {proto}"


def _policy_dict(ref: RuleRef) -> dict[str, str]:
    return {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name}


def parse_proto(proto: int | str) -> int:
    """"tcp", "TCP", 6 -> 6; a clear error for anything else."""
    if isinstance(proto, int):
        return proto
    text = proto.strip().upper()
    if text in PROTO_NUMBERS:
        return int(PROTO_NUMBERS[text])
    if text in ("ICMP", "ICMPV6"):
        return int(Protocol[text])
    if text.isdigit():
        return int(text)
    raise ValueError(f"unknown protocol {proto!r}: use tcp, udp, sctp, icmp or a number")


def _report(table: PolicyTable, direction: Direction, local: PodEndpoint, remote: int,
            proto: int, port: int) -> DirectionReport:
    d = table.lookup(local.identity, direction, remote, proto, port)
    selected = table.compiled.selected.get((local.identity, direction))
    selected_by = table.refs(selected) if selected is not None else ()
    matched = None
    if d.key is not None:
        refs = table.refs(d.cookie)
        matched = refs[0] if refs else None
    return DirectionReport(direction, local, d, selected_by, matched)


def explain(table: PolicyTable, src: PodEndpoint, dst: PodEndpoint, port: int,
            proto: int | str, *, format: str = "kubernetes") -> Explanation:
    """Egress at `src`, then ingress at `dst` (when it is a pod), and a suggestion if denied.

    For an address, give `dst` with `ip` and the identity the ipcache resolves it to
    (`table.resolve_remote`).
    """
    if not src.is_pod:
        raise ValueError("explain needs a pod as the source: give --from NAMESPACE/POD")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is out of range: use 0..65535")
    number = parse_proto(proto)
    egress = _report(table, Direction.EGRESS, src, dst.identity, number, port)
    ingress = _report(table, Direction.INGRESS, dst, src.identity, number, port) \
        if dst.is_pod else None
    ex = Explanation(src, dst, number, port, egress, ingress)
    return Explanation(src, dst, number, port, egress, ingress, suggest(ex, format))
