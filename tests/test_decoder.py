"""The batch decoder: columns from packed events, rejected samples counted by category."""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.collector.abi import (
    EVENT_DROP,
    EVENT_POLICY_VERDICT,
    EVENT_SIZE,
    EVENT_TRACE,
    F_IPV6,
    F_REPLY_KNOWN,
    RECORD_DTYPE,
    pack_event,
)
from spyglass.collector.decoder import ClockOffset, DecodeError, Decoder
from spyglass.collector.perf import parse_records, sample_record

OFFSET = 1_764_000_000_000_000_000


def v4(text: str) -> bytes:
    return socket.inet_aton(text)


def records(*events: bytes) -> np.ndarray:
    return parse_records(b"".join(sample_record(e) for e in events)).records


def decoder() -> Decoder:
    return Decoder(ClockOffset(OFFSET))


TCP_SYN: dict[str, Any] = dict(
    type=EVENT_TRACE, subtype=5, flags=F_REPLY_KNOWN, src_ep=7, dst_ep=9, ifindex=12,
    orig_len=74, ts_ns=5_000, saddr=v4("10.244.0.2"), daddr=v4("10.244.0.3"), sport=35010,
    dport=8080, proto=6, tcp_flags=0x02, reason=1, direction=2, src_identity=1234,
    dst_identity=5678, agg_packets=3, agg_bytes=222,
)


@pytest.mark.parametrize(("fields", "expect"), [
    pytest.param(TCP_SYN, {
        "time_ns": OFFSET + 5_000, "type": EVENT_TRACE, "subtype": 5, "flags": F_REPLY_KNOWN,
        "is_ipv6": False, "src_ep": 7, "dst_ep": 9, "ifindex": 12, "orig_len": 74,
        "src_ip4": 0x0AF40002, "dst_ip4": 0x0AF40003, "sport": 35010, "dport": 8080,
        "proto": 6, "tcp_flags": 2, "reason": 1, "direction": 2, "src_identity": 1234,
        "dst_identity": 5678, "agg_packets": 3, "agg_bytes": 222,
    }, id="tcp-trace"),
    pytest.param(dict(type=EVENT_DROP, subtype=133, ts_ns=1, proto=17, sport=5353, dport=53,
                      policy_cookie=77),
                 {"type": EVENT_DROP, "subtype": 133, "proto": 17, "policy_cookie": 77,
                  "dport": 53}, id="udp-drop"),
    pytest.param(dict(type=EVENT_POLICY_VERDICT, ts_ns=1, match_type=2, verdict=1,
                      policy_cookie=9),
                 {"type": EVENT_POLICY_VERDICT, "match_type": 2, "policy_verdict": 1,
                  "policy_cookie": 9}, id="policy-verdict"),
    pytest.param(dict(type=EVENT_TRACE, ts_ns=1, proto=1, sport=(8 << 8) | 0),
                 {"proto": 1, "sport": 0x0800, "dport": 0}, id="icmp-echo"),
    pytest.param(dict(type=EVENT_TRACE, ts_ns=1, flags=F_IPV6,
                      saddr=socket.inet_pton(socket.AF_INET6, "fd00::1")),
                 {"is_ipv6": True}, id="ipv6"),
])
def test_columns(fields: dict[str, Any], expect: dict[str, Any]) -> None:
    batch = decoder().decode(records(pack_event(**fields)))
    assert len(batch) == 1 and not batch.errors
    for name, want in expect.items():
        assert getattr(batch, name).tolist() == [want], name


def test_ipv6_address_bytes_are_kept() -> None:
    addr = socket.inet_pton(socket.AF_INET6, "fd00::1")
    batch = decoder().decode_bytes(pack_event(type=EVENT_TRACE, flags=F_IPV6, saddr=addr))
    assert batch.saddr[0].tobytes() == addr


def test_cpu_column_follows_the_rows() -> None:
    recs = records(pack_event(type=EVENT_TRACE, ts_ns=2), pack_event(type=99, ts_ns=1),
                   pack_event(type=EVENT_TRACE, ts_ns=1))
    batch = decoder().decode(recs, np.array([0, 1, 2], dtype=np.uint16))
    # sorted by time; the rejected middle row takes its CPU with it
    assert batch.cpu.tolist() == [2, 0]
    assert batch.time_ns.tolist() == [OFFSET + 1, OFFSET + 2]


