"""The few raw syscalls the perf reader needs, through ctypes.

bcc's perf buffer wakes the reader once per event and hands events over one by
one through a callback; that measured as the bottleneck (docs/collector.md). Opening the
per-CPU perf events ourselves lets us choose a byte watermark for wakeups and
view whole ring reads as numpy arrays. Only three calls are needed:
perf_event_open, bpf(BPF_MAP_UPDATE_ELEM / BPF_MAP_DELETE_ELEM) on the perf
event array, and an ioctl to enable the event.
"""

from __future__ import annotations

import ctypes as ct
import errno
import fcntl
import os
import platform

#: (perf_event_open, bpf) syscall numbers per architecture.
_SYSCALLS: dict[str, tuple[int, int]] = {
    "x86_64": (298, 321),
    "aarch64": (241, 280),
}

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400  # _IO('$', 0)
PERF_EVENT_IOC_DISABLE = 0x2401  # _IO('$', 1)
#: perf_event_attr.flags bit positions (the C bitfield, least significant first).
_ATTR_BIT_DISABLED = 0
_ATTR_BIT_WATERMARK = 14

BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_ANY = 0


class PerfEventAttr(ct.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER5 (112 bytes; every kernel since 4.1)."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("size", ct.c_uint32),
        ("config", ct.c_uint64),
        ("sample_period", ct.c_uint64),
        ("sample_type", ct.c_uint64),
        ("read_format", ct.c_uint64),
        ("flags", ct.c_uint64),
        ("wakeup", ct.c_uint32),  # wakeup_events, or wakeup_watermark when watermark=1
        ("bp_type", ct.c_uint32),
        ("config1", ct.c_uint64),
        ("config2", ct.c_uint64),
        ("branch_sample_type", ct.c_uint64),
        ("sample_regs_user", ct.c_uint64),
        ("sample_stack_user", ct.c_uint32),
        ("clockid", ct.c_int32),
        ("sample_regs_intr", ct.c_uint64),
        ("aux_watermark", ct.c_uint32),
        ("sample_max_stack", ct.c_uint16),
        ("reserved_2", ct.c_uint16),
    ]


assert ct.sizeof(PerfEventAttr) == 112, ct.sizeof(PerfEventAttr)


class _BpfMapElemAttr(ct.Structure):
    """The map-element member of union bpf_attr (map_fd, key, value, flags)."""

    _fields_ = [
        ("map_fd", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("key", ct.c_uint64),
        ("value", ct.c_uint64),
        ("flags", ct.c_uint64),
    ]


class BpfSysError(OSError):
    """A perf/bpf syscall failed; the message says which call and what to check."""


def _numbers() -> tuple[int, int]:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine]
    except KeyError:
        raise BpfSysError(
            errno.ENOSYS,
            f"the perf reader knows the syscall numbers for {sorted(_SYSCALLS)} only, not "
            f"{machine!r}: add them to spyglass/collector/bpfsys.py",
        ) from None


_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


def perf_event_open_bpf_output(cpu: int, *, watermark_bytes: int) -> int:
    """Open a BPF-output perf event on `cpu` that wakes pollers every `watermark_bytes`.

    The event starts disabled so that nothing is written before the ring is
    mapped; `enable` turns it on.
    """
    attr = PerfEventAttr()
    attr.type = PERF_TYPE_SOFTWARE
    attr.size = ct.sizeof(PerfEventAttr)
    attr.config = PERF_COUNT_SW_BPF_OUTPUT
    attr.sample_period = 1
    attr.sample_type = PERF_SAMPLE_RAW
    attr.flags = (1 << _ATTR_BIT_DISABLED) | (1 << _ATTR_BIT_WATERMARK)
    attr.wakeup = max(1, int(watermark_bytes))
    nr_perf, _ = _numbers()
    fd = _libc.syscall(
        ct.c_long(nr_perf), ct.byref(attr), ct.c_int(-1), ct.c_int(cpu), ct.c_int(-1),
        ct.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )
    if fd < 0:
        err = ct.get_errno()
        hint = {
            errno.EACCES: "run as root (or grant CAP_PERFMON/CAP_SYS_ADMIN)",
            errno.EPERM: "run as root, or lower /proc/sys/kernel/perf_event_paranoid",
            errno.ENODEV: f"CPU {cpu} is offline",
            errno.EINVAL: "the kernel rejected the attributes (needs Linux >= 4.4)",
        }.get(err, "check dmesg")
        raise BpfSysError(err, f"perf_event_open on CPU {cpu} failed: {os.strerror(err)}; {hint}")
    return int(fd)


def enable(fd: int) -> None:
    fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)


def _bpf_elem(cmd: int, map_fd: int, key: int, value: int | None) -> int:
    k = ct.c_uint32(key)
    v = ct.c_uint32(value if value is not None else 0)
    attr = _BpfMapElemAttr()
    attr.map_fd = map_fd
    attr.key = ct.addressof(k)
    attr.value = ct.addressof(v) if value is not None else 0
    attr.flags = BPF_ANY
    _, nr_bpf = _numbers()
    rc = _libc.syscall(ct.c_long(nr_bpf), ct.c_int(cmd), ct.byref(attr),
                       ct.c_uint(ct.sizeof(attr)))
    return 0 if rc == 0 else ct.get_errno()


def perf_map_set(map_fd: int, cpu: int, perf_fd: int) -> None:
    """Point the perf event array's slot `cpu` at our perf event."""
    err = _bpf_elem(BPF_MAP_UPDATE_ELEM, map_fd, cpu, perf_fd)
    if err:
        hint = {
            errno.EBADF: f"map fd {map_fd} is not open",
            errno.EINVAL: f"fd {map_fd} is not a BPF_MAP_TYPE_PERF_EVENT_ARRAY",
            errno.E2BIG: f"the perf event array has no slot for CPU {cpu}",
        }.get(err, "check that the map is a perf event array")
        raise BpfSysError(err, f"writing perf fd into map {map_fd} at CPU {cpu} failed: "
                               f"{os.strerror(err)}; {hint}")


def perf_map_clear(map_fd: int, cpu: int) -> None:
    """Remove our perf event from the map so the datapath stops writing into a dead ring.

    Closing the perf fd is not enough: the map keeps its own reference. A slot
    that is already empty (ENOENT) or a map that is gone (EBADF) is fine.
    """
    err = _bpf_elem(BPF_MAP_DELETE_ELEM, map_fd, cpu, None)
    if err not in (0, errno.ENOENT, errno.EBADF):
        raise BpfSysError(err, f"clearing CPU {cpu} in map {map_fd} failed: {os.strerror(err)}")


def parse_cpu_list(text: str) -> list[int]:
    """Parse the kernel's CPU list format ("0-3,5,7-8")."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            cpus.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise ValueError(f"not a CPU list: {text!r} (expected e.g. '0-3,5')") from None
    return sorted(set(cpus))


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    with open(path, encoding="ascii") as f:
        return parse_cpu_list(f.read())
