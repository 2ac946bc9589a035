"""`spyglass observe` end to end: CliRunner against a real API on loopback."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from support import NODE, T0, FakeSource, flow

from spyglass.api.app import create_app
from spyglass.api.serve import serve_in_thread
from spyglass.cli.client import ApiClient, CliError
from spyglass.cli.main import main
from spyglass.cli.observe import FILTER_ITEMS, observe_cmd
from spyglass.cli.printer import Printer
from spyglass.collector.filters import FilterError, build_from_flags
from spyglass.model.enums import LostEventSource, Verdict
from spyglass.model.flow import Event, LostEvent, event_to_response
from spyglass.model.hubble_json import hubble_response

WAIT_S = 10.0

EVENTS: list[Event] = [flow(i, dport=80 if i % 2 else 8080,
                            verdict=Verdict.DROPPED if i % 5 == 4 else Verdict.FORWARDED)
                       for i in range(25)]


class Served:
    def __init__(self, source: FakeSource, url: str, server: Any, app: Any) -> None:
        self.source, self.url, self.server, self.app = source, url, server, app


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    source = FakeSource(63, events=EVENTS)
    app = create_app(source)
    with serve_in_thread(app) as (server, url):
        yield Served(source, url, server, app)


@pytest.fixture()
def fresh() -> Iterator[Served]:
    """A server of its own, for tests that stop it."""
    source = FakeSource(63)
    app = create_app(source)
    with serve_in_thread(app) as (server, url):
        yield Served(source, url, server, app)


def compact(events: list[Event], **kw: Any) -> str:
    buf = io.StringIO()
    printer = Printer("compact", console=Console(file=buf, color_system=None), **kw)
    for ev in events:
        printer.print(ev)
    printer.close()
    return buf.getvalue()


def observe(served: Served, *args: str) -> Any:
    return CliRunner().invoke(main, ["observe", "--server", served.url, *args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- history ------------------------------------------------------------------


def test_default_prints_the_newest_20(served: Served) -> None:
    result = observe(served)
    assert result.exit_code == 0, result.output
    assert result.stdout == compact(EVENTS[-20:])
    assert result.stdout.splitlines()[-1] == (
        "Nov 26 14:06:28.600: shop/frontend-24:30024 (ID:300) -> shop/cart-0:8080 (ID:301) "
        "to-endpoint DROPPED (TCP Flags: SYN)")


@pytest.mark.parametrize(("args", "picked"), [
    pytest.param(["--last", "3"], [22, 23, 24], id="last"),
    pytest.param(["--first", "2"], [0, 1], id="first"),
    pytest.param(["--to-port", "80", "--last", "2"], [21, 23], id="filter"),
    pytest.param(["--verdict", "DROPPED"], [4, 9, 14, 19, 24], id="verdict"),
    pytest.param(["--to-port", "80", "--not", "--verdict", "FORWARDED"], [9, 19],
                 id="not-after"),
    pytest.param(["--not", "--verdict", "FORWARDED", "--to-port", "80"], [9, 19],
                 id="not-before"),
    pytest.param(["--not", "--to-port", "80", "--verdict", "DROPPED"], [4, 14, 24],
                 id="not-moves-with-its-flag"),
    pytest.param(["--from-pod", "shop/frontend-1", "--last", "100"],
                 [1, *range(10, 20)], id="pod-prefix"),
    pytest.param(["--from-pod=shop/frontend-3", "--from-pod", "shop/frontend-7"], [3, 7],
                 id="repeated-flag-or"),
])
def test_flags_select_flows(served: Served, args: list[str], picked: list[int]) -> None:
    result = observe(served, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == compact([EVENTS[i] for i in picked])


def test_json_output_is_hubbles_response(served: Served) -> None:
    result = observe(served, "--last", "5", "-o", "json")
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert got == [hubble_response(event_to_response(ev, NODE)) for ev in EVENTS[-5:]]
    assert all("packets" not in r.get("flow", {}) for r in got)


def test_json_output_with_spyglass_fields_round_trips(served: Served) -> None:
    result = observe(served, "--last", "5", "-o", "json", "--with-spyglass-fields")
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert got == [event_to_response(ev, NODE) for ev in EVENTS[-5:]]


@pytest.mark.parametrize("output", ["dict", "table", "jsonpb"])
def test_other_outputs_render(served: Served, output: str) -> None:
    result = observe(served, "--last", "2", "-o", output, "--print-node-name")
    assert result.exit_code == 0, result.output
    buf = io.StringIO()
    printer = Printer(output, console=Console(file=buf, color_system=None), print_node_name=True)
    for ev in EVENTS[-2:]:
        printer.print(ev, node_name=NODE)
    printer.close()
    assert result.stdout == buf.getvalue()


# -- filter flag order --------------------------------------------------------


@pytest.mark.parametrize(("args", "items"), [
    pytest.param(["--from-pod", "a", "--not", "--to-port", "80"],
                 [("from-pod", "a"), ("not", None), ("to-port", "80")], id="not-in-the-middle"),
    pytest.param(["--port", "1", "--verdict", "DROPPED", "--port", "2"],
                 [("port", "1"), ("verdict", "DROPPED"), ("port", "2")],
                 id="repeated-flag-keeps-place"),
    pytest.param(["--not", "--port", "1", "--not", "--port", "2", "-n", "shop"],
                 [("not", None), ("port", "1"), ("not", None), ("port", "2"),
                  ("namespace", "shop")], id="repeated-not-and-short"),
    pytest.param(["--to-ip=10.0.0.1", "--last", "3", "-t", "drop", "-f"],
                 [("to-ip", "10.0.0.1"), ("type", "drop")], id="equals-and-own-options"),
    pytest.param([], [], id="none"),
])
def test_filter_flags_are_collected_in_command_line_order(
        args: list[str], items: list[tuple[str, str | None]]) -> None:
    ctx = observe_cmd.make_context("observe", list(args))
    assert ctx.meta.get(FILTER_ITEMS, []) == items


def test_print_raw_filters(served: Served) -> None:
    result = observe(served, "--from-pod", "shop/frontend", "--not", "--verdict", "FORWARDED",
                     "--print-raw-filters")
    assert result.exit_code == 0, result.output
    fs = build_from_flags([("from-pod", "shop/frontend"), ("not", None),
                           ("verdict", "FORWARDED")])
    assert result.stdout == (
        f"# {fs.describe()}\nallowlist:\n"
        + "".join(f"- {json.dumps(f.to_dict(), sort_keys=True)}\n" for f in fs.allow)
        + "denylist:\n"
        + "".join(f"- {json.dumps(f.to_dict(), sort_keys=True)}\n" for f in fs.deny))


# -- errors -------------------------------------------------------------------


def test_unreachable_server_says_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["observe", "--server", url])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (f"cannot reach the Spyglass API at {url}: is `spyglass up` "
                             "running? (use --server to point elsewhere)\n")


def test_unreachable_server_when_following() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["observe", "-f", "--server", url])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"cannot reach the Spyglass API at {url}:")


def test_server_from_environment(served: Served) -> None:
    result = CliRunner().invoke(main, ["observe", "--last", "1"],
                                env={"SPYGLASS_SERVER": served.url})
    assert result.exit_code == 0, result.output
    assert result.stdout == compact(EVENTS[-1:])


@pytest.mark.parametrize(("args", "flag_items"), [
    pytest.param(["--port", "http"], [("port", "http")], id="bad-port"),
    pytest.param(["--verdict", "MAYBE"], [("verdict", "MAYBE")], id="bad-verdict"),
    pytest.param(["--from-pod", "a", "--not"], [("from-pod", "a"), ("not", None)],
                 id="dangling-not"),
])
def test_bad_filter_fails_fast_without_a_server(args: list[str],
                                                flag_items: list[tuple[str, str | None]]
                                                ) -> None:
    with pytest.raises(FilterError) as err:
        build_from_flags(flag_items)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the filter must fail first
    result = CliRunner().invoke(main, ["observe", "--server", url, *args])
    assert result.exit_code == 2
    assert result.stderr == f"{err.value}\n"


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--last", "2", "--first", "2"], "--last and --first cannot be combined: "
                 "pick the newest or the oldest flows", id="last-and-first"),
    pytest.param(["--first", "2", "-f"], "--first cannot be combined with --follow: use "
                 "--last N to start a live stream with a backlog, or --since T to start from a "
                 "time",
                 id="first-and-follow"),
    pytest.param(["--until", "5m", "-f"], "--until cannot be combined with --follow: a live "
                 "stream has no end; drop --follow to read a fixed range", id="until-and-follow"),
    pytest.param(["--since", "5m", "--last", "3", "-f"], "--since and --last cannot be "
                 "combined with --follow: --since T already prints every flow from T on",
                 id="since-last-follow"),
    pytest.param(["--since", "5 minutes"], "--since: '5 minutes' is not a duration; use a "
                 "duration ago like 5m, 1h30m or 2d, or an RFC3339 time like "
                 "2025-11-26T13:00:00Z", id="bad-since"),
    pytest.param(["--until", "10"], "--until: '10' has no unit; say 10s or 10m (units: ns us "
                 "ms s m h d)", id="unitless-until"),
    pytest.param(["--server", "ftp://x"], "--server 'ftp://x' is not an API address: use a "
                 "URL like http://127.0.0.1:4245", id="bad-server"),
])
def test_bad_option_combinations(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["observe", *args])
    assert result.exit_code == 2
    assert result.stderr == message + "\n"


def test_server_side_refusal_is_shown_as_is(served: Served) -> None:
    with ApiClient(served.url) as client, pytest.raises(CliError) as err:
        client.flows([("colour", "red")])
    assert err.value.exit_code == 2
    assert "colour" in err.value.message


def test_bare_host_port_server_is_accepted(served: Served) -> None:
    bare = served.url.removeprefix("http://")
    result = CliRunner().invoke(main, ["observe", "--server", bare, "--last", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == compact(EVENTS[-1:])


# -- follow -------------------------------------------------------------------


def test_follow_prints_backlog_then_live_until_the_server_stops(fresh: Served) -> None:
    ring = fresh.source.ring
    ring.write_many([flow(0), flow(1, dport=80), flow(2)])
    live = [flow(3, dport=80), flow(4), flow(5, dport=80)]

    def writer() -> None:
        wait_until(lambda: fresh.app.state.streams.active == 1, "observe -f to connect")
        ring.write_many(live)
        fresh.server.should_exit = True  # the stream drains what was written, then 1000

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = observe(fresh, "-f", "--last", "1", "--to-port", "80")
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == compact([flow(1, dport=80), live[0], live[2]])
    assert result.stderr == "the Spyglass API closed the stream (Spyglass is shutting down)\n"


def test_follow_reports_lost_events_inline(fresh: Served) -> None:
    ring = fresh.source.ring  # capacity 63

    def writer() -> None:
        wait_until(lambda: fresh.app.state.streams.active == 1, "observe -f to connect")
        ring.write_many([flow(i) for i in range(100)])  # laps the reader by 37 at once
        fresh.server.should_exit = True

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = observe(fresh, "-f", "--from-pod", "shop/frontend-99")
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 37")
    assert lines[1:] == compact([flow(99)]).splitlines()


def test_follow_json_prints_the_servers_responses(fresh: Served) -> None:
    """`-f -o json` prints each response as the server sent it (no Flow round trip), lost
    events included, exactly as `-o json` without -f prints them."""
    ring = fresh.source.ring
    lost = LostEvent(time_ns=T0 + 5, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                     num_events_lost=3, cpu=1)
    live: list[Event] = [flow(0), lost, flow(1, verdict=Verdict.DROPPED)]

    def writer() -> None:
        wait_until(lambda: fresh.app.state.streams.active == 1, "observe -f to connect")
        ring.write_many(live)
        fresh.server.should_exit = True

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = observe(fresh, "-f", "-o", "json")
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        hubble_response(event_to_response(ev, NODE)) for ev in live]
    assert all(", " not in line for line in result.stdout.splitlines())  # compact, as -o json


class ScriptedConnection:
    """A stand-in for websockets' sync connection: `script` items are messages, and None
    means nothing is waiting (recv(timeout=0) times out, and a blocking recv goes on)."""

    def __init__(self, script: list[str | None]) -> None:
        self.script = script

    def recv(self, timeout: float | None = None) -> str:
        if self.script[0] is None:
            if timeout == 0:
                raise TimeoutError
            self.script.pop(0)
        return self.script.pop(0)  # type: ignore[return-value]


def test_stream_flushes_once_per_burst_not_per_message() -> None:
    from spyglass.cli.client import _messages

    seen: list[str] = []
    conn = ScriptedConnection(["a", "b", None, "c", None, "d", "e"])
    it = _messages(conn, lambda: seen.append("idle"))  # type: ignore[arg-type]
    for _ in range(5):
        seen.append(str(next(it)))
    assert seen == ["a", "b", "idle", "c", "idle", "d", "e"]


def test_ctrl_c_ends_follow_quietly(fresh: Served) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spyglass.cli.main", "observe", "-f", "--server", fresh.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: fresh.app.state.streams.active == 1 or proc.poll() is not None,
                   "observe -f to connect")
        fresh.source.ring.write(flow(7))
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT_S)
        assert ready, "observe -f printed nothing"
        assert proc.stdout.readline() == compact([flow(7)])
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0
        assert err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unreadable_event_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                    served: Served) -> None:
    good = event_to_response(EVENTS[-1], NODE)
    lost = event_to_response(LostEvent(T0, LostEventSource.STORE, 2), NODE)
    monkeypatch.setattr(ApiClient, "flows",
                        lambda self, params: [{"what": "is this"}, good, lost])
    result = observe(served)
    assert result.exit_code == 0, result.output
    assert result.stdout == compact([EVENTS[-1], LostEvent(T0, LostEventSource.STORE, 2)])
    assert result.stderr.startswith("skipping an event this CLI cannot read (ValueError: ")
