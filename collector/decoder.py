"""Batch decoding of perf samples into numpy columns.

One Python object per event costs 3-10% loss at 150k events/s (docs/collector.md),
so validation and field extraction are whole-array operations: a read of
thousands of samples is checked with a handful of comparisons and sliced into
columns without a Python loop. Bad samples are never fatal and never silent:
each is counted under a category (`DecodeError`) and left out of the batch.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, fields

import numpy as np

from spyglass.collector.abi import (
    EVENT_DROP,
    EVENT_DTYPE,
    EVENT_POLICY_VERDICT,
    EVENT_SIZE,
    EVENT_TRACE,
    EVENT_VERSION,
    F_IPV6,
    RECORD_DTYPE,
)

KNOWN_TYPES = np.array([EVENT_TRACE, EVENT_DROP, EVENT_POLICY_VERDICT], dtype=np.uint8)


class DecodeError(enum.StrEnum):
    """Why a sample was left out. The first that applies wins, in this order."""

    TRUNCATED = "TRUNCATED"  # fewer than sizeof(struct sg_event) raw bytes
    BAD_VERSION = "BAD_VERSION"  # sg_event.version is not ours
    BAD_LENGTH = "BAD_LENGTH"  # sg_event.len does not match the struct size
    UNKNOWN_TYPE = "UNKNOWN_TYPE"  # not TRACE, DROP or POLICY_VERDICT


class ClockOffset:
    """Turns bpf_ktime_get_ns() (CLOCK_MONOTONIC) into wall-clock nanoseconds.

    The offset is measured once and again every `remeasure_s`, so that an NTP
    step shows up in flow times within that interval without paying two clock
    reads per batch. A fixed `offset_ns` makes decoding deterministic in tests.
    """

    def __init__(self, offset_ns: int | None = None, remeasure_s: float = 10.0) -> None:
        self._fixed = offset_ns
        self._remeasure_ns = int(remeasure_s * 1e9)
        self._offset = 0
        self._measured_at = -(1 << 62)
        if offset_ns is None:
            self.measure()

    def measure(self) -> int:
        """Take the offset from the pair of clock reads that sit closest together."""
        best: tuple[int, int] | None = None
        for _ in range(3):
            m0 = time.monotonic_ns()
            wall = time.time_ns()
            m1 = time.monotonic_ns()
            if best is None or m1 - m0 < best[0]:
                best = (m1 - m0, wall - (m0 + m1) // 2)
        assert best is not None
        self._offset = best[1]
        self._measured_at = time.monotonic_ns()
        return self._offset

    @property
    def offset_ns(self) -> int:
        if self._fixed is not None:
            return self._fixed
        if time.monotonic_ns() - self._measured_at > self._remeasure_ns:
            self.measure()
        return self._offset


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Valid events of one read as columns, sorted by time (stable).

    IPv4 addresses are also given as integers (`src_ip4`/`dst_ip4`, the
    address as a number, e.g. 0x0a000001 for 10.0.0.1) because they are
    cheaper to deduplicate than 16-byte rows; the raw 16 bytes are kept for v6.
    """

    time_ns: np.ndarray  # int64, wall clock
    type: np.ndarray  # uint8, EVENT_*
    subtype: np.ndarray  # uint8: trace observation point / drop reason
    flags: np.ndarray  # uint8, F_*
    is_ipv6: np.ndarray  # bool
    src_ep: np.ndarray  # uint16
    dst_ep: np.ndarray  # uint16
    ifindex: np.ndarray  # uint32
    orig_len: np.ndarray  # uint32
    saddr: np.ndarray  # (n, 16) uint8
    daddr: np.ndarray  # (n, 16) uint8
    src_ip4: np.ndarray  # uint32
    dst_ip4: np.ndarray  # uint32
    sport: np.ndarray  # uint16 (ICMP: type << 8 | code)
    dport: np.ndarray  # uint16
    proto: np.ndarray  # uint8
    tcp_flags: np.ndarray  # uint8
    reason: np.ndarray  # uint8, trace reason
    direction: np.ndarray  # uint8, traffic direction
    src_identity: np.ndarray  # uint32
    dst_identity: np.ndarray  # uint32
    match_type: np.ndarray  # uint8, policy verdict match type
    policy_verdict: np.ndarray  # uint8: 0 allowed, 1 denied, 2 audited
    policy_cookie: np.ndarray  # uint32
    orig_daddr: np.ndarray  # (n, 16) uint8, pre-NAT destination when F_XLATED
    orig_dport: np.ndarray  # uint16
    service_id: np.ndarray  # uint32
    agg_packets: np.ndarray  # uint32
    agg_bytes: np.ndarray  # uint32
    cpu: np.ndarray  # uint16, the CPU whose ring held the event (0 when unknown)
    errors: dict[DecodeError, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time_ns)


