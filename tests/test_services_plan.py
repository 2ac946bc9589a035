"""The service maps' encodings and the diff planner (bpf/lb_plan.py), without a kernel."""

from __future__ import annotations

import ctypes as ct
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.bpf.lb_plan import (
    ServiceTable,
    assign_slots,
    backend_key,
    backend_value,
    service_key,
    service_value,
)
from spyglass.bpf.maps import SVCF_AFFINITY, LbBackend, LbBackendKey, LbSvcKey, LbSvcValue
from spyglass.model.services import ServiceEntry


def _e(sid: int, backends: list[tuple[str, int]], vip: str = "10.99.0.10", port: int = 80,
       **kw: object) -> ServiceEntry:
    return ServiceEntry(service_id=sid, vip=vip, port=port, proto=6, backends=tuple(backends),
                        **kw)  # type: ignore[arg-type]


B = [(f"10.244.0.{i}", 8080) for i in range(1, 11)]


def test_service_key_is_the_wire_address_then_host_order_port() -> None:
    key = LbSvcKey.from_buffer_copy(service_key("10.96.1.2", 8080, 17))
    assert bytes(key.addr) == socket.inet_aton("10.96.1.2")
    assert (key.port, key.proto, key.pad) == (8080, 17, 0)
    assert len(service_key("10.96.1.2", 1, 6)) == ct.sizeof(LbSvcKey) == 8


def test_service_value_carries_count_flags_and_timeout() -> None:
    v = LbSvcValue.from_buffer_copy(service_value(_e(9, B[:2], affinity=True,
                                                      affinity_timeout_s=60), 2))
    assert (v.service_id, v.count, v.flags, v.affinity_s) == (9, 2, SVCF_AFFINITY, 60)
    assert LbSvcValue.from_buffer_copy(service_value(_e(9, []), 0)).flags == 0


def test_backend_encoding() -> None:
    k = LbBackendKey.from_buffer_copy(backend_key(7, 3))
    assert (k.service_id, k.slot) == (7, 3)
    v = LbBackend.from_buffer_copy(backend_value("10.244.1.2", 5432))
    assert (bytes(v.addr), v.port) == (socket.inet_aton("10.244.1.2"), 5432)


@pytest.mark.parametrize(("old", "new", "want"), [
    pytest.param((), B[:3], tuple(B[:3]), id="fresh"),
    pytest.param(tuple(B[:3]), B[:3][::-1], tuple(B[:3]), id="reorder-keeps-slots"),
    pytest.param(tuple(B[:3]), [B[0], B[2]], (B[0], B[2]), id="remove-middle-moves-tail"),
    pytest.param(tuple(B[:3]), [B[0], B[2], B[5]], (B[0], B[5], B[2]),
                 id="replace-fills-the-hole"),
    pytest.param(tuple(B[:3]), [B[1], B[2]], (B[2], B[1]), id="remove-first"),
    pytest.param(tuple(B[:3]), [], (), id="remove-all"),
])
def test_assign_slots(old: tuple[tuple[str, int], ...], new: list[tuple[str, int]],
                      want: tuple[tuple[str, int], ...]) -> None:
    assert assign_slots(old, new) == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(B), unique=True), st.lists(st.sampled_from(B), unique=True))
def test_assign_slots_keeps_every_stayer_but_at_most_the_tail_ones(
        old: list[tuple[str, int]], new: list[tuple[str, int]]) -> None:
    after = assign_slots(tuple(old), new)
    assert sorted(after) == sorted(new)  # exactly the wanted backends, dense
    for i, b in enumerate(old):
        if b in new and i < len(new):
            assert after[i] == b  # a backend that stays in range never moves


