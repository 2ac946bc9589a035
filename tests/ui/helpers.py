"""Reading the dashboard's state the way a user sees it: rows, cells, the status bar."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

#: Rows are positioned by transform; read them in display order (0 = newest).
_ROWS_JS = """(sel) => [...document.querySelectorAll(sel + ' .vt-row')]
  .sort((a, b) => Number(a.dataset.index) - Number(b.dataset.index))
  .map(r => {
    const heads = [...r.closest('.vt-scroll').querySelectorAll('.vt-header .vt-cell')]
      .map(h => h.dataset.col);
    const cells = [...r.querySelectorAll('.vt-cell')].map(c => c.textContent);
    const row = {_full: r.querySelector('.vt-full').textContent, _class: r.className};
    heads.forEach((h, i) => { row[h] = cells[i]; });
    return row;
  })"""


def settle(page: Page) -> None:
    """Let pending repaints happen (tables repaint at most once per animation frame)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def table_rows(page: Page, table: str = "#flows-table") -> list[dict[str, Any]]:
    """The rows in the DOM of a virtualised table, as {column: text}."""
    settle(page)
    return list(page.evaluate(_ROWS_JS, table))


def flow_rows(page: Page, table: str = "#flows-table") -> list[dict[str, Any]]:
    return [r for r in table_rows(page, table) if not r["_full"]]


def wait_rows(page: Page, n: int = 1, table: str = "#flows-table", timeout: float = 5000
              ) -> None:
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel + ' .vt-row').length >= n",
        arg=[table, n], timeout=timeout)


def table_count(page: Page) -> int:
    """Rows the live table holds (not only those in the DOM)."""
    return int(page.evaluate("() => spyglass.views.flows.table.count"))


def apply_filter(page: Page, text: str) -> None:
    page.fill("#filter-input", text)
    page.press("#filter-input", "Enter")


def open_view(page: Page, name: str) -> None:
    page.click(f"nav [data-view={name}]")
    page.wait_for_selector(f"#view-{name}:not([hidden])")


def text_of(page: Page, selector: str) -> str:
    """The element's text ("" when it has none), for plain string assertions."""
    return page.text_content(selector) or ""
