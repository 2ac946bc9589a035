"""The service map, drops and history views in a real browser, over synthetic flows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import shot
from helpers import flow_rows, open_view, table_rows, text_of
from playwright.sync_api import Page
from support import FakeSource

_EDGES_JS = """() => spyglass.views.map.cy.edges().map(e => ({
  id: e.id(), source: e.source().id(), target: e.target().id(), cls: e.classes().join(' '),
  color: e.style('line-color'), label: e.data('label')}))"""


def _wait_map(page: Page) -> None:
    page.wait_for_function(
        "() => spyglass.views.map.cy && spyglass.views.map.cy.edges().length >= 7")
    page.wait_for_timeout(300)  # the layout runs once the elements are in


def test_map_shows_every_namespace_world_host_and_a_red_drop_edge(
        page: Page, synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/?view=map")
    _wait_map(page)
    shot(page, "map")
    nodes = set(page.evaluate("() => spyglass.views.map.cy.nodes().map(n => n.id())"))
    assert {"ns:shop", "ns:ops", "shop/frontend", "shop/cart", "shop/db", "ops/loadgen",
            "ops/monitor", "world", "host"} <= nodes
    assert page.evaluate("() => spyglass.views.map.cy.getElementById('shop/db').parent().id()") \
        == "ns:shop"
    edges = {e["id"]: e for e in page.evaluate(_EDGES_JS)}
    drop = edges["shop/frontend|shop/db|5432|TCP"]
    assert "drop" in drop["cls"] and drop["color"] == "rgb(217,48,37)"
    assert drop["label"] == "TCP/5432 · 10 conn (10 dropped) · 10 events"
    ok = edges["shop/cart|shop/db|5432|TCP"]
    assert "fwd" in ok["cls"] and ok["color"] != drop["color"]
    assert edges["world|shop/frontend|8080|TCP"]["source"] == "world"
    assert edges["host|shop/cart|8080|TCP"]["source"] == "host"
    # Width follows the flow count: loadgen->frontend has two pods' worth of flows.
    widths = page.evaluate("() => Object.fromEntries(spyglass.views.map.cy.edges().map("
                           "e => [e.id(), e.data('width')]))")
    assert widths["ops/loadgen|shop/frontend|8080|TCP"] > widths["shop/cart|shop/db|5432|TCP"]


def test_clicking_an_edge_opens_its_flows(page: Page,
                                          synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/?view=map")
    _wait_map(page)
    box = page.locator("#map-canvas").bounding_box()
    assert box is not None
    mid = page.evaluate("() => spyglass.views.map.cy.getElementById("
                       "'shop/frontend|shop/db|5432|TCP').renderedMidpoint()")
    page.mouse.click(box["x"] + mid["x"], box["y"] + mid["y"])
    page.wait_for_selector("#view-flows:not([hidden])")
    page.wait_for_function("() => spyglass.views.flows.table.count >= 10")
    text = page.input_value("#filter-input")
    assert text == ("from:namespace=shop from:workload=frontend to:namespace=shop "
                    "to:workload=db to:port=5432 protocol=tcp")
    rows = flow_rows(page)
    shot(page, "map-edge-to-flows")
    assert rows and all(r["source"].startswith("shop/frontend-") and
                        r["destination"] == "shop/db-0:5432" for r in rows)
    assert parse_qs(urlparse(page.url).query)["filter"] == [text]


def test_namespace_picker_narrows_the_map_and_the_url(
        page: Page, synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/?view=map")
    _wait_map(page)
    page.uncheck("#ns-picker input[value=shop]")
    page.wait_for_function("() => spyglass.views.map.cy.getElementById('shop/db').empty()")
    nodes = set(page.evaluate("() => spyglass.views.map.cy.nodes().map(n => n.id())"))
    # ops stays, with the shop workloads it talks to (edges touching ops), not the rest.
    assert "ops/loadgen" in nodes and "ops/monitor" in nodes and "world" not in nodes
    assert parse_qs(urlparse(page.url).query)["ns"] == ["ops"]
    shot(page, "map-ops-only")


def test_drops_view_tables_link_to_flows_and_explain(
        page: Page, synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/")
    open_view(page, "drops")
    page.wait_for_selector("#drops-by-pair table")
    shot(page, "drops")
    reason = text_of(page, "#drops-by-reason table tbody tr")
    assert "POLICY_DENIED" in reason and "10" in reason
    assert "shop/db-allow-cart-only (NetworkPolicy)" in text_of(page, "#drops-by-policy")
    pair = text_of(page, "#drops-by-pair tbody tr")
    assert "shop/frontend-1" in pair and "shop/db-0:5432 TCP" in pair
    page.wait_for_selector("#drops-chart .uplot")
    page.click("#drops-by-pair tbody tr a.to-explain")
    page.wait_for_selector("#sidebar:not([hidden])")
    assert page.input_value("#filter-input") == (
        "from:pod=shop/frontend-1 to:pod=shop/db-0 to:port=5432 protocol=tcp verdict=DROPPED")
    rows = flow_rows(page)
    assert len(rows) == 10 and all(r["verdict"] == "DROPPED" for r in rows)
    assert text_of(page, "#explain").startswith("Why was this dropped?")
    shot(page, "drops-explain")


def test_history_table_chart_brush_and_downloads(
        page: Page, synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/?view=history")
    page.wait_for_selector("#history-chart .uplot")
    page.wait_for_function("() => spyglass.views.history.table.count > 0")
    shot(page, "history")
    assert page.evaluate("() => spyglass.views.history.table.count") == 81  # 80 flows + 1 lost
    # Filter the history like the live view.
    page.fill("#history-filter", "verdict=DROPPED")
    page.press("#history-filter", "Enter")
    page.wait_for_function("() => spyglass.views.history.table.count === 11")  # + the lost row
    assert all(r["verdict"] == "DROPPED" for r in
               [r for r in table_rows(page, "#history-table") if not r["_full"]])
    with page.expect_download() as dl:
        page.click("#download-csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert len(rows) == 10 and {r["verdict"] for r in rows} == {"DROPPED"}
    assert rows[0]["policies"] == "shop/db-allow-cart-only (NetworkPolicy)"  # as the table
    with page.expect_download() as dl:
        page.click("#download-json")
    lines = [json.loads(x) for x in Path(dl.value.path()).read_text().splitlines()]
    assert sum(1 for x in lines if "flow" in x) == 10
    assert all(x["flow"]["verdict"] == "DROPPED" for x in lines if "flow" in x)
    assert {"node_name", "time"} <= set(lines[0])
    # Brushing across the chart zooms into that range (a custom range in the URL).
    over = page.locator("#history-chart .u-over").bounding_box()
    assert over is not None
    y = over["y"] + over["height"] / 2
    page.mouse.move(over["x"] + over["width"] * 0.90, y)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] - 2, y, steps=5)
    page.mouse.up()
    page.wait_for_function("() => new URLSearchParams(location.search).get('range') === 'custom'")
    q = parse_qs(urlparse(page.url).query)
    since, until = int(q["since"][0]), int(q["until"][0])
    assert 0 < until - since < 3600_000 * 0.2
    # The brushed bars are whole buckets: the drops in them are all still there.
    page.wait_for_function("() => spyglass.views.history.table.count === 11")
    assert page.input_value("#history-range") == "custom"
    shot(page, "history-zoomed")


@pytest.mark.parametrize(("text", "query"), [
    pytest.param("from:pod=shop/web", [["from-pod", "shop/web"]], id="from-pod"),
    pytest.param("to:port=53 !to:namespace=kube-system",
                 [["to-port", "53"], ["not-to-namespace", "kube-system"]], id="negation"),
    pytest.param("either:ip=10.0.0.0/8", [["ip", "10.0.0.0/8"]], id="either-is-unsided"),
    pytest.param("label=app=web", [["label", "app=web"]], id="value-with-equals"),
    pytest.param('to:label="tier in (a, b)"', [["to-label", "tier in (a, b)"]], id="quoted"),
    pytest.param("tcp-flag=SYN,ACK verdict=DROPPED",
                 [["tcp-flags", "SYN,ACK"], ["verdict", "DROPPED"]], id="flags-verdict"),
    pytest.param("!identity=world", [["not-identity", "world"]], id="negated-either"),
    pytest.param("", [], id="empty"),
])
def test_filter_grammar_maps_onto_api_parameters(page: Page,
                                                 synthetic: tuple[FakeSource, str],
                                                 text: str, query: list[list[str]]) -> None:
    _, url = synthetic
    page.goto(url + "/")
    got = page.evaluate("async (t) => (await import('/js/filters.js')).toQuery(t)", text)
    assert got == query


_DENIED_JS = """async () => {
  const { MapModel } = await import("/js/mapmodel.js");
  const m = new MapModel();
  const ep = (pod) => ({ namespace: "shop", pod_name: pod, labels: [], workloads: [] });
  const syn = (t, verdict, sport) => ({ time: `2026-01-01T00:00:0${t}Z`, verdict,
    source: ep("web-0"), destination: ep("db-0"), is_reply: false,
    IP: { source: "10.0.0.1", destination: "10.0.0.2" },
    l4: { TCP: { source_port: sport, destination_port: 5432 } } });
  // a denied connection: each SYN leaves the client FORWARDED, then the server drops it
  m.addFlows([syn(1, "FORWARDED", 40000), syn(2, "DROPPED", 40000),
              syn(3, "FORWARDED", 40000), syn(4, "DROPPED", 40000),
              syn(5, "FORWARDED", 40001), syn(6, "FORWARDED", 40001)]);
  const [e] = [...m.edges.values()];
  return { connections: e.connections, forwarded: e.forwarded, dropped: e.dropped,
           events: e.flows };
}"""


def test_a_denied_connection_counts_dropped_not_forwarded(
        page: Page, synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/?view=map")
    assert page.evaluate(_DENIED_JS) == {"connections": 2, "forwarded": 1, "dropped": 1,
                                         "events": 6}


_MANY_JS = """async () => {
  const { MapModel } = await import("/js/mapmodel.js");
  const m = new MapModel();
  const ep = (pod) => ({ namespace: "shop", pod_name: pod, labels: [], workloads: [] });
  const flows = [];
  for (let i = 0; i < 5000; i++) flows.push({ time: "2026-01-01T00:00:01Z",
    verdict: "FORWARDED", source: ep("web-0"), destination: ep("db-0"), is_reply: false,
    IP: { source: "10.0.0.1", destination: "10.0.0.2" },
    l4: { TCP: { source_port: 10000 + i, destination_port: 5432 } } });
  m.addFlows(flows);
  const [e] = [...m.edges.values()];
  return { connections: e.connections, forwarded: e.forwarded, remembered: e.conns.size };
}"""


def test_a_live_edge_remembers_a_bounded_number_of_connections(
        page: Page, synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/?view=map")
    assert page.evaluate(_MANY_JS) == {"connections": 5000, "forwarded": 5000,
                                       "remembered": 4096}
