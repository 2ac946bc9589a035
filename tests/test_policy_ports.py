"""Port rules to LPM prefixes: ranges split into the minimal aligned blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.policy.model import PortRule
from spyglass.policy.ports import ANY_PORT_PREFIX, port_prefixes, range_prefixes


def covered(blocks: list[tuple[int, int]]) -> set[int]:
    out: set[int] = set()
    for port, bits in blocks:
        size = 1 << (16 - bits)
        assert port % size == 0, f"block {port}/{bits} is not aligned"
        out.update(range(port, port + size))
    return out


def minimal_count(first: int, last: int) -> int:
    """An independent count: the number of maximal aligned blocks, by brute force DP."""
    best = {last + 1: 0}
    for p in range(last, first - 1, -1):
        options = []
        size = 1
        while p % size == 0 and p + size - 1 <= last and size <= 0x10000:
            options.append(1 + best[p + size])
            size *= 2
        best[p] = min(options)
    return best[first]


@pytest.mark.parametrize(("first", "last", "want"), [
    pytest.param(80, 80, [(80, 16)], id="single-port"),
    pytest.param(0, 65535, [(0, 0)], id="everything"),
    pytest.param(8000, 8010, [(8000, 13), (8008, 15), (8010, 16)], id="8000-8010"),
    pytest.param(32768, 65535, [(32768, 1)], id="upper-half"),
    pytest.param(1, 2, [(1, 16), (2, 16)], id="unaligned-pair"),
])
def test_range_prefixes_examples(first: int, last: int, want: list[tuple[int, int]]) -> None:
    assert range_prefixes(first, last) == want


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 4096))
def test_range_prefixes_cover_exactly_the_range(first: int, span: int) -> None:
    last = min(65535, first + span)
    blocks = range_prefixes(first, last)
    assert covered(blocks) == set(range(first, last + 1))
    assert sum(1 << (16 - b) for _, b in blocks) == last - first + 1  # no overlap


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 600))
def test_range_prefixes_are_minimal(first: int, span: int) -> None:
    last = min(65535, first + span)
    assert len(range_prefixes(first, last)) == minimal_count(first, last)


@pytest.mark.parametrize(("first", "last"), [
    pytest.param(10, 9, id="reversed"),
    pytest.param(-1, 5, id="negative"),
    pytest.param(0, 70000, id="too-big"),
])
def test_range_prefixes_refuses_bad_ranges(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="bad port range"):
        range_prefixes(first, last)


@pytest.mark.parametrize(("rule", "owner", "want"), [
    pytest.param(PortRule("TCP", 443), None, [(6, 443, 16)], id="tcp-port"),
    pytest.param(PortRule("UDP"), None, [(17, 0, 0)], id="udp-any-port"),
    pytest.param(PortRule("ANY"), None, [ANY_PORT_PREFIX], id="any-proto-any-port"),
    pytest.param(PortRule("ANY", 53), None, [(6, 53, 16), (17, 53, 16), (132, 53, 16)],
                 id="any-proto-with-port"),
    pytest.param(PortRule("TCP", name="http"), 300, [(6, 8080, 16)], id="named-resolved"),
    pytest.param(PortRule("UDP", name="http"), 300, [], id="named-wrong-protocol"),
    pytest.param(PortRule("TCP", name="http"), 301, [], id="named-unknown-on-pod"),
    pytest.param(PortRule("ANY", name="dns"), 300, [(17, 53, 16)], id="named-any-protocol"),
])
def test_port_prefixes(rule: PortRule, owner: int | None, want: list[tuple[int, int, int]]) -> None:
    named = {300: {"http": ("TCP", 8080), "dns": (17, 53)}}
    assert port_prefixes(rule, owner, named) == want