def test_plan_orders_slots_before_services_and_deletes_after() -> None:
    t = ServiceTable()
    p = t.plan([_e(1, B[:3]), _e(2, B[3:5], vip="10.99.0.11")], full=True)
    assert [(op.map, op.delete) for op in p.ops] == [("sg_backends", False),
                                                     ("sg_services", False)]
    assert (p.added, p.updated, p.removed, p.writes) == (2, 0, 0, 5 + 2)
    keys = p.ops[0].split_keys()
    assert keys[0] == backend_key(1, 0) and p.ops[0].split_values()[0] == backend_value(*B[0])
    t.commit(p)
    # Shrink service 1 and drop service 2: slot writes, service writes, service deletes,
    # then slot deletes; service 1's count goes down before its tail slot goes.
    p = t.plan([_e(1, [B[0], B[2]])], full=True)
    assert [(op.map, op.delete) for op in p.ops] == [
        ("sg_backends", False), ("sg_services", False), ("sg_services", True),
        ("sg_backends", True)]
    assert p.ops[0].split_keys() == [backend_key(1, 1)]
    assert p.ops[0].split_values() == [backend_value(*B[2])]
    assert LbSvcValue.from_buffer_copy(p.ops[1].split_values()[0]).count == 2
    assert p.ops[2].split_keys() == [service_key("10.99.0.11", 80, 6)]
    assert set(p.ops[3].split_keys()) == {backend_key(1, 2), backend_key(2, 0),
                                          backend_key(2, 1)}
    assert (p.updated, p.removed) == (1, 1)


def test_unchanged_services_write_nothing_and_one_change_writes_one_slot() -> None:
    t = ServiceTable()
    entries = [_e(i, B[:5], vip=f"10.99.1.{i}") for i in range(1, 51)]
    t.commit(t.plan(entries, full=True))
    again = t.plan(entries, full=True)
    assert (again.unchanged, again.writes) == (50, 0)
    one = t.plan([_e(7, B[:4] + [B[9]], vip="10.99.1.7")])
    assert one.writes == 1 and one.ops[0].split_keys() == [backend_key(7, 4)]


def test_vip_change_writes_the_new_key_then_deletes_the_old() -> None:
    t = ServiceTable()
    t.commit(t.plan([_e(1, B[:1])]))
    p = t.plan([_e(1, B[:1], vip="10.99.0.99")])
    assert [(op.map, op.delete) for op in p.ops] == [("sg_services", False),
                                                     ("sg_services", True)]
    assert p.ops[1].split_keys() == [service_key("10.99.0.10", 80, 6)]


def test_an_address_can_move_between_services_in_one_sync() -> None:
    t = ServiceTable()
    t.commit(t.plan([_e(1, B[:1])]))
    p = t.plan([_e(2, B[1:2])], full=True)  # id 2 takes id 1's VIP:port
    svc_ops = [op for op in p.ops if op.map == "sg_services"]
    assert [op.delete for op in svc_ops] == [False]  # the key is overwritten, never deleted
    t.commit(p)
    assert t.keys == {2: service_key("10.99.0.10", 80, 6)}


@pytest.mark.parametrize(("current", "upserts", "pattern"), [
    pytest.param([], [_e(1, []), _e(2, [])], r"both claim 10.99.0.10:80/TCP", id="same-plan"),
    pytest.param([_e(1, [])], [_e(2, [])], r"\(id 1\) and 10.99.0.10:80 \(id 2\) both claim",
                 id="against-loaded"),
    pytest.param([], [_e(1, []), _e(1, B[:1])], r"service_id 1 is given twice", id="dup-id"),
])
def test_conflicts_are_refused(current: list[ServiceEntry], upserts: list[ServiceEntry],
                               pattern: str) -> None:
    t = ServiceTable()
    t.commit(t.plan(current))
    with pytest.raises(ValueError, match=pattern):
        t.plan(upserts)


def test_resync_believes_the_kernel_and_rewrites_holes() -> None:
    t = ServiceTable()
    t.resync({service_key("10.99.0.10", 80, 6): service_value(_e(1, B[:3]), 3)},
             {backend_key(1, 0): backend_value(*B[0]), backend_key(1, 2): backend_value(*B[2])})
    assert t.slots[1] == (B[0], ("", 0), B[2])
    p = t.plan([_e(1, B[:3])], full=True)
    assert p.added == 1  # nothing is trusted: the service is written again
    up = next(op for op in p.ops if op.map == "sg_backends" and not op.delete)
    assert up.split_keys() == [backend_key(1, 1)]


def test_delete_of_unknown_id_is_a_no_op() -> None:
    t = ServiceTable()
    assert t.plan([], removals=[42]).ops == ()
