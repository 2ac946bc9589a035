"""Shared test gates.

Datapath and end-to-end tests need root, bcc and a kernel that loads TC
programs. Where any of these is missing they are skipped with the reason, never
silently; in CI all are present, so they run.
"""

from __future__ import annotations

import functools
import os

import pytest


@functools.cache
def datapath_unavailable() -> str | None:
    """Why datapath tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (datapath tests create netns, veths and TC programs)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs bcc: apt-get install python3-bpfcc (run `make setup`)"
    build = f"/lib/modules/{os.uname().release}/build"
    if not os.path.exists(build):
        return f"kernel headers missing at {build}: run `make setup` or `spyglass doctor --fix`"
    if not os.path.ismount("/sys/fs/bpf"):
        return "bpffs is not mounted at /sys/fs/bpf: run `make setup`"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = datapath_unavailable()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("datapath") or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.skip(reason=reason))
