"""The lab for real: netns, veths, routes and processes on this host, and nothing left after.

Needs root (no bpf). Names use the `sgtB` prefix, the pod CIDR is
10.199.66.0/24 and the state lives in a temp dir, so a real lab or another
engineer's tests are never touched; every fixture tears down in `finally`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from spyglass.lab import netns as nl
from spyglass.lab.errors import LabError
from spyglass.lab.lab import Lab
from spyglass.lab.manifest import parse_manifest
from spyglass.lab.model import LabPod
from spyglass.lab.state import leftovers, load_state, pods_from_state, teardown_from_state

pytestmark = pytest.mark.datapath

PREFIX = "sgtB"
CIDR = "10.199.66.0/24"
PY = sys.executable

MANIFEST = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata: {name: a, labels: {team: x}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: srv-0, namespace: a, labels: {app: srv}}
    spec:
      containers:
        - name: http
          command: ["{{python}}", "-m", "spyglass.lab.demoapp", "serve", "--port", "8080",
                    "--name", "{{pod}}", "--upstream", "http://{{ip:b/peer-0}}:8081/"]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: peer-0, namespace: b, labels: {app: peer}}
    spec:
      containers:
        - command: ["{{python}}", "-m", "spyglass.lab.demoapp", "serve", "--port", "8081"]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client-0, namespace: b, labels: {app: client}}
    spec:
      containers: [{name: idle}]
    """)


def ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def host_route_exists(ip: str) -> bool:
    with IPRoute() as ipr:  # a dump, filtered here: get_routes(dst=…) would do a route lookup
        return any(r.get_attr("RTA_DST") == ip and r["dst_len"] == 32
                   for r in ipr.get_routes(family=socket.AF_INET, table=254))


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def assert_gone(pods: list[LabPod], state_dir: Path) -> None:
    for p in pods:
        assert not nl.netns_exists(p.netns), p.netns
        assert nl.link_index(p.host_ifname) == 0, p.host_ifname
        assert not host_route_exists(p.ip), p.ip
        for rec in p.processes:
            assert not pid_alive(rec.pid), rec
    assert not (state_dir / "lab.json").exists()


def wait_for_http(lab: Lab, ref: str, url: str) -> subprocess.CompletedProcess[str]:
    """Poll from inside `ref` until `url` answers (servers need a moment to import)."""
    code = (f"from spyglass.lab.demoapp import fetch; import sys; s = fetch({url!r}, 2.0); "
            f"print(s); sys.exit(0 if s == 200 else 1)")
    for _ in range(100):
        r = lab.exec(ref, [PY, "-c", code], timeout=30)
        if r.returncode == 0:
            return r
        time.sleep(0.1)
    return r


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(parse_manifest(MANIFEST, "t.yaml"), pod_cidr=CIDR, prefix=PREFIX,
              link_prefix=PREFIX, state_dir=str(tmp_path), grace=2.0)
    try:
        yield lab
    finally:
        try:
            lab.down()
        finally:
            teardown_from_state(str(tmp_path))


