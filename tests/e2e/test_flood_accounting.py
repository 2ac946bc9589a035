"""A short flood at the sender's maximum rate, every packet traced: nothing goes uncounted.

The lab's client pod floods a server pod with 64-byte UDP datagrams for about 2 s
(`bench/flood_sender.c`, as fast as sendmmsg returns), with monitor aggregation off
and no store, so the collector sees the kernel's whole rate. Whatever the machine
manages, the accounting must be exact: every event the datapath offered (its pinned
per-CPU counters of successful and failed perf submits) was either delivered to the
flow ring or counted as lost in the agent's ledger. No rate is asserted: that is
`bench/collector_e2e.py`'s job.
"""

from __future__ import annotations

import ctypes as ct
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import Up, build_flood_sender, down, lab_up, start_agent

from spyglass.bpf.pins import read_percpu_u64

pytestmark = pytest.mark.e2e

FLOOD_S = 2
#: Sources of losses the collector counts for events the datapath offered (not a client's
#: or the flow ring's, which happen after delivery).
COLLECTOR_LOSSES = ("PERF_EVENT_RING_BUFFER", "UNKNOWN_LOST_EVENT_SOURCE", "AGENT_RESTART")


@pytest.fixture(scope="module")
def flood_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, str]]:
    tmp = tmp_path_factory.mktemp("flood")
    sender = build_flood_sender(tmp)
    up = lab_up(tmp, "sgf")
    try:
        start_agent(up, "--monitor-aggregation", "none", store="none")
        yield up, sender
    finally:
        down(up)


def submits(pin_dir: str) -> tuple[int, int]:
    """(successful, failed) perf submits of the datapath, over all CPUs."""
    from bcc.libbcc import lib as bcc  # root tests only: bcc is there

    get = bcc.bpf_obj_get
    get.argtypes, get.restype = [ct.c_char_p], ct.c_int
    out = []
    for name in ("sg_submit_ok", "sg_submit_fail"):
        fd = int(get(os.path.join(pin_dir, name).encode()))
        assert fd >= 0, f"cannot open {pin_dir}/{name}: {os.strerror(-fd)}"
        try:
            out.append(sum(v[0] for v in read_percpu_u64(fd)))
        finally:
            os.close(fd)
    return out[0], out[1]


def status(up: Up) -> dict[str, Any]:
    return dict(httpx.get(up.url + "/api/v1/status", timeout=5).json())


def snapshot(up: Up) -> tuple[int, int, int, int]:
    """(written, failed, delivered, lost by the collector), once the counters are still."""
    last: tuple[int, int, int, int] | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ok, failed = submits(up.pin_dir)
        st = status(up)
        lost = sum(st["lost_events"].get(k, 0) for k in COLLECTOR_LOSSES)
        now = (ok, failed, st["seen_flows"], lost)
        if now == last:
            return now
        last = now
        time.sleep(0.5)  # > the 50 ms poll bound and the 1 s loss interval's half
    pytest.fail(f"the counters did not settle within 30 s: {last}")


def test_every_offered_event_is_delivered_or_counted(flood_lab: tuple[Up, str]) -> None:
    up, sender = flood_lab
    target = up.pods()["e2e-b/server-1"]["ip"]
    before = snapshot(up)
    done = up.lab("exec", "e2e-a/client-0", "--", sender, target, "9999", "0", str(FLOOD_S))
    assert done.returncode == 0, done.stderr
    time.sleep(1.2)  # the ledger tells perf losses once a second
    after = snapshot(up)
    written, failed, delivered, lost = (a - b for a, b in zip(after, before, strict=True))
    offered = written + failed
    print(f"\nflood: sender said {done.stdout.strip()}; offered {offered:,} events "
          f"(failed submits {failed:,}), delivered {delivered:,}, counted lost {lost:,}")
    assert offered > 10_000, "the flood hardly reached the datapath"
    assert offered == delivered + lost
    assert failed <= lost  # every failed submit is among the counted losses
