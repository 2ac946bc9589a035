"""The ring keeper's protocol and lifecycle, on memfds (no kernel perf rings needed)."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spyglass.collector import keeper

PAGES = 1


def memfd(text: bytes) -> int:
    fd = os.memfd_create("sg-keeper-test")
    os.ftruncate(fd, (1 + PAGES) * mmap.PAGESIZE)
    os.pwrite(fd, text, 0)
    return fd


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / keeper.KEEPER_SOCKET)
    pid = keeper.start(path, log_path=str(tmp_path / "keeper.log"))
    try:
        yield path
    finally:
        keeper.stop(path)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.02)
        assert not os.path.exists(f"/proc/{pid}"), f"the keeper {pid} did not exit"


def test_the_keeper_holds_rings_and_hands_the_same_ones_back(running: str) -> None:
    assert keeper.take(running) is None  # holds nothing yet
    fds = [memfd(b"cpu0"), memfd(b"cpu1")]
    map_fd = memfd(b"map")
    keeper.hold(running, map_fd, [0, 1], PAGES, fds)
    for fd in [map_fd, *fds]:
        os.close(fd)  # the agent's own copies go; the keeper's stay
    kept = keeper.take(running)
    assert kept is not None and kept.cpus == (0, 1) and kept.pages == PAGES
    try:
        assert [os.pread(fd, 4, 0) for fd in kept.fds] == [b"cpu0", b"cpu1"]
    finally:
        kept.close()
    again = keeper.take(running)  # taking does not empty the keeper: it still holds them
    assert again is not None and len(again.fds) == 2
    again.close()


def test_a_malformed_hold_is_refused_and_its_fds_closed(running: str) -> None:
    fd, map_fd = memfd(b"x"), memfd(b"map")
    with pytest.raises(keeper.KeeperError, match="one fd per cpu"):
        keeper.hold(running, map_fd, [0, 1], PAGES, [fd])
    os.close(fd)
    os.close(map_fd)
    assert keeper.take(running) is None


def test_the_socket_is_private_and_gone_after_stop(tmp_path: Path) -> None:
    path = str(tmp_path / keeper.KEEPER_SOCKET)
    keeper.start(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert keeper.stop(path)
    assert not keeper.stop(path)  # nobody listens any more
    assert not os.path.exists(path)


def test_no_keeper_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(keeper.KeeperError, match="no ring keeper at"):
        keeper.take(str(tmp_path / "none.sock"))
