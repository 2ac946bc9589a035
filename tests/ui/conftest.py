"""Real-browser fixtures: Debian's Chromium driven by Playwright, against the real API app.

The fast tests serve `create_app` over a real `FlowRing` of synthetic flows on a
free loopback port (no kernel needed); the e2e tests (test_ui_e2e.py) start a
real `spyglass up --demo`. Every test saves screenshots under tests/artifacts/ui/
(git-ignored), and fails on any uncaught JavaScript error in the page.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests/support

from support import FakeSource  # noqa: E402
from synthetic import shop_events, synthetic_source  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
UI_DIR = str(HERE.parents[1] / "ui" / "static")
ARTIFACTS = HERE.parents[1] / "tests" / "artifacts" / "ui"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-dev-shm-usage"]
VIEWPORT: ViewportSize = {"width": 1400, "height": 860}

try:
    from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright
    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the dev extras install it
    HAVE_PLAYWRIGHT = False


def _unavailable() -> str | None:
    if not HAVE_PLAYWRIGHT:
        return "needs Playwright for Python: pip install -e '.[dev]'"
    if not os.path.exists(CHROMIUM):
        return f"needs Chromium at {CHROMIUM}: apt-get install chromium (run `make setup`)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageErrors:
    """Uncaught errors in the page: a test passes only if there are none."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: Any) -> None:
        self.errors.append(str(err))


@pytest.fixture()
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    errors = PageErrors()
    pg.on("pageerror", errors)
    try:
        yield pg
    finally:
        try:
            shot(pg, f"{request.node.name}-last")
        except Exception:  # a closed page has nothing to show
            pass
        context.close()
    assert not errors.errors, f"JavaScript errors in the page: {errors.errors}"


def shot(pg: Page, name: str) -> Path:
    """Save a screenshot under tests/artifacts/ui/ (kept on every run, pass or fail)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    pg.screenshot(path=str(path))
    return path


@pytest.fixture()
def synthetic() -> Iterator[tuple[FakeSource, str]]:
    """The real API app (with the UI) over a ring of synthetic shop flows."""
    from spyglass.api.app import create_app
    from spyglass.api.serve import serve_in_thread

    source = synthetic_source()
    source.ring.write_many(shop_events())
    with serve_in_thread(create_app(source, ui_dir=UI_DIR)) as (_, url):
        yield source, url
