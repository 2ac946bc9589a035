"""Policy enforcement in the TC datapath, with hand-built CompiledPolicy tables.

Three pods (A, B, C; see policy_lab.py for the wiring and names) run TCP servers on 8080 and
9090 and a UDP echo on 9091. Each test loads a table, probes for real, and reads the events the
programs emitted (bcc perf buffer; the collector's reader is tested elsewhere).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from policy_lab import (
    NS_PREFIX,
    TCP,
    UDP,
    Pod,
    Probe,
    Servers,
    free_addresses,
    in_netns,
    leftovers,
    make_pod,
    remove_pods,
    run_probes,
)

pytestmark = pytest.mark.datapath

PIN_DIR = f"/sys/fs/bpf/{NS_PREFIX.rstrip('-')}-dp"
IDENTITIES = (1001, 1002, 1003)
EV_DROP, EV_TRACE, EV_VERDICT = 1, 4, 5
INGRESS, EGRESS = 1, 2
MATCH_NONE, L3_ONLY, L3_L4, L4_ONLY, MATCH_ALL = 0, 1, 2, 3, 4
ALLOWED, DENIED, AUDITED = 0, 1, 2
F_AUDITED = 0x10
POLICY_DENIED, POLICY_DENY = 133, 181
CIDR_ID = (1 << 24) + 5


@dataclass
class Env:
    dp: Any
    pods: list[Pod]
    events: list[Any] = field(default_factory=list)

    @property
    def a(self) -> Pod:
        return self.pods[0]

    @property
    def b(self) -> Pod:
        return self.pods[1]

    @property
    def c(self) -> Pod:
        return self.pods[2]

    def ident(self, pod: Pod) -> int:
        return IDENTITIES[pod.index]

    def poll(self) -> None:
        for _ in range(4):
            self.dp.bpf.perf_buffer_poll(timeout=30)

    def probe(self, src: Pod, dst: Pod, proto: int, port: int) -> bool:
        """One real probe; afterwards `events` holds only this probe's events (earlier
        tests' stragglers, such as a closed connection's retransmits, are left out)."""
        self.poll()
        self.events.clear()
        ok = run_probes([Probe(src, dst.ip, proto, port)], timeout=0.4)[0]
        self.poll()
        pair = {src.ip, dst.ip}
        self.events[:] = [ev for ev in self.events
                          if {_ip(ev.saddr), _ip(ev.daddr)} == pair and ev.proto == proto
                          and port in (ev.sport, ev.dport)]
        return ok

    def of(self, type_: int, **want: object) -> list[Any]:
        return [e for e in self.events
                if e.type == type_ and all(getattr(e, k) == v for k, v in want.items())]


def _ip(raw: Any) -> str:
    return str(ipaddress.IPv4Address(bytes(raw[:4])))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    from spyglass.bpf.datapath import Datapath, DatapathEndpoint
    from spyglass.collector.abi import SgEvent

    addresses = free_addresses(len(IDENTITIES))
    if addresses is None:
        pytest.skip("no free addresses in 10.252.0.0/24 for the policy datapath test")
    pods: list[Pod] = []
    servers: Servers | None = None
    dp: Datapath | None = None
    try:
        for i, ip in enumerate(addresses):
            pods.append(make_pod(i, ip))
        servers = Servers(pods, (8080, 9090), (9091,))
        servers.start()
        dp = Datapath(pin_dir=PIN_DIR, aggregation="none")
        env = Env(dp, pods)
        for pod in pods:
            dp.upsert_endpoint(DatapathEndpoint(pod.host_idx, pod.host_if, pod.ep_id,
                                                IDENTITIES[pod.index], pod.ip))
            dp.attach(pod.host_idx)

        def on_event(_cpu: int, data: int, _size: int) -> None:
            env.events.append(SgEvent.from_buffer_copy(ct.string_at(data, ct.sizeof(SgEvent))))

        dp.bpf["sg_events"].open_perf_buffer(on_event, page_cnt=64)
        yield env
    finally:
        if dp is not None:
            dp.close()
        if servers is not None:
            servers.stop()
        remove_pods(len(IDENTITIES))
    # Teardown fails loudly if anything of ours survived.
    assert not leftovers(len(IDENTITIES))
    assert not os.path.exists(PIN_DIR)


@pytest.fixture
def e(env: Env) -> Iterator[Env]:
    """The shared env with an empty policy, audit off and every endpoint as created."""
    from spyglass.bpf.datapath import DatapathEndpoint
    from spyglass.model.policy import CompiledPolicy

    yield env
    env.dp.load_policy(CompiledPolicy())
    env.dp.set_policy_audit(False)
    for pod in env.pods:
        env.dp.upsert_endpoint(DatapathEndpoint(pod.host_idx, pod.host_if, pod.ep_id,
                                                IDENTITIES[pod.index], pod.ip))
    env.events.clear()


def _key(local: int, direction: int, remote: int = 0, proto: int = 0, port: int = 0,
         bits: int = 0) -> Any:
    from spyglass.model.policy import Direction, PolicyKey

    return PolicyKey(local, Direction(direction), remote, proto, port, bits)


def _compiled(**kw: Any) -> Any:
    from spyglass.model.policy import CompiledPolicy, Direction

    kw["selected"] = {(ident, Direction(d)): c for (ident, d), c in kw.get("selected", {}).items()}
    return CompiledPolicy(**kw)


def test_map_layouts_match_what_bcc_compiled(e: Env) -> None:
    from spyglass.bpf import maps

    for table, part, mirror in [
        ("sg_policy_allow", "Key", maps.PolicyLpmKey),
        ("sg_policy_allow", "Leaf", maps.PolicyValue),
        ("sg_policy_deny", "Key", maps.PolicyLpmKey), ("sg_policy_deny", "Leaf", maps.PolicyValue),
        ("sg_policy_selected", "Key", maps.PolicySelKey),
        ("sg_policy_selected", "Leaf", maps.PolicySelValue), ("sg_config", "Leaf", maps.Config),
    ]:
        assert ct.sizeof(getattr(e.dp.bpf[table], part)) == ct.sizeof(mirror), (table, part)


def test_default_deny_drops_with_133_and_the_selected_cookie(e: Env) -> None:
    a, b = e.a, e.b
    e.dp.load_policy(_compiled(selected={(e.ident(a), EGRESS): 500}))
    assert not e.probe(a, b, TCP, 8080)
    drop = e.of(EV_DROP)[0]
    assert (drop.subtype, drop.policy_cookie, drop.direction) == (POLICY_DENIED, 500, EGRESS)
    assert (drop.src_identity, drop.dst_identity) == (e.ident(a), e.ident(b))
    assert (_ip(drop.saddr), _ip(drop.daddr), drop.dport, drop.proto) == (a.ip, b.ip, 8080, TCP)
    assert drop.ifindex == a.host_idx and drop.agg_packets == 1
    verdict = e.of(EV_VERDICT)[0]
    assert (verdict.verdict, verdict.match_type, verdict.policy_cookie) == (DENIED, MATCH_NONE, 500)
    assert (verdict.direction, verdict.dport, verdict.proto) == (EGRESS, 8080, TCP)
    assert not e.of(EV_TRACE, ifindex=b.host_idx)  # never left A's veth
    # A denied SYN leaves no conntrack state.
    assert e.dp.ct_lookup(a.ip, b.ip, drop.sport, 8080, TCP) is None
    # B is not selected in any direction: everything else flows, with no verdict events.
    assert e.probe(b, a, UDP, 9091) and e.probe(c := e.c, b, TCP, 9090)
    assert not e.of(EV_VERDICT) and not e.of(EV_DROP) and c


def test_deny_rule_wins_with_181_and_its_cookie(e: Env) -> None:
    a, b = e.a, e.b
    b_id = e.ident(b)
    e.dp.load_policy(_compiled(
        selected={(b_id, INGRESS): 500},
        allow={_key(b_id, INGRESS): 601},
        deny={_key(b_id, INGRESS, e.ident(a), TCP, 8080, 16): 701}))
    assert not e.probe(a, b, TCP, 8080)
    drop = e.of(EV_DROP)[0]
    assert (drop.subtype, drop.policy_cookie, drop.direction) == (POLICY_DENY, 701, INGRESS)
    assert drop.ifindex == b.host_idx
    verdict = e.of(EV_VERDICT, direction=INGRESS)[0]
    assert (verdict.verdict, verdict.match_type, verdict.policy_cookie) == (DENIED, L3_L4, 701)
    # The deny names one port: the allow-all rule lets the rest through (match ALL).
    assert e.probe(a, b, TCP, 9090)
    verdict = e.of(EV_VERDICT)[0]
    assert (verdict.verdict, verdict.match_type, verdict.policy_cookie) == (ALLOWED, MATCH_ALL, 601)
    assert not e.of(EV_DROP)
    assert e.probe(e.c, b, TCP, 8080)


@pytest.mark.parametrize(
    ("src", "proto", "port", "match", "cookie"),
    [
        pytest.param(0, TCP, 9090, L3_ONLY, 11, id="identity-any-port"),
        pytest.param(2, TCP, 8080, L3_L4, 12, id="identity-and-port"),
        pytest.param(2, TCP, 9090, L4_ONLY, 13, id="any-identity-port"),
        pytest.param(2, UDP, 9091, L4_ONLY, 14, id="port-range-prefix"),
        pytest.param(0, TCP, 8080, L3_L4, 15, id="port-beats-any-port-same-identity"),
    ],
)
def test_match_types_in_policy_verdicts(e: Env, src: int, proto: int, port: int, match: int,
                                        cookie: int) -> None:
    b_id = e.ident(e.b)
    a_id, c_id = e.ident(e.a), e.ident(e.c)
    e.dp.load_policy(_compiled(
        selected={(b_id, INGRESS): 500},
        allow={
            _key(b_id, INGRESS, a_id): 11,
            _key(b_id, INGRESS, c_id, TCP, 8080, 16): 12,
            _key(b_id, INGRESS, 0, TCP, 9090, 16): 13,
            _key(b_id, INGRESS, 0, UDP, 9088, 13): 14,  # 9088..9095
            _key(b_id, INGRESS, a_id, TCP, 8080, 16): 15,
        }))
    assert e.probe(e.pods[src], e.b, proto, port)
    verdicts = e.of(EV_VERDICT)
    assert len(verdicts) == 1  # one new connection, only B's ingress is enforced
    v = verdicts[0]
    assert (v.verdict, v.match_type, v.policy_cookie) == (ALLOWED, match, cookie)
    assert (v.direction, v.dport, v.proto) == (INGRESS, port, proto)
    assert (v.src_identity, v.dst_identity) == (e.ident(e.pods[src]), b_id)
    assert not e.of(EV_DROP)


def test_a_port_outside_every_entry_is_default_denied(e: Env) -> None:
    b_id = e.ident(e.b)
    e.dp.load_policy(_compiled(selected={(b_id, INGRESS): 500},
                               allow={_key(b_id, INGRESS, 0, UDP, 9088, 14): 14}))  # 9088..9091
    assert e.probe(e.a, e.b, UDP, 9091)
    assert not e.probe(e.a, e.b, TCP, 9090)  # same port range, other protocol
    assert e.of(EV_DROP)[0].subtype == POLICY_DENIED


def test_replies_pass_but_new_connections_the_other_way_are_denied(e: Env) -> None:
    a, b = e.a, e.b
    e.dp.load_policy(_compiled(selected={(e.ident(a), INGRESS): 500}))
    assert e.probe(a, b, TCP, 8080)  # the SYN-ACK and "ok" are replies into A
    assert not e.of(EV_DROP) and not e.of(EV_VERDICT)
    assert e.probe(a, b, UDP, 9091)
    assert not e.probe(b, a, TCP, 8080)
    assert not e.probe(b, a, UDP, 9091)
    drop = e.of(EV_DROP)[0]
    assert (drop.subtype, drop.direction, drop.ifindex) == (POLICY_DENIED, INGRESS, a.host_idx)


@pytest.mark.parametrize("how", [pytest.param("identity", id="per-identity"),
                                 pytest.param("global", id="global-flag")])
def test_audit_passes_denied_traffic_with_verdict_audited(e: Env, how: str) -> None:
    b_id = e.ident(e.b)
    audit = frozenset({b_id}) if how == "identity" else frozenset()
    e.dp.load_policy(_compiled(selected={(b_id, INGRESS): 500}, audit=audit))
    if how == "global":
        e.dp.set_policy_audit(True)
    assert e.probe(e.a, e.b, TCP, 8080)
    assert not e.of(EV_DROP)
    v = e.of(EV_VERDICT)[0]
    assert (v.verdict, v.policy_cookie, v.direction) == (AUDITED, 500, INGRESS)
    assert v.flags & F_AUDITED
    assert e.of(EV_TRACE, ifindex=e.b.host_idx)  # delivered and traced as usual
    # Auditing off again: the same traffic is dropped.
    e.dp.set_policy_audit(False)
    e.dp.load_policy(_compiled(selected={(b_id, INGRESS): 500}))
    assert not e.probe(e.a, e.b, TCP, 8080)
    assert e.of(EV_DROP)[0].subtype == POLICY_DENIED


@contextlib.contextmanager
def _connection(client: Pod, server: Pod, port: int) -> Iterator[tuple[socket.socket,
                                                                       socket.socket]]:
    with in_netns(server.ns):
        lsock = socket.socket()
    with in_netns(client.ns):
        csock = socket.socket()
    try:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((server.ip, port))
        lsock.listen(1)
        csock.settimeout(2)
        csock.connect((server.ip, port))
        conn, _ = lsock.accept()
        conn.settimeout(2)
        with conn:
            yield csock, conn
    finally:
        csock.close()
        lsock.close()


def _roundtrip(client: socket.socket, server: socket.socket, data: bytes) -> bool:
    try:
        client.sendall(data)
        got = server.recv(100)
        server.sendall(got)
        return client.recv(100) == data
    except OSError:
        return False


def test_live_update_by_diff_keeps_established_connections(e: Env) -> None:
    a, b = e.a, e.b
    b_id, a_id = e.ident(b), e.ident(a)
    first = _compiled(selected={(b_id, INGRESS): 500},
                      allow={_key(b_id, INGRESS, a_id, TCP, 7070, 16): 21})
    stats = e.dp.load_policy(first)
    assert (stats.added, stats.updated, stats.deleted) == (2, 0, 0)
    with _connection(a, b, 7070) as (client, server):
        assert _roundtrip(client, server, b"one")
        # Still allowed, by a different rule and with more entries around it.
        second = _compiled(selected={(b_id, INGRESS): 501},
                           allow={_key(b_id, INGRESS, a_id, TCP, 7070, 16): 22,
                                  _key(b_id, INGRESS, e.ident(e.c)): 23})
        stats = e.dp.load_policy(second)
        assert (stats.added, stats.updated, stats.deleted) == (1, 2, 0)
        assert stats.seconds < 1.0
        assert _roundtrip(client, server, b"two")
        assert e.dp.load_policy(second).changed == 0  # nothing to do
        # Denied now: new connections fail with drops naming the selected cookie.
        e.dp.load_policy(_compiled(selected={(b_id, INGRESS): 502},
                                   allow={_key(b_id, INGRESS, e.ident(e.c)): 23}))
        assert not e.probe(a, b, TCP, 8080)
        assert e.of(EV_DROP)[0].policy_cookie == 502
        # The established connection's own packets are policy-checked too (not replies).
        client.settimeout(0.5)
        server.settimeout(0.5)
        assert not _roundtrip(client, server, b"three")


def test_load_policy_is_a_diff_and_fast_for_thousands_of_entries(e: Env) -> None:
    from spyglass.bpf import maps

    allow = {_key(2000 + i % 50, INGRESS, 3000 + i, TCP, 8000 + i % 1000, 16): 1 + i
             for i in range(5000)}
    selected = {(2000 + i, INGRESS): 9000 + i for i in range(50)}
    big = _compiled(selected=selected, allow=allow,
                    deny={_key(2001, INGRESS, 4000): 77})
    stats = e.dp.load_policy(big)
    assert (stats.added, stats.deleted) == (5051, 0)
    assert stats.seconds < 0.5, stats  # milliseconds in practice; generous for a busy CI host
    assert e.dp.policy_entries() == {**maps.policy_entries(big), "sg_ipcache": {}}
    smaller = _compiled(selected=selected, allow=dict(list(allow.items())[:4000]))
    stats = e.dp.load_policy(smaller)
    assert (stats.added, stats.updated, stats.deleted, stats.unchanged) == (0, 0, 1001, 4050)
    assert stats.per_map["sg_policy_allow"] == (0, 0, 1000)
    assert e.dp.policy_entries()["sg_policy_allow"] == maps.policy_entries(smaller)[
        "sg_policy_allow"]


def test_cidr_identity_via_the_ipcache(e: Env) -> None:
    from spyglass.bpf.datapath import DatapathEndpoint
    from spyglass.bpf.maps import ipcache_key

    a, b, c = e.a, e.b, e.c
    b_id = e.ident(b)
    subnet = str(ipaddress.ip_network(f"{c.ip}/24", strict=False))
    # C stops being a known pod from B's point of view: only the /24 covers it.
    e.dp.delete_ipcache(f"{c.ip}/32")
    policy = _compiled(selected={(b_id, INGRESS): 500},
                       allow={_key(b_id, INGRESS, CIDR_ID): 31},
                       cidr_identities={subnet: CIDR_ID, f"{a.ip}/32": CIDR_ID + 1})
    stats = e.dp.load_policy(policy)
    assert stats.per_map["sg_ipcache"] == (1, 0, 0)  # A's /32 is a pod's: never overwritten
    assert e.probe(c, b, TCP, 8080)
    v = e.of(EV_VERDICT)[0]
    assert (v.src_identity, v.match_type, v.policy_cookie) == (CIDR_ID, L3_ONLY, 31)
    assert not e.probe(a, b, TCP, 8080)  # A is a pod: its own identity, not the CIDR's
    assert e.of(EV_DROP)[0].src_identity == e.ident(a)
    # Dropping the CIDR from the policy removes its ipcache entry (C is world now) and
    # leaves every pod /32 alone.
    stats = e.dp.load_policy(_compiled(selected={(b_id, INGRESS): 500},
                                       allow={_key(b_id, INGRESS, CIDR_ID): 31}))
    assert stats.per_map["sg_ipcache"] == (0, 0, 1)
    assert not e.probe(c, b, TCP, 8080)
    assert e.of(EV_DROP)[0].src_identity == 2
    table = e.dp.bpf["sg_ipcache"]
    for pod in (a, b):
        assert table.Leaf.from_buffer_copy(bytes(table[table.Key.from_buffer_copy(
            bytes(ipcache_key(f"{pod.ip}/32")))])).identity == e.ident(pod)
    e.dp.upsert_endpoint(DatapathEndpoint(c.host_idx, c.host_if, c.ep_id, e.ident(c), c.ip))
