"""The dashboard against a real `spyglass up --demo` (root + bcc): what a new user sees.

Marked e2e: the shared conftest skips these, with the reason, where root, bcc or
kernel headers are missing. They need the agent to serve ui/static, the demo's
dropping policy with names on drops, GET /api/v1/explain and the flow store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import shot
from demo_up import start_demo, up_supports
from harness import Up, stop_up
from helpers import apply_filter, flow_rows, open_view, table_rows, text_of, wait_rows
from playwright.sync_api import Page

DEMO_WORKLOADS = {"shop/frontend", "shop/cart", "shop/catalog", "shop/db", "ops/loadgen",
                  "ops/monitor"}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("ui-demo")
    store = f"chdb://{tmp / 'flows'}" if up_supports("--store") else None
    up = start_demo(tmp, store=store)
    try:
        yield up
    finally:
        stop_up(up)


def test_live_flows_appear_within_3s_and_the_filter_narrows_them(page: Page, demo: Up) -> None:
    page.goto(demo.url + "/")
    wait_rows(page, 5, timeout=3000)  # the bound: live flows within 3 s
    shot(page, "e2e-flows")
    assert all(r["source"] and r["destination"] for r in flow_rows(page))
    # the generator's requests are among them once it has run a cycle (a slow CI box may
    # show other pods' flows first)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#flows-table .vt-row')]"
        ".some(r => r.textContent.includes('ops/loadgen-0'))", timeout=15000)
    apply_filter(page, "from:pod=ops/loadgen-0 to:namespace=shop")
    page.wait_for_function("() => spyglass.views.flows.table.count > 0", timeout=10000)
    rows = flow_rows(page)
    assert rows and all(r["source"].startswith("ops/loadgen-0:") and
                        r["destination"].startswith("shop/") for r in rows)
    shot(page, "e2e-flows-filtered")


def test_a_dropped_flow_shows_its_policy_and_the_allowing_yaml(page: Page, demo: Up) -> None:
    page.goto(demo.url + "/?filter=verdict%3DDROPPED")
    wait_rows(page, 1, timeout=15000)
    row = flow_rows(page)[0]
    assert row["verdict"] == "DROPPED" and row["policies"]
    page.locator("#flows-table .vt-row.row-dropped").first.click()
    page.wait_for_selector("#explain-yaml", timeout=10000)
    yaml = text_of(page, "#explain-yaml")
    assert "kind:" in yaml and "apiVersion:" in yaml
    assert "spyglass policy apply" in text_of(page, "#explain")
    shot(page, "e2e-explain")


def test_map_shows_the_demo_workloads(page: Page, demo: Up) -> None:
    page.goto(demo.url + "/?view=map")
    page.wait_for_function("() => spyglass.views.map.cy && "
                           "spyglass.views.map.cy.nodes().length >= 8", timeout=15000)
    nodes = set(page.evaluate("() => spyglass.views.map.cy.nodes().map(n => n.id())"))
    shot(page, "e2e-map")
    assert DEMO_WORKLOADS <= nodes
    assert {"ns:shop", "ns:ops"} <= nodes


def test_map_has_a_red_edge_and_clicking_it_filters_flows(page: Page, demo: Up) -> None:
    page.goto(demo.url + "/?view=map")
    page.wait_for_function("() => spyglass.views.map.cy && "
                           "spyglass.views.map.cy.edges('.drop').length > 0", timeout=20000)
    page.wait_for_timeout(500)
    edge = page.evaluate("() => { const e = spyglass.views.map.cy.edges('.drop')[0]; "
                         "return {id: e.id(), color: e.style('line-color'), "
                         "mid: e.renderedMidpoint()}; }")
    assert edge["color"] == "rgb(217,48,37)"
    shot(page, "e2e-map-red-edge")
    box = page.locator("#map-canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + edge["mid"]["x"], box["y"] + edge["mid"]["y"])
    page.wait_for_selector("#view-flows:not([hidden])")
    page.wait_for_function("() => spyglass.views.flows.table.count > 0", timeout=10000)
    src, dst = edge["id"].split("|")[:2]
    rows = flow_rows(page)
    assert rows and all(r["destination"].startswith(dst.split("/")[0] + "/") for r in rows)
    assert any(r["verdict"] == "DROPPED" for r in rows)
    assert src.split("/")[1] in page.input_value("#filter-input")


def test_history_returns_flows_from_before_a_page_reload(page: Page, demo: Up) -> None:
    page.goto(demo.url + "/")
    wait_rows(page, 5, timeout=5000)
    reloaded_at = time.time()
    time.sleep(1.0)
    page.goto(demo.url + "/?view=history&range=15m")
    page.wait_for_function("() => spyglass.views.history.table.count > 0", timeout=15000)
    shot(page, "e2e-history")
    times = [r["time"] for r in table_rows(page, "#history-table") if not r["_full"]]
    assert times
    first = page.evaluate("() => Date.parse(spyglass.views.history.table.at("
                          "spyglass.views.history.table.count - 1).time)") / 1000
    assert first < reloaded_at
    open_view(page, "drops")
    page.wait_for_selector("#drops-by-reason", timeout=10000)
    shot(page, "e2e-drops")
