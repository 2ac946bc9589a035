"""Pod IP allocation from the pod CIDR."""

from __future__ import annotations

import pytest

from spyglass.lab.errors import LabError
from spyglass.lab.ipam import allocate


@pytest.mark.parametrize(("cidr", "count", "want"), [
    pytest.param("10.244.0.0/16", 3, ["10.244.0.2", "10.244.0.3", "10.244.0.4"], id="default"),
    pytest.param("10.244.0.0/16", 256, None, id="crosses-a-256-boundary"),
    pytest.param("192.168.7.0/29", 5, [f"192.168.7.{i}" for i in range(2, 7)], id="fills-a-29"),
    pytest.param("10.1.0.0/24", 0, [], id="none"),
])
def test_allocate(cidr: str, count: int, want: list[str] | None) -> None:
    got = allocate(cidr, count)
    assert len(got) == len(set(got)) == count
    if want is not None:
        assert got == want
    assert not any(ip.endswith((".0.0", ".0.1")) for ip in got)
    assert allocate(cidr, count) == got  # deterministic


@pytest.mark.parametrize(("cidr", "count", "pattern"), [
    pytest.param("192.168.7.0/29", 6, r"room for 5 pods but the manifest has 6", id="full"),
    pytest.param("10.244.0.1/16", 1, r"bad pod CIDR '10\.244\.0\.1/16'.*host bits", id="host-bits"),
    pytest.param("banana", 1, r"bad pod CIDR 'banana'", id="garbage"),
    pytest.param("fd00::/64", 1, r"IPv4 pod CIDRs only", id="ipv6"),
    pytest.param("10.0.0.0/30", 1, r"too small", id="tiny"),
])
def test_allocate_errors(cidr: str, count: int, pattern: str) -> None:
    with pytest.raises(LabError, match=pattern):
        allocate(cidr, count)
