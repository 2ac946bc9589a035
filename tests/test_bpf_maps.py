"""Map encodings of the datapath, checked without a kernel."""

from __future__ import annotations

import ctypes as ct
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.bpf.maps import (
    AGGREGATION_LEVELS,
    FAMILY_IPV4,
    FAMILY_IPV6,
    POLF_AUDIT,
    Config,
    CtEntry,
    CtKey,
    DatapathEndpoint,
    EndpointInfo,
    IpcacheKey,
    IpcacheValue,
    MapOp,
    PolicyLpmKey,
    PolicySelKey,
    PolicySelValue,
    PolicyValue,
    config_value,
    ct_key,
    decode_policy_key,
    endpoint_value,
    ipcache_key,
    ipcache_value,
    parse_aggregation,
    plan_policy_update,
    policy_entries,
    policy_key,
    policy_selected_key,
    policy_selected_value,
    policy_value,
)
from spyglass.model.policy import CompiledPolicy, Direction, PolicyKey


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


# -- policy maps --------------------------------------------------------------------

def _lpm_matches(entry: PolicyLpmKey, lookup: PolicyLpmKey) -> bool:
    """The kernel's LPM rule: the entry's first `prefixlen` bits equal the lookup's."""
    bits = entry.prefixlen
    a = int.from_bytes(bytes(entry.data), "big")
    b = int.from_bytes(bytes(lookup.data), "big")
    shift = 96 - bits
    return a >> shift == b >> shift


@pytest.mark.parametrize(
    ("key", "prefixlen", "data"),
    [
        pytest.param(PolicyKey(0x01020304, Direction.INGRESS, 0x0A0B0C0D, 6, 8080, 16), 96,
                     bytes([1, 2, 3, 4, 1, 10, 11, 12, 13, 6, 0x1F, 0x90]), id="one-port"),
        pytest.param(PolicyKey(300, Direction.EGRESS, 0, 17), 80,
                     bytes([0, 0, 1, 44, 2, 0, 0, 0, 0, 17, 0, 0]), id="proto-any-port"),
        pytest.param(PolicyKey(300, Direction.EGRESS, 2), 72,
                     bytes([0, 0, 1, 44, 2, 0, 0, 0, 2, 0, 0, 0]), id="any-proto"),
        pytest.param(PolicyKey(1, Direction.INGRESS, 1 << 24, 6, 9088, 13), 93,
                     bytes([0, 0, 0, 1, 1, 1, 0, 0, 0, 6, 0x23, 0x80]), id="port-range"),
    ],
)
def test_policy_key_is_big_endian_with_the_contract_prefix(key: PolicyKey, prefixlen: int,
                                                           data: bytes) -> None:
    raw = bytes(policy_key(key))
    assert len(raw) == ct.sizeof(PolicyLpmKey) == 16
    assert int.from_bytes(raw[:4], "little") == prefixlen == key.prefixlen
    assert raw[4:] == data
    assert decode_policy_key(raw) == key


@settings(max_examples=200, deadline=None)
@given(port=st.integers(0, 65535), bits=st.integers(0, 16), probe=st.integers(0, 65535),
       proto=st.sampled_from([6, 17, 132]), probe_proto=st.sampled_from([6, 17, 132]))
def test_port_prefix_matches_exactly_its_range(port: int, bits: int, probe: int, proto: int,
                                               probe_proto: int) -> None:
    size = 1 << (16 - bits)
    start = port - port % size
    entry = policy_key(PolicyKey(7, Direction.INGRESS, 9, proto, start, bits))
    lookup = policy_key(PolicyKey(7, Direction.INGRESS, 9, probe_proto, probe, 16))
    want = probe_proto == proto and start <= probe < start + size
    assert _lpm_matches(entry, lookup) == want


@settings(max_examples=100, deadline=None)
@given(remote=st.integers(0, (1 << 32) - 1), probe_remote=st.integers(0, (1 << 32) - 1),
       port=st.integers(0, 65535))
