"""The datapath's pinned state: the maps every load adopts, and the agents' records beside them.

A restarted agent must find the datapath exactly as it was: conntrack, policy, services
and endpoints are pinned under the pin dir (`SG_MAP` in maps.h) and bcc reuses a pinned
map instead of creating one. bcc does not compare a pinned map's definition with the
source's, though: a map made with another size is reused silently. `check_definitions`
does, and says what to do. Two maps are the agents' own notebook (no program reads them):
`sg_agent`, the generation now running and how many restarts came before, and `sg_reader`,
what the agents delivered from each CPU's ring and which submit failures they already told,
so that a restart accounts for every event that no agent read.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Every pinned map, as maps.h declares them. sg_events and sg_scratch are not pinned: the
#: perf event array is refilled by each agent, and the scratch space holds nothing.
PINNED_MAPS: tuple[str, ...] = (
    "sg_submit_fail", "sg_submit_ok", "sg_endpoints", "sg_ipcache", "sg_config", "sg_ct",
    "sg_policy_allow", "sg_policy_deny", "sg_policy_selected", "sg_services", "sg_backends",
    "sg_lb_ct", "sg_lb_affinity", "sg_reader", "sg_agent",
)
#: The map whose pin says "a datapath was loaded here before".
ADOPTION_MARK = "sg_ct"


class PinError(RuntimeError):
    """A pinned map cannot be adopted; the message says what to do."""


class _MapInfo(ct.Structure):
    """The head of struct bpf_map_info (linux/bpf.h), which is all we read."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16), ("rest", ct.c_uint8 * 64)]


@dataclass(frozen=True, slots=True)
class MapShape:
    key_size: int
    value_size: int
    max_entries: int


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """sg_agent[0]: the generation running the datapath."""

    generation: int = 0
    started_ns: int = 0
    pid: int = 0
    restarts: int = 0
    unstored: int = 0  # flows read but not yet in the store, as the agent last noted


class _AgentInfoC(ct.Structure):
    _fields_ = [("generation", ct.c_uint64), ("started_ns", ct.c_uint64),
                ("pid", ct.c_uint64), ("restarts", ct.c_uint64), ("unstored", ct.c_uint64)]


@dataclass(frozen=True, slots=True)
class ReaderState:
    """sg_reader for one CPU: events delivered from its ring, and failures already told."""

    delivered: int = 0
    failures_told: int = 0


def _lib() -> Any:
    from bcc.libbcc import lib

    lib.bpf_obj_get_info.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    lib.bpf_obj_get_info.restype = ct.c_int
    return lib


def present(pin_dir: str) -> list[str]:
    """The pinned maps of ours that exist in `pin_dir` now."""
    return [n for n in PINNED_MAPS if os.path.exists(os.path.join(pin_dir, n))]


def was_loaded(pin_dir: str) -> bool:
    return os.path.exists(os.path.join(pin_dir, ADOPTION_MARK))


def shape(fd: int) -> MapShape:
    """A map's key size, value size and entries, as the kernel holds it."""
    info = _MapInfo()
    size = ct.c_uint32(ct.sizeof(info))
    if _lib().bpf_obj_get_info(fd, ct.byref(info), ct.byref(size)) != 0:
        err = ct.get_errno()
        raise OSError(err, f"reading map info: {os.strerror(err)}")
    return MapShape(info.key_size, info.value_size, info.max_entries)


def check_definitions(actual: Mapping[str, MapShape], wanted: Mapping[str, MapShape],
                      pin_dir: str) -> None:
    """Refuse a pinned map whose definition is not this load's (another size, another build)."""
    bad = [f"{name} ({a.max_entries} entries of {a.key_size}+{a.value_size} bytes, this "
           f"agent wants {w.max_entries} of {w.key_size}+{w.value_size})"
           for name, w in sorted(wanted.items())
           if (a := actual.get(name)) is not None and a != w]
    if bad:
        raise PinError(f"the datapath pinned in {pin_dir} was made differently: "
                       f"{'; '.join(bad)}. Start the agent with the same sizes, or remove "
                       "the old datapath with `spyglass down` (this resets conntrack)")


def read_agent(fd: int) -> AgentInfo:
    from bcc.libbcc import lib

    value = _AgentInfoC()
    if lib.bpf_lookup_elem(fd, ct.byref(ct.c_int(0)), ct.byref(value)) != 0:
        return AgentInfo()
    return AgentInfo(value.generation, value.started_ns, value.pid, value.restarts,
                     value.unstored)


def write_agent(fd: int, info: AgentInfo) -> None:
    from bcc.libbcc import lib

    value = _AgentInfoC(info.generation, info.started_ns, info.pid, info.restarts,
                        info.unstored)
    if lib.bpf_update_elem(fd, ct.byref(ct.c_int(0)), ct.byref(value), 0) != 0:
        err = ct.get_errno()
        raise OSError(err, f"writing sg_agent: {os.strerror(err)}")


def possible_cpus() -> int:
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


def read_percpu_u64(fd: int, fields: int = 1) -> list[tuple[int, ...]]:
    """A per-CPU array's element 0 as `fields` u64s per possible CPU."""
    from bcc.libbcc import lib

    ncpu = possible_cpus()
    values = (ct.c_uint64 * (ncpu * fields))()
    if lib.bpf_lookup_elem(fd, ct.byref(ct.c_int(0)), ct.byref(values)) != 0:
        err = ct.get_errno()
        raise OSError(err, f"reading a per-CPU map: {os.strerror(err)}")
    return [tuple(int(values[c * fields + f]) for f in range(fields)) for c in range(ncpu)]


def read_reader(fd: int) -> list[ReaderState]:
    return [ReaderState(d, f) for d, f in read_percpu_u64(fd, 2)]


def write_reader(fd: int, states: list[ReaderState]) -> None:
    """All CPUs' reader states in one write (a per-CPU value is one slot per possible CPU)."""
    from bcc.libbcc import lib

    ncpu = possible_cpus()
    values = (ct.c_uint64 * (ncpu * 2))()
    for cpu, st in enumerate(states[:ncpu]):
        values[2 * cpu], values[2 * cpu + 1] = st.delivered, st.failures_told
    if lib.bpf_update_elem(fd, ct.byref(ct.c_int(0)), ct.byref(values), 0) != 0:
        err = ct.get_errno()
        raise OSError(err, f"writing sg_reader: {os.strerror(err)}")


def unpin_all(pin_dir: str) -> list[str]:
    """Remove our pins (and the directory when it is left empty); a line per pin removed."""
    done = []
    for name in PINNED_MAPS:
        path = os.path.join(pin_dir, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        done.append(f"unpinned {path}")
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(pin_dir)
    return done
