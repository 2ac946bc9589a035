"""agent/labview.py: the getters over a swappable lab, and the watcher of its state file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from spyglass.agent.labview import LabView, LabWatcher
from spyglass.lab.errors import LabError
from spyglass.lab.lab import Lab
from spyglass.lab.state import STATE_VERSION, save_state, state_path

# -- LabView --------------------------------------------------------------------------------


@dataclass
class FakePod:
    host_ifname: str
    host_ifindex: int


@dataclass
class FakeLab:
    """The methods LabView calls; each answer names the lab and the question."""

    name: str
    pods: list[FakePod] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def endpoint_by_ip(self, ip: str) -> Any:
        self.calls.append(("endpoint_by_ip", ip))
        return (self.name, "ep-ip", ip)

    def endpoint_by_id(self, ep_id: int) -> Any:
        self.calls.append(("endpoint_by_id", ep_id))
        return (self.name, "ep-id", ep_id)

    def labels_of(self, identity: int) -> Any:
        self.calls.append(("labels_of", identity))
        return (self.name, f"k8s:id={identity}")

    def service_by_id(self, service_id: int) -> Any:
        self.calls.append(("service_by_id", service_id))
        return (self.name, "svc-id", service_id)

    def service_by_addr(self, ip: str, port: int) -> Any:
        self.calls.append(("service_by_addr", ip, port))
        return (self.name, "svc-addr", ip, port)


def as_lab(fake: FakeLab) -> Lab:
    return cast(Lab, fake)


def answers(view: LabView) -> list[Any]:
    return [view.endpoint_by_ip("10.244.0.4"), view.endpoint_by_id(3), view.labels_of(4242),
            view.service_by_id(7), view.service_by_addr("10.96.0.10", 80)]


def expected(name: str) -> list[Any]:
    return [(name, "ep-ip", "10.244.0.4"), (name, "ep-id", 3), (name, "k8s:id=4242"),
            (name, "svc-id", 7), (name, "svc-addr", "10.96.0.10", 80)]


def test_labview_forwards_every_getter_to_its_lab() -> None:
    first = FakeLab("first")
    view = LabView(as_lab(first))
    assert view.lab is as_lab(first)
    assert answers(view) == expected("first")
    assert first.calls == [("endpoint_by_ip", "10.244.0.4"), ("endpoint_by_id", 3),
                           ("labels_of", 4242), ("service_by_id", 7),
                           ("service_by_addr", "10.96.0.10", 80)]


def test_labview_swap_returns_the_old_lab_and_forwards_to_the_new_one() -> None:
    first, second = FakeLab("first"), FakeLab("second")
    view = LabView(as_lab(first))
    assert view.swap(as_lab(second)) is as_lab(first)
    assert view.lab is as_lab(second)
    assert answers(view) == expected("second")
    assert first.calls == []  # the old lab is asked nothing more
    assert len(second.calls) == 5
    assert view.swap(as_lab(first)) is as_lab(second)
    assert answers(view) == expected("first")


def test_labview_ifname() -> None:
    lab = FakeLab("l", pods=[FakePod("lxc-a", 11), FakePod("lxc-b", 12),
                             FakePod("lxc-unwired", 0)])
    view = LabView(as_lab(lab))
    assert view.ifname(11) == "lxc-a"
    assert view.ifname(12) == "lxc-b"
    assert view.ifname(13) == ""
    view.swap(as_lab(FakeLab("empty")))
    assert view.ifname(11) == ""


def test_labview_ifname_follows_the_swapped_lab() -> None:
    view = LabView(as_lab(FakeLab("old", pods=[FakePod("lxc-old", 5)])))
    view.swap(as_lab(FakeLab("new", pods=[FakePod("lxc-new", 5)])))
    assert view.ifname(5) == "lxc-new"


# -- LabWatcher -----------------------------------------------------------------------------


class Events:
    """What a watcher reported, for the test thread to wait on."""

    def __init__(self) -> None:
        self.changes: list[Any] = []
        self.gone = 0
        self.cond = threading.Condition()

    def on_change(self, lab: Lab) -> None:
        with self.cond:
            self.changes.append(lab)
            self.cond.notify_all()

    def on_gone(self) -> None:
        with self.cond:
            self.gone += 1
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout_s)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Lab.load replaced: each load returns a new sentinel naming what the file said."""
    calls: list[str] = []

    def load(state_dir: str, **_kw: Any) -> Any:
        calls.append(state_dir)
        with open(state_path(state_dir), encoding="utf-8") as f:
            return ("lab", f.read())

    monkeypatch.setattr("spyglass.agent.labview.Lab.load", load)
    return calls


def write_lab(state_dir: str, generation: int) -> str:
    """Replace the state file atomically, as the lab does; returns what it holds."""
    save_state(state_dir, {"version": STATE_VERSION, "generation": generation,
                           "pad": "x" * generation})
    with open(state_path(state_dir), encoding="utf-8") as f:
        return f.read()


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[str, Events, list[LabWatcher]]]:
    state_dir = str(tmp_path / "state")
    events = Events()
    watchers: list[LabWatcher] = []
    yield state_dir, events, watchers
    for w in watchers:
        w.stop()


def make(state_dir: str, events: Events, watchers: list[LabWatcher],
         interval_s: float = 0.01) -> LabWatcher:
    w = LabWatcher(state_dir, events.on_change, events.on_gone, interval_s=interval_s)
    watchers.append(w)
    return w


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def count_polls(w: LabWatcher) -> list[bool]:
    """Record every poll the watcher's thread makes (and what it returned)."""
    polls: list[bool] = []
    real = w.poll

    def poll() -> bool:
        done = real()
        polls.append(done)
        return done

    w.poll = poll  # type: ignore[method-assign]
    return polls


