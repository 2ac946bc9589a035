"""Compile, load, attach and program the TC datapath (bpf/datapath.c).

One `Datapath` owns one bcc module: its maps are pinned under `pin_dir` so
that a crashed agent can be cleaned up (`cleanup`) and tools can inspect them,
and its two programs are attached to the host side of each pod veth. Map
writes go straight through libbcc with the ctypes layouts of `maps.py`, so the
encoding is the one the unit tests check.

The perf event array `sg_events` is filled by the collector with its own
per-CPU perf fds (`events_map_fd`); nothing here opens perf buffers.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from spyglass.bpf import kernel, tc
from spyglass.bpf.maps import (
    MAP_NAMES,
    CtEntry,
    DatapathEndpoint,
    config_value,
    ct_key,
    endpoint_key,
    endpoint_value,
    ipcache_key,
    ipcache_value,
)

__all__ = ["Datapath", "DatapathEndpoint", "DatapathError", "cleanup", "DEFAULT_PIN_DIR"]

BPF_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(BPF_DIR, "datapath.c")
DEFAULT_PIN_DIR = "/sys/fs/bpf/spyglass"
PROGRAMS = ("from_container", "to_container")  # tc ingress, tc egress of the host veth


class DatapathError(RuntimeError):
    """The datapath cannot be set up; the message says what to do about it."""


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what clang and the verifier print to fd 2, for the error message."""
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _lib() -> Any:
    from bcc.libbcc import lib

    lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    lib.bpf_obj_pin.restype = ct.c_int
    return lib


def _check(ret: int, what: str) -> None:
    if ret < 0:
        code = ct.get_errno() or -ret
        raise OSError(code, f"{what}: {os.strerror(code)}")


