"""agent/run.py without a kernel: output that never raises, teardown that signals cannot
interrupt, the API's address checked first, and `spyglass down` by what the records name."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
from rich.console import Console

from spyglass.agent import run
from spyglass.agent.records import (
    AGENT_FILE,
    JOURNAL_FILE,
    AgentRecord,
    PolicyJournal,
    read_agent,
    write_agent,
)
from spyglass.agent.run import ListenError, SafeOutput, check_listen, teardown_leftovers
from spyglass.api.credentials import token_path, write_local_token
from spyglass.lab.procs import starttime

ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stdio_fds() -> dict[int, os.stat_result]:
    fds = {1, 2}
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fds.add(sys.stdout.fileno())  # pytest's capture file, when it captures
    return {fd: os.fstat(fd) for fd in fds}


@pytest.fixture(autouse=True)
def stdio_intact() -> Iterator[None]:
    """Nothing here may point this process's stdout or stderr at /dev/null (what
    `_silence_stdio` and rich's on_broken_pipe do): pytest's own output would go."""
    before = _stdio_fds()
    yield
    after = {fd: os.fstat(fd) for fd in before}
    assert all(os.path.samestat(before[fd], after[fd]) for fd in before), \
        "a test pointed stdout/stderr elsewhere"


@pytest.fixture
def silenced(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """`_silence_stdio` recorded instead of run: the real one would dup2 /dev/null over
    pytest's own fds 1 and 2."""
    calls: list[None] = []
    monkeypatch.setattr(run, "_silence_stdio", lambda: calls.append(None))
    return calls


@contextlib.contextmanager
def spare_stdout(path: Path) -> Iterator[TextIO]:
    """rich's Console.on_broken_pipe dup2s /dev/null over sys.stdout.fileno(): let that be
    a file of ours, not pytest's capture (or the terminal). Set inside the test: pytest
    puts its own sys.stdout back between a fixture's setup and the test."""
    with open(path, "w", encoding="utf-8") as f:
        previous, sys.stdout = sys.stdout, f
        try:
            yield f
        finally:
            sys.stdout = previous


def console_on(file: Any) -> Console:
    return Console(file=file, width=200, color_system=None, highlight=False)


class Recorder(io.StringIO):
    """A console's file that fails the test if anything is written after it is set to."""

    def __init__(self) -> None:
        super().__init__()
        self.forbidden = False

    def write(self, s: str) -> int:
        assert not self.forbidden, f"written after the output broke: {s!r}"
        return super().write(s)


# -- SafeOutput -----------------------------------------------------------------------------


def test_safe_output_writes_while_the_terminal_works(silenced: list[None]) -> None:
    buf = io.StringIO()
    say = SafeOutput(console_on(buf))
    say("[dim]spyglass:[/] one")
    say("two")
    assert buf.getvalue() == "spyglass: one\ntwo\n"
    assert say.broken is False
    assert silenced == []


@contextlib.contextmanager
def broken_pipe() -> Iterator[TextIO]:
    """A file whose reader is gone: every flush is EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    pipe = os.fdopen(write_end, "w", encoding="utf-8")
    try:
        yield pipe
    finally:
        with contextlib.suppress(OSError):
            pipe.close()  # the buffered bytes cannot be flushed: EPIPE again
        assert pipe.closed


def is_devnull(fd: int) -> bool:
    return os.path.samestat(os.fstat(fd), os.stat(os.devnull))


def test_rich_exits_on_a_broken_pipe(tmp_path: Path) -> None:
    """The premise: rich's own answer to EPIPE is SystemExit(1), which SafeOutput must stop."""
    with broken_pipe() as pipe, spare_stdout(tmp_path / "stdout") as stdout:
        with pytest.raises(SystemExit) as exc:
            console_on(pipe).print("rich on its own")
        assert exc.value.code == 1
        assert is_devnull(stdout.fileno())


def test_safe_output_survives_a_broken_pipe(silenced: list[None], tmp_path: Path) -> None:
    """`make demo | tee log` and Ctrl-C: tee is gone, every write is EPIPE, and rich
    answers that with SystemExit(1) (Console.on_broken_pipe)."""
    with broken_pipe() as pipe, spare_stdout(tmp_path / "stdout") as stdout:
        console = console_on(pipe)
        say = SafeOutput(console)
        assert not is_devnull(stdout.fileno())
        say("first")  # does not raise
        assert say.broken is True
        assert silenced == [None]
        # rich's on_broken_pipe ran (it was SystemExit(1) that SafeOutput stopped)
        assert console.quiet is True
        assert is_devnull(stdout.fileno())

        def no_more(*args: object, **kwargs: object) -> None:
            pytest.fail("printed after the output broke")

        console.print = no_more  # type: ignore[method-assign]
        say("second")
        say("third")
        assert silenced == [None]


