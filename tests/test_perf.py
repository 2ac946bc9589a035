"""The perf reader: ring arithmetic and record parsing on byte images, then a real kernel."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.collector.abi import EVENT_TRACE, RECORD_DTYPE, RECORD_SIZE, pack_event
from spyglass.collector.bpfsys import parse_cpu_list
from spyglass.collector.decoder import ClockOffset, DecodeError, Decoder
from spyglass.collector.perf import (
    PerfReader,
    copy_unread,
    lost_record,
    parse_records,
    sample_record,
)

PAGE = 4096


def ev(n: int) -> bytes:
    return pack_event(type=EVENT_TRACE, ts_ns=1000 + n, sport=n, dport=80, proto=6)


def ring_image(records: list[bytes], *, data_size: int, start: int) -> tuple[bytearray, int, int]:
    """A metadata page plus a data area holding `records` written from counter `start`."""
    buf = bytearray(PAGE + data_size)
    pos = start
    for rec in records:
        for b in rec:
            buf[PAGE + pos % data_size] = b
            pos += 1
    struct.pack_into("<QQQQ", buf, 1024, pos, start, PAGE, data_size)
    return buf, pos, start


def sports(records: np.ndarray) -> list[int]:
    return records["ev"]["sport"].tolist()  # type: ignore[no-any-return]


# -- copy_unread ------------------------------------------------------------------


@pytest.mark.parametrize(("start", "count"), [
    pytest.param(0, 5, id="from-zero"),
    pytest.param(128 * 30, 4, id="wraps-at-record-boundary"),
    pytest.param(10 * 4096 * 2 + 128 * 31, 3, id="counters-far-past-the-size"),
])
def test_copy_unread_joins_a_wrapped_ring(start: int, count: int) -> None:
    records = [sample_record(ev(i)) for i in range(count)]
    buf, head, tail = ring_image(records, data_size=PAGE, start=start)
    chunk = copy_unread(buf, PAGE, PAGE, head, tail, max_bytes=1 << 20)
    assert chunk == b"".join(records)
    assert sports(parse_records(chunk).records) == list(range(count))


def test_copy_unread_wrap_inside_a_record() -> None:
    """LOST records are 24 bytes, so samples after one straddle the end of the ring."""
    records = [lost_record(7)] + [sample_record(ev(i)) for i in range(3)]
    buf, head, tail = ring_image(records, data_size=PAGE, start=PAGE - 100)
    parsed = parse_records(copy_unread(buf, PAGE, PAGE, head, tail, 1 << 20))
    assert parsed.lost == 7
    assert sports(parsed.records) == [0, 1, 2]
    assert parsed.consumed == head - tail


def test_copy_unread_caps_bytes_and_leaves_the_rest() -> None:
    records = [sample_record(ev(i)) for i in range(10)]
    buf, head, tail = ring_image(records, data_size=PAGE, start=0)
    chunk = copy_unread(buf, PAGE, PAGE, head, tail, max_bytes=4 * RECORD_SIZE)
    assert sports(parse_records(chunk).records) == [0, 1, 2, 3]


def test_copy_unread_empty_and_overrun() -> None:
    buf, head, tail = ring_image([], data_size=PAGE, start=64)
    assert copy_unread(buf, PAGE, PAGE, head, tail, 1 << 20) == b""
    with pytest.raises(ValueError, match="ring overrun"):
        copy_unread(buf, PAGE, PAGE, 10 * PAGE, 0, 1 << 20)


# -- parse_records ------------------------------------------------------------------


def test_fast_path_is_a_view_of_the_bytes() -> None:
    chunk = b"".join(sample_record(ev(i)) for i in range(4))
    parsed = parse_records(chunk)
    assert parsed.records.dtype == RECORD_DTYPE
    assert sports(parsed.records) == [0, 1, 2, 3]
    assert (parsed.lost, parsed.malformed, parsed.consumed) == (0, 0, len(chunk))


@pytest.mark.parametrize(("chunk", "want_sports", "lost", "malformed"), [
    pytest.param(sample_record(ev(1)) + lost_record(5) + sample_record(ev(2)),
                 [1, 2], 5, 0, id="lost-between-samples"),
    pytest.param(lost_record(3) + lost_record(4), [], 7, 0, id="only-lost"),
    pytest.param(sample_record(ev(1) + b"\xff" * 12) + sample_record(ev(2)),
                 [1, 2], 0, 0, id="longer-raw-sample"),
    pytest.param(struct.pack("<IHH", 3, 0, 16) + b"\0" * 8 + sample_record(ev(2)),
                 [2], 0, 1, id="foreign-record-type"),
    pytest.param(sample_record(ev(1)) + struct.pack("<IHH", 9, 0, 0) + b"\0" * 120,
                 [1], 0, 1, id="zero-size-header-stops-the-walk"),
])
def test_fallback_walk(chunk: bytes, want_sports: list[int], lost: int, malformed: int) -> None:
    parsed = parse_records(chunk)
    assert sports(parsed.records) == want_sports
    assert (parsed.lost, parsed.malformed) == (lost, malformed)


def test_short_sample_is_passed_on_for_the_decoder_to_count() -> None:
    short = sample_record(ev(9)[:40])
    parsed = parse_records(short + sample_record(ev(1)))
    assert parsed.records["raw_size"].tolist() == [40, 116]
    batch = Decoder(ClockOffset(0)).decode(parsed.records)
    assert batch.sport.tolist() == [1]
    assert batch.errors == {DecodeError.TRUNCATED: 1}


def test_partial_trailing_record_is_left_unconsumed() -> None:
    whole = lost_record(1) + sample_record(ev(1))
    parsed = parse_records(whole + sample_record(ev(2))[:50])
    assert sports(parsed.records) == [1]
    assert parsed.consumed == len(whole)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_parse_never_crashes_on_garbage(data: bytes) -> None:
    parsed = parse_records(data)
    assert 0 <= parsed.consumed <= len(data)
    assert parsed.records.dtype == RECORD_DTYPE
    Decoder(ClockOffset(0)).decode(parsed.records)


@pytest.mark.parametrize(("text", "cpus"), [
    pytest.param("0-1\n", [0, 1], id="range"),
    pytest.param("0", [0], id="single"),
    pytest.param("0-2,4,6-7", [0, 1, 2, 4, 6, 7], id="mixed"),
])
def test_parse_cpu_list(text: str, cpus: list[int]) -> None:
    assert parse_cpu_list(text) == cpus


def test_parse_cpu_list_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a CPU list"):
        parse_cpu_list("zero-one")


@pytest.mark.parametrize(("kwargs", "match"), [
    pytest.param({"pages": 3}, "power of two", id="pages-not-power-of-two"),
    pytest.param({"pages": 1, "watermark_bytes": 8192}, "watermark_bytes", id="watermark-too-big"),
])
def test_reader_rejects_bad_sizes_before_touching_the_kernel(kwargs: dict[str, int],
                                                             match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PerfReader(-1, cpus=[0], **kwargs)


# -- against the kernel ------------------------------------------------------------

EMIT_PROG = r"""
#include "spyglass_event.h"
BPF_PERF_OUTPUT(sgtc_events);
BPF_ARRAY(sgtc_seq, u32, 1);
int sgtc_emit(struct __sk_buff *skb) {
    int zero = 0;
    u32 *seq = sgtc_seq.lookup(&zero);
    if (!seq)
        return 0;
    u32 n = *seq;
    *seq = n + 1;
    struct sg_event ev = {};
    ev.type = SG_EVENT_TRACE;
    ev.version = SG_EVENT_VERSION;
    ev.len = sizeof(ev);
    ev.ts_ns = bpf_ktime_get_ns();
    ev.saddr[0] = 10; ev.saddr[3] = 1;
    ev.daddr[0] = 10; ev.daddr[3] = 2;
    ev.sport = n & 0xffff;
    ev.dport = 4242;
    ev.proto = 17;
    ev.orig_len = skb->len;
    ev.agg_packets = n;
    sgtc_events.perf_submit(skb, &ev, sizeof(ev));
    return 0;  /* drop: nobody reads the socket */
}
"""
SO_ATTACH_BPF = 50


class Emitter:
    """A socket filter on a loopback UDP socket: one sg_event per datagram we send."""

    def __init__(self) -> None:
        from bcc import BPF

        bpf_dir = os.path.join(os.path.dirname(__file__), "..", "bpf")
        self.bpf = BPF(text=EMIT_PROG, cflags=[f"-I{os.path.abspath(bpf_dir)}"])
        fn = self.bpf.load_func("sgtc_emit", BPF.SOCKET_FILTER)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fn.fd)
        self.map_fd: int = self.bpf["sgtc_events"].map_fd

    def send(self, n: int) -> None:
        dst = self.rx.getsockname()
        for _ in range(n):
            self.tx.sendto(b"sg", dst)

    def close(self) -> None:
        self.rx.close()
        self.tx.close()
        self.bpf.cleanup()


@pytest.fixture
def emitter() -> Iterator[Emitter]:
    # Loopback delivery runs the filter on the sender's CPU: pin it so that
    # per-CPU watermarks are deterministic.
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    em = Emitter()
    try:
        yield em
    finally:
        em.close()
        os.sched_setaffinity(0, old)


@pytest.mark.datapath
def test_reader_reads_real_samples_with_their_content(emitter: Emitter) -> None:
    with PerfReader(emitter.map_fd, watermark_bytes=64 * RECORD_SIZE) as reader:
        emitter.send(20)
        batch = reader.read(timeout_ms=10)
        assert len(batch) == 20
        assert set(batch.cpu.tolist()) == {min(os.sched_getaffinity(0))}
        decoded = Decoder().decode(batch.records, batch.cpu)
        assert decoded.sport.tolist() == list(range(20))
        assert set(decoded.dport.tolist()) == {4242}
        assert set(decoded.src_ip4.tolist()) == {0x0A000001}
        assert set(decoded.orig_len.tolist()) == {10}  # a socket filter sees UDP + payload
        assert not decoded.errors


@pytest.mark.datapath
def test_wakeups_are_batched_by_the_watermark(emitter: Emitter) -> None:
    """Below the watermark nothing wakes the poller, yet the timeout read still drains."""
    with PerfReader(emitter.map_fd, watermark_bytes=64 * RECORD_SIZE) as reader:
        emitter.send(10)
        below = reader.read(timeout_ms=20)
        assert (len(below), below.ready) == (10, 0)
        emitter.send(100)  # 12800 bytes > the 8192-byte watermark
        above = reader.read(timeout_ms=20)
        assert (len(above), above.ready) == (100, 1)
        # 1000 events through 8 KiB watermarks: far fewer wakeups than events.
        emitter.send(1000)
        reads = got = 0
        while got < 1000:
            got += len(reader.read(timeout_ms=20))
            reads += 1
        assert got == 1000 and reads <= 3


@pytest.mark.datapath
def test_overrun_reports_lost_records(emitter: Emitter) -> None:
    with PerfReader(emitter.map_fd, pages=1, watermark_bytes=2048) as reader:
        emitter.send(100)  # a 4 KiB ring holds about 31 samples
        first = reader.read(timeout_ms=0)
        reader.commit()  # delivered: the space is free again
        emitter.send(1)  # the kernel writes the LOST record before the next sample
        second = reader.read(timeout_ms=0)
        lost = sum(first.lost_by_cpu.values()) + sum(second.lost_by_cpu.values())
        assert len(first) + len(second) + lost == 101
        assert lost > 0


@pytest.mark.datapath
def test_a_read_frees_nothing_until_delivered(emitter: Emitter) -> None:
    """What a read returned stays in the ring until the next read (or commit): an agent
    that dies mid-batch leaves it there for the next reader of the same rings."""
    with PerfReader(emitter.map_fd, pages=4, watermark_bytes=2048) as reader:
        emitter.send(5)
        assert len(reader.read(timeout_ms=0)) == 5
        assert sum(reader.unread().values()) == 5  # read, not yet delivered
        assert sum(reader.delivered().values()) == 0
        reader.commit()
        assert sum(reader.unread().values()) == 0
        assert sum(reader.delivered().values()) == 5


def reopen_map(fd: int) -> int:
    """A new file for the same map (BPF_MAP_GET_FD_BY_ID), as another process would have."""
    import ctypes as ct

    from bcc.libbcc import lib

    from spyglass.bpf import pins

    info = pins._MapInfo()
    size = ct.c_uint32(ct.sizeof(info))
    assert pins._lib().bpf_obj_get_info(fd, ct.byref(info), ct.byref(size)) == 0
    lib.bpf_map_get_fd_by_id.argtypes = [ct.c_uint32]
    new = int(lib.bpf_map_get_fd_by_id(info.id))
    assert new >= 0, "BPF_MAP_GET_FD_BY_ID failed"
    return new


@pytest.mark.datapath
def test_a_dead_readers_map_file_takes_its_ring_entries_with_it(emitter: Emitter) -> None:
    """The kernel fact the keeper exists for: entries set through a map file are cleared
    when that file is released, so a dead agent's datapath writes into nothing."""
    agents_map = reopen_map(emitter.map_fd)
    reader = PerfReader(agents_map, pages=8, watermark_bytes=2048)
    emitter.send(2)
    assert len(reader.read(timeout_ms=0)) == 2
    os.close(agents_map)  # the agent dies: its map file goes (its rings stay open here)
    emitter.send(5)
    assert len(reader.read(timeout_ms=0)) == 0  # the entries went with the file
    reader.close(keep_slots=True)


