"""The loss ledger: every event lost between the datapath and a reader, by where it was lost.

There is one ledger per agent, keyed by `LostEventSource`; status, `/metrics` and the
stream's LostEvents all read it, so the numbers they show cannot disagree.

The perf ring's loss is described by two counters, from two sides. The datapath counts
every failed perf_submit per CPU (exact, and it also sees failures that never produce a
PERF_RECORD_LOST); the perf ring reports PERF_RECORD_LOST, but only at the next
successful write, so it lags and under-reports (docs/collector.md, "Counting losses").
Both are kept per CPU; what the ledger counts is the larger of the two, so a loss is
told once, never twice. Other sources (the store writer, a batch that failed, the
agent's own restart, the API's per-client drops) are plain counts.

What reaches the stream is aggregated and emitted at most once per source and CPU per
interval, so that a storm of losses cannot itself flood the ring. Sources whose losses
are already told to whoever suffered them (a client that lagged behind the ring, a
client's full queue) are counted with `tell=False`: they are in the totals, never in
the ring.

The ledger is shared by the collector thread and the API's event loop: it has its own
lock, and every method takes it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from spyglass.model.enums import LostEventSource
from spyglass.model.flow import LostEvent

_PERF = LostEventSource.PERF_EVENT_RING_BUFFER


@dataclass(frozen=True, slots=True)
class PerfLoss:
    """One CPU's perf ring loss, as both sides count it since this agent started."""

    kernel_counted: int
    perf_reported: int


@dataclass(slots=True)
class _Count:
    kernel: int = 0  # perf: submit failures since the baseline; other sources: the count
    perf: int = 0  # PERF_RECORD_LOST counts since we started (perf only)
    emitted: int = 0  # what LostEvents have told so far
    last_emit: float = float("-inf")
    tell: bool = True

    @property
    def total(self) -> int:
        return max(self.kernel, self.perf)


class LossLedger:
    """Loss counts by source (and by CPU for the perf ring), and the LostEvents that tell them."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._cpus: dict[int, _Count] = {}
        self._kernel_base: list[int] | None = None
        self._kernel_last: list[int] = []
        self._other: dict[LostEventSource, _Count] = {}

    def _cpu(self, cpu: int) -> _Count:
        c = self._cpus.get(cpu)
        if c is None:
            c = self._cpus[cpu] = _Count()
        return c

    # -- counting ---------------------------------------------------------------------

    def kernel_baseline(self, told: Sequence[int]) -> None:
        """Start counting the datapath's failures from `told` (cumulative per CPU).

        A fresh datapath's counters are all ours (told = zeros, or what they read now);
        an adopted one's carry failures that an earlier agent already told: those are
        not ours, and the ones after them, which no agent told, are.
        """
        with self._lock:
            self._kernel_base = [int(v) for v in told]
            self._kernel_last = list(self._kernel_base)

    def kernel_counters(self, cumulative: Sequence[int]) -> None:
        """Take the datapath's cumulative per-CPU perf_submit failure counters.

        Without a baseline, the first call sets it: counters in a pinned map may carry
        losses from before this collector started. A counter that goes backwards (the
        map was recreated) restarts its baseline, keeping what was counted.
        """
        values = [int(v) for v in cumulative]
        with self._lock:
            if self._kernel_base is None:
                self._kernel_base = list(values)
                self._kernel_last = list(values)
                return
            base, last = self._kernel_base, self._kernel_last
            if len(base) < len(values):
                base.extend([0] * (len(values) - len(base)))
                last.extend([0] * (len(values) - len(last)))
            for cpu, v in enumerate(values):
                c = self._cpu(cpu)
                if v < last[cpu]:
                    base[cpu] = -c.kernel  # counting restarted from 0: keep what we had
                last[cpu] = v
                c.kernel = v - base[cpu]

    def perf_lost(self, lost_by_cpu: dict[int, int]) -> None:
        """PERF_RECORD_LOST counts read from the rings."""
        with self._lock:
            for cpu, n in lost_by_cpu.items():
                if n > 0:
                    self._cpu(cpu).perf += n

    def add(self, source: LostEventSource, n: int, *, tell: bool = True) -> None:
        """Count `n` events lost at `source`; with `tell=False` they never go to the ring
        (whoever suffered them was told already)."""
        if n <= 0:
            return
        if source == _PERF:
            raise ValueError("perf ring losses are counted by kernel_counters/perf_lost")
        with self._lock:
            c = self._other.get(source)
            if c is None:
                c = self._other[source] = _Count(tell=tell)
            c.kernel += n

    def due(self, now: float, time_ns: int, *, force: bool = False) -> list[LostEvent]:
        """LostEvents for everything not yet told, where the interval allows (or `force`)."""
        out: list[LostEvent] = []
        with self._lock:
            for cpu, c in sorted(self._cpus.items()):
                self._emit(out, c, _PERF, cpu, now, time_ns, force)
            for source, c in sorted(self._other.items()):
                if c.tell:
                    self._emit(out, c, source, None, now, time_ns, force)
        return out

    def _emit(self, out: list[LostEvent], c: _Count, source: LostEventSource,
              cpu: int | None, now: float, time_ns: int, force: bool) -> None:
        pending = c.total - c.emitted
        if pending > 0 and (force or now - c.last_emit >= self.interval_s):
            out.append(LostEvent(time_ns=time_ns, source=source, num_events_lost=pending,
                                 cpu=cpu))
            c.emitted += pending
            c.last_emit = now

    # -- reading ----------------------------------------------------------------------

    def totals(self) -> dict[LostEventSource, int]:
        """Events lost per source since the agent started (told or still pending)."""
        with self._lock:
            out: dict[LostEventSource, int] = {}
            perf = sum(c.total for c in self._cpus.values())
            if perf:
                out[_PERF] = perf
            for source, c in sorted(self._other.items()):
                if c.kernel:
                    out[source] = c.kernel
            return out

    def by_cpu(self) -> dict[int, PerfLoss]:
        with self._lock:
            return {cpu: PerfLoss(c.kernel, c.perf) for cpu, c in sorted(self._cpus.items())}

    def kernel_told(self) -> dict[int, int]:
        """Per CPU, the datapath's cumulative failure counter up to which LostEvents told.

        What the next agent takes as its baseline (`kernel_baseline`), so that the
        failures told here are never told again and the ones not told yet are.
        """
        with self._lock:
            base = self._kernel_base or []
            out = {}
            for cpu, b in enumerate(base):
                c = self._cpus.get(cpu)
                out[cpu] = b + (min(c.kernel, c.emitted) if c is not None else 0)
            return out

    @property
    def kernel_counted(self) -> int:
        with self._lock:
            return sum(c.kernel for c in self._cpus.values())

    @property
    def perf_reported(self) -> int:
        with self._lock:
            return sum(c.perf for c in self._cpus.values())
