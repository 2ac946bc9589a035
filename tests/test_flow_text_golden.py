"""The CLI printer writes every flow of tests/fixtures/flow_text.json exactly as the fixture says.

The same fixture drives the dashboard's test (tests/ui/test_flowfmt_golden.py), so the two
cannot drift apart: a text changes in the fixture, and then on both sides. Here no kernel and
no browser are needed, only the printer and a fixed-width colourless console.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spyglass.cli.printer import Printer, format_timestamp, identity_text, policy_names
from spyglass.model.flow import Flow, event_from_response, event_to_response

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "flow_text.json"
DOC: dict[str, Any] = json.loads(FIXTURE.read_text())
CASES: list[dict[str, Any]] = DOC["cases"]
#: The dict output's labels for the fixture's fields they show.
DICT_FIELDS = {"SOURCE": "source", "DESTINATION": "destination", "TYPE": "type",
               "VERDICT": "verdict", "SUMMARY": "summary"}


def _flow(case: dict[str, Any]) -> Flow:
    ev = event_from_response(case["response"])
    assert isinstance(ev, Flow)
    return ev


def _render(flow: Flow, output: str, **kw: Any) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None, force_terminal=False)
    printer = Printer(output, console=console, **kw)
    printer.print(flow)
    printer.close()
    return buf.getvalue()


def _params() -> list[Any]:
    return [pytest.param(c, id=c["name"]) for c in CASES]


def test_the_fixture_documents_every_field_it_uses() -> None:
    # A field nobody described would be a text nobody knows the owner of.
    fields = set(DOC["fields"])
    assert all(set(c["expect"]) == fields for c in CASES), [
        (c["name"], sorted(set(c["expect"]) ^ fields)) for c in CASES
        if set(c["expect"]) != fields]
    assert len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_the_response_is_what_the_api_sends(case: dict[str, Any]) -> None:
    # The dashboard reads the fixture's JSON as is, so it must be the API's exact shape.
    resp = case["response"]
    assert event_to_response(_flow(case), resp["node_name"]) == resp


@pytest.mark.parametrize("case", _params())
def test_compact_line(case: dict[str, Any]) -> None:
    assert _render(_flow(case), "compact") == case["expect"]["compact"] + "\n"


@pytest.mark.parametrize("case", _params())
def test_compact_line_with_policy_names(case: dict[str, Any]) -> None:
    exp = case["expect"]
    tail = f" {exp['verdict']} ({exp['summary']})"
    names = f" BY {exp['policies']}" if exp["policies"] else ""
    assert exp["compact"].endswith(tail)
    want = exp["compact"][: -len(tail)] + f" {exp['verdict']}{names} ({exp['summary']})"
    assert _render(_flow(case), "compact", print_policy_names=True) == want + "\n"


@pytest.mark.parametrize("case", _params())
def test_dict_fields(case: dict[str, Any]) -> None:
    exp = case["expect"]
    lines = _render(_flow(case), "dict").splitlines()
    shown = dict(line.strip().split(": ", 1) for line in lines if ": " in line)
    assert shown["TIMESTAMP"] == exp["time"]
    assert {label: shown[label] for label in DICT_FIELDS} == {
        label: exp[key] for label, key in DICT_FIELDS.items()}


@pytest.mark.parametrize("case", _params())
def test_pieces(case: dict[str, Any]) -> None:
    """The texts the compact line is made of, one by one, for a readable failure."""
    flow, exp = _flow(case), case["expect"]
    assert format_timestamp(flow.time_ns) == exp["time"]
    assert identity_text(flow.source.identity) == exp["source_identity"]
    assert identity_text(flow.destination.identity) == exp["destination_identity"]
    assert policy_names(flow) == (f" BY {exp['policies']}" if exp["policies"] else "")
    # The CLI shows the protocol and the TCP flags inside the summary, as Hubble does.
    assert exp["summary"].startswith(exp["protocol"])
    if exp["protocol"] == "TCP":
        assert exp["summary"] == f"TCP Flags: {exp['tcp_flags']}"
    else:
        assert exp["tcp_flags"] == ""
    assert case["response"]["flow"]["Summary"] == exp["summary"]