def test_watcher_reports_nothing_for_the_file_it_started_with(
        watched: tuple[str, Events, list[LabWatcher]], loads: list[str]) -> None:
    state_dir, events, watchers = watched
    write_lab(state_dir, 1)
    w = make(state_dir, events, watchers)
    assert w.path == state_path(state_dir)
    assert w.poll() is False
    assert w.poll() is False
    assert (events.changes, events.gone, loads) == ([], 0, [])


def test_watcher_poll_reports_a_replaced_file_then_its_removal_once(
        watched: tuple[str, Events, list[LabWatcher]], loads: list[str]) -> None:
    state_dir, events, watchers = watched
    write_lab(state_dir, 1)
    w = make(state_dir, events, watchers)
    second = write_lab(state_dir, 2)
    assert w.poll() is True
    assert events.changes == [("lab", second)]
    assert loads == [state_dir]
    assert w.poll() is False  # no change since
    os.unlink(state_path(state_dir))
    assert w.poll() is True
    assert w.poll() is False
    assert events.gone == 1
    third = write_lab(state_dir, 3)  # a new lab after the old one went
    assert w.poll() is True
    assert events.changes == [("lab", second), ("lab", third)]
    assert events.gone == 1


def test_watcher_reports_a_lab_that_appears(
        watched: tuple[str, Events, list[LabWatcher]], loads: list[str]) -> None:
    state_dir, events, watchers = watched
    w = make(state_dir, events, watchers)  # no lab yet
    assert w.poll() is False
    assert events.gone == 0  # it was never there: nothing went
    first = write_lab(state_dir, 1)
    assert w.poll() is True
    assert events.changes == [("lab", first)]


def test_watcher_thread_reports_changes_and_the_lab_going(
        watched: tuple[str, Events, list[LabWatcher]], loads: list[str]) -> None:
    state_dir, events, watchers = watched
    write_lab(state_dir, 1)
    w = make(state_dir, events, watchers)
    polls = count_polls(w)
    w.start()
    assert wait_until(lambda: len(polls) >= 3)
    assert polls[:3] == [False, False, False]  # the file it started with is not news
    assert events.changes == [] and loads == []
    second = write_lab(state_dir, 2)
    assert events.wait(lambda: len(events.changes) == 1)
    third = write_lab(state_dir, 3)
    assert events.wait(lambda: len(events.changes) == 2)
    assert events.changes == [("lab", second), ("lab", third)]
    os.unlink(state_path(state_dir))
    assert events.wait(lambda: events.gone == 1)
    after = len(polls)
    assert wait_until(lambda: len(polls) >= after + 5)  # several more polls: still once
    assert events.gone == 1
    assert events.changes == [("lab", second), ("lab", third)]
    assert w.errors == 0


def test_watcher_stops_promptly(watched: tuple[str, Events, list[LabWatcher]],
                                loads: list[str]) -> None:
    state_dir, events, watchers = watched
    write_lab(state_dir, 1)
    w = make(state_dir, events, watchers, interval_s=30.0)  # a poll would be 30s away
    w.start()
    thread = w._thread
    assert thread is not None and thread.is_alive()
    assert thread.daemon is True
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 1.0
    assert not thread.is_alive()
    write_lab(state_dir, 2)
    assert events.changes == []  # and its thread is gone: nothing will report it


def test_watcher_stop_without_start() -> None:
    w = LabWatcher("/nonexistent/state", lambda lab: None, lambda: None)
    w.stop()


def test_a_state_file_that_cannot_be_loaded_is_counted_and_skipped(
        watched: tuple[str, Events, list[LabWatcher]], monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir, events, watchers = watched
    write_lab(state_dir, 1)
    w = make(state_dir, events, watchers)

    def broken(state_dir: str, **_kw: Any) -> Lab:
        raise LabError("torn")

    monkeypatch.setattr("spyglass.agent.labview.Lab.load", broken)
    write_lab(state_dir, 2)
    assert w.poll() is False
    assert (events.changes, w.errors) == ([], 1)
    assert w.poll() is False  # waits for the next change, does not retry the same file
    assert w.errors == 1
    sentinel = object()
    monkeypatch.setattr("spyglass.agent.labview.Lab.load", lambda state_dir, **kw: sentinel)
    write_lab(state_dir, 3)
    assert w.poll() is True
    assert events.changes == [sentinel]


def test_a_failing_reconcile_is_tried_again_without_a_new_change(
        watched: tuple[str, Events, list[LabWatcher]], loads: list[str]) -> None:
    state_dir, events, watchers = watched
    write_lab(state_dir, 1)
    calls: list[Any] = []

    def on_change(lab: Lab) -> None:
        calls.append(lab)
        if len(calls) == 1:
            raise RuntimeError("reconcile failed")
        events.on_change(lab)

    w = LabWatcher(state_dir, on_change, events.on_gone, interval_s=0.01)
    watchers.append(w)
    w.start()
    second = write_lab(state_dir, 2)
    # The first attempt fails; the next poll tries the same change again, and it takes.
    assert events.wait(lambda: len(events.changes) == 1)
    assert events.changes == [("lab", second)] and w.errors == 1 and len(calls) == 2
    assert w._thread is not None and w._thread.is_alive()


def test_a_real_lab_state_file_is_loaded_with_lab_load(tmp_path: Path) -> None:
    """Without the monkeypatch: an unreadable state file is a LabError, counted."""
    state_dir = str(tmp_path / "state")
    w = LabWatcher(state_dir, lambda lab: pytest.fail("loaded a foreign file"),
                   lambda: pytest.fail("nothing went"))
    save_state(state_dir, {"version": STATE_VERSION + 1})  # another version's file
    assert w.poll() is False
    assert w.errors == 1
