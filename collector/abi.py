"""Python mirror of `bpf/spyglass_event.h`.

The ctypes structure lets tests build raw samples without a kernel; the numpy
dtypes derived from it let the decoder view a whole ring read as columns in one
call. `tests/test_abi.py` compiles the C header and checks every offset here.
"""

from __future__ import annotations

import ctypes as ct

import numpy as np

EVENT_VERSION = 1

EVENT_DROP = 1
EVENT_TRACE = 4
EVENT_POLICY_VERDICT = 5

F_IPV6 = 0x01
F_IS_REPLY = 0x02
F_REPLY_KNOWN = 0x04
F_XLATED = 0x08
F_AUDITED = 0x10
F_XLATED_REPLY = 0x20


class SgEvent(ct.Structure):
    """struct sg_event (116 bytes, packed, 4-byte aligned)."""

    _pack_ = 1
    _fields_ = [
        ("type", ct.c_uint8),
        ("subtype", ct.c_uint8),
        ("version", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("len", ct.c_uint16),
        ("src_ep", ct.c_uint16),
        ("ifindex", ct.c_uint32),
        ("orig_len", ct.c_uint32),
        ("ts_ns", ct.c_uint64),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("proto", ct.c_uint8),
        ("tcp_flags", ct.c_uint8),
        ("reason", ct.c_uint8),
        ("direction", ct.c_uint8),
        ("src_identity", ct.c_uint32),
        ("dst_identity", ct.c_uint32),
        ("dst_ep", ct.c_uint16),
        ("match_type", ct.c_uint8),
        ("verdict", ct.c_uint8),
        ("policy_cookie", ct.c_uint32),
        ("orig_daddr", ct.c_uint8 * 16),
        ("orig_dport", ct.c_uint16),
        ("pad0", ct.c_uint16),
        ("service_id", ct.c_uint32),
        ("agg_packets", ct.c_uint32),
        ("agg_bytes", ct.c_uint32),
        ("pad1", ct.c_uint32),
    ]


EVENT_SIZE = ct.sizeof(SgEvent)
assert EVENT_SIZE == 116, EVENT_SIZE

#: numpy view of one event; field names and offsets come from the ctypes mirror.
EVENT_DTYPE: np.dtype = np.dtype(SgEvent)

#: One PERF_RECORD_SAMPLE carrying one event: perf_event_header (type u32,
#: misc u16, size u16), the raw size (u32), then the event. 128 bytes, so a
#: power-of-two ring never splits a record when every record is a sample.
PERF_RECORD_SAMPLE = 9
PERF_RECORD_LOST = 2
RECORD_SIZE = 128
RECORD_DTYPE: np.dtype = np.dtype(
    [("hdr_type", "<u4"), ("hdr_misc", "<u2"), ("hdr_size", "<u2"), ("raw_size", "<u4"),
     ("ev", EVENT_DTYPE)]
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE, RECORD_DTYPE.itemsize
RAW_SIZE = RECORD_SIZE - 12  # what the kernel writes in the raw size field (with padding)


def pack_event(**fields: object) -> bytes:
    """Build one raw event (tests, benchmarks). Unnamed fields are zero."""
    ev = SgEvent()
    ev.version = EVENT_VERSION
    ev.len = EVENT_SIZE
    for name, value in fields.items():
        if name in ("saddr", "daddr", "orig_daddr"):
            raw = bytes(value)  # type: ignore[call-overload]
            getattr(ev, name)[: len(raw)] = raw
        else:
            setattr(ev, name, value)
    return bytes(ev)
