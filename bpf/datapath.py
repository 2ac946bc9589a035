"""Compile, load, attach and program the TC datapath (bpf/datapath.c).

One `Datapath` owns one bcc module. Its stateful maps are pinned under `pin_dir`
(`pins.py`): the first load creates them, and every later load **adopts** them, so an
agent that restarts finds conntrack, policy, services and endpoints as they were and
writes only what differs. Its two programs are attached to the host side of each pod
veth by an atomic `tc filter replace`, so swapping in a new agent's programs never
leaves a packet without one. Map writes go straight through libbcc with the ctypes
layouts of `maps.py`, so the encoding is the one the unit tests check.

The perf event array `sg_events` is made afresh by each load and filled by the collector
with its per-CPU perf rings (`events_map_fd`) before the programs are attached.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import dataclasses
import errno
import ipaddress
import os
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from spyglass.bpf import kernel, pins, tc
from spyglass.bpf.lb_plan import LB_MAPS, BatchOp, ServicePlan, ServiceTable
from spyglass.bpf.maps import (
    CFG_POLICY_AUDIT,
    POLICY_MAPS,
    Config,
    CtEntry,
    DatapathEndpoint,
    EndpointInfo,
    IpcacheValue,
    MapOp,
    config_value,
    ct_key,
    endpoint_key,
    endpoint_value,
    ipcache_key,
    ipcache_value,
    plan_policy_update,
    policy_entries,
)
from spyglass.model import defaults
from spyglass.model.policy import CIDR_IDENTITY_BASE, CompiledPolicy
from spyglass.model.services import ServiceEntry

__all__ = ["Datapath", "DatapathEndpoint", "DatapathError", "PolicyLoadStats",
           "ServiceLoadStats", "cleanup", "DEFAULT_PIN_DIR"]

BPF_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(BPF_DIR, "datapath.c")
DEFAULT_PIN_DIR = defaults.PIN_DIR
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


@dataclass(frozen=True)
class PolicyLoadStats:
    """What a `load_policy` changed: entries per map as (added, updated, deleted)."""

    added: int
    updated: int
    deleted: int
    unchanged: int
    seconds: float
    per_map: dict[str, tuple[int, int, int]]
    batched: bool  # False if some map fell back to one syscall per entry

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.deleted


@dataclass(frozen=True)
class ServiceLoadStats:
    """What a service load changed: services added/updated/removed, map entries written."""

    added: int
    updated: int
    removed: int
    unchanged: int
    writes: int       # map entries written or deleted
    seconds: float    # planning + writing
    batched: bool     # False if some map fell back to one syscall per entry


def _service_cidr_cflags(cidr: str) -> list[str]:
    """SG_SVC_NET/SG_SVC_MASK as the u32 the C reads from the packet's address bytes."""
    net = ipaddress.ip_network(cidr, strict=True)
    if net.version != 4:
        raise ValueError(f"service CIDR {cidr!r}: only IPv4 service CIDRs are supported")
    as_read = struct.Struct("=I")  # the C memcpy's the 4 address bytes into a __u32
    return [f"-DSG_SVC_NET={as_read.unpack(net.network_address.packed)[0]}U",
            f"-DSG_SVC_MASK={as_read.unpack(net.netmask.packed)[0]}U"]


