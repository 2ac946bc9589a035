"""Fixtures for end-to-end tests; the machinery is in harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import Up, start_up, stop_up


@pytest.fixture(scope="module")
def spine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("spine"), "sge")
    try:
        yield up
    finally:
        stop_up(up)
