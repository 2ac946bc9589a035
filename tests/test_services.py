"""ServiceEntry validation, stable service ids and ClusterIP allocation (no kernel)."""

from __future__ import annotations

import ipaddress

import pytest

from spyglass.model.services import ClusterIPAllocator, ServiceEntry, ServiceIds


def _entry(**kw: object) -> ServiceEntry:
    base: dict[str, object] = {"service_id": 7, "vip": "10.96.0.10", "port": 80, "proto": 6,
                               "backends": (("10.244.0.2", 8080),)}
    base.update(kw)
    return ServiceEntry(**base)  # type: ignore[arg-type]


def test_entry_accepts_the_contract_shape() -> None:
    e = _entry(backends=[("10.244.0.3", 8080), ("10.244.0.2", 8080)], affinity=True,
               name="cart", namespace="shop")
    assert e.backends == (("10.244.0.3", 8080), ("10.244.0.2", 8080))  # a tuple, order kept
    assert (e.label, e.proto_name, e.affinity_timeout_s) == ("shop/cart", "TCP", 10800)
    assert _entry(backends=()).backends == ()  # no backends: a valid entry (drops 158)


@pytest.mark.parametrize(("kw", "pattern"), [
    pytest.param({"service_id": 0}, r"service_id 0 must be a u32 other than 0", id="id-zero"),
    pytest.param({"service_id": 1 << 32}, r"must be a u32", id="id-too-big"),
    pytest.param({"vip": "10.96.0"}, r"'10.96.0' is not an IPv4 address", id="vip-short"),
    pytest.param({"vip": "fd00::1"}, r"IPv6 services are not translated", id="vip-v6"),
    pytest.param({"port": 0}, r"port 0 must be an integer in 1..65535", id="port-zero"),
    pytest.param({"port": True}, r"port True", id="port-bool"),
    pytest.param({"proto": 1}, r"protocol 1 is not translated; use TCP \(6\) or UDP",
                 id="proto-icmp"),
    pytest.param({"backends": (("10.244.0.2", 8080), ("10.244.0.2", 8080))},
                 r"backend 10.244.0.2:8080 is listed twice", id="dup-backend"),
    pytest.param({"backends": ("10.244.0.2",)}, r"must be a \(pod IP, target port\) pair",
                 id="backend-not-pair"),
    pytest.param({"backends": (("10.244.0.2", 70000),)}, r"port 70000", id="backend-port"),
    pytest.param({"affinity_timeout_s": 0}, r"affinity timeout 0 s must be in 1..86400",
                 id="timeout"),
])
def test_entry_rejects_bad_input(kw: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        _entry(**kw)


def test_service_ids_are_stable_nonzero_and_probe_on_collision() -> None:
    a, b = ServiceIds(), ServiceIds()
    sid = a.id_for("shop", "cart", "http")
    assert sid == b.id_for("shop", "cart", "http") != 0
    assert a.id_for("shop", "cart", "http") == sid  # asked again: the same
    assert a.id_for("shop", "cart", "grpc") != sid
    assert a.key_of(sid) == ("shop", "cart", "http")
    # Force a collision: take the id under another key first, then ask for the original.
    c = ServiceIds()
    c._taken[sid] = ("x", "y", "z")
    assert c.id_for("shop", "cart", "http") == sid + 1
    a.release("shop", "cart", "http")
    assert a.key_of(sid) is None


def test_cluster_ips_are_deterministic_and_in_the_cidr() -> None:
    a, b = ClusterIPAllocator("10.99.0.0/16"), ClusterIPAllocator("10.99.0.0/16")
    ip = a.allocate("shop/cart")
    assert ip == b.allocate("shop/cart") == a.allocate("shop/cart")
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.99.0.0/16")
    assert ip not in ("10.99.0.0", "10.99.0.1", "10.99.255.255")


def test_small_cidr_fills_every_usable_address_then_says_so() -> None:
    alloc = ClusterIPAllocator("10.99.0.0/29")  # 8 addresses, 5 usable
    got = {alloc.allocate(f"ns/s{i}") for i in range(5)}
    assert got == {f"10.99.0.{i}" for i in range(2, 7)}
    with pytest.raises(ValueError, match=r"service CIDR 10.99.0.0/29 is full"):
        alloc.allocate("ns/one-more")
    alloc.release("ns/s0")
    assert alloc.allocate("ns/one-more") in got


@pytest.mark.parametrize(("ip", "pattern"), [
    pytest.param("10.1.0.5", r"outside the service CIDR 10.99.0.0/16", id="outside"),
    pytest.param("10.99.0.300", r"is not an IPv4 address", id="garbage"),
])
def test_reserve_rejects(ip: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ClusterIPAllocator("10.99.0.0/16").reserve(ip, "ns/a")


def test_reserve_conflicts_and_allocation_skips_reserved() -> None:
    alloc = ClusterIPAllocator("10.99.0.0/29")
    assert alloc.reserve("10.99.0.4", "ns/a") == "10.99.0.4"
    with pytest.raises(ValueError, match=r"already allocated to ns/a"):
        alloc.reserve("10.99.0.4", "ns/b")
    assert "10.99.0.4" not in {alloc.allocate(f"ns/s{i}") for i in range(4)}


@pytest.mark.parametrize("cidr", [
    pytest.param("10.99.0.1/16", id="host-bits"),
    pytest.param("10.99.0.0/30", id="too-small"),
    pytest.param("nonsense", id="garbage"),
])
def test_bad_service_cidr(cidr: str) -> None:
    with pytest.raises(ValueError, match="service CIDR"):
        ClusterIPAllocator(cidr)