class Datapath:
    """The loaded datapath. Use as a context manager or call `close()`."""

    def __init__(self, *, pin_dir: str = DEFAULT_PIN_DIR, aggregation: str = "medium",
                 interval_s: float = 5.0, ct_size: int = 65536,
                 policy_size: int = 65536, services_size: int = 65536,
                 backends_size: int = 262144, service_cidr: str | None = None) -> None:
        """`service_cidr`: addresses there that are no service are dropped (reason 158)
        rather than routed: a ClusterIP must never leave the host by the default route."""
        config = config_value(aggregation, interval_s)  # validate before compiling
        svc_flags = _service_cidr_cflags(service_cidr) if service_cidr else []
        if not isinstance(ct_size, int) or not 1024 <= ct_size <= 1 << 24:
            raise ValueError(f"ct_size {ct_size!r} must be an integer in 1024..16777216")
        if not isinstance(policy_size, int) or not 1024 <= policy_size <= 1 << 24:
            raise ValueError(f"policy_size {policy_size!r} must be an integer in "
                             "1024..16777216")
        for name, size in (("services_size", services_size), ("backends_size", backends_size)):
            if not isinstance(size, int) or not 16 <= size <= 1 << 24:
                raise ValueError(f"{name} {size!r} must be an integer in 16..16777216")
        self.pin_dir = pin_dir
        self._closed = False
        self._attached: set[int] = set()
        self._bpf: Any = None
        self._config = config
        #: What load_policy last wrote, per map (the ipcache part: CIDR entries only).
        self._policy: dict[str, dict[bytes, bytes]] = {name: {} for name in POLICY_MAPS}
        self._policy_cidrs: dict[bytes, bytes] = {}  # wanted, including ones a pod shadows
        self._pod_keys: dict[bytes, DatapathEndpoint] = {}  # pod /32 ipcache keys
        self._endpoints: dict[int, DatapathEndpoint] = {}  # by host ifindex
        self._no_batch: set[str] = set()
        self._services = ServiceTable()
        for probe in (kernel.probe_root, kernel.probe_bcc, kernel.probe_kernel_headers):
            ok, detail = probe()
            if not ok:
                raise DatapathError(detail)
        self._prepare_pin_dir()
        #: Whether this load found a datapath pinned by an earlier agent and took it over.
        self.adopted = pins.was_loaded(pin_dir)
        self._generation = pins.AgentInfo()  # set by begin_generation
        self._bpf, self._fns = self._load([
            f'-DSG_PIN_DIR="{pin_dir}"',
            f"-DSG_CT_SIZE={ct_size}", f"-DSG_POLICY_SIZE={policy_size}",
            f"-DSG_LB_CT_SIZE={min(2 * ct_size, 1 << 24)}",
            f"-DSG_SERVICES_SIZE={services_size}", f"-DSG_BACKENDS_SIZE={backends_size}",
            *svc_flags])
        try:
            self._check_adopted()
            self._write("sg_config", ct.c_uint32(0), config)
            if self.adopted:
                self._read_back()
        except BaseException:
            self.close(detach=False, unpin=not self.adopted)
            raise

    # -- setup -----------------------------------------------------------------

    def _load(self, sizes: list[str]) -> tuple[Any, dict[str, Any]]:
        from bcc import BPF

        cflags = [f"-I{BPF_DIR}", *sizes]
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

    def _prepare_pin_dir(self) -> None:
        real = os.path.realpath(self.pin_dir)
        if not any(real == m or real.startswith(m + "/") for m in _bpffs_mounts()):
            raise DatapathError(f"{self.pin_dir} is not on a bpf filesystem: mount -t bpf bpf "
                                "/sys/fs/bpf or choose a pin_dir under it")
        if '"' in self.pin_dir or "\\" in self.pin_dir:
            raise DatapathError(f"pin dir {self.pin_dir!r} may not contain quotes or backslashes")
        os.makedirs(self.pin_dir, mode=0o700, exist_ok=True)

    def _check_adopted(self) -> None:
        """bcc reuses a pinned map whatever its size: refuse one this load did not mean."""
        actual, wanted = {}, {}
        for name in pins.PINNED_MAPS:
            table = self._bpf[name]
            actual[name] = pins.shape(table.map_fd)
            leaf = getattr(table, "sLeaf", table.Leaf)  # a per-CPU map's one-CPU value
            wanted[name] = pins.MapShape(ct.sizeof(table.Key), ct.sizeof(leaf),
                                         int(table.max_entries))
        try:
            pins.check_definitions(actual, wanted, self.pin_dir)
        except pins.PinError as exc:
            raise DatapathError(str(exc)) from None

    def _read_back(self) -> None:
        """An adopted datapath: believe the kernel's maps, so later loads write only diffs."""
        self._resync_policy()
        self._services.resync(*(self._read_map(name) for name in LB_MAPS))
        ipcache = self._read_map("sg_ipcache")
        for raw_key, raw_value in self._read_map("sg_endpoints").items():
            ep = _endpoint_from_map(raw_key, raw_value)
            key = bytes(ipcache_key(f"{ep.ipv4}/32"))
            self._endpoints[ep.ifindex] = ep
            if key in ipcache:
                self._pod_keys[key] = ep
        self._policy_cidrs = dict(self._policy["sg_ipcache"])

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

    def attach(self, ifindex: int) -> str:
        """Attach (or swap in, atomically) the programs on a pod veth: 'attached'|'replaced'."""
        if self._closed:
            raise DatapathError("the datapath is closed")
        with IPRoute() as ipr:
            if not _link_exists(ipr, ifindex):
                raise DatapathError(f"no network interface with ifindex {ifindex}: is the pod "
                                    "still there? (ip -o link)")
            done = tc.attach(ipr, ifindex,
                             ingress=(self._fns["from_container"].fd, "from_container"),
                             egress=(self._fns["to_container"].fd, "to_container"))
        self._attached.add(ifindex)
        return "replaced" if "replaced" in done else "attached"

    def detach(self, ifindex: int) -> None:
        with IPRoute() as ipr:
            tc.detach(ipr, ifindex)
        self._attached.discard(ifindex)

    def upsert_endpoint(self, ep: DatapathEndpoint) -> None:
        key = ipcache_key(f"{ep.ipv4}/32")
        self._endpoints[ep.ifindex] = ep
        self._write("sg_endpoints", endpoint_key(ep), endpoint_value(ep))
        self._write("sg_ipcache", key, ipcache_value(ep.identity, ep.ep_id, flags=1))
        # A pod's /32 outranks a policy CIDR of the same prefix (it overwrote it).
        self._pod_keys[bytes(key)] = ep
        self._policy["sg_ipcache"].pop(bytes(key), None)

    def delete_endpoint(self, ep: DatapathEndpoint) -> None:
        key = ipcache_key(f"{ep.ipv4}/32")
        self._endpoints.pop(ep.ifindex, None)
        self._delete("sg_endpoints", endpoint_key(ep))
        self._delete("sg_ipcache", key)
        raw = bytes(key)
        if raw in self._pod_keys and _same(self._pod_keys[raw], ep):
            del self._pod_keys[raw]
        cidr_value = self._policy_cidrs.get(raw)
        if cidr_value is not None:  # the policy's /32 CIDR comes back from under the pod
            self._write("sg_ipcache", key, IpcacheValue.from_buffer_copy(cidr_value))
            self._policy["sg_ipcache"][raw] = cidr_value

    def sync_endpoints(self, wanted: Sequence[DatapathEndpoint]) -> tuple[int, int]:
        """Make the endpoint maps hold exactly `wanted`; returns (written, deleted).

        Endpoints whose entries already say the same are not touched, so an agent that
        adopts a datapath rewrites nothing for pods that did not change while it was away.
        """
        want = {ep.ifindex: ep for ep in wanted}
        written = deleted = 0
        for ifindex, have in sorted(self._endpoints.items()):
            new = want.get(ifindex)
            if new is None or not _same(new, have):
                self.delete_endpoint(have)
                deleted += 1
        for ifindex, ep in sorted(want.items()):
            current = self._endpoints.get(ifindex)
            if current is None or not _same(current, ep):
                self.upsert_endpoint(ep)
                written += 1
            else:
                self._endpoints[ifindex] = ep  # keep the name the caller knows it by
        return written, deleted

    @property
    def endpoints(self) -> dict[int, DatapathEndpoint]:
        """The endpoints programmed now, by host ifindex."""
        return dict(self._endpoints)

    def upsert_ipcache(self, cidr: str, identity: int, ep_id: int = 0) -> None:
        self._write("sg_ipcache", ipcache_key(cidr), ipcache_value(identity, ep_id))

    def delete_ipcache(self, cidr: str) -> bool:
        return self._delete("sg_ipcache", ipcache_key(cidr))

    def set_aggregation(self, level: str, interval_s: float) -> None:
        """Takes effect on the next packet. Every level but none/disabled is
        active-CT aggregation (see maps.parse_aggregation)."""
        config = config_value(level, interval_s)
        config.flags = self._config.flags
        self._write("sg_config", ct.c_uint32(0), config)
        self._config = config

    def set_policy_audit(self, all: bool) -> None:  # noqa: A002 - the agent's flag name
        """Policy audit mode for every endpoint (`up --policy-audit`): denies are
        reported with verdict AUDIT and the packets pass. Per-identity audit
        comes with the compiled policy (`CompiledPolicy.audit`)."""
        config = Config.from_buffer_copy(bytes(self._config))
        config.flags = (config.flags | CFG_POLICY_AUDIT) if all else (
            config.flags & ~CFG_POLICY_AUDIT)
        self._write("sg_config", ct.c_uint32(0), config)
        self._config = config

    def load_policy(self, compiled: CompiledPolicy) -> PolicyLoadStats:
        """Make the policy maps (and the ipcache's CIDR entries) equal `compiled`.

        Only the difference is written, in the order of `maps.plan_policy_update`,
        so established allowed connections never see a moment without their
        entry and the programs are never reloaded. Pods' /32 ipcache entries are
        never touched. If a write fails, what was written stays written, the
        record of the maps is re-read from the kernel, and DatapathError says
        so: loading the same policy again completes it.
        """
        start = time.perf_counter()
        desired = policy_entries(compiled, frozenset(self._pod_keys))
        all_cidrs = {bytes(ipcache_key(c)): bytes(ipcache_value(i))
                     for c, i in compiled.cidr_identities.items()}
        plan = plan_policy_update(self._policy, desired)
        counts = {name: [0, 0, 0] for name in POLICY_MAPS}
        for op in plan:
            have = self._policy[op.map]
            try:
                self._apply(op)
            except OSError as exc:
                self._resync_policy()
                raise DatapathError(f"loading policy into {op.map} failed ({exc}); the maps "
                                    "may hold a mix of the old and new policy: load it "
                                    "again (if the map is full, start with a larger "
                                    "policy_size)") from None
            if op.delete:
                counts[op.map][2] += len(op.keys)
                for key in op.keys:
                    del have[key]
            else:
                for key, value in zip(op.keys, op.values, strict=True):
                    counts[op.map][1 if key in have else 0] += 1
                    have[key] = value
        self._policy_cidrs = all_cidrs
        added, updated, deleted = (sum(c[i] for c in counts.values()) for i in range(3))
        total = sum(len(v) for v in desired.values())
        return PolicyLoadStats(
            added=added, updated=updated, deleted=deleted,
            unchanged=total - added - updated, seconds=time.perf_counter() - start,
            per_map={name: (c[0], c[1], c[2]) for name, c in counts.items()},
            batched=not (self._no_batch & {op.map for op in plan}))

    # -- services ---------------------------------------------------------------

    def load_services(self, entries: Sequence[ServiceEntry]) -> ServiceLoadStats:
        """Make the service maps hold exactly `entries` (a full sync), by diff.

        Services equal to what is loaded are not touched; the rest go in four
        batched writes at most (lb_plan's order: slots in, services in, stale
        services out, stale slots out). Established connections keep their
        backends throughout (sg_lb_ct), even ones whose backend left.
        """
        return self._run_service_plan(lambda: self._services.plan(entries, full=True))

    def update_service(self, entry: ServiceEntry) -> ServiceLoadStats:
        """Add or change one service (a backend came or went, affinity changed...)."""
        return self._run_service_plan(lambda: self._services.plan([entry]))

    @property
    def services(self) -> dict[int, ServiceEntry]:
        """The services loaded now, by id."""
        return dict(self._services.entries)

    def service_slots(self, service_id: int) -> tuple[tuple[str, int], ...]:
        """The service's backends by slot, as the kernel picks them (tests, debugging)."""
        return self._services.slots.get(service_id, ())

    def _run_service_plan(self, make: Any) -> ServiceLoadStats:
        start = time.perf_counter()
        if self._closed:
            raise DatapathError("the datapath is closed")
        plan: ServicePlan = make()
        for op in plan.ops:
            try:
                self._apply_batch(op)
            except OSError as exc:
                self._services.resync(*(self._read_map(name) for name in LB_MAPS))
                raise DatapathError(
                    f"loading services into {op.map} failed ({exc}); the maps may hold a mix "
                    "of old and new services: load them again (if a map is full, start with "
                    "larger services_size / backends_size)") from None
        self._services.commit(plan)
        return ServiceLoadStats(plan.added, plan.updated, plan.removed, plan.unchanged,
                                plan.writes, time.perf_counter() - start,
                                not (self._no_batch & {op.map for op in plan.ops}))

    def policy_entries(self) -> dict[str, dict[bytes, bytes]]:
        """The policy maps as the kernel holds them now (tests and debugging)."""
        return {name: self._read_policy_map(name) for name in POLICY_MAPS}

    def submit_failures(self) -> list[int]:
        """Cumulative perf_submit failures per possible CPU (exact, unlike lost_cb); they
        count across agent restarts, since the counter is pinned."""
        return [v[0] for v in pins.read_percpu_u64(self._fd("sg_submit_fail"))]

    def submitted(self) -> list[int]:
        """Cumulative successful perf_submits per possible CPU (pinned like the failures)."""
        return [v[0] for v in pins.read_percpu_u64(self._fd("sg_submit_ok"))]

    def reader_state(self) -> list[pins.ReaderState]:
        """What the agents delivered per CPU, and which failures they told (sg_reader)."""
        return pins.read_reader(self._fd("sg_reader"))

    def save_reader_state(self, states: list[pins.ReaderState], *, unstored: int) -> None:
        """Note what the agent delivered and told per CPU, and what its store has not
        written yet (the next agent counts that as lost to history if this one dies)."""
        pins.write_reader(self._fd("sg_reader"), states)
        if unstored != self._generation.unstored:
            info = dataclasses.replace(self._generation, unstored=unstored)
            pins.write_agent(self._fd("sg_agent"), info)
            self._generation = info

    def begin_generation(self, pid: int, now_ns: int) -> tuple[pins.AgentInfo, pins.AgentInfo]:
        """Record a new agent generation; returns (the previous record, the new one).

        A generation that starts on an adopted datapath is a restart, and counts as one.
        """
        fd = self._fd("sg_agent")
        before = pins.read_agent(fd)
        after = pins.AgentInfo(before.generation + 1, now_ns, pid,
                               before.restarts + (1 if self.adopted else 0))
        pins.write_agent(fd, after)
        self._generation = after
        return before, after

    # -- policy map plumbing ---------------------------------------------------

    def _apply(self, op: MapOp) -> None:
        """One MapOp as one batch syscall (BPF_MAP_*_BATCH), or one per entry
        where the kernel lacks batch support for the map type."""
        from bcc.libbcc import lib

        table = self._bpf[op.map]
        n = len(op.keys)
        keys = (table.Key * n).from_buffer_copy(b"".join(op.keys))
        if op.map not in self._no_batch:
            count = ct.c_uint32(n)
            if op.delete:
                ret = lib.bpf_delete_batch(self._fd(op.map), ct.byref(keys), ct.byref(count))
            else:
                values = (table.Leaf * n).from_buffer_copy(b"".join(op.values))
                ret = lib.bpf_update_batch(self._fd(op.map), ct.byref(keys), ct.byref(values),
                                           ct.byref(count))
            if ret == 0:
                return
            code = ct.get_errno() or -ret
            if code not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
                raise OSError(code, f"batch write to {op.map}: {os.strerror(code)}")
            if code != errno.ENOENT:
                self._no_batch.add(op.map)
            # ENOENT: a key we meant to delete was gone; finish one by one.
        for i in range(n):
            if op.delete:
                self._delete(op.map, keys[i])
            else:
                self._write(op.map, keys[i], table.Leaf.from_buffer_copy(op.values[i]))

    def _apply_batch(self, op: BatchOp) -> None:
        """A BatchOp (keys and values already packed back to back) as one syscall,
        or one per entry where batching is unsupported or a delete hit a missing key."""
        from bcc.libbcc import lib

        fd = self._fd(op.map)
        keys = ct.create_string_buffer(op.keys, len(op.keys))
        if op.map not in self._no_batch:
            count = ct.c_uint32(op.count)
            if op.delete:
                ret = lib.bpf_delete_batch(fd, keys, ct.byref(count))
            else:
                values = ct.create_string_buffer(op.values, len(op.values))
                ret = lib.bpf_update_batch(fd, keys, values, ct.byref(count))
            if ret == 0:
                return
            code = ct.get_errno() or -ret
            if code not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
                raise OSError(code, f"batch write to {op.map}: {os.strerror(code)}")
            if code != errno.ENOENT:
                self._no_batch.add(op.map)
        values_list = op.split_values()
        for i, key in enumerate(op.split_keys()):
            kbuf = ct.create_string_buffer(key, len(key))
            if op.delete:
                ret = lib.bpf_delete_elem(fd, kbuf)
                if ret < 0 and (ct.get_errno() or -ret) == errno.ENOENT:
                    continue
                _check(ret, f"deleting from {op.map}")
            else:
                vbuf = ct.create_string_buffer(values_list[i], len(values_list[i]))
                _check(lib.bpf_update_elem(fd, kbuf, vbuf, 0), f"writing {op.map}")

    def _read_policy_map(self, name: str) -> dict[bytes, bytes]:
        out = self._read_map(name)
        if name == "sg_ipcache":  # only the CIDR entries are the policy's
            out = {k: v for k, v in out.items()
                   if IpcacheValue.from_buffer_copy(v).identity >= CIDR_IDENTITY_BASE}
        return out

    def _read_map(self, name: str) -> dict[bytes, bytes]:
        """A hash or LPM map's raw contents (one syscall per entry: debugging and resync)."""
        from bcc.libbcc import lib

        table = self._bpf[name]
        fd = self._fd(name)
        out: dict[bytes, bytes] = {}
        key, nxt, value = table.Key(), table.Key(), table.Leaf()
        ret = lib.bpf_get_next_key(fd, None, ct.byref(nxt))
        while ret == 0:
            if lib.bpf_lookup_elem(fd, ct.byref(nxt), ct.byref(value)) == 0:
                out[bytes(nxt)] = bytes(value)
            ct.memmove(ct.byref(key), ct.byref(nxt), ct.sizeof(key))
            ret = lib.bpf_get_next_key(fd, ct.byref(key), ct.byref(nxt))
        return out

    def _resync_policy(self) -> None:
        """After a failed write, believe the kernel rather than our record."""
        for name in POLICY_MAPS:
            try:
                self._policy[name] = self._read_policy_map(name)
            except OSError:
                self._policy[name] = {}

    def ct_lookup(self, saddr: str, daddr: str, sport: int, dport: int,
                  proto: int) -> CtEntry | None:
        """The conntrack entry for an original-direction tuple (ICMP echo: id, id)."""
        from bcc.libbcc import lib

        entry = CtEntry()
        ret = lib.bpf_lookup_elem(self._fd("sg_ct"),
                                  ct.byref(ct_key(saddr, daddr, sport, dport, proto)),
                                  ct.byref(entry))
        return entry if ret == 0 else None

    def close(self, *, detach: bool = True, unpin: bool = True) -> None:
        """Free this load. By default detach everywhere and unpin: the datapath is gone.

        `detach=False, unpin=False` leaves the programs attached and the maps pinned, so
        the pods stay enforced while no agent runs and the next agent adopts it all.
        Safe to call twice and after a failed init.
        """
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for ifindex in sorted(self._attached) if detach else ():
            try:
                with IPRoute() as ipr:
                    tc.detach(ipr, ifindex)
            except Exception as exc:  # keep going: unpinning matters more
                errors.append(f"detaching ifindex {ifindex}: {exc}")
        self._attached.clear()
        if unpin:
            pins.unpin_all(self.pin_dir)
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
    """Undo a datapath left behind: our tc filters on `ifname_prefix*` links and our pins.

    Only filters named `spyglass:*` are removed, and a clsact qdisc only when
    nothing else is attached to it. Returns a line per thing removed.
    """
    return [*tc.cleanup_links(ifname_prefix), *pins.unpin_all(pin_dir)]


def _same(a: DatapathEndpoint, b: DatapathEndpoint) -> bool:
    """Equal as the maps hold them (the interface's name is not in the maps)."""
    return (a.ifindex, a.ep_id, a.identity, a.ipv4) == (b.ifindex, b.ep_id, b.identity, b.ipv4)


def _endpoint_from_map(raw_key: bytes, raw_value: bytes) -> DatapathEndpoint:
    """An sg_endpoints entry back as the endpoint that wrote it (name unknown)."""
    ifindex = int.from_bytes(raw_key[:4], sys.byteorder)
    info = EndpointInfo.from_buffer_copy(raw_value)
    ipv4 = str(ipaddress.IPv4Address(int(info.ipv4).to_bytes(4, sys.byteorder)))
    return DatapathEndpoint(ifindex=ifindex, ifname="", ep_id=int(info.ep_id),
                            identity=int(info.identity), ipv4=ipv4)