class Datapath:
    """The loaded datapath. Use as a context manager or call `close()`."""

    def __init__(self, *, pin_dir: str = DEFAULT_PIN_DIR, aggregation: str = "medium",
                 interval_s: float = 5.0, ct_size: int = 65536) -> None:
        config = config_value(aggregation, interval_s)  # validate before compiling
        if not isinstance(ct_size, int) or not 1024 <= ct_size <= 1 << 24:
            raise ValueError(f"ct_size {ct_size!r} must be an integer in 1024..16777216")
        self.pin_dir = pin_dir
        self._closed = False
        self._attached: set[int] = set()
        self._pinned: list[str] = []
        self._bpf: Any = None
        for probe in (kernel.probe_root, kernel.probe_bcc, kernel.probe_kernel_headers):
            ok, detail = probe()
            if not ok:
                raise DatapathError(detail)
        self._check_pins()
        self._bpf, self._fns = self._load(ct_size)
        try:
            self._write("sg_config", ct.c_uint32(0), config)
            self._pin_all()
        except BaseException:
            self.close()
            raise

    # -- setup -----------------------------------------------------------------

    def _load(self, ct_size: int) -> tuple[Any, dict[str, Any]]:
        from bcc import BPF

        cflags = [f"-I{BPF_DIR}", f"-DSG_CT_SIZE={ct_size}"]
        with _captured_stderr() as err:
            try:
                bpf = BPF(src_file=SOURCE.encode(), cflags=cflags)
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
        if failure is not None:
            ok, detail = kernel.probe_kernel_headers()
            hint = detail if not ok else (
                "the kernel headers may not match this kernel: run `spyglass doctor --fix`; "
                "if they do, this is a bug in bpf/datapath.c")
            raise DatapathError(f"compiling {SOURCE} failed ({failure}); {hint}\n"
                                f"{_tail(err[0])}") from None
        fns: dict[str, Any] = {}
        for name in PROGRAMS:
            failure = None
            with _captured_stderr() as err:
                try:
                    fns[name] = bpf.load_func(name, BPF.SCHED_CLS)
                except Exception as exc:
                    failure = exc
            if failure is not None:
                bpf.cleanup()
                raise DatapathError(
                    f"the kernel verifier rejected {name} ({failure}); this is a bug in "
                    f"bpf/datapath.c or the kernel is too old (need >= 5.8).\n{_tail(err[0])}"
                ) from None
        return bpf, fns

    def _check_pins(self) -> None:
        stale = [n for n in MAP_NAMES if os.path.exists(os.path.join(self.pin_dir, n))]
        if stale:
            raise DatapathError(
                f"{', '.join(stale)} already pinned in {self.pin_dir}: another spyglass datapath "
                "is running, or one crashed; stop it or run `spyglass down` "
                "(spyglass.bpf.datapath.cleanup) first")

    def _pin_all(self) -> None:
        real = os.path.realpath(self.pin_dir)
        if not any(real == m or real.startswith(m + "/") for m in _bpffs_mounts()):
            raise DatapathError(f"{self.pin_dir} is not on a bpf filesystem: mount -t bpf bpf "
                                "/sys/fs/bpf or choose a pin_dir under it")
        os.makedirs(self.pin_dir, mode=0o700, exist_ok=True)
        lib = _lib()
        for name in MAP_NAMES:
            path = os.path.join(self.pin_dir, name)
            ret = lib.bpf_obj_pin(self._bpf[name].map_fd, path.encode())
            if ret < 0:
                code = ct.get_errno() or -ret
                raise DatapathError(f"pinning {name} at {path} failed: {os.strerror(code)}")
            self._pinned.append(path)

    # -- map writes -----------------------------------------------------------

    def _fd(self, name: str) -> int:
        if self._closed:
            raise DatapathError("the datapath is closed")
        return int(self._bpf[name].map_fd)

    def _write(self, name: str, key: Any, value: Any) -> None:
        from bcc.libbcc import lib

        ret = lib.bpf_update_elem(self._fd(name), ct.byref(key), ct.byref(value), 0)
        _check(ret, f"writing {name}")

    def _delete(self, name: str, key: Any) -> bool:
        from bcc.libbcc import lib

        ret = lib.bpf_delete_elem(self._fd(name), ct.byref(key))
        if ret < 0 and (ct.get_errno() or -ret) == errno.ENOENT:
            return False
        _check(ret, f"deleting from {name}")
        return True

    # -- public interface -----------------------------------------------------

    @property
    def bpf(self) -> Any:
        """The bcc module (tests and debugging; production code uses the methods)."""
        return self._bpf

    @property
    def events_map_fd(self) -> int:
        return self._fd("sg_events")

    @property
    def attached(self) -> frozenset[int]:
        return frozenset(self._attached)

    def attach(self, ifindex: int) -> None:
        if self._closed:
            raise DatapathError("the datapath is closed")
        with IPRoute() as ipr:
            if not _link_exists(ipr, ifindex):
                raise DatapathError(f"no network interface with ifindex {ifindex}: is the pod "
                                    "still there? (ip -o link)")
            tc.attach(ipr, ifindex,
                      ingress=(self._fns["from_container"].fd, "from_container"),
                      egress=(self._fns["to_container"].fd, "to_container"))
        self._attached.add(ifindex)

    def detach(self, ifindex: int) -> None:
        with IPRoute() as ipr:
            tc.detach(ipr, ifindex)
        self._attached.discard(ifindex)

    def upsert_endpoint(self, ep: DatapathEndpoint) -> None:
        self._write("sg_endpoints", endpoint_key(ep), endpoint_value(ep))
        self._write("sg_ipcache", ipcache_key(f"{ep.ipv4}/32"),
                    ipcache_value(ep.identity, ep.ep_id, flags=1))

    def delete_endpoint(self, ep: DatapathEndpoint) -> None:
        self._delete("sg_endpoints", endpoint_key(ep))
        self._delete("sg_ipcache", ipcache_key(f"{ep.ipv4}/32"))

    def upsert_ipcache(self, cidr: str, identity: int, ep_id: int = 0) -> None:
        self._write("sg_ipcache", ipcache_key(cidr), ipcache_value(identity, ep_id))

    def delete_ipcache(self, cidr: str) -> bool:
        return self._delete("sg_ipcache", ipcache_key(cidr))

    def set_aggregation(self, level: str, interval_s: float) -> None:
        """Takes effect on the next packet. Every level but none/disabled is
        active-CT aggregation (see maps.parse_aggregation)."""
        self._write("sg_config", ct.c_uint32(0), config_value(level, interval_s))

    def submit_failures(self) -> list[int]:
        """Cumulative perf_submit failures per possible CPU (exact, unlike lost_cb)."""
        from bcc.libbcc import lib
        from bcc.utils import get_possible_cpus

        ncpu = len(get_possible_cpus())
        values = (ct.c_uint64 * ncpu)()
        ret = lib.bpf_lookup_elem(self._fd("sg_submit_fail"), ct.byref(ct.c_uint32(0)),
                                  ct.byref(values))
        _check(ret, "reading sg_submit_fail")
        return [int(v) for v in values]

    def ct_lookup(self, saddr: str, daddr: str, sport: int, dport: int,
                  proto: int) -> CtEntry | None:
        """The conntrack entry for an original-direction tuple (ICMP echo: id, id)."""
        from bcc.libbcc import lib

        entry = CtEntry()
        ret = lib.bpf_lookup_elem(self._fd("sg_ct"),
                                  ct.byref(ct_key(saddr, daddr, sport, dport, proto)),
                                  ct.byref(entry))
        return entry if ret == 0 else None

    def close(self) -> None:
        """Detach everywhere, unpin, free. Safe to call twice and after a failed init."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for ifindex in sorted(self._attached):
            try:
                with IPRoute() as ipr:
                    tc.detach(ipr, ifindex)
            except Exception as exc:  # keep going: unpinning matters more
                errors.append(f"detaching ifindex {ifindex}: {exc}")
        self._attached.clear()
        for path in self._pinned:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._pinned.clear()
        with contextlib.suppress(OSError):
            os.rmdir(self.pin_dir)
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        if errors:
            raise DatapathError("; ".join(errors))

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _link_exists(ipr: IPRoute, ifindex: int) -> bool:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return bool(ipr.get_links(ifindex))
    except NetlinkError:
        return False


def _bpffs_mounts() -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [parts[1] for parts in (line.split() for line in fh) if parts[2] == "bpf"]


def cleanup(pin_dir: str = DEFAULT_PIN_DIR, ifname_prefix: str = "lxc") -> list[str]:
    """Undo a crashed datapath: our tc filters on `ifname_prefix*` links and our pins.

    Only filters named `spyglass:*` are removed, and a clsact qdisc only when
    nothing else is attached to it. Returns a line per thing removed.
    """
    done: list[str] = list(tc.cleanup_links(ifname_prefix))
    for name in MAP_NAMES:
        path = os.path.join(pin_dir, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        done.append(f"unpinned {path}")
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(pin_dir)
    return done