def test_safe_output_survives_an_oserror(silenced: list[None]) -> None:
    class Failing(Recorder):
        def write(self, s: str) -> int:
            super().write(s)
            raise OSError(5, "Input/output error")

    file = Failing()
    say = SafeOutput(console_on(file))
    say("first")
    assert say.broken is True
    assert silenced == [None]
    file.forbidden = True
    say("second")
    assert silenced == [None]


def test_safe_output_survives_a_closed_file(silenced: list[None], tmp_path: Path) -> None:
    """A file closed under the console: ValueError (I/O operation on closed file)."""
    file = open(tmp_path / "out", "w", encoding="utf-8")
    say = SafeOutput(console_on(file))
    say("before")
    file.close()
    say("after")
    assert say.broken is True
    assert silenced == [None]
    say("later")
    assert silenced == [None]
    assert (tmp_path / "out").read_text() == "before\n"


def test_safe_output_swallows_a_failing_flush(silenced: list[None], tmp_path: Path) -> None:
    class FlushFails(Recorder):
        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    file = FlushFails()
    with spare_stdout(tmp_path / "stdout"):  # BrokenPipeError: rich's on_broken_pipe again
        say = SafeOutput(console_on(file))
        say("first")
        assert say.broken is True
        file.forbidden = True
        say("second")
    assert silenced == [None]


def test_safe_output_does_not_swallow_other_errors(silenced: list[None]) -> None:
    class Bug(io.StringIO):
        def write(self, s: str) -> int:
            raise RuntimeError("a bug, not a terminal")

    say = SafeOutput(console_on(Bug()))
    with pytest.raises(RuntimeError):
        say("x")
    assert say.broken is False
    assert silenced == []


# -- _teardown_signals ----------------------------------------------------------------------


class Handlers:
    """Distinct handlers of ours for the ending signals, recording what reached them."""

    def __init__(self) -> None:
        self.reached: list[int] = []
        self.by_signal: dict[int, Callable[[int, Any], None]] = {
            s: self._handler() for s in ENDING}

    def _handler(self) -> Callable[[int, Any], None]:
        def handler(signum: int, _frame: Any) -> None:
            self.reached.append(signum)
        return handler


@pytest.fixture
def own_handlers() -> Iterator[Handlers]:
    """Our handlers in place before each test (so a signal that escapes the context cannot
    interrupt or end pytest); the originals are put back after."""
    handlers = Handlers()
    originals = {s: signal.signal(s, handlers.by_signal[s]) for s in ENDING}
    try:
        yield handlers
    finally:
        for s, h in originals.items():
            signal.signal(s, h)


class CountingOutput(SafeOutput):
    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.said: list[str] = []

    def __call__(self, text: str) -> None:
        self.said.append(text)
        super().__call__(text)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_ending_signals_are_noted_during_teardown_and_handlers_come_back(
        own_handlers: Handlers, silenced: list[None]) -> None:
    buf = io.StringIO()
    say = CountingOutput(console_on(buf))
    with run._teardown_signals(say):
        for n, s in enumerate(ENDING, start=1):
            assert signal.getsignal(s) is not own_handlers.by_signal[s]
            os.kill(os.getpid(), s)  # no KeyboardInterrupt, no SystemExit
            assert wait_for(lambda n=n: len(say.said) == n)  # type: ignore[misc]
    assert buf.getvalue().splitlines() == [
        "spyglass: SIGINT noted; still tearing down",
        "spyglass: SIGTERM noted; still tearing down",
        "spyglass: SIGHUP noted; still tearing down",
    ]
    assert own_handlers.reached == []
    for s in ENDING:
        assert signal.getsignal(s) is own_handlers.by_signal[s]
    os.kill(os.getpid(), signal.SIGHUP)  # the previous handler has it again
    assert wait_for(lambda: own_handlers.reached == [signal.SIGHUP])
    assert len(say.said) == 3


def test_a_signal_twice_is_noted_twice(own_handlers: Handlers, silenced: list[None]) -> None:
    buf = io.StringIO()
    say = CountingOutput(console_on(buf))
    with run._teardown_signals(say):
        os.kill(os.getpid(), signal.SIGINT)
        assert wait_for(lambda: len(say.said) == 1)
        os.kill(os.getpid(), signal.SIGINT)
        assert wait_for(lambda: len(say.said) == 2)
    assert buf.getvalue().splitlines() == ["spyglass: SIGINT noted; still tearing down"] * 2
    assert own_handlers.reached == []


