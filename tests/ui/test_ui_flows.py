"""Live flows in a real browser: rows, the filter bar and the URL, pause, columns, sidebar."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from conftest import shot
from helpers import apply_filter, flow_rows, table_rows, text_of, wait_rows
from playwright.sync_api import Page
from support import FakeSource
from synthetic import tcp

HEADS = "#flows-table .vt-header .vt-cell"


def test_flows_stream_in_with_hubble_columns(page: Page,
                                             synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/")
    wait_rows(page, 20)
    rows = flow_rows(page)
    shot(page, "flows-live")
    # Written as `spyglass observe` writes them (tests/fixtures/flow_text.json has them all).
    sources = {r["source"].rsplit(":", 1)[0] for r in rows}
    assert {"ops/loadgen-0", "shop/frontend-0", "203.0.113.9", "10.244.0.1"} <= sources
    assert {"(world) → (ID:20001)", "(host) → (ID:20002)"} <= {r["identities"] for r in rows}
    drop = next(r for r in rows if r["verdict"] == "DROPPED")
    assert drop["destination"] == "shop/db-0:5432"
    assert drop["policies"] == "shop/db-allow-cart-only (NetworkPolicy)"
    assert drop["type"] == "Policy denied"
    fwd = next(r for r in rows if r["destination"] == "shop/cart-0:8080"
               and r["source"].startswith("shop/frontend-0"))
    assert (fwd["protocol"], fwd["verdict"], fwd["type"], fwd["tcp_flags"]) == (
        "TCP", "FORWARDED", "to-endpoint", "SYN")
    assert fwd["identities"] == "(ID:20001) → (ID:20002)"
    assert text_of(page, "#conn") == "● live"
    assert "node ui-node" in text_of(page, "#statusbar")


def test_new_flows_arrive_live(page: Page, synthetic: tuple[FakeSource, str]) -> None:
    source, url = synthetic
    page.goto(url + "/")
    before = 81  # the whole backlog: 80 flows and 1 lost-events record
    page.wait_for_function(f"() => spyglass.views.flows.table.count === {before}")
    source.ring.write(tcp(("shop", "cart-0"), ("shop", "db-0"), 6543, t=time.time_ns()))
    page.wait_for_function(f"() => spyglass.views.flows.table.count === {before + 1}")
    assert flow_rows(page)[0]["destination"] == "shop/db-0:6543"  # newest on top


def test_lost_events_show_inline_like_the_cli(page: Page,
                                              synthetic: tuple[FakeSource, str]) -> None:
    _, url = synthetic
    page.goto(url + "/")
    wait_rows(page, 20)
    page.evaluate("() => { const t = spyglass.views.flows.table; "
                  "t.scroller.scrollTop = 30 * t.rowHeight; t.render(); }")
    lost = [r for r in table_rows(page) if r["_full"]]
    shot(page, "flows-lost-event")
    assert [r["_full"] for r in lost] == ["EVENTS LOST: PERF_EVENT_RING_BUFFER CPU(1) 7"]
    assert "lost" in lost[0]["_class"]
    assert "PERF_EVENT_RING_BUFFER 7" in text_of(page, "#st-lost")


@pytest.mark.parametrize(("text", "check"), [
    pytest.param("from:pod=shop/frontend-1 verdict=DROPPED",
                 lambda r: r["source"].startswith("shop/frontend-1:") and r["verdict"] == "DROPPED",
                 id="from-pod-and-verdict"),
    pytest.param("to:namespace=ops",
                 lambda r: r["destination"].startswith("ops/"), id="to-namespace"),
    pytest.param("!to:port=8080 from:namespace=shop",
                 lambda r: not r["destination"].endswith(":8080")
                 and r["source"].startswith("shop/"), id="negated-port"),
    pytest.param("identity=world", lambda r: "(world)" in r["identities"],
                 id="either-identity"),
    pytest.param("from:identity=host", lambda r: r["identities"].startswith("(host) "),
                 id="host-drops-too"),
    pytest.param('from:label="app in (loadgen)"', lambda r: r["source"].startswith("ops/loadgen"),
                 id="quoted-label-selector"),
])
def test_filter_bar_narrows_flows_and_sets_the_url(page: Page,
                                                  synthetic: tuple[FakeSource, str],
                                                  text: str, check: object) -> None:
    _, url = synthetic
    page.goto(url + "/")
    wait_rows(page, 20)
    total = page.evaluate("() => spyglass.views.flows.table.count")
    # What the API itself answers for the parameters the bar sends (flows + the lost row).
    params = page.evaluate("async (t) => (await import('/js/filters.js')).toQuery(t)", text)
    count = len(httpx.get(url + "/api/v1/flows", params=[("last", "1000"), *params]
                          ).json()["flows"])
    assert 1 < count < total
    apply_filter(page, text)
    page.wait_for_function(f"() => spyglass.views.flows.table.count === {count}")
    rows = flow_rows(page)
    assert rows and all(check(r) for r in rows), rows[:3]  # type: ignore[operator]
    assert parse_qs(urlparse(page.url).query)["filter"] == [text]
    # The URL is the view: opening it elsewhere shows the same filtered flows.
    page.goto(page.url)
    page.wait_for_function(f"() => spyglass.views.flows.table.count === {count}")
    assert page.input_value("#filter-input") == text
    assert all(check(r) for r in flow_rows(page))  # type: ignore[operator]


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("dns=example.com", "L7", id="unsupported-kind"),
    pytest.param("colour=red", "unknown filter kind", id="unknown-kind"),
    pytest.param("from:verdict=DROPPED", "verdict has no direction", id="verdict-with-side"),
    pytest.param("port=http", "not a port number", id="server-refuses-port-name"),
])
def test_bad_filters_say_what_is_wrong(page: Page, synthetic: tuple[FakeSource, str],
                                       text: str, message: str) -> None:
    _, url = synthetic
    page.goto(url + "/")
    wait_rows(page, 20)
    apply_filter(page, text)
    page.wait_for_selector("#filter-error:not([hidden])")
    assert message in text_of(page, "#filter-error")


def test_pause_holds_new_flows_until_resume(page: Page,
                                            synthetic: tuple[FakeSource, str]) -> None:
    source, url = synthetic
    page.goto(url + "/")
    before = 81  # the whole backlog: 80 flows and 1 lost-events record
    page.wait_for_function(f"() => spyglass.views.flows.table.count === {before}")
    page.click("#pause")
    source.ring.write_many([tcp(("shop", "cart-0"), ("shop", "db-0"), 7000 + i,
                                t=time.time_ns() + i) for i in range(5)])
    page.wait_for_function("() => spyglass.views.flows.held.length === 5")
    assert page.evaluate("() => spyglass.views.flows.table.count") == before
    assert "paused: 5 new held" in text_of(page, "#flow-counter")
    shot(page, "flows-paused")
    page.click("#pause")
    page.wait_for_function(f"() => spyglass.views.flows.table.count === {before + 5}")
    assert flow_rows(page)[0]["destination"] == "shop/db-0:7004"


def test_column_chooser_hides_columns_and_remembers(page: Page,
                                                   synthetic: tuple[FakeSource, str]
                                                   ) -> None:
    _, url = synthetic
    page.goto(url + "/")
    wait_rows(page, 5)
    page.click("#columns")
    page.uncheck("#column-menu input[data-col=identities]")
    page.check("#column-menu input[data-col=drop_reason]")
    heads = page.eval_on_selector_all(HEADS, "e => e.map(x => x.dataset.col)")
    assert "identities" not in heads and "drop_reason" in heads
    assert any(r.get("drop_reason") == "POLICY_DENIED" for r in flow_rows(page))
    page.reload()
    wait_rows(page, 5)
    heads = page.eval_on_selector_all(HEADS, "e => e.map(x => x.dataset.col)")
    assert "identities" not in heads and "drop_reason" in heads


def test_sidebar_shows_the_whole_flow_and_asks_explain(page: Page,
                                                      synthetic: tuple[FakeSource, str]
                                                      ) -> None:
    _, url = synthetic
    page.goto(url + "/")
    # All of the backlog first, so that the rows stay put under the click.
    page.wait_for_function("() => spyglass.views.flows.table.count === 81")
    wait_rows(page, 20)
    page.locator("#flows-table .vt-row.row-dropped").first.click()
    page.wait_for_selector("#sidebar:not([hidden])")
    page.wait_for_function(
        "() => !document.querySelector('#explain').textContent.includes('asking')")
    shot(page, "flows-sidebar")
    fields = dict(page.eval_on_selector_all(
        "#sidebar table.fields:not(.explain-dirs) tr",
        "rows => rows.map(r => [r.children[0].textContent, r.children[1].textContent])"))
    assert fields["verdict"] == "DROPPED"
    assert fields["drop_reason_desc"] == "POLICY_DENIED"
    assert fields["ingress_denied_by[0].name"] == "db-allow-cart-only"
    assert fields["destination.pod_name"] == "db-0"
    assert fields["l4.TCP.destination_port"] == "5432"
    assert "shop/db-allow-cart-only" in text_of(page, ".sb-policy")
    explain = text_of(page, "#explain")
    assert explain.startswith("Why was this dropped?")
    # The synthetic app has no policy: explain either answers or says why it cannot.
    assert "explain" in explain.lower() or "Current policy" in explain
    page.keyboard.press("Escape")
    assert page.is_hidden("#sidebar")
