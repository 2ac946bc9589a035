"""Teardown survives its terminal: `make demo | tee`, a closed terminal, an impatient user.

Each case starts a real `spyglass up` with private names, ends it the way a terminal
would, and then checks that nothing of it is left on the host (netns, links, pins, the
pods' processes, the agent, the ring keeper, the records), by the names and PIDs it was
given (`harness._ours_left`).

- `make demo 2>&1 | tee log`, then Ctrl-C: the terminal sends SIGINT to the whole
  pipeline, `tee` dies first, and every later write of `spyglass up` fails with EPIPE.
- SIGHUP: the terminal closed.
- Ctrl-C, then Ctrl-C again (and again) while teardown runs.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    SPYGLASS,
    Up,
    _ours_left,
    _recorded_pids,
    _running,
    free_port,
    manifest_text,
    pod_cidr,
    wait_serving,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def private_args(up: Up, port: int) -> list[str]:
    """Names of this run only, so a user's demo (or another test) is never touched."""
    return ["--listen", f"127.0.0.1:{port}", "--state-dir", up.state_dir, "--pin-dir",
            up.pin_dir, "--prefix", up.prefix, "--link-prefix", up.prefix, "--pod-cidr",
            pod_cidr(up.prefix), "--service-cidr", f"10.199.{int(up.prefix[-1], 36)}.0/24",
            "--store", "none"]


def launch(tmp: Path, name: str, command: Callable[[list[str]], list[str]]) -> Up:
    """Run `command(private args)` in a session of its own; wait until the API serves."""
    port = free_port()
    up = Up(proc=None, url=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
            state_dir=str(tmp / "state"), pin_dir=f"/sys/fs/bpf/spyglass-{name}-{os.getpid()}",
            prefix=name, log=tmp / "up.log", started=time.monotonic())
    up.proc = subprocess.Popen(command(private_args(up, port)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    wait_serving(up, 120, name)
    return up


def finish(up: Up, links: list[str], pids: list[int], timeout: float = 60) -> None:
    """Wait for the session and every process it recorded to end (the shell returns as soon
    as `make` does; `spyglass up` may still be tearing down), then check that nothing is
    left, and clean up if something is."""
    deadline = time.monotonic() + timeout
    try:
        up.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(up.proc.pid, signal.SIGKILL)
        up.proc.wait()
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _ours_left(up, links, pids)
    if left:
        subprocess.run([SPYGLASS, "down", "--state-dir", up.state_dir, "--pin-dir",
                        up.pin_dir, "--link-prefix", up.prefix], check=False)
        log = up.log.read_text() if up.log.exists() else ""
        pytest.fail(f"left behind: {left}\n{log}")


def test_make_demo_piped_to_tee_then_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    log = tmp_path / "up.log"

    def pipeline(args: list[str]) -> list[str]:
        demo_args = shlex.join(args)
        return ["bash", "-c", f"make -s -C {shlex.quote(str(REPO))} demo "
                f"DEMO_ARGS={shlex.quote(demo_args)} 2>&1 | tee {shlex.quote(str(log))}"]

    up = launch(tmp_path, "sgt", pipeline)
    links, pids = _recorded_pids(up)
    assert links and pids, "the demo recorded no pods"
    os.killpg(up.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    finish(up, links, pids)
    assert "spyglass is up" in log.read_text()  # tee took what came before the Ctrl-C


def test_sighup_tears_down(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(manifest_text())
    up = launch(tmp_path, "sgh", lambda args: [SPYGLASS, "up", "--manifest", str(manifest),
                                               *args])
    links, pids = _recorded_pids(up)
    os.killpg(up.proc.pid, signal.SIGHUP)  # the terminal closed
    finish(up, links, pids)


def test_ctrl_c_again_during_teardown_is_noted_not_obeyed(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(manifest_text())
    log = tmp_path / "up.log"

    def logged(args: list[str]) -> list[str]:
        cmd = shlex.join([SPYGLASS, "up", "--manifest", str(manifest), *args])
        return ["bash", "-c", f"exec {cmd} > {shlex.quote(str(log))} 2>&1"]

    up = launch(tmp_path, "sgc", logged)
    links, pids = _recorded_pids(up)
    os.killpg(up.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while "tearing down" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(3):  # the impatient user
        os.killpg(up.proc.pid, signal.SIGINT)
        time.sleep(0.05)
    finish(up, links, pids)
    assert "SIGINT noted; still tearing down" in log.read_text()
