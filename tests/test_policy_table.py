"""The lookup rule of types.py over hand-built tables: the contract the datapath shares."""

from __future__ import annotations

import pytest

from spyglass.model.enums import DropReason, PolicyMatchType
from spyglass.model.policy import CompiledPolicy, Direction, PolicyKey, RuleRef
from spyglass.policy.table import PolicyTable, match_type

L, R, OTHER = 300, 400, 500
IN = Direction.INGRESS


def key(remote: int, proto: int = 0, port: int = 0, bits: int = 0) -> PolicyKey:
    return PolicyKey(L, IN, remote, proto, port, bits)


ALLOW = {
    key(R, 6, 8080, 16): 11,     # identity + port
    key(R, 17, 0, 0): 12,        # identity + protocol, any port
    key(R): 13,                  # identity, anything
    key(0, 6, 8080, 16): 14,     # any identity + port
    key(0, 6, 8992, 12): 15,     # any identity + ports 8992..9007
    key(0): 16,                  # any + any
}
REF = RuleRef("NetworkPolicy", "ns", "p", IN, 0)
TABLE = CompiledPolicy(allow=ALLOW, selected={(L, IN): 99},
                       cookies={c: (REF,) for c in (11, 12, 13, 14, 15, 16, 99)})


@pytest.mark.parametrize(("remote", "proto", "port", "cookie", "mtype"), [
    pytest.param(R, 6, 8080, 11, PolicyMatchType.L3_L4, id="identity-and-port"),
    pytest.param(R, 17, 53, 12, PolicyMatchType.L3_L4, id="identity-and-protocol"),
    pytest.param(R, 6, 9001, 13, PolicyMatchType.L3_ONLY,
                 id="identity-any-port-beats-any-identity-port"),
    pytest.param(OTHER, 6, 8080, 14, PolicyMatchType.L4_ONLY, id="any-identity-and-port"),
    pytest.param(OTHER, 6, 9007, 15, PolicyMatchType.L4_ONLY, id="any-identity-port-prefix"),
    pytest.param(OTHER, 6, 9008, 16, PolicyMatchType.ALL, id="any-any"),
    pytest.param(OTHER, 1, 0, 16, PolicyMatchType.ALL, id="icmp-any-any"),
])
def test_most_specific_allow_wins(remote: int, proto: int, port: int, cookie: int,
                                  mtype: PolicyMatchType) -> None:
    d = PolicyTable(TABLE).lookup(L, IN, remote, proto, port)
    assert (d.allowed, d.cookie, d.match_type, d.reason) == (True, cookie, mtype, None)
    assert d.key is not None and ALLOW[d.key] == cookie


def test_unselected_endpoint_allows_everything() -> None:
    d = PolicyTable(TABLE).lookup(L, Direction.EGRESS, R, 6, 1)
    assert (d.allowed, d.enforced, d.cookie, d.match_type, d.key) == (
        True, False, 0, PolicyMatchType.NONE, None)


def test_default_deny_carries_selected_cookie() -> None:
    table = PolicyTable(CompiledPolicy(allow={key(R, 6, 80, 16): 11}, selected={(L, IN): 99}))
    d = table.lookup(L, IN, R, 6, 81)
    assert (d.allowed, d.reason, d.cookie, d.match_type) == (
        False, DropReason.POLICY_DENIED, 99, PolicyMatchType.NONE)


@pytest.mark.parametrize(("deny", "remote", "denied"), [
    pytest.param({key(R, 6, 8080, 16): 7}, R, True, id="exact-deny"),
    pytest.param({key(0): 7}, R, True, id="any-remote-deny-beats-exact-allow"),
    pytest.param({key(R, 6, 0x1F00, 8): 7}, R, True, id="port-prefix-deny"),
    pytest.param({key(OTHER): 7}, R, False, id="deny-for-another-remote"),
    pytest.param({key(R, 17, 0, 0): 7}, R, False, id="deny-other-protocol"),
])
def test_deny_wins_over_any_allow(deny: dict[PolicyKey, int], remote: int,
                                  denied: bool) -> None:
    table = PolicyTable(CompiledPolicy(allow=ALLOW, deny=deny, selected={(L, IN): 99}))
    d = table.lookup(L, IN, remote, 6, 8080)
    assert (not d.allowed) is denied
    if denied:
        assert (d.reason, d.cookie) == (DropReason.POLICY_DENY, 7)


def test_audit_lets_denied_traffic_through_and_keeps_the_reason() -> None:
    table = PolicyTable(CompiledPolicy(deny={key(R): 7}, selected={(L, IN): 99},
                                       audit=frozenset({L})))
    d = table.lookup(L, IN, R, 6, 1)
    assert (d.allowed, d.audited, d.reason, d.cookie) == (True, True, DropReason.POLICY_DENY, 7)
    d = table.lookup(L, IN, OTHER, 6, 1)
    assert (d.allowed, d.audited, d.reason, d.cookie) == (True, True,
                                                          DropReason.POLICY_DENIED, 99)


@pytest.mark.parametrize(("k", "want"), [
    pytest.param(key(R), PolicyMatchType.L3_ONLY, id="l3"),
    pytest.param(key(R, 6, 0, 0), PolicyMatchType.L3_L4, id="l3-proto"),
    pytest.param(key(0, 6, 1, 16), PolicyMatchType.L4_ONLY, id="l4"),
    pytest.param(key(0), PolicyMatchType.ALL, id="all"),
])
def test_match_type(k: PolicyKey, want: PolicyMatchType) -> None:
    assert match_type(k) is want


@pytest.mark.parametrize(("ip", "want"), [
    pytest.param("10.244.0.5", 300, id="pod-first"),
    pytest.param("10.1.2.3", 1002, id="longest-prefix"),
    pytest.param("10.9.9.9", 1001, id="shorter-prefix"),
    pytest.param("192.168.0.1", 2, id="world"),
    pytest.param("fd00::1", 1003, id="ipv6"),
])
def test_resolve_remote(ip: str, want: int) -> None:
    table = PolicyTable(CompiledPolicy(cidr_identities={
        "10.0.0.0/8": 1001, "10.1.0.0/16": 1002, "fd00::/8": 1003}))
    assert table.resolve_remote(ip, {"10.244.0.5": 300}) == want


@pytest.mark.parametrize("bad", [
    pytest.param(key(R, 6, 9000, 12), id="port-bits-not-masked"),
    pytest.param(key(R, 0, 80, 0), id="any-proto-with-port"),
    pytest.param(key(R, 6, 80, 17), id="too-many-bits"),
])
def test_malformed_keys_are_refused(bad: PolicyKey) -> None:
    with pytest.raises(ValueError, match="malformed policy key"):
        PolicyTable(CompiledPolicy(allow={bad: 1}))
