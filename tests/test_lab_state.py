"""The state file and teardown from it, without a kernel: processes only, no netns."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spyglass.lab import procs
from spyglass.lab.errors import LabError
from spyglass.lab.model import LabPod, ProcessRecord
from spyglass.lab.state import (
    STATE_VERSION,
    exec_in_pod,
    find_pod,
    leftovers,
    load_state,
    pods_from_state,
    save_state,
    state_path,
    teardown_from_state,
)


def a_pod(**changes: object) -> LabPod:
    base = dict(namespace="shop", name="cart-0", ip="10.244.0.4", labels={"app": "cart"},
                identity=4242, identity_labels=("k8s:app=cart",), ep_id=3,
                netns="sgtB-none-cart-0", host_ifname="sgtB0000000none", workload="cart")
    base.update(changes)
    return LabPod(**base)  # type: ignore[arg-type]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, as the lab starts containers; killed by PID if left."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_pod_round_trips_through_json() -> None:
    pod = a_pod(processes=(ProcessRecord("api", 12, 34, ("x", "y"), "/l.log"),),
                owned=("netns", "link"), host_ifindex=9, host_mac="aa:bb:cc:dd:ee:ff")
    assert LabPod.from_dict(pod.to_dict()) == pod
    assert pod.pid == 12 and a_pod().pid == 0


def test_save_and_load(tmp_path: Path) -> None:
    assert load_state(str(tmp_path)) is None
    state = {"version": STATE_VERSION, "pods": [a_pod().to_dict()]}
    save_state(str(tmp_path / "sub"), state)
    loaded = load_state(str(tmp_path / "sub"))
    assert loaded == state
    assert find_pod(pods_from_state(loaded), "cart-0") == a_pod()
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["lab.json"]  # no temp left


@pytest.mark.parametrize(("content", "pattern"), [
    pytest.param("{not json", r"cannot read the lab state file", id="garbage"),
    pytest.param('{"version": 99}', r"is not a spyglass lab state file", id="wrong-version"),
    pytest.param("[]", r"is not a spyglass lab state file", id="not-an-object"),
])
def test_load_errors(tmp_path: Path, content: str, pattern: str) -> None:
    Path(state_path(str(tmp_path))).write_text(content)
    with pytest.raises(LabError, match=pattern):
        load_state(str(tmp_path))


def test_teardown_from_state_without_a_lab(tmp_path: Path) -> None:
    assert teardown_from_state(str(tmp_path)) == []


def test_teardown_stops_recorded_processes(tmp_path: Path,
                                           sleeper: subprocess.Popen[bytes]) -> None:
    st = procs.starttime(sleeper.pid)
    assert st is not None
    rec = ProcessRecord("api", sleeper.pid, st)
    state = {"version": STATE_VERSION, "pods": [a_pod(processes=(rec,)).to_dict()]}
    save_state(str(tmp_path), state)
    assert leftovers(state) == [f"pid {sleeper.pid} (shop/cart-0)"]
    done = teardown_from_state(str(tmp_path), grace=5.0)
    assert sleeper.wait(timeout=5) != 0
    assert done[0] == f"shop/cart-0: stopped api (pid {sleeper.pid})"
    assert not Path(state_path(str(tmp_path))).exists()
    assert teardown_from_state(str(tmp_path)) == []  # idempotent


def test_a_reused_pid_is_not_killed(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    st = procs.starttime(sleeper.pid)
    assert st is not None
    rec = ProcessRecord("api", sleeper.pid, st - 1)  # same PID, different process
    state = {"version": STATE_VERSION, "pods": [a_pod(processes=(rec,)).to_dict()]}
    save_state(str(tmp_path), state)
    assert teardown_from_state(str(tmp_path), grace=0.1) == [f"removed {state_path(str(tmp_path))}"]
    assert sleeper.poll() is None


def test_sigterm_ignored_means_sigkill() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
         "time.sleep(60)"], start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        st = procs.starttime(stubborn.pid)
        assert st is not None
        msg = procs.stop(ProcessRecord("c", stubborn.pid, st), grace=0.2, popen=stubborn)
        assert msg is not None and msg.startswith("killed c")
        assert stubborn.returncode == -9
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()
        assert stubborn.stdout is not None
        stubborn.stdout.close()


def test_exec_needs_the_netns() -> None:
    with pytest.raises(LabError, match=r"no network namespace 'sgtB-none-cart-0'.*spyglass up"):
        exec_in_pod(a_pod(), ["true"])
    with pytest.raises(LabError, match="nothing to run"):
        exec_in_pod(a_pod(), [])