def test_handlers_come_back_when_teardown_raises(own_handlers: Handlers,
                                                 silenced: list[None]) -> None:
    with pytest.raises(RuntimeError, match="teardown failed"):
        with run._teardown_signals(SafeOutput(console_on(io.StringIO()))):
            raise RuntimeError("teardown failed")
    for s in ENDING:
        assert signal.getsignal(s) is own_handlers.by_signal[s]


def test_signals_are_noted_even_without_a_terminal(own_handlers: Handlers,
                                                   silenced: list[None]) -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(5, "Input/output error")

    say = CountingOutput(console_on(Gone()))
    with run._teardown_signals(say):
        for n, s in enumerate(ENDING, start=1):
            os.kill(os.getpid(), s)
            assert wait_for(lambda n=n: len(say.said) == n)  # type: ignore[misc]
    assert say.broken is True
    assert own_handlers.reached == []
    assert silenced == [None]


# -- check_listen ---------------------------------------------------------------------------


def held_socket(family: int = socket.AF_INET, host: str = "127.0.0.1",
                listen: bool = True) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    if listen:
        s.listen()
    return s


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound"])
def test_check_listen_refuses_a_port_in_use(listening: bool) -> None:
    with held_socket(listen=listening) as s:
        port = s.getsockname()[1]
        with pytest.raises(ListenError) as exc:
            check_listen("127.0.0.1", port)
    message = str(exc.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{port} (Address already in use)")
    assert "--listen" in message


def test_check_listen_refuses_an_address_not_on_this_host() -> None:
    with pytest.raises(ListenError) as exc:
        check_listen("192.0.2.1", 4245)  # TEST-NET-1: never a local address
    assert str(exc.value).startswith("cannot listen on 192.0.2.1:4245 (")
    assert "--listen" in str(exc.value)


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def test_check_listen_passes_a_free_port_and_does_not_keep_it() -> None:
    port = free_port()
    check_listen("127.0.0.1", port)  # does not raise
    with socket.socket() as s:  # check_listen let go of it
        s.bind(("127.0.0.1", port))
        s.listen()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_check_listen_ipv6() -> None:
    check_listen("::1", free_port(socket.AF_INET6, "::1"))
    with held_socket(socket.AF_INET6, "::1") as s:
        port = s.getsockname()[1]
        with pytest.raises(ListenError, match=rf"^cannot listen on ::1:{port} "):
            check_listen("::1", port)


# -- teardown_leftovers ---------------------------------------------------------------------


@pytest.fixture
def cleanup_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The datapath's cleanup recorded, not run: as root it would detach our filters from
    this host's real `lxc*` links."""
    calls: list[tuple[str, str]] = []

    def fake(pin_dir: str, link_prefix: str) -> list[str]:
        calls.append((pin_dir, link_prefix))
        return []

    monkeypatch.setattr(run, "bpf_cleanup", fake)
    return calls


@pytest.fixture
def no_kill(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        calls.append((pid, sig))
        pytest.fail(f"os.kill({pid}, {sig}) during a teardown that has no process to stop")

    monkeypatch.setattr(os, "kill", kill)
    return calls


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert starttime(proc.pid) is None
    return proc.pid


def test_teardown_leftovers_of_nothing(tmp_path: Path, cleanup_calls: list[tuple[str, str]],
                                       no_kill: list[tuple[int, int]]) -> None:
    state_dir, pin_dir = tmp_path / "state", tmp_path / "no-pins"
    state_dir.mkdir()
    assert teardown_leftovers(str(state_dir), str(pin_dir), "sgtest") == []
    assert cleanup_calls == [(str(pin_dir), "sgtest")]
    assert not state_dir.exists()  # left empty, so removed
    assert not pin_dir.exists()
    assert no_kill == []


def test_teardown_leftovers_without_a_state_dir(tmp_path: Path,
                                                cleanup_calls: list[tuple[str, str]],
                                                no_kill: list[tuple[int, int]]) -> None:
    state_dir = tmp_path / "never-made"
    assert teardown_leftovers(str(state_dir), str(tmp_path / "pins"), "sgtest") == []
    assert cleanup_calls == [(str(tmp_path / "pins"), "sgtest")]
    assert not state_dir.exists()


@pytest.mark.parametrize("record", [
    pytest.param(lambda: AgentRecord(dead_pid(), 1), id="dead"),
    pytest.param(lambda: AgentRecord(os.getpid(), (starttime(os.getpid()) or 0) + 1,
                                     os.getpid(), (starttime(os.getpid()) or 0) + 7),
                 id="pid-reused"),
    pytest.param(lambda: AgentRecord(0, 0), id="pid-0"),
])
def test_teardown_leftovers_removes_a_stale_record_without_signalling_anyone(
        tmp_path: Path, record: Callable[[], AgentRecord],
        cleanup_calls: list[tuple[str, str]], no_kill: list[tuple[int, int]]) -> None:
    state_dir = str(tmp_path / "state")
    write_agent(state_dir, record())
    PolicyJournal(state_dir).applied("t", "s")
    removed = teardown_leftovers(state_dir, str(tmp_path / "pins"), "sgtest")
    assert removed == [f"removed {os.path.join(state_dir, AGENT_FILE)}",
                       f"removed {os.path.join(state_dir, JOURNAL_FILE)}"]
    assert no_kill == []
    assert cleanup_calls == [(str(tmp_path / "pins"), "sgtest")]
    assert not os.path.exists(state_dir)


def test_teardown_leftovers_removes_the_local_token_and_keeps_foreign_files(
        tmp_path: Path, cleanup_calls: list[tuple[str, str]],
        no_kill: list[tuple[int, int]]) -> None:
    state_dir = str(tmp_path / "state")
    token_file, _ = write_local_token(state_dir)
    assert token_file == token_path(state_dir)
    Path(state_dir, "keeper.log").write_text("log")
    Path(state_dir, "not-ours.txt").write_text("keep me")
    removed = teardown_leftovers(state_dir, str(tmp_path / "pins"), "sgtest")
    assert removed == [f"local credential {token_file}"]
    assert sorted(os.listdir(state_dir)) == ["not-ours.txt"]


def test_teardown_leftovers_reports_what_the_datapath_cleanup_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_kill: list[tuple[int, int]]) -> None:
    monkeypatch.setattr(run, "bpf_cleanup",
                        lambda pin_dir, prefix: [f"unpinned {pin_dir}/sg_x", f"{prefix}0: tc"])
    state_dir = str(tmp_path / "state")
    assert teardown_leftovers(state_dir, "/p", "vx") == ["unpinned /p/sg_x", "vx0: tc"]


def start_sleeper(stubborn: bool) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "print('ready', flush=True)\ntime.sleep(60)", "stubborn" if stubborn else "plain"],
        stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it the moment it ends
    return proc


