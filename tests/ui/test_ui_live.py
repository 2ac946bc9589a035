"""The live connection in a real browser: the token prompt, reconnecting, and 2,000 flows/s."""

from __future__ import annotations

import socket
import time

from conftest import UI_DIR, shot
from helpers import flow_rows, settle, text_of, wait_rows
from playwright.sync_api import Page
from synthetic import Firehose, shop_events, synthetic_source

from spyglass.api.app import create_app
from spyglass.api.auth import AuthConfig
from spyglass.api.serve import serve_in_thread

TOKEN = "ui-test-token-0123456789abcdef"


def test_token_is_asked_once_kept_for_the_session_and_used(page: Page) -> None:
    source = synthetic_source()
    source.ring.write_many(shop_events())
    app = create_app(source, ui_dir=UI_DIR, auth=AuthConfig(token=TOKEN))
    with serve_in_thread(app) as (_, url):
        page.goto(url + "/")
        page.wait_for_selector("#token-dialog[open]")
        shot(page, "token-prompt")
        assert page.locator("#flows-table .vt-row").count() == 0  # nothing without the token
        page.fill("#token-input", "wrong-token-but-long-enough")
        page.click("#token-submit")
        page.wait_for_function("() => document.querySelector('#token-reason').textContent"
                               ".includes('refused')")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", TOKEN)
        page.click("#token-submit")
        wait_rows(page, 20)  # the stream authenticated (subprotocol) and sent the backlog
        assert page.evaluate("() => sessionStorage.getItem('spyglass.token')") == TOKEN
        page.wait_for_function("() => document.querySelector('#st-node').textContent "
                               "=== 'node ui-node'")
        # A reload in the same tab does not ask again.
        page.reload()
        wait_rows(page, 20)
        assert not page.is_visible("#token-dialog")
        assert len(flow_rows(page)) >= 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_going_away_shows_retry_countdown_then_reconnects(page: Page) -> None:
    source = synthetic_source()
    source.ring.write_many(shop_events())
    port = _free_port()
    with serve_in_thread(create_app(source, ui_dir=UI_DIR), port=port) as (_, url):
        page.goto(url + "/")
        before = 81  # the whole backlog: 80 flows and 1 lost-events record
        page.wait_for_function(f"() => spyglass.views.flows.table.count === {before}")
    # The server is gone: the page says so and counts down to its next try.
    page.wait_for_function("() => /disconnected, retrying in \\d+s/"
                           ".test(document.querySelector('#conn').textContent)")
    shot(page, "disconnected")
    assert "retrying" in (page.get_attribute("#conn", "class") or "")
    # Back on the same address with newer flows: it reconnects by itself, keeps what it
    # had, and adds only the new ones (the backlog it asks for is de-duplicated by time).
    source.ring.write_many(shop_events(time.time_ns() + 10**9, rounds=1))
    with serve_in_thread(create_app(source, ui_dir=UI_DIR), port=port):
        page.wait_for_function("() => document.querySelector('#conn').textContent === '● live'",
                               timeout=20000)
        # 8 flows and 1 lost-events record, and nothing of what was already shown.
        page.wait_for_function(f"() => spyglass.views.flows.table.count === {before + 9}")
        shot(page, "reconnected")


def test_table_keeps_only_visible_rows_in_the_dom_at_2000_flows_per_second(
        page: Page) -> None:
    source = synthetic_source()
    with serve_in_thread(create_app(source, ui_dir=UI_DIR)) as (_, url):
        page.goto(url + "/")
        page.wait_for_function("() => document.querySelector('#conn').textContent === '● live'")
        visible = page.evaluate("() => Math.ceil(spyglass.views.flows.table.scroller"
                                ".clientHeight / spyglass.views.flows.table.rowHeight)")
        dom_counts = []
        with Firehose(source.ring, per_second=2000) as hose:
            # Run until the table has wrapped past its 10,000 rows (no timing asserted).
            while page.evaluate("() => spyglass.views.flows.table.dropped") < 2000:
                dom_counts.append(page.locator("#flows-table .vt-row").count())
                page.wait_for_timeout(250)
                assert hose.written < 200_000, "the page never filled its table"
            written = hose.written
        settle(page)
        shot(page, "flows-firehose")
        table = page.evaluate("() => ({count: spyglass.views.flows.table.count, "
                              "dropped: spyglass.views.flows.table.dropped, "
                              "received: spyglass.views.flows.stream.received})")
    assert table["count"] == 10000
    assert table["received"] == table["count"] + table["dropped"]
    assert table["received"] <= written
    assert max(dom_counts) <= visible + 12  # visible rows plus a small overscan, never more
    counter = text_of(page, "#flow-counter")
    assert counter.startswith("10,000 rows · ") and "older dropped from view" in counter