@pytest.mark.datapath
def test_rings_held_by_the_keeper_keep_what_is_written_while_no_reader_runs(
        emitter: Emitter, tmp_path: Path) -> None:
    """The restart path: reader one (with a map file of its own, as an agent has) hands the
    map and its rings to the keeper and dies; events keep arriving; reader two takes the
    same rings back and reads all of them, the batch reader one read but never delivered
    included."""
    from spyglass.collector import keeper

    sock = str(tmp_path / keeper.KEEPER_SOCKET)
    keeper.start(sock)
    try:
        agents_map = reopen_map(emitter.map_fd)
        first = PerfReader(agents_map, pages=8, watermark_bytes=2048)
        keeper.hold(sock, agents_map, first.cpus, first.pages, first.fds())
        emitter.send(3)
        assert len(first.read(timeout_ms=0)) == 3  # read, then the agent "dies"
        first.close(keep_slots=True, commit=False)  # died: those 3 were never delivered
        os.close(agents_map)  # ...and its map file with it; the keeper holds another copy
        emitter.send(7)  # nobody reads these: the kept rings take them
        kept = keeper.take(sock)
        assert kept is not None
        with PerfReader(emitter.map_fd, pages=8, watermark_bytes=2048, kept=kept) as second:
            assert second.adopted
            assert sum(second.unread().values()) == 10
            got = second.read(timeout_ms=0)
            assert len(got) == 10 and not got.lost_by_cpu
    finally:
        keeper.stop(sock)
