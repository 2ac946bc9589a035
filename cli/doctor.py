"""`spyglass doctor`: every requirement of the datapath, checked for real, in plain words.

bcc's own failures are opaque ("invalid argument", a page of clang errors), so each
check here tries the smallest real thing (compile and load a TC program, add a clsact
qdisc to a throwaway veth) and says what is missing and how to fix it. `spyglass up`
runs the same checks before it touches the host.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

OK, MISSING, WARN = "ok", "missing", "warn"

APT_PACKAGES = ("python3-bpfcc", "bpfcc-tools", "libbpfcc", "linux-headers-amd64", "iproute2")


@dataclass(frozen=True)
class Check:
    """One requirement: what was found, and how to fix it when it is missing."""

    name: str
    status: str
    detail: str
    fix: str = ""
    fixer: Callable[[], None] | None = None
    required: bool = True


def _kernel() -> str:
    return os.uname().release


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", OK, "running as root")
    return Check("root", MISSING, "not running as root: TC programs, netns and veths need it",
                 "run it with sudo")


def check_kernel() -> Check:
    release = _kernel()
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Check("kernel", WARN, f"kernel {release}: cannot parse the version", required=False)
    if (major, minor) >= (5, 10):
        return Check("kernel", OK, f"kernel {release}")
    return Check("kernel", MISSING, f"kernel {release} is older than 5.10",
                 "boot a kernel 5.10 or newer (clsact, BPF LPM tries and perf output are needed)")


def check_btf() -> Check:
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return Check("btf", OK, "kernel BTF at /sys/kernel/btf/vmlinux", required=False)
    return Check("btf", WARN, "no kernel BTF: bpftool and CO-RE tools will be limited",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y", required=False)


def _mount_bpffs() -> None:
    os.makedirs("/sys/fs/bpf", exist_ok=True)
    subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def check_bpffs() -> Check:
    if os.path.ismount("/sys/fs/bpf"):
        return Check("bpffs", OK, "bpffs mounted at /sys/fs/bpf")
    return Check("bpffs", MISSING, "bpffs is not mounted at /sys/fs/bpf (maps cannot be pinned)",
                 "run `spyglass doctor --fix` (mount -t bpf bpf /sys/fs/bpf)", _mount_bpffs)


def _header_candidates() -> list[str]:
    return sorted(glob.glob("/usr/src/linux-headers-*-amd64"))


def _link_headers() -> None:
    candidates = _header_candidates()
    if not candidates:
        _apt_install(["linux-headers-amd64"])
        candidates = _header_candidates()
    if not candidates:
        raise RuntimeError("linux-headers-amd64 installed no /usr/src/linux-headers-*-amd64")
    hdr = candidates[-1]
    mod = f"/lib/modules/{_kernel()}"
    os.makedirs(mod, exist_ok=True)
    for name, target in (("build", hdr), ("source", hdr.removesuffix("-amd64") + "-common")):
        link = os.path.join(mod, name)
        if os.path.lexists(link):
            os.unlink(link)
        if os.path.isdir(target):
            os.symlink(target, link)


def check_headers() -> Check:
    build = f"/lib/modules/{_kernel()}/build"
    if os.path.isdir(os.path.join(build, "include")):
        return Check("headers", OK, f"kernel headers at {build} -> {os.path.realpath(build)}")
    found = _header_candidates()
    how = (f"links {found[-1]}" if found else "installs linux-headers-amd64 and links it")
    return Check("headers", MISSING,
                 f"kernel headers not found for {_kernel()}: {build} is missing",
                 f"run `spyglass doctor --fix` ({how})", _link_headers)


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env)


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return Check("bcc", MISSING,
                     "bcc is not importable (it comes from Debian, not PyPI)",
                     "run `spyglass doctor --fix` (apt-get install python3-bpfcc), and use a venv "
                     "made with --system-site-packages (`make setup` does both)",
                     lambda: _apt_install(list(APT_PACKAGES)))
    return Check("bcc", OK, f"bcc {getattr(bcc, '__version__', '?')} importable")


def check_compile() -> Check:
    """Compile and load a minimal TC program: the check that catches header mismatches."""
    try:
        from bcc import BPF

        prog = BPF(text="int sg_probe(struct __sk_buff *skb) { return 0; }")
        prog.load_func("sg_probe", BPF.SCHED_CLS)
        prog.cleanup()
    except ImportError:
        return Check("compile", MISSING, "skipped: bcc is missing", "fix bcc first")
    except Exception as exc:  # bcc raises bare Exceptions with clang output
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("compile", MISSING, f"bcc cannot compile or load a TC program: {first}",
                     "run `spyglass doctor --fix`, then check `dmesg` for verifier messages")
    return Check("compile", OK, "bcc compiles and loads a TC (sched_cls) program")


def check_clsact() -> Check:
    """Add a clsact qdisc to a throwaway veth pair, then remove it."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return Check("clsact", MISSING, "pyroute2 is not installed", "run `make setup`")
    name = f"sgdoc{os.getpid() % 100000}"
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="veth", peer=name + "p")
            try:
                idx = ipr.link_lookup(ifname=name)[0]
                ipr.tc("add", "clsact", idx)
            finally:
                ipr.link("del", ifname=name)
    except Exception as exc:
        return Check("clsact", MISSING, f"cannot add a veth with a clsact qdisc: {exc}",
                     "load the veth and sch_ingress modules, or use a kernel with "
                     "CONFIG_NET_CLS_ACT and CONFIG_VETH")
    return Check("clsact", OK, "veth and clsact qdiscs work")


def check_forwarding() -> Check:
    path = "/proc/sys/net/ipv4/ip_forward"
    if os.access(path, os.W_OK):
        return Check("forwarding", OK, "net.ipv4.ip_forward is writable (the lab sets it, "
                     "and puts the old value back)")
    return Check("forwarding", MISSING, f"{path} is not writable",
                 "run as root outside a read-only /proc")


def check_iproute2() -> Check:
    if shutil.which("ip"):
        return Check("iproute2", OK, "iproute2 (`ip netns exec` runs pod commands)")
    return Check("iproute2", MISSING, "the `ip` command is missing",
                 "run `spyglass doctor --fix` (apt-get install iproute2)",
                 lambda: _apt_install(["iproute2"]))


ALL_CHECKS: tuple[Callable[[], Check], ...] = (
    check_root, check_kernel, check_btf, check_bpffs, check_headers, check_bcc,
    check_iproute2, check_compile, check_clsact, check_forwarding,
)


def run_checks() -> list[Check]:
    return [check() for check in ALL_CHECKS]


def blocking(checks: list[Check]) -> list[Check]:
    """The checks that stop `spyglass up`."""
    return [c for c in checks if c.required and c.status == MISSING]