def bad(**fields: Any) -> bytes:
    return pack_event(type=EVENT_TRACE, **fields)


@pytest.mark.parametrize(("event", "category"), [
    pytest.param(bad(version=2), DecodeError.BAD_VERSION, id="bad-version"),
    pytest.param(bad(version=0), DecodeError.BAD_VERSION, id="zero-version"),
    pytest.param(bad(len=64), DecodeError.BAD_LENGTH, id="bad-length"),
    pytest.param(pack_event(type=2), DecodeError.UNKNOWN_TYPE, id="debug-message-type"),
    pytest.param(pack_event(type=0), DecodeError.UNKNOWN_TYPE, id="unspec-type"),
])
def test_bad_samples_are_counted_and_left_out(event: bytes, category: DecodeError) -> None:
    d = decoder()
    good = pack_event(type=EVENT_TRACE, sport=1)
    batch = d.decode(records(good, event, good))
    assert batch.sport.tolist() == [1, 1]
    assert batch.errors == {category: 1}
    assert d.errors[category] == 1
    assert d.decoded == 2


def test_truncated_raw_size_is_counted() -> None:
    d = decoder()
    recs = parse_records(sample_record(pack_event(type=EVENT_TRACE)[:60])).records
    batch = d.decode(recs)
    assert len(batch) == 0
    assert batch.errors == {DecodeError.TRUNCATED: 1}


def test_first_matching_category_wins() -> None:
    """A sample that is wrong in several ways is counted once."""
    d = decoder()
    d.decode_bytes(pack_event(type=99, version=7, len=3))
    assert d.errors == {DecodeError.TRUNCATED: 0, DecodeError.BAD_VERSION: 1,
                        DecodeError.BAD_LENGTH: 0, DecodeError.UNKNOWN_TYPE: 0}


def test_decode_bytes_counts_a_trailing_partial_event() -> None:
    d = decoder()
    data = pack_event(type=EVENT_TRACE, sport=1) + pack_event(type=EVENT_TRACE, sport=2)[:30]
    batch = d.decode_bytes(data)
    assert batch.sport.tolist() == [1]
    assert batch.errors == {DecodeError.TRUNCATED: 1}


def test_decode_rejects_the_wrong_array_type() -> None:
    with pytest.raises(TypeError, match="RECORD_DTYPE"):
        decoder().decode(np.zeros(3, dtype=np.uint8))


def test_empty_input() -> None:
    assert len(decoder().decode(np.empty(0, dtype=RECORD_DTYPE))) == 0
    assert len(decoder().decode_bytes(b"")) == 0


def test_clock_offset_is_wall_minus_monotonic() -> None:
    clock = ClockOffset()
    expected = time.time_ns() - time.monotonic_ns()
    assert abs(clock.offset_ns - expected) < 50_000_000  # same clocks, read moments apart
    assert ClockOffset(42).offset_ns == 42


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=EVENT_SIZE * 4 + 17))
def test_random_bytes_never_crash_and_every_event_is_accounted(data: bytes) -> None:
    d = decoder()
    batch = d.decode_bytes(data)
    whole, partial = divmod(len(data), EVENT_SIZE)
    assert len(batch) + sum(batch.errors.values()) == whole + (1 if partial else 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 4, 5, 200]), st.integers(0, 3),
                          st.integers(0, 200)), max_size=20))
def test_mixed_batches_account_for_every_sample(rows: list[tuple[int, int, int]]) -> None:
    events = [pack_event(type=t, version=v, len=116 if ln >= 100 else ln) for t, v, ln in rows]
    d = decoder()
    batch = d.decode(records(*events)) if events else d.decode_bytes(b"")
    valid = sum(1 for t, v, ln in rows if v == 1 and ln >= 100 and t in (1, 4, 5))
    assert len(batch) == valid
    assert len(batch) + sum(batch.errors.values()) == len(rows)
