"""Container processes: started inside a pod's netns, stopped by PID, never by name.

`ip netns exec` enters the netns and then execs the command, so the PID we
get from Popen is the container's own; each gets its own session (and so its
own process group) so a SIGTERM reaches whatever it spawned. We record each
PID with its start time from /proc: a crashed lab may be torn down much
later from another shell, and by then the PID may belong to something else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from spyglass.lab.model import ProcessRecord


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in ticks), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses; fields after it follow the last ')'
    rest = raw[raw.rfind(b")") + 2:].split()
    return int(rest[19])


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw[raw.rfind(b")") + 2:].split()[0].decode()


def alive(rec: ProcessRecord) -> bool:
    """The recorded process still runs (same PID *and* start time, and not a zombie)."""
    return starttime(rec.pid) == rec.starttime and _state(rec.pid) not in ("", "Z", "X")


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def start(netns: str, container: str, argv: Sequence[str], env: Mapping[str, str],
          log_path: str) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `argv` in `netns`, output appended to `log_path`, in a new session."""
    full_env = dict(os.environ)
    full_env.update(env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            netns_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=full_env, start_new_session=True, close_fds=True,
        )
    st = starttime(proc.pid)
    return proc, ProcessRecord(container, proc.pid, st if st is not None else -1,
                               tuple(argv), log_path)


def stop(rec: ProcessRecord, grace: float = 3.0,
         popen: subprocess.Popen[bytes] | None = None) -> str | None:
    """SIGTERM the process group, SIGKILL after `grace` seconds; None if it was not running.

    Only acts when the PID's start time still matches the record, so a PID
    the system has since reused is left alone.
    """
    if not alive(rec):
        if popen is not None:
            popen.poll()  # reap a zombie child of ours
        return None
    _signal_group(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            return f"stopped {rec.container} (pid {rec.pid})"
        if popen is None and not alive(rec):
            return f"stopped {rec.container} (pid {rec.pid})"
        time.sleep(0.02)
    if alive(rec):
        _signal_group(rec.pid, signal.SIGKILL)
    if popen is not None:
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    return f"killed {rec.container} (pid {rec.pid}) after {grace:g}s"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # its own session: pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def kill_pids(pids: Sequence[int]) -> list[int]:
    """SIGKILL the given PIDs (stragglers found inside a netns of ours); returns those signalled."""
    done = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done
