"""The guard's pieces without a server: Host names, origins, and what counts as a write."""

from __future__ import annotations

import pytest

from spyglass.api.guard import HostPolicy, own_origin, split_host


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:4245", ("127.0.0.1", 4245)), ("localhost", ("localhost", None)),
    ("[::1]:4245", ("::1", 4245)), ("Example.COM:80", ("example.com", 80)),
    ("a@b:1", ("", None)), ("host:port", ("", None)), ("h/x", ("", None)), ("", ("", None)),
    ("h:99999", ("", None)),
])
def test_split_host(value: str, expected: tuple[str, int | None]) -> None:
    assert split_host(value) == expected


def local() -> frozenset[str]:
    return frozenset({"192.0.2.10", "fd00::10"})


@pytest.mark.parametrize(("listen", "allowed", "host", "ok"), [
    ("127.0.0.1", (), "127.0.0.1:4245", True),
    ("127.0.0.1", (), "localhost:4245", True),
    ("127.0.0.1", (), "127.9.9.9", True),
    ("127.0.0.1", (), "[::1]:4245", True),
    ("127.0.0.1", (), "attacker.example:4245", False),
    ("127.0.0.1", (), "localhost.attacker.example", False),
    ("127.0.0.1", (), "192.0.2.10:4245", False),
    ("127.0.0.1", ("spyglass.lab",), "SPYGLASS.lab:4245", True),
    ("127.0.0.1", ("spyglass.lab",), "www.spyglass.lab", False),
    ("192.0.2.10", (), "192.0.2.10:4245", True),
    ("192.0.2.10", (), "fd00::10", False),
    ("0.0.0.0", (), "192.0.2.10:4245", True),
    ("0.0.0.0", (), "[fd00::10]:4245", True),
    ("0.0.0.0", (), "198.51.100.1:4245", False),
    ("0.0.0.0", (), "node-a:4245", False),
    ("::", ("node-a",), "node-a:4245", True),
    ("127.0.0.1", (), "", False),
])
def test_hosts_the_server_answers_to(listen: str, allowed: tuple[str, ...], host: str,
                                     ok: bool) -> None:
    assert HostPolicy(listen, allowed, addresses=local).allows(host) is ok


def test_local_addresses_failing_leaves_loopback_working() -> None:
    def broken() -> frozenset[str]:
        raise OSError("netlink unavailable")

    policy = HostPolicy("0.0.0.0", addresses=broken)
    assert policy.allows("127.0.0.1:1") and not policy.allows("192.0.2.10:1")


@pytest.mark.parametrize(("origin", "host", "tls", "ok"), [
    ("http://127.0.0.1:4245", "127.0.0.1:4245", False, True),
    ("http://LOCALHOST:4245", "localhost:4245", False, True),
    ("http://127.0.0.1:4245/", "127.0.0.1:4245", False, True),
    ("https://h:443", "h", True, True),
    ("https://h", "h:443", True, True),
    ("http://h", "h:80", False, True),
    ("http://127.0.0.1:4246", "127.0.0.1:4245", False, False),
    ("https://127.0.0.1:4245", "127.0.0.1:4245", False, False),
    ("http://localhost:4245", "127.0.0.1:4245", False, False),
    ("null", "127.0.0.1:4245", False, False),
    ("http://127.0.0.1:4245.evil.example", "127.0.0.1:4245", False, False),
    ("http://127.0.0.1:4245/path", "127.0.0.1:4245", False, False),
    ("file://", "127.0.0.1:4245", False, False),
    ("http://[::1]:4245", "[::1]:4245", False, True),
])
def test_own_origin(origin: str, host: str, tls: bool, ok: bool) -> None:
    assert own_origin(origin, host, tls) is ok
