"""Accounting for events lost between the datapath and the flow ring.

Two counters describe the same loss from two sides. The datapath counts every
failed perf_submit per CPU (exact, and it also sees failures that never produce
a PERF_RECORD_LOST); the perf ring reports PERF_RECORD_LOST, but only at the
next successful write, so it lags and under-reports (DESIGN.md). Both are
kept for status. What reaches the stream is the larger of the two per CPU, so
a loss is told once, never twice; it is aggregated and emitted at most once
per source and CPU per interval so that a storm of losses cannot itself flood
the ring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from spyglass.model.enums import LostEventSource
from spyglass.model.flow import LostEvent

_PERF = LostEventSource.PERF_EVENT_RING_BUFFER


@dataclass(slots=True)
class _CpuLoss:
    kernel: int = 0  # perf_submit failures since we started
    perf: int = 0  # PERF_RECORD_LOST counts since we started
    emitted: int = 0  # what LostEvents have told so far
    last_emit: float = float("-inf")


@dataclass(slots=True)
class LostTracker:
    """Turns loss counters into rate-limited, aggregated LostEvents."""

    interval_s: float = 1.0
    _cpus: dict[int, _CpuLoss] = field(default_factory=dict)
    _kernel_base: list[int] | None = None
    _kernel_last: list[int] = field(default_factory=list)
    #: Losses from other sources (e.g. a batch the collector failed to process).
    _other: dict[LostEventSource, _CpuLoss] = field(default_factory=dict)

    def _cpu(self, cpu: int) -> _CpuLoss:
        c = self._cpus.get(cpu)
        if c is None:
            c = self._cpus[cpu] = _CpuLoss()
        return c

    def kernel_counters(self, cumulative: Sequence[int]) -> None:
        """Take the datapath's cumulative per-CPU perf_submit failure counters.

        The first call sets the baseline: counters in a pinned map may carry
        losses from before this collector started, which are not ours to report.
        A counter that goes backwards (the map was recreated) restarts its baseline.
        """
        values = [int(v) for v in cumulative]
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
                base[cpu] = -c.kernel  # counting restarted from 0: keep what we had, add v
            last[cpu] = v
            c.kernel = v - base[cpu]

    def perf_lost(self, lost_by_cpu: dict[int, int]) -> None:
        for cpu, n in lost_by_cpu.items():
            if n > 0:
                self._cpu(cpu).perf += n

    def other(self, source: LostEventSource, n: int) -> None:
        c = self._other.setdefault(source, _CpuLoss())
        c.kernel += n

    def due(self, now: float, time_ns: int, *, force: bool = False) -> list[LostEvent]:
        """LostEvents for everything not yet told, where the interval allows (or `force`)."""
        out: list[LostEvent] = []
        for cpu, c in sorted(self._cpus.items()):
            self._emit(out, c, _PERF, cpu, now, time_ns, force)
        for source, c in sorted(self._other.items()):
            self._emit(out, c, source, None, now, time_ns, force)
        return out

    def _emit(self, out: list[LostEvent], c: _CpuLoss, source: LostEventSource,
              cpu: int | None, now: float, time_ns: int, force: bool) -> None:
        pending = max(c.kernel, c.perf) - c.emitted
        if pending > 0 and (force or now - c.last_emit >= self.interval_s):
            out.append(LostEvent(time_ns=time_ns, source=source, num_events_lost=pending,
                                 cpu=cpu))
            c.emitted += pending
            c.last_emit = now

    # -- status ----------------------------------------------------------------

    def by_source(self) -> dict[str, int]:
        """Events lost per source, as the stream tells them (told or still pending)."""
        out: dict[str, int] = {}
        perf = sum(max(c.kernel, c.perf) for c in self._cpus.values())
        if perf:
            out[_PERF.name] = perf
        for source, c in self._other.items():
            if c.kernel:
                out[source.name] = out.get(source.name, 0) + c.kernel
        return out

    def by_cpu(self) -> dict[int, dict[str, int]]:
        return {cpu: {"kernel_counted": c.kernel, "perf_reported": c.perf}
                for cpu, c in sorted(self._cpus.items())}

    @property
    def kernel_counted(self) -> int:
        return sum(c.kernel for c in self._cpus.values())

    @property
    def perf_reported(self) -> int:
        return sum(c.perf for c in self._cpus.values())
