"""Feature probes for `spyglass doctor`: can this machine run the datapath?

Each probe returns (ok, detail) where detail is a sentence a user can act on,
because "Invalid argument" from deep inside bcc tells nobody what to install.
Probes are cheap and side-effect free, except `probe_clsact`, which needs a
scratch link and makes it inside a throwaway network namespace it removes.
"""

from __future__ import annotations

import os

Probe = tuple[bool, str]


def headers_dir(release: str | None = None) -> str:
    return f"/lib/modules/{release or os.uname().release}/build"


def probe_root() -> Probe:
    if os.geteuid() == 0:
        return True, "running as root"
    return False, "the datapath needs root (CAP_BPF, CAP_NET_ADMIN): run with sudo"


def probe_bcc() -> Probe:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return False, ("bcc is not importable: apt-get install python3-bpfcc bpfcc-tools "
                       "libbpfcc, and use a venv made with --system-site-packages "
                       "(never `pip install bcc`, an unrelated package)")
    return True, "bcc is importable"


def probe_kernel_headers(release: str | None = None) -> Probe:
    release = release or os.uname().release
    build = headers_dir(release)
    if not os.path.exists(build):
        return False, (f"kernel headers not found for {release} at {build}: "
                       "run `spyglass doctor --fix`")
    if not os.path.exists(os.path.join(build, "include")) and not os.path.exists(
        os.path.join(build, "Makefile")
    ):
        return False, f"{build} exists but holds no headers: run `spyglass doctor --fix`"
    return True, f"kernel headers at {os.path.realpath(build)}"


def probe_btf() -> Probe:
    path = "/sys/kernel/btf/vmlinux"
    if os.path.exists(path):
        return True, f"kernel BTF at {path}"
    return False, f"{path} is missing: the kernel was built without CONFIG_DEBUG_INFO_BTF"


def probe_bpffs(path: str = "/sys/fs/bpf") -> Probe:
    if os.path.ismount(path):
        return True, f"bpffs mounted at {path}"
    return False, f"bpffs is not mounted at {path}: mount -t bpf bpf {path}"


def probe_clsact() -> Probe:
    """Add a clsact qdisc to a veth in a scratch namespace: the only honest test."""
    ok, why = probe_root()
    if not ok:
        return ok, why
    from pyroute2 import NetNS, netns
    from pyroute2.netlink.exceptions import NetlinkError

    name = f"sgprobe-{os.getpid()}"
    try:
        netns.create(name)
    except (OSError, NetlinkError) as exc:
        return False, f"cannot create a network namespace to probe clsact: {exc}"
    try:
        with NetNS(name) as ns:
            ns.link("add", ifname="sgprobe0", kind="veth", peer="sgprobe1")
            idx = ns.link_lookup(ifname="sgprobe0")[0]
            ns.tc("add", "clsact", idx)
        return True, "clsact qdisc available"
    except NetlinkError as exc:
        return False, (f"cannot add a clsact qdisc ({exc}): the kernel needs "
                       "CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF (modprobe sch_ingress)")
    finally:
        netns.remove(name)
