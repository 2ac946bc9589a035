"""With a token, the dashboard of a real `spyglass up --demo` asks for it once, then works.

A module of its own so that its `up` starts after test_ui_e2e.py's has stopped
(both use the same private names).
"""

from __future__ import annotations

import pytest
from conftest import shot
from demo_up import start_demo
from harness import stop_up
from helpers import wait_rows
from playwright.sync_api import Page

TOKEN = "ui-e2e-token-6f1c2a9e5b7d4c3a"

pytestmark = pytest.mark.e2e


def test_the_ui_asks_for_the_token_then_streams(page: Page,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    up = start_demo(tmp_path_factory.mktemp("ui-token"), token=TOKEN)
    try:
        page.goto(up.url + "/")
        page.wait_for_selector("#token-dialog[open]", timeout=10000)
        shot(page, "e2e-token-prompt")
        page.fill("#token-input", TOKEN)
        page.click("#token-submit")
        wait_rows(page, 5, timeout=10000)
        page.reload()
        wait_rows(page, 5, timeout=10000)
        assert not page.is_visible("#token-dialog")
        shot(page, "e2e-token-after")
    finally:
        stop_up(up)