def test_any_proto_entry_matches_every_port_of_its_remote_only(remote: int, probe_remote: int,
                                                               port: int) -> None:
    entry = policy_key(PolicyKey(7, Direction.EGRESS, remote))
    lookup = policy_key(PolicyKey(7, Direction.EGRESS, probe_remote, 6, port, 16))
    assert _lpm_matches(entry, lookup) == (remote == probe_remote)
    other_dir = policy_key(PolicyKey(7, Direction.INGRESS, remote, 6, port, 16))
    assert not _lpm_matches(entry, other_dir)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param(PolicyKey(1, Direction.INGRESS, 2, 6, 8081, 15), "bits set beyond",
                     id="host-bits-in-port"),
        pytest.param(PolicyKey(1, Direction.INGRESS, 2, 0, 80, 16), "cannot name a port",
                     id="port-without-proto"),
        pytest.param(PolicyKey(1, Direction.INGRESS, 2, 6, 80, 17), "port_bits",
                     id="too-many-bits"),
        pytest.param(PolicyKey(1, Direction.INGRESS, 1 << 32), "does not fit in 32 bits",
                     id="remote-too-big"),
        pytest.param(PolicyKey(1, 3, 2), "neither INGRESS", id="bad-direction"),  # type: ignore[arg-type]
        pytest.param(PolicyKey(1, Direction.INGRESS, 2, 300), "not an IP protocol",
                     id="bad-proto"),
    ],
)
def test_policy_key_rejects_what_would_match_wrongly(key: PolicyKey, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        policy_key(key)


def test_policy_values_and_selected_records() -> None:
    key = PolicyKey(1, Direction.INGRESS, 2, 6, 8080, 16)
    raw = bytes(policy_value(0xA1B2C3D4, key))
    assert len(raw) == ct.sizeof(PolicyValue) == 8
    assert raw == bytes([0xD4, 0xC3, 0xB2, 0xA1, 96, 0, 0, 0])
    assert bytes(policy_selected_key(0x0102, Direction.EGRESS)) == bytes([2, 1, 0, 0, 2, 0, 0, 0])
    assert ct.sizeof(PolicySelKey) == ct.sizeof(PolicySelValue) == 8
    assert policy_selected_value(5, audit=True).flags == POLF_AUDIT
    assert policy_selected_value(5, audit=False).flags == 0
    with pytest.raises(ValueError, match="other than 0"):
        policy_value(0, key)


def _compiled(**kw: object) -> CompiledPolicy:
    return CompiledPolicy(**kw)  # type: ignore[arg-type]


def test_policy_entries_carry_audit_and_skip_pod_addresses() -> None:
    allow_key = PolicyKey(10, Direction.INGRESS, 1 << 24)
    compiled = _compiled(allow={allow_key: 7}, selected={(10, Direction.INGRESS): 9},
                         cidr_identities={"10.0.0.0/8": 1 << 24, "10.1.2.3/32": (1 << 24) + 1},
                         audit=frozenset({10}))
    pod = bytes(ipcache_key("10.1.2.3/32"))
    entries = policy_entries(compiled, frozenset({pod}))
    assert entries["sg_policy_allow"] == {bytes(policy_key(allow_key)):
                                          bytes(policy_value(7, allow_key))}
    sel = PolicySelValue.from_buffer_copy(entries["sg_policy_selected"][
        bytes(policy_selected_key(10, Direction.INGRESS))])
    assert (sel.cookie, sel.flags) == (9, POLF_AUDIT)
    assert list(entries["sg_ipcache"]) == [bytes(ipcache_key("10.0.0.0/8"))]
    with pytest.raises(ValueError, match="below 16777216"):
        policy_entries(_compiled(cidr_identities={"10.0.0.0/8": 5}))


def test_plan_is_a_diff_in_the_order_that_never_opens_a_gap() -> None:
    def entries(**maps: dict[bytes, bytes]) -> dict[str, dict[bytes, bytes]]:
        return {"sg_policy_allow": {}, "sg_policy_deny": {}, "sg_policy_selected": {},
                "sg_ipcache": {}, **maps}

    current = entries(sg_policy_allow={b"keep": b"1", b"change": b"1", b"stale": b"1"},
                      sg_policy_deny={b"old-deny": b"1"},
                      sg_policy_selected={b"gone": b"1", b"same": b"1"},
                      sg_ipcache={b"old-cidr": b"1"})
    desired = entries(sg_policy_allow={b"keep": b"1", b"change": b"2", b"new": b"1"},
                      sg_policy_deny={b"new-deny": b"1"},
                      sg_policy_selected={b"same": b"1", b"added": b"1"},
                      sg_ipcache={b"new-cidr": b"1"})
    plan = plan_policy_update(current, desired)
    assert [(op.map, op.delete) for op in plan] == [
        ("sg_policy_allow", False), ("sg_policy_deny", True), ("sg_ipcache", False),
        ("sg_policy_selected", False), ("sg_policy_deny", False), ("sg_policy_allow", True),
        ("sg_ipcache", True), ("sg_policy_selected", True)]
    assert plan[0] == MapOp("sg_policy_allow", False, (b"change", b"new"), (b"2", b"1"))
    assert plan[5] == MapOp("sg_policy_allow", True, (b"stale",))
    assert plan_policy_update(desired, desired) == []