_COLUMN_NAMES = tuple(f.name for f in fields(DecodedBatch) if f.name != "errors")


def ip4_column(addr: np.ndarray) -> np.ndarray:
    """The first 4 bytes of (n, 16) address rows as the IPv4 address numbers."""
    return np.ascontiguousarray(addr[:, :4]).view(">u4").reshape(-1).astype(np.uint32)


class Decoder:
    """Validates and columnises samples; keeps running totals of what it rejected."""

    def __init__(self, clock: ClockOffset | None = None) -> None:
        self.clock = clock if clock is not None else ClockOffset()
        self.errors: dict[DecodeError, int] = {e: 0 for e in DecodeError}
        self.decoded = 0

    def decode(self, records: np.ndarray, cpu: np.ndarray | None = None) -> DecodedBatch:
        """Decode perf records (RECORD_DTYPE), e.g. `ReadBatch.records`."""
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"decode() takes an array of RECORD_DTYPE, got {records.dtype}; "
                            "use decode_bytes() for bare events")
        if cpu is None:
            cpu = np.zeros(len(records), dtype=np.uint16)
        return self._decode(records["ev"], records["raw_size"] >= EVENT_SIZE, cpu)

    def decode_bytes(self, data: bytes | bytearray | memoryview) -> DecodedBatch:
        """Decode one or more bare events back to back (tests, replay, files).

        A trailing partial event is counted as TRUNCATED.
        """
        raw = bytes(data)
        whole, rest = divmod(len(raw), EVENT_SIZE)
        ev = np.frombuffer(raw, dtype=EVENT_DTYPE, count=whole)
        batch = self._decode(ev, np.ones(whole, dtype=bool), np.zeros(whole, dtype=np.uint16))
        if rest:
            self.errors[DecodeError.TRUNCATED] += 1
            batch.errors[DecodeError.TRUNCATED] = batch.errors.get(DecodeError.TRUNCATED, 0) + 1
        return batch

    def _decode(self, ev: np.ndarray, whole: np.ndarray, cpu: np.ndarray) -> DecodedBatch:
        errors: dict[DecodeError, int] = {}
        ok = np.ones(len(ev), dtype=bool)
        self._reject(errors, DecodeError.TRUNCATED, ok, ~whole)
        self._reject(errors, DecodeError.BAD_VERSION, ok, ev["version"] != EVENT_VERSION)
        self._reject(errors, DecodeError.BAD_LENGTH, ok, ev["len"] != EVENT_SIZE)
        self._reject(errors, DecodeError.UNKNOWN_TYPE, ok, ~np.isin(ev["type"], KNOWN_TYPES))
        if not ok.all():
            ev, cpu = ev[ok], cpu[ok]
        order = np.argsort(ev["ts_ns"], kind="stable")
        if len(order) and not bool(np.all(order[:-1] < order[1:])):
            ev, cpu = ev[order], cpu[order]
        self.decoded += len(ev)
        offset = np.int64(self.clock.offset_ns)
        cols = {
            "time_ns": ev["ts_ns"].astype(np.int64) + offset,
            "type": ev["type"], "subtype": ev["subtype"], "flags": ev["flags"],
            "is_ipv6": (ev["flags"] & F_IPV6) != 0,
            "src_ep": ev["src_ep"], "dst_ep": ev["dst_ep"], "ifindex": ev["ifindex"],
            "orig_len": ev["orig_len"], "saddr": ev["saddr"], "daddr": ev["daddr"],
            "src_ip4": ip4_column(ev["saddr"]), "dst_ip4": ip4_column(ev["daddr"]),
            "sport": ev["sport"], "dport": ev["dport"], "proto": ev["proto"],
            "tcp_flags": ev["tcp_flags"], "reason": ev["reason"], "direction": ev["direction"],
            "src_identity": ev["src_identity"], "dst_identity": ev["dst_identity"],
            "match_type": ev["match_type"], "policy_verdict": ev["verdict"],
            "policy_cookie": ev["policy_cookie"], "orig_daddr": ev["orig_daddr"],
            "orig_dport": ev["orig_dport"], "service_id": ev["service_id"],
            "agg_packets": ev["agg_packets"], "agg_bytes": ev["agg_bytes"], "cpu": cpu,
        }
        assert tuple(cols) == _COLUMN_NAMES
        return DecodedBatch(**cols, errors=errors)

    def _reject(self, errors: dict[DecodeError, int], kind: DecodeError, ok: np.ndarray,
                bad: np.ndarray) -> None:
        hit = ok & bad
        n = int(np.count_nonzero(hit))
        if n:
            errors[kind] = n
            self.errors[kind] += n
            ok &= ~hit