def test_pods_talk_and_everything_goes_away(lab: Lab, tmp_path: Path) -> None:
    before = ip_forward()
    lab.up()
    pods = lab.pods
    srv, peer, client = lab.pod("a/srv-0"), lab.pod("peer-0"), lab.pod("client-0")
    assert ip_forward() == before  # forwarding is per lxc device, never host-wide

    # host side: what we recorded exists
    for p in pods:
        assert nl.netns_exists(p.netns) and nl.link_index(p.host_ifname) == p.host_ifindex > 0
        assert host_route_exists(p.ip)
        assert p.owned == ("netns", "link", "route", "neigh")
    assert srv.pid > 0 and pid_alive(srv.pid) and client.pid == 0
    state = load_state(str(tmp_path))
    assert state is not None and pods_from_state(state) == pods

    # TCP across namespaces, through a chain: client -> srv -> peer
    r = wait_for_http(lab, "client-0", f"http://{srv.ip}:8080/")
    assert (r.returncode, r.stdout) == (0, "200\n"), r.stderr
    # the source address the pod uses is its own /32
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.connect(({peer.ip!r}, 9)); print(s.getsockname()[0])")
    r = lab.exec("b/client-0", [PY, "-c", code], timeout=30)
    assert r.stdout.strip() == client.ip

    # exec passes exit codes and output through
    r = lab.exec("client-0", [PY, "-c", "import sys; print('out'); "
                              "print('err', file=sys.stderr); sys.exit(3)"], timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = lab.exec("client-0", ["sh", "-c", "cat"], input="piped", timeout=30)
    assert r.stdout == "piped"

    done = lab.down()
    assert any(m.endswith(f"deleted netns {srv.netns}") for m in done)
    assert_gone(pods, tmp_path)
    assert ip_forward() == before
    assert lab.down() == []  # idempotent
    assert not lab.is_up and lab.pod("srv-0").pid == 0


def test_second_lab_with_the_same_names_is_refused(lab: Lab, tmp_path: Path) -> None:
    lab.up()
    other_dir = tmp_path / "other"
    other = Lab(lab.manifest, pod_cidr=CIDR, prefix=PREFIX, link_prefix=PREFIX,
                state_dir=str(other_dir))
    with pytest.raises(LabError, match=rf"netns {PREFIX}-a-srv-0 exists"):
        other.up()
    with pytest.raises(LabError, match=r"a lab is already up .*run `spyglass down`"):
        Lab(lab.manifest, pod_cidr="10.199.67.0/24", prefix="sgtB2",
            state_dir=str(tmp_path)).up()
    assert nl.netns_exists(lab.pod("srv-0").netns)  # the first lab is untouched
    assert not other_dir.joinpath("lab.json").exists()


def test_failed_start_leaves_nothing(tmp_path: Path) -> None:
    text = MANIFEST.replace('containers: [{name: idle}]',
                            'containers: [{name: bad, command: ["sh", "-c", "echo oops; exit 7"]}]')
    lab = Lab(parse_manifest(text), pod_cidr=CIDR, prefix=PREFIX, link_prefix=PREFIX,
              state_dir=str(tmp_path), grace=2.0)
    try:
        with pytest.raises(LabError, match=r"b/client-0 container bad exited with code 7: oops"):
            lab.up()
        assert_gone(lab.pods, tmp_path)
    finally:
        lab.down()
        teardown_from_state(str(tmp_path))


def test_teardown_from_state_after_a_crash(tmp_path: Path) -> None:
    """`spyglass up` killed with SIGKILL: another process cleans up from the state file."""
    script = textwrap.dedent(f"""\
        import sys, time
        from spyglass.lab.lab import Lab
        from spyglass.lab.manifest import parse_manifest
        lab = Lab(parse_manifest(sys.stdin.read()), pod_cidr={CIDR!r}, prefix={PREFIX!r},
                  link_prefix={PREFIX!r}, state_dir={str(tmp_path)!r})
        lab.up()
        print("up", flush=True)
        time.sleep(120)
        """)
    owner = subprocess.Popen([PY, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdin is not None and owner.stdout is not None
        owner.stdin.write(MANIFEST)
        owner.stdin.close()
        assert owner.stdout.readline() == "up\n"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        state = load_state(str(tmp_path))
        assert state is not None and state["owner_pid"] == owner.pid
        pods = pods_from_state(state)
        assert leftovers(state)  # the crash left the lab in place
        assert json.loads((tmp_path / "lab.json").read_text())["pods"]
        done = teardown_from_state(str(tmp_path), grace=2.0)
        assert done and leftovers(state) == []
        assert_gone(pods, tmp_path)
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        teardown_from_state(str(tmp_path))


def test_stale_down_spares_a_newer_namesake(lab: Lab, tmp_path: Path) -> None:
    """Down from another shell, then a new netns with the same name: our down() leaves it be."""
    from pyroute2 import netns

    lab.up()
    name = lab.pod("srv-0").netns
    teardown_from_state(str(tmp_path), grace=2.0)
    netns.create(name)
    try:
        lab.down()
        assert nl.netns_exists(name)
    finally:
        nl.remove_netns(name)
