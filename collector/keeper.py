"""The ring keeper: a small process that holds the perf rings while no agent runs.

A perf ring's buffer lives as long as someone maps it. When an agent dies, its mappings
go and the kernel drops the buffers: every event the datapath writes after that fails
(and is counted), and whatever the agent had not read yet is gone. The keeper is the
"someone": the agent hands it the per-CPU perf fds over a unix socket (SCM_RIGHTS), the
keeper maps each one and waits. The next agent takes the same fds back and reads on from
where the last one stopped, so a restart loses nothing unless a ring fills up, and then
the kernel counts the loss exactly. This is the systemd file-descriptor-store idea,
for one kind of fd.

The keeper also holds the perf event array map that points the datapath at the rings
(its fd, as the agent opened it). The kernel clears a perf event array's entries when
the map *file* they were set through is released (`perf_event_fd_array_release`), so
that a dead process's rings are not written forever: when the agent dies, its fd goes,
and unless someone else holds the same file, every submit fails from then on (ENOENT,
counted). The keeper is that someone. The agent hands it the map again once its own
programs are attached, and the keeper lets the previous one go.

The protocol is one line of JSON per request, with fds attached where they travel:
`{"op": "hold", "cpus": [...], "pages": N}` + [map fd, one perf fd per CPU],
`{"op": "take"}` -> the perf fds back, `{"op": "stop"}`. The socket is mode 0600 in the
agent's state directory.

`start` runs `python -m spyglass.collector.keeper --detach SOCKET LOG`, which forks the
keeper away so that it outlives its starter and is nobody's child.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

KEEPER_SOCKET = "perf-rings.sock"
_MAX_FDS = 1024
_MAX_LINE = 1 << 16


@dataclass(frozen=True)
class KeptRings:
    """Perf fds handed back by the keeper (ours to close), with what they were made as."""

    cpus: tuple[int, ...]
    pages: int
    fds: tuple[int, ...]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class KeeperError(RuntimeError):
    """The keeper could not be reached or answered nonsense."""


# -- the agent's side --------------------------------------------------------------------

def _request(path: str, message: dict[str, object], fds: Sequence[int] = (),
             timeout_s: float = 5.0) -> tuple[dict[str, object], list[int]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(path)
        except OSError as exc:
            raise KeeperError(f"no ring keeper at {path}: {exc.strerror}") from None
        try:
            socket.send_fds(s, [json.dumps(message).encode() + b"\n"], list(fds))
            data, got, _, _ = socket.recv_fds(s, _MAX_LINE, _MAX_FDS)
        except OSError as exc:
            raise KeeperError(f"the ring keeper at {path} went away: {exc}") from None
    try:
        answer = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        for fd in got:
            os.close(fd)
        raise KeeperError(f"the ring keeper at {path} answered {data[:80]!r}") from None
    if not isinstance(answer, dict):
        raise KeeperError(f"the ring keeper at {path} answered {answer!r}")
    return answer, got


def take(path: str) -> KeptRings | None:
    """The rings the keeper holds (fds duplicated for us), or None if it holds none."""
    answer, fds = _request(path, {"op": "take"})
    cpus, pages = answer.get("cpus"), answer.get("pages")
    if not fds:
        return None
    if (not isinstance(cpus, list) or not isinstance(pages, int) or len(cpus) != len(fds)
            or not all(isinstance(c, int) for c in cpus)):
        KeptRings((), 0, tuple(fds)).close()
        raise KeeperError(f"the ring keeper at {path} answered {answer!r} with {len(fds)} fds")
    return KeptRings(tuple(cpus), pages, tuple(fds))


def hold(path: str, map_fd: int, cpus: Sequence[int], pages: int, fds: Sequence[int]) -> None:
    """Give the keeper the perf event array `map_fd` and the rings it points at (one perf
    fd per CPU in `cpus`); it keeps its own copies of the fds, and lets go of what it held."""
    answer, _ = _request(path, {"op": "hold", "cpus": list(cpus), "pages": pages},
                         [map_fd, *fds])
    if answer.get("ok") is not True:
        raise KeeperError(f"the ring keeper refused the rings: {answer.get('error')}")


def stop(path: str, timeout_s: float = 2.0) -> bool:
    """Ask the keeper to drop the rings and exit, and wait until its socket is gone;
    False if none was running."""
    try:
        _request(path, {"op": "stop"}, timeout_s=timeout_s)
    except KeeperError:
        return False
    deadline = time.monotonic() + timeout_s
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return True


def start(path: str, log_path: str | None = None, timeout_s: float = 5.0) -> int:
    """Start a keeper that belongs to nobody (it forks away from its starter, so it is
    neither our child nor in our session); returns its PID once it answers."""
    done = subprocess.run([sys.executable, "-m", "spyglass.collector.keeper", "--detach",
                           path, log_path or os.devnull], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise KeeperError(f"the ring keeper did not start ({done.returncode}): "
                          f"{done.stderr.strip()[-300:]}")
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer, _ = _request(path, {"op": "ping"}, timeout_s=0.5)
        except KeeperError:
            time.sleep(0.05)
            continue
        if answer.get("pid") == pid:
            return pid
        raise KeeperError(f"another process ({answer.get('pid')}) answers at {path}")
    raise KeeperError(f"the ring keeper (pid {pid}) did not listen on {path} within "
                      f"{timeout_s:g} s" + (f"; see {log_path}" if log_path else ""))


def _detach(path: str, log_path: str) -> None:
    """Fork the keeper away: print its PID and return; the child serves in a new session."""
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        return
    os.setsid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        serve(path)
    finally:
        os._exit(0)


# -- the keeper's side -------------------------------------------------------------------

class _Held:
    def __init__(self) -> None:
        self.cpus: list[int] = []
        self.pages = 0
        self.map_fd = -1
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []

    def replace(self, cpus: list[int], pages: int, map_fd: int, fds: list[int]) -> None:
        """Hold these; what was held before goes only once they are (a map's entries
        survive the hand-over when it is the same map)."""
        maps = []
        try:
            for fd in fds:
                # Writable, as the reader's: a read-only first mapping would turn the ring
                # into overwrite mode, and the reader's tail would be ignored.
                maps.append(mmap.mmap(fd, (1 + pages) * mmap.PAGESIZE, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE))
        except BaseException:
            for m in maps:
                m.close()
            for fd in (map_fd, *fds):
                os.close(fd)
            raise
        self.clear()
        self.cpus, self.pages, self.map_fd, self.fds, self.maps = cpus, pages, map_fd, fds, maps

    def clear(self) -> None:
        for m in self.maps:
            m.close()
        for fd in (self.map_fd, *self.fds):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.cpus, self.pages, self.map_fd, self.fds, self.maps = [], 0, -1, [], []


def serve(path: str) -> None:
    """Hold rings until asked to stop (or SIGTERM). Single-threaded: requests are rare."""
    held = _Held()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old_umask = os.umask(0o177)
    try:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
    finally:
        os.umask(old_umask)
    srv.listen(8)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the agent is not ours
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5.0)
                if not _handle(conn, held):
                    return
    finally:
        held.clear()
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _handle(conn: socket.socket, held: _Held) -> bool:
    """One request; False when the keeper should exit."""
    try:
        data, fds, _, _ = socket.recv_fds(conn, _MAX_LINE, _MAX_FDS)
        request = json.loads(data.decode())
        op = request.get("op") if isinstance(request, dict) else None
    except (OSError, UnicodeDecodeError, ValueError):
        return True
    reply: dict[str, object] = {"ok": True}
    out: list[int] = []
    if op == "hold":
        cpus, pages = request.get("cpus"), request.get("pages")
        if (isinstance(cpus, list) and isinstance(pages, int) and len(cpus) + 1 == len(fds)
                and all(isinstance(c, int) for c in cpus) and pages > 0):
            try:
                held.replace(list(cpus), pages, fds[0], list(fds[1:]))
                fds = []
            except OSError as exc:
                reply = {"ok": False, "error": str(exc)}
        else:
            reply = {"ok": False, "error": "hold needs cpus, pages, the map fd and one fd "
                                           "per cpu"}
    elif op == "take":
        reply = {"ok": True, "cpus": held.cpus, "pages": held.pages}
        out = held.fds
    elif op == "stop":
        socket.send_fds(conn, [json.dumps(reply).encode() + b"\n"], [])
        return False
    elif op == "ping":
        reply = {"ok": True, "pid": os.getpid()}
    else:
        reply = {"ok": False, "error": f"unknown op {op!r}"}
    for fd in fds:  # fds that came with a request that does not keep them
        os.close(fd)
    socket.send_fds(conn, [json.dumps(reply).encode() + b"\n"], out)
    return True


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--detach":
        _detach(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        serve(sys.argv[1])
    else:
        print("usage: python -m spyglass.collector.keeper [--detach SOCKET LOG | SOCKET]",
              file=sys.stderr)
        sys.exit(2)

