"""The service maps' bytes, and the writes that move them from one set of services to another.

Pure (no kernel), so the encodings and the update order are unit tested.

Slots. A service's backends sit in slots 0..count-1 of sg_backends, dense,
because the kernel picks `prandom % count`. A backend that stays in the
service keeps its slot; a hole left by a removed backend is filled first by a
new backend, and only then by moving a backend from the tail. So removing one
backend moves at most one other (its tail neighbour), and only that one's
affinity clients are re-picked. Established connections never move: they are
pinned in sg_lb_ct and keep their backend even after it left the service.

Order. Per load: backend slots in, service records in, stale service records
out, stale slots out. A growing service gets its new slots before its count
says they exist; a shrinking one lowers its count before its tail slots go,
so the kernel never picks a slot that is not there.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from spyglass.bpf.maps import SVCF_AFFINITY
from spyglass.model.services import ServiceEntry

__all__ = ["BatchOp", "ServicePlan", "ServiceTable", "backend_key", "backend_value",
           "service_key", "service_value", "LB_MAPS"]

LB_MAPS = ("sg_services", "sg_backends")
_SVC_KEY_TAIL = struct.Struct("=HBB")     # port (host order), proto, pad
_SVC_VALUE = struct.Struct("=IHHI")       # service_id, count, flags, affinity_s
_BACKEND_KEY = struct.Struct("=II")       # service_id, slot
_BACKEND_TAIL = struct.Struct("=HH")      # port (host order), pad
_SVC_KEY_SIZE = 4 + _SVC_KEY_TAIL.size

Backend = tuple[str, int]
_BACKEND_KEY_DT = np.dtype([("service_id", "=u4"), ("slot", "=u4")])
_BACKEND_DT = np.dtype([("addr", "u1", 4), ("port", "=u2"), ("pad", "=u2")])


@dataclass(frozen=True)
class BatchOp:
    """One batch syscall: `count` keys (and values) packed back to back, or deletes."""

    map: str
    delete: bool
    keys: bytes
    values: bytes
    count: int
    key_size: int

    def split_keys(self) -> list[bytes]:
        """The keys one by one (tests, and the per-entry fallback)."""
        n = self.key_size
        return [self.keys[i:i + n] for i in range(0, len(self.keys), n)]

    def split_values(self) -> list[bytes]:
        if self.delete or not self.count:
            return []
        n = len(self.values) // self.count
        return [self.values[i:i + n] for i in range(0, len(self.values), n)]


class _Backends:
    """Backend slot writes as columns, encoded in one go: a full sync writes 100k of them,
    and per-entry struct packing alone would take most of the 200 ms budget."""

    def __init__(self) -> None:
        self.sids: list[int] = []
        self.slots: list[int] = []
        self.ips: list[str] = []
        self.ports: list[int] = []

    def add_range(self, sid: int, start: int, backends: tuple[Backend, ...]) -> None:
        n = len(backends)
        self.sids.extend(repeat(sid, n))
        self.slots.extend(range(start, start + n))
        self.ips.extend([b[0] for b in backends])
        self.ports.extend([b[1] for b in backends])

    def add(self, sid: int, slot: int, backend: Backend) -> None:
        self.sids.append(sid)
        self.slots.append(slot)
        self.ips.append(backend[0])
        self.ports.append(backend[1])

    def keys(self) -> bytes:
        k = np.empty(len(self.sids), dtype=_BACKEND_KEY_DT)
        k["service_id"] = self.sids
        k["slot"] = self.slots
        return k.tobytes()

    def values(self) -> bytes:
        v = np.zeros(len(self.ips), dtype=_BACKEND_DT)
        pton = socket.inet_pton
        raw = b"".join([pton(socket.AF_INET, ip) for ip in self.ips])
        v["addr"] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 4)
        v["port"] = self.ports
        return v.tobytes()


def service_key(vip: str, port: int, proto: int) -> bytes:
    """struct sg_lb_svc_key: the VIP as on the wire, then the port in host order."""
    return socket.inet_pton(socket.AF_INET, vip) + _SVC_KEY_TAIL.pack(port, proto, 0)


def service_value(entry: ServiceEntry, count: int) -> bytes:
    return _SVC_VALUE.pack(entry.service_id, count, SVCF_AFFINITY if entry.affinity else 0,
                           entry.affinity_timeout_s)


def backend_key(service_id: int, slot: int) -> bytes:
    return _BACKEND_KEY.pack(service_id, slot)


def backend_value(ip: str, port: int) -> bytes:
    return socket.inet_pton(socket.AF_INET, ip) + _BACKEND_TAIL.pack(port, 0)


def assign_slots(old: tuple[Backend, ...], wanted: Iterable[Backend]) -> tuple[Backend, ...]:
    """The new slot table: kept backends stay put, holes take newcomers, then the tail."""
    want = list(dict.fromkeys(wanted))
    if not old:
        return tuple(want)
    wanted_set = set(want)
    m = len(want)
    slots: list[Backend | None] = [None] * m
    movers: list[Backend] = []
    kept: set[Backend] = set()
    for i, b in enumerate(old):
        if b in wanted_set:
            kept.add(b)
            if i < m:
                slots[i] = b
            else:
                movers.append(b)
    fill = [b for b in want if b not in kept] + movers
    it = iter(fill)
    return tuple(b if b is not None else next(it) for b in slots)


@dataclass(frozen=True)
class ServicePlan:
    """The batches to write, in order, and the change they make to the record."""

    ops: tuple[BatchOp, ...]
    changed: dict[int, tuple[ServiceEntry, tuple[Backend, ...], bytes]]  # id -> entry, slots, key
    gone: frozenset[int]
    added: int
    updated: int
    unchanged: int

    @property
    def removed(self) -> int:
        return len(self.gone)

    @property
    def writes(self) -> int:
        return sum(op.count for op in self.ops)


class ServiceTable:
    """What the service maps hold (as this process wrote them), and plans against it.

    A plan touches only the services it changes, so one endpoint change costs
    the same with ten services loaded or ten thousand.
    """

    def __init__(self) -> None:
        self.entries: dict[int, ServiceEntry] = {}
        self.slots: dict[int, tuple[Backend, ...]] = {}
        self.keys: dict[int, bytes] = {}
        self._owners: dict[bytes, int] = {}  # sg_services key -> service_id

    def plan(self, upserts: Iterable[ServiceEntry], removals: Iterable[int] = (),
             full: bool = False) -> ServicePlan:
        """Writes that apply `upserts` and `removals`; with `full`, every service
        not in `upserts` is removed too (a full sync)."""
        wanted: dict[int, ServiceEntry] = {}
        for e in upserts:
            if not isinstance(e, ServiceEntry):
                raise TypeError(f"expected a ServiceEntry, got {type(e).__name__}")
            if e.service_id in wanted and wanted[e.service_id] != e:
                raise ValueError(f"service_id {e.service_id} is given twice ({e.label} and "
                                 f"{wanted[e.service_id].label}): ids must be unique")
            wanted[e.service_id] = e
        if full:
            gone = frozenset(sid for sid in (self.keys.keys() | self.slots.keys())
                             if sid not in wanted)
        else:
            gone = frozenset(sid for sid in removals
                             if (sid in self.keys or sid in self.slots) and sid not in wanted)
        svc_up: dict[bytes, bytes] = {}
        be_up, be_del = _Backends(), _Backends()
        changed: dict[int, tuple[ServiceEntry, tuple[Backend, ...], bytes]] = {}
        claimed: dict[bytes, int] = {}
        added = updated = unchanged = 0
        for sid, e in wanted.items():
            old = self.entries.get(sid)
            if old == e:
                unchanged += 1
                continue
            added += old is None
            updated += old is not None
            before = self.slots.get(sid, ())
            after = assign_slots(before, e.backends)
            nb = len(before)
            if not nb:
                be_up.add_range(sid, 0, after)
            else:
                for i, b in enumerate(after):
                    if i >= nb or before[i] != b:
                        be_up.add(sid, i, b)
                be_del.add_range(sid, len(after), before[len(after):])
            key = service_key(e.vip, e.port, e.proto)
            value = service_value(e, len(after))
            if old is None or self.keys.get(sid) != key or service_value(
                    old, len(before)) != value:
                svc_up[key] = value
            if claimed.get(key, sid) != sid:
                self._conflict(claimed[key], e, changed)
            claimed[key] = sid
            changed[sid] = (e, after, key)
        for key, sid in claimed.items():
            owner = self._owners.get(key)
            if owner is not None and owner != sid and owner not in gone and not (
                    owner in changed and changed[owner][2] != key):
                self._conflict(owner, changed[sid][0], changed)
        svc_del = []
        for sid in gone | changed.keys():
            k = self.keys.get(sid)
            if k is not None and k not in claimed and (sid in gone or changed[sid][2] != k):
                svc_del.append(k)
        for sid in gone:
            be_del.add_range(sid, 0, self.slots.get(sid, ()))
        ops: list[BatchOp] = []
        if be_up.sids:
            ops.append(BatchOp("sg_backends", False, be_up.keys(), be_up.values(),
                               len(be_up.sids), _BACKEND_KEY.size))
        if svc_up:
            ops.append(BatchOp("sg_services", False, b"".join(svc_up), b"".join(svc_up.values()),
                               len(svc_up), _SVC_KEY_SIZE))
        if svc_del:
            ops.append(BatchOp("sg_services", True, b"".join(svc_del), b"", len(svc_del),
                               _SVC_KEY_SIZE))
        if be_del.sids:
            ops.append(BatchOp("sg_backends", True, be_del.keys(), b"", len(be_del.sids),
                               _BACKEND_KEY.size))
        return ServicePlan(tuple(ops), changed, gone, added, updated, unchanged)

    def _conflict(self, owner: int, e: ServiceEntry,
                  changed: dict[int, tuple[ServiceEntry, tuple[Backend, ...], bytes]]) -> None:
        a = changed[owner][0] if owner in changed else self.entries.get(owner)
        raise ValueError(f"services {a.label if a else '?'} (id {owner}) and {e.label} (id "
                         f"{e.service_id}) both claim {e.vip}:{e.port}/{e.proto_name}: give "
                         "one of them another address or port")

    def commit(self, plan: ServicePlan) -> None:
        """Record a plan as written."""
        for sid in plan.gone:
            self.entries.pop(sid, None)
            self.slots.pop(sid, None)
            key = self.keys.pop(sid, None)
            if key is not None and self._owners.get(key) == sid:
                del self._owners[key]
        for sid, (entry, slots, key) in plan.changed.items():
            old = self.keys.get(sid)
            if old is not None and old != key and self._owners.get(old) == sid:
                del self._owners[old]
            self.entries[sid], self.slots[sid], self.keys[sid] = entry, slots, key
            self._owners[key] = sid

    def resync(self, services: dict[bytes, bytes], backends: dict[bytes, bytes]) -> None:
        """After a failed write, believe the kernel: the maps' raw contents become
        the record, and every service is rewritten by the next load."""
        self.entries.clear()
        self.keys = {_SVC_VALUE.unpack(v)[0]: k for k, v in services.items()}
        self._owners = {k: sid for sid, k in self.keys.items()}
        by_id: dict[int, dict[int, Backend]] = {}
        for k, v in backends.items():
            sid, slot = _BACKEND_KEY.unpack(k)
            port = _BACKEND_TAIL.unpack(v[4:])[0]
            by_id.setdefault(sid, {})[slot] = (socket.inet_ntop(socket.AF_INET, v[:4]), port)
        # A hole (a slot missing from a half-written table) is ("", 0): it matches no
        # backend, so the next plan writes that slot.
        self.slots = {sid: tuple(s.get(i, ("", 0)) for i in range(max(s) + 1))
                      for sid, s in by_id.items()}
