"""The dashboard writes every flow of tests/fixtures/flow_text.json as the fixture (and the CLI) do.

flowfmt.js runs where users run it, in Debian's Chromium, loaded from the served ui/static.
The cells are read through the flows table's own column getters (flows.js `COLUMNS`, which
the history table shares), so what is checked is what a row shows. The CLI's side of the
same fixture is tests/test_flow_text_golden.py. A second test sweeps the tables flowfmt.js
copies from Python (drop reasons, observation points, identities, TCP flags) against the
CLI printer, so a new entry on one side cannot go unnoticed on the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import PageErrors

from spyglass.cli.printer import flow_type, identity_text, verdict_text
from spyglass.model.enums import (
    DropReason,
    EventType,
    ObservationPoint,
    PolicyMatchType,
    Protocol,
    TrafficDirection,
    Verdict,
)
from spyglass.model.flow import Endpoint, Flow

if TYPE_CHECKING:  # only for annotations: the `browser` fixture skips without Playwright
    from playwright.sync_api import Browser, Page
    from support import FakeSource

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flow_text.json"
CASES: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["cases"]
T0 = 1_764_165_988_576_123_456

#: Each case's texts as the UI shows them: table cells (by column key) and the sidebar's
#: Summary field. The identities cell holds both identities, split here into the two fields.
_RENDER_JS = """async (cases) => {
  const { COLUMNS } = await import('/js/flows.js');
  const fmt = await import('/js/flowfmt.js');
  const cell = (key, item) => COLUMNS.find((c) => c.key === key).get(item);
  return Object.fromEntries(cases.map((c) => {
    const item = c.response;
    const [srcId, dstId] = cell('identities', item).split(' → ');
    return [c.name, {
      time: cell('time', item), source: cell('source', item),
      destination: cell('destination', item), source_identity: srcId,
      destination_identity: dstId, type: cell('type', item), verdict: cell('verdict', item),
      policies: cell('policies', item), protocol: cell('protocol', item),
      tcp_flags: cell('tcp_flags', item),
      summary: Object.fromEntries(fmt.flatten(item.flow)).Summary,
    }];
  }));
}"""

_SWEEP_JS = """async (flows) => {
  const fmt = await import('/js/flowfmt.js');
  return flows.map((f) => [fmt.eventType(f), fmt.verdict(f), fmt.identities(f), fmt.tcpFlags(f)]);
}"""


@pytest.fixture()
def utc_page(browser: Browser, synthetic: tuple[FakeSource, str]) -> Iterator[Page]:
    """A page of the served UI in a UTC browser, so that its local clock is the CLI's UTC."""
    _, url = synthetic
    context = browser.new_context(timezone_id="UTC")
    pg = context.new_page()
    errors = PageErrors()
    pg.on("pageerror", errors)
    try:
        pg.goto(url + "/js/flowfmt.js")  # any page of the origin: the modules are imported
        yield pg
    finally:
        context.close()
    assert not errors.errors, f"JavaScript errors in the page: {errors.errors}"


def _shown(expect: dict[str, str]) -> dict[str, str]:
    """The fixture's texts the UI shows; the time column has the clock part of the CLI's."""
    want = {k: v for k, v in expect.items() if k != "compact"}
    want["time"] = expect["time"].split()[-1]
    return want


def test_flowfmt_writes_the_golden_texts(utc_page: Page) -> None:
    got = utc_page.evaluate(_RENDER_JS, CASES)
    differ = [f"{c['name']}.{field}: UI {got[c['name']].get(field)!r}, fixture {text!r}"
              for c in CASES for field, text in _shown(c["expect"]).items()
              if got[c["name"]].get(field) != text]
    assert not differ, "\n".join(differ)


def _tcp(**kw: Any) -> Flow:
    """One TCP flow between two addresses, with the fields under test set."""
    return Flow(time_ns=T0, protocol=Protocol.TCP, source_ip="10.244.0.12",
                destination_ip="10.244.0.13", source_port=35010, destination_port=8080, **kw)


def _sweep() -> list[Flow]:
    """Flows over every value of the enums whose words both sides spell."""
    out = [_tcp(verdict=Verdict.DROPPED, drop_reason=reason, event_type=EventType.DROP,
                event_subtype=int(reason)) for reason in DropReason]
    # the monitor's 14 trace subtypes, and two it does not have
    out += [_tcp(event_type=EventType.TRACE, event_subtype=sub) for sub in range(16)]
    out += [_tcp(event_type=EventType.TRACE, observation_point=p) for p in ObservationPoint]
    out += [_tcp(event_type=EventType.POLICY_VERDICT, policy_match_type=match,
                 traffic_direction=direction, verdict=verdict)
            for match in PolicyMatchType for direction in TrafficDirection for verdict in Verdict]
    out += [_tcp(event_type=EventType.TRACE, verdict=verdict) for verdict in Verdict]
    out += [_tcp(source=Endpoint(identity=i), destination=Endpoint(identity=i))
            for i in (*range(12), 256, 65535, 16777217)]
    out += [_tcp(tcp_flags=flags) for flags in range(256)]
    return out


def test_flowfmt_tables_match_the_cli(utc_page: Page) -> None:
    flows = _sweep()
    got = utc_page.evaluate(_SWEEP_JS, [f.to_dict() for f in flows])
    want = [[flow_type(f), verdict_text(f),
             f"{identity_text(f.source.identity)} → {identity_text(f.destination.identity)}",
             ", ".join(f.tcp_flag_names)] for f in flows]
    differ = [f"{_what(f)}: UI {g}, CLI {w}"
              for f, g, w in zip(flows, got, want, strict=True) if g != w]
    assert not differ, "\n".join(differ[:20])


def _what(f: Flow) -> str:
    """A swept flow in a few words, for the failure message."""
    return (f"{f.event_type.name}/{f.event_subtype} {f.verdict.name} {f.drop_reason.name} "
            f"{f.observation_point.name} match={int(f.policy_match_type)} "
            f"{f.traffic_direction.name} id={f.source.identity} flags={f.tcp_flags:#04x}")
