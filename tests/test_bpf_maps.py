"""Map encodings of the datapath, checked without a kernel."""

from __future__ import annotations

import ctypes as ct
import ipaddress

import pytest
from spyglass.bpf.maps import (
    AGGREGATION_LEVELS,
    FAMILY_IPV4,
    FAMILY_IPV6,
    Config,
    CtEntry,
    CtKey,
    DatapathEndpoint,
    EndpointInfo,
    IpcacheKey,
    IpcacheValue,
    config_value,
    ct_key,
    endpoint_value,
    ipcache_key,
    ipcache_value,
    parse_aggregation,
)


@pytest.mark.parametrize(
    ("cidr", "prefixlen", "family", "addr"),
    [
        pytest.param("10.250.0.10/32", 64, FAMILY_IPV4, bytes([10, 250, 0, 10]), id="v4-host"),
        pytest.param("10.250.0.10", 64, FAMILY_IPV4, bytes([10, 250, 0, 10]), id="v4-bare"),
        pytest.param("10.0.0.0/8", 40, FAMILY_IPV4, bytes([10, 0, 0, 0]), id="v4-slash8"),
        pytest.param("0.0.0.0/0", 32, FAMILY_IPV4, bytes(4), id="v4-default"),
        pytest.param("fd00::/64", 96, FAMILY_IPV6, ipaddress.ip_address("fd00::").packed,
                     id="v6-slash64"),
        pytest.param("fd00::1", 160, FAMILY_IPV6, ipaddress.ip_address("fd00::1").packed,
                     id="v6-host"),
    ],
)
def test_ipcache_key_packs_family_and_prefix(cidr: str, prefixlen: int, family: int,
                                             addr: bytes) -> None:
    raw = bytes(ipcache_key(cidr))
    assert len(raw) == 24
    assert int.from_bytes(raw[0:4], "little") == prefixlen
    assert raw[4] == family and raw[5:8] == bytes(3)
    assert raw[8:8 + len(addr)] == addr and raw[8 + len(addr):] == bytes(16 - len(addr))


@pytest.mark.parametrize(
    "cidr",
    [
        pytest.param("10.250.0.1/24", id="host-bits-set"),
        pytest.param("10.250.0.0/33", id="prefix-too-long"),
        pytest.param("pod-a", id="not-an-address"),
        pytest.param("", id="empty"),
    ],
)
def test_ipcache_key_rejects_bad_prefixes_with_a_fix(cidr: str) -> None:
    with pytest.raises(ValueError, match="bad ipcache prefix .* write it like"):
        ipcache_key(cidr)


def test_ipcache_value_layout() -> None:
    raw = bytes(ipcache_value(0x01020304, ep_id=0x0506, flags=1))
    assert raw == bytes([4, 3, 2, 1, 6, 5, 1, 0])


@pytest.mark.parametrize(
    ("identity", "ep_id"),
    [pytest.param(1 << 32, 0, id="identity-too-big"), pytest.param(5, 1 << 16, id="ep-too-big"),
     pytest.param(-1, 0, id="negative-identity")],
)
def test_ipcache_value_range_errors(identity: int, ep_id: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ipcache_value(identity, ep_id)


def test_endpoint_value_keeps_the_address_in_wire_order() -> None:
    ep = DatapathEndpoint(ifindex=7, ifname="lxc1", ep_id=300, identity=70000, ipv4="10.250.0.9")
    raw = bytes(endpoint_value(ep))
    assert len(raw) == ct.sizeof(EndpointInfo) == 12
    assert raw[0:2] == (300).to_bytes(2, "little")
    assert raw[4:8] == (70000).to_bytes(4, "little")
    assert raw[8:12] == bytes([10, 250, 0, 9])  # as the IPv4 header carries it


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"ifindex": 0}, "not a valid interface index", id="ifindex-zero"),
        pytest.param({"ep_id": 70000}, "does not fit in 16 bits", id="ep-id"),
        pytest.param({"identity": -3}, "does not fit in 32 bits", id="identity"),
        pytest.param({"ipv4": "fd00::1"}, "is not an IPv4 address", id="ipv6-given"),
        pytest.param({"ipv4": "10.250.0"}, "is not an IPv4 address", id="short"),
    ],
)
def test_endpoint_validation(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"ifindex": 3, "ifname": "lxc0", "ep_id": 1, "identity": 256,
                               "ipv4": "10.250.0.2"}
    with pytest.raises(ValueError, match=message):
        DatapathEndpoint(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "number"),
    [
        pytest.param("none", 0, id="none"),
        pytest.param("disabled", 0, id="disabled"),
        pytest.param("lowest", 1, id="lowest"),
        pytest.param("low", 2, id="low"),
        pytest.param("medium", 3, id="medium"),
        pytest.param("max", 4, id="max"),
        pytest.param("maximum", 4, id="maximum"),
        pytest.param(" Medium ", 3, id="case-and-space"),
    ],
)
def test_aggregation_levels_use_ciliums_numbers(name: str, number: int) -> None:
    assert parse_aggregation(name) == number


@pytest.mark.parametrize(
    "name", [pytest.param("high", id="unknown"), pytest.param("", id="empty"),
             pytest.param("3", id="number-as-text")],
)
def test_unknown_aggregation_level_lists_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="unknown monitor aggregation level.*none, disabled"):
        parse_aggregation(name)


def test_config_value_layout() -> None:
    cfg = config_value("medium", 5.0)
    raw = bytes(cfg)
    assert len(raw) == ct.sizeof(Config) == 16
    assert int.from_bytes(raw[0:4], "little") == 3
    assert int.from_bytes(raw[8:16], "little") == 5_000_000_000


@pytest.mark.parametrize(
    "interval", [pytest.param(0.0, id="zero"), pytest.param(-1.0, id="negative"),
                 pytest.param(float("nan"), id="nan"), pytest.param(1e12, id="absurd")],
)
def test_config_value_rejects_bad_intervals(interval: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        config_value("medium", interval)


def test_struct_sizes_match_the_c_layout() -> None:
    # The datapath test compares field by field with what bcc compiled; these
    # sizes are the ones documented in maps.h / ct.h.
    assert ct.sizeof(IpcacheKey) == 24
    assert ct.sizeof(IpcacheValue) == 8
    assert ct.sizeof(CtKey) == 40
    assert ct.sizeof(CtEntry) == 120
    assert set(AGGREGATION_LEVELS.values()) == {0, 1, 2, 3, 4}


def test_ct_key_is_the_forward_tuple() -> None:
    raw = bytes(ct_key("10.250.0.1", "10.250.0.2", 40000, 80, 6))
    assert raw[0:4] == bytes([10, 250, 0, 1]) and raw[16:20] == bytes([10, 250, 0, 2])
    assert int.from_bytes(raw[32:34], "little") == 40000
    assert int.from_bytes(raw[34:36], "little") == 80
    assert raw[36] == 6 and raw[37:40] == bytes(3)
