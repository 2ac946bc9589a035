"""The lab's state file, and teardown driven by it alone.

`spyglass up` may crash, or be killed, and `spyglass down`, `lab ls` and
`lab exec` run from other shells: all of them work from
`<state_dir>/lab.json`. It is rewritten (atomically) right after each
resource is created, so it lists exactly what exists and is ours: teardown
removes only what is recorded there, tolerates anything already gone, and can
be run any number of times.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from spyglass.lab import netns as nl
from spyglass.lab import procs
from spyglass.lab.errors import LabError
from spyglass.lab.model import LabPod
from spyglass.lab.naming import resolve_ref
from spyglass.model import defaults

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
#: 2: the state holds the lab's documents, so any process can rebuild the Lab from it.
STATE_VERSION = 2
DEFAULT_STATE_DIR = defaults.STATE_DIR


@contextlib.contextmanager
def locked(state_dir: str = DEFAULT_STATE_DIR) -> Iterator[None]:
    """One change to the lab at a time, across processes (`lab add` beside `lab scale`)."""
    os.makedirs(state_dir, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def state_path(state_dir: str = DEFAULT_STATE_DIR) -> str:
    return os.path.join(state_dir, STATE_FILE)


def load_state(state_dir: str = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The running lab's state, or None when no lab is up."""
    path = state_path(state_dir)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LabError(f"cannot read the lab state file {path}: {e}; if no lab is running, "
                       f"delete it and clean up with `ip netns list` / `ip link`") from e
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise LabError(f"{path} is not a spyglass lab state file (version "
                       f"{STATE_VERSION}); remove it if no lab is running")
    return state


def save_state(state_dir: str, state: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    os.makedirs(state_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lab.", suffix=".json", dir=state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, state_path(state_dir))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pods_from_state(state: Mapping[str, Any]) -> list[LabPod]:
    return [LabPod.from_dict(p) for p in state.get("pods", ())]


def find_pod(pods: Sequence[LabPod], ref: str) -> LabPod:
    """Resolve "ns/pod" or bare "pod" (see naming.resolve_ref); PodRefError if none/many."""
    ns, name = resolve_ref(ref, [(p.namespace, p.name) for p in pods])
    return next(p for p in pods if p.namespace == ns and p.name == name)


def exec_in_pod(pod: LabPod, argv: Sequence[str], timeout: float | None = None,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv inside the pod's netns, capturing text output (`spyglass lab exec`)."""
    if not argv:
        raise LabError("nothing to run: give a command, e.g. `curl http://10.244.0.4:8080/`")
    if not nl.netns_exists(pod.netns):
        raise LabError(f"pod {pod.ref} has no network namespace {pod.netns!r}: "
                       f"is the lab up? Start it with `spyglass up`")
    return subprocess.run(procs.netns_argv(pod.netns, argv), capture_output=True, text=True,
                          timeout=timeout, input=input, check=False)


def teardown(state: dict[str, Any], state_dir: str, *, grace: float = 3.0,
             popens: Mapping[int, subprocess.Popen[bytes]] | None = None) -> list[str]:
    """Remove everything `state` records as ours; returns what was done.

    Order: processes, host routes and neighbours, veths, netns; then the
    state file. Anything already gone is skipped. If something cannot be
    removed, the state file is kept (so this can be rerun) and a LabError
    lists the failures.
    """
    done: list[str] = []
    errors: list[str] = []
    pods = pods_from_state(state)
    for pod in pods:
        for rec in pod.processes:
            try:
                msg = procs.stop(rec, grace, (popens or {}).get(rec.pid))
                if msg:
                    done.append(f"{pod.ref}: {msg}")
            except OSError as e:
                errors.append(f"{pod.ref}: could not stop pid {rec.pid}: {e}")
    for pod in pods:
        try:
            done.extend(f"{pod.ref}: {m}" for m in _teardown_pod(pod))
        except Exception as e:  # keep going: one stuck pod must not strand the others
            errors.append(f"{pod.ref}: {e}")
    if errors:
        raise LabError("lab teardown incomplete: " + "; ".join(errors)
                       + f". The state file {state_path(state_dir)} is kept: "
                       "fix the cause and run `spyglass down` again")
    for path in (state_path(state_dir), os.path.join(state_dir, LOCK_FILE)):
        try:
            os.unlink(path)
            done.append(f"removed {path}")
        except FileNotFoundError:
            pass
    # Pod logs go with a clean teardown: nothing of ours stays on the host. (A pod that
    # fails at start has its log tail shown by `up` before this runs.)
    logs = os.path.join(state_dir, "lab")
    if os.path.isdir(logs):
        for name in os.listdir(logs):
            if name.endswith(".log"):
                os.unlink(os.path.join(logs, name))
        with contextlib.suppress(OSError):
            os.rmdir(logs)
            done.append(f"removed {logs}")
    with contextlib.suppress(OSError):
        os.rmdir(state_dir)  # only when empty: the dir may be the user's
    return done


def teardown_pod(pod: LabPod, *, grace: float = 3.0,
                 popens: Mapping[int, subprocess.Popen[bytes]] | None = None) -> list[str]:
    """Remove one pod (its processes, then its network), for `spyglass lab delete`."""
    done = []
    for rec in pod.processes:
        msg = procs.stop(rec, grace, (popens or {}).get(rec.pid))
        if msg:
            done.append(f"{pod.ref}: {msg}")
    done.extend(f"{pod.ref}: {m}" for m in _teardown_pod(pod))
    return done


def _teardown_pod(pod: LabPod) -> list[str]:
    done = []
    link_ours = "link" in pod.owned and nl.our_link(pod.host_ifname, pod.host_ifindex)
    if link_ours and "neigh" in pod.owned and nl.delete_host_neigh(pod.host_ifindex, pod.ip):
        done.append(f"deleted neighbour {pod.ip} dev {pod.host_ifname}")
    if link_ours and "route" in pod.owned and nl.delete_host_route(pod.host_ifindex, pod.ip):
        done.append(f"deleted route {pod.ip}/32 dev {pod.host_ifname}")
    if link_ours and nl.delete_link(pod.host_ifname):
        done.append(f"deleted link {pod.host_ifname}")
    cookie = nl.netns_cookie(pod.netns) if "netns" in pod.owned else 0
    if cookie and cookie == pod.netns_cookie:
        stragglers = procs.kill_pids(nl.pids_in_netns(pod.netns))
        if stragglers:
            done.append(f"killed leftover pids {stragglers} in netns {pod.netns}")
        if nl.remove_netns(pod.netns):
            done.append(f"deleted netns {pod.netns}")
    return done


def teardown_from_state(state_dir: str = DEFAULT_STATE_DIR, grace: float = 3.0) -> list[str]:
    """`spyglass down` from any shell: tear down what the state file records; [] if none."""
    state = load_state(state_dir)
    if state is None:
        return []
    return teardown(state, state_dir, grace=grace)


def leftovers(state: Mapping[str, Any]) -> list[str]:
    """What the state records that still exists (used by tests and `spyglass doctor`)."""
    found = []
    for pod in pods_from_state(state):
        if pod.netns_cookie and nl.netns_cookie(pod.netns) == pod.netns_cookie:
            found.append(f"netns {pod.netns}")
        if nl.our_link(pod.host_ifname, pod.host_ifindex):
            found.append(f"link {pod.host_ifname}")
        found.extend(f"pid {r.pid} ({pod.ref})" for r in pod.processes if procs.alive(r))
    return found