@contextlib.contextmanager
def agent_process(stubborn: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_sleeper(stubborn)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        wait_for(lambda: proc.returncode is not None)
        assert proc.stdout is not None
        proc.stdout.close()


def test_teardown_leftovers_stops_the_recorded_agent(
        tmp_path: Path, cleanup_calls: list[tuple[str, str]]) -> None:
    state_dir = str(tmp_path / "state")
    with agent_process() as proc:
        st = starttime(proc.pid)
        assert st is not None
        write_agent(state_dir, AgentRecord(proc.pid, st))
        removed = teardown_leftovers(state_dir, str(tmp_path / "pins"), "sgtest", grace_s=10)
        assert removed == [f"stopped the agent (pid {proc.pid})",
                           f"removed {os.path.join(state_dir, AGENT_FILE)}"]
        assert wait_for(lambda: proc.returncode == -signal.SIGTERM)
    assert read_agent(state_dir) is None


def test_teardown_leftovers_kills_an_agent_that_ignores_sigterm(
        tmp_path: Path, cleanup_calls: list[tuple[str, str]]) -> None:
    state_dir = str(tmp_path / "state")
    with agent_process(stubborn=True) as proc:
        st = starttime(proc.pid)
        assert st is not None
        write_agent(state_dir, AgentRecord(proc.pid, st))
        t0 = time.monotonic()
        removed = teardown_leftovers(state_dir, str(tmp_path / "pins"), "sgtest", grace_s=0.3)
        assert time.monotonic() - t0 >= 0.3
        assert removed[0] == f"killed the agent (pid {proc.pid}) after 0.3s"
        assert wait_for(lambda: proc.returncode == -signal.SIGKILL)


def test_teardown_leftovers_when_the_agent_ends_just_before_it_is_signalled(
        tmp_path: Path, cleanup_calls: list[tuple[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = str(tmp_path / "state")
    with agent_process() as proc:
        st = starttime(proc.pid)
        assert st is not None
        write_agent(state_dir, AgentRecord(proc.pid, st))
        real_starttime = starttime

        def starttime_then_exit(pid: int) -> int | None:
            """The agent finishes its own teardown and exits right after `down` saw it."""
            if pid == proc.pid and proc.poll() is None:
                proc.kill()
                assert wait_for(lambda: proc.returncode is not None)
            return real_starttime(pid)

        monkeypatch.setattr("spyglass.agent.run.starttime", starttime_then_exit)
        removed = teardown_leftovers(state_dir, str(tmp_path / "pins"), "sgtest", grace_s=1)
    assert removed == [f"stopped the agent (pid {proc.pid})",
                       f"removed {os.path.join(state_dir, AGENT_FILE)}"]
    assert cleanup_calls == [(str(tmp_path / "pins"), "sgtest")]
