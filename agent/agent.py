"""The agent: datapath, collector, store and API for the lab that exists on this host.

The lab is not the agent's (see labview.py): the agent attaches to it, follows its changes
and leaves it running when it stops. What the agent owns outlives it too, on purpose:

- the datapath's maps are pinned and its programs stay attached, so pods stay enforced
  and services keep balancing while no agent runs; the next agent adopts both, writes
  only what differs, and swaps its programs in atomically (`bpf/datapath.py`);
- the perf rings are held by the ring keeper (`collector/keeper.py`), so events written
  while no agent runs wait for the next one; what overflows is counted by the kernel;
- the policy set is journaled (`records.PolicyJournal`) and rebuilt the same.

Accounting across a restart: per CPU, the kernel counts successful and failed submits
(pinned), and agents record what they delivered and which failures they told
(`sg_reader`). A new agent therefore tells, exactly, the failures nobody told yet, and
the events that were written but that no agent delivered and that are not in the rings
(their rings went with a keeper that went away): `RestartGap`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from spyglass.agent.labview import LabView, LabWatcher
from spyglass.agent.options import AgentOptions
from spyglass.agent.policies import PodView, PolicyManager
from spyglass.agent.records import PolicyJournal, read_agent, this_process, write_agent
from spyglass.api.metrics import FlowMetrics
from spyglass.api.source import AgentStatus, RestartGap
from spyglass.bpf import pins
from spyglass.bpf.datapath import Datapath, DatapathEndpoint, DatapathError
from spyglass.collector import keeper
from spyglass.collector.collector import BatchHook, Collector
from spyglass.collector.decoder import Decoder
from spyglass.collector.enrich import Enricher
from spyglass.collector.lost import LossLedger
from spyglass.collector.perf import PerfReader
from spyglass.collector.ring import FlowRing
from spyglass.lab.errors import LabError
from spyglass.lab.lab import Lab
from spyglass.lab.model import LabPod
from spyglass.model.enums import LostEventSource
from spyglass.model.flow import Flow
from spyglass.model.policy import CompiledPolicy
from spyglass.policy.fields import PolicyError
from spyglass.policy.parse import parse_policies
from spyglass.storage import FlowStore, StoreWriter, WriterStats, store_hook

log = logging.getLogger(__name__)

VERSION = "0.1.0"
POLICY_KINDS = ("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")


@dataclass
class _Timers:
    t0: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic() - self.t0


class Agent:
    """One agent run; `start` attaches to the lab, `stop` detaches (or tears the datapath
    down). It is the API's FlowSource."""

    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.node_name = opts.node
        self.ring = FlowRing(opts.ring_capacity)  # validates the capacity before the host
        self.started_ns = time.time_ns()
        self.metrics = FlowMetrics()
        self.losses = LossLedger()
        self.view: LabView | None = None
        self.datapath: Datapath | None = None
        self.reader: PerfReader | None = None
        self.collector: Collector | None = None
        self.watcher: LabWatcher | None = None
        self.store: FlowStore | None = None
        self.store_dsn = opts.store_dsn or ""
        self.writer: StoreWriter | None = None
        self.gap: RestartGap | None = None
        self.timings = _Timers()
        self.keeper_socket = os.path.join(opts.state_dir, keeper.KEEPER_SOCKET)
        self.keeper_pid = 0
        self.journal = PolicyJournal(opts.state_dir)
        self._changes = threading.Lock()  # reconciles and policy changes, one at a time
        self._attached: set[int] = set()
        self._base: list[pins.ReaderState] = []
        self._saved: tuple[list[pins.ReaderState], int] | None = None
        self._unstored_at_close = 0  # what the writer could not write when it closed
        self.policies = PolicyManager(self._pod_views, self._load_policy,
                                      audit_namespaces=frozenset(opts.policy_audit_namespaces),
                                      audit_all=opts.policy_audit,
                                      max_entries=opts.policy_max_entries,
                                      journal=self.journal)

    # -- start ------------------------------------------------------------------------

    def start(self, log_line: Callable[[str], None] = lambda s: None) -> None:
        """Attach to the lab that is up; raises LabError when there is none."""
        other = read_agent(self.opts.state_dir)
        if other is not None and other.alive() and other.pid != os.getpid():
            raise LabError(f"an agent already runs here (pid {other.pid}); stop it first, "
                           "or run `spyglass down` to remove everything")
        # Watch from before the first read: a `lab add` made while we start is then seen.
        watcher = LabWatcher(self.opts.state_dir, self.reconcile, self._lab_gone)
        lab = Lab.load(self.opts.state_dir)
        self.view = LabView(lab)
        docs = [o for kind in POLICY_KINDS for o in lab.manifest.objects_of(kind)]
        parse_policies(docs, lab.manifest.source)  # a bad policy fails before the datapath
        if self.opts.store_dsn:
            log_line(f"opening the flow store {self.opts.store_dsn}")
            self.store = FlowStore.open(self.opts.store_dsn,
                                        retention_days=self.opts.retention_days,
                                        query_dsn=self.opts.query_store)
            self.writer = StoreWriter(self.store, max_rows=self.opts.writer_max_rows)
        log_line(f"loading the datapath (aggregation {self.opts.aggregation})")
        dp = self.datapath = Datapath(pin_dir=self.opts.pin_dir,
                                      aggregation=self.opts.aggregation,
                                      interval_s=self.opts.interval_s,
                                      service_cidr=lab.service_cidr)
        self.timings.mark("datapath_s")
        before, now = dp.begin_generation(os.getpid(), time.time_ns())
        if dp.adopted:
            log_line(f"adopting the running datapath (generation {before.generation}, "
                     f"pid {before.pid})")
        self._open_rings(dp)
        written, deleted = dp.sync_endpoints(self._endpoints(lab))
        self.policies.restore(docs, lab.manifest.source, self.journal.entries())
        dp.load_services(lab.service_entries())
        replaced = sum(self._attach(p.host_ifindex) == "replaced" for p in lab.pods
                       if p.host_ifindex)
        self._keep_rings(dp)
        self._start_collector(dp, before, now, written, deleted, replaced)
        write_agent(self.opts.state_dir, this_process(self.keeper_pid))
        self.watcher = watcher
        self.watcher.start()
        self.timings.mark("ready_s")

    def _open_rings(self, dp: Datapath) -> None:
        """The perf rings: the ones the keeper holds when there is one, else new ones."""
        try:
            kept = keeper.take(self.keeper_socket)
        except keeper.KeeperError:
            kept = None
        self.reader = PerfReader(dp.events_map_fd, pages=self.opts.perf_ring_pages, kept=kept)

    def _keep_rings(self, dp: Datapath) -> None:
        """Hand the keeper this datapath's event map and the rings, once our programs are
        attached: until then the earlier programs write through the map it holds."""
        assert self.reader is not None
        record = read_agent(self.opts.state_dir)
        try:
            if self.reader.adopted:
                self.keeper_pid = record.keeper_pid if record is not None else 0
            else:
                keeper.stop(self.keeper_socket)  # rings of another shape, if any: not ours
                self.keeper_pid = keeper.start(
                    self.keeper_socket, os.path.join(self.opts.state_dir, "keeper.log"))
            keeper.hold(self.keeper_socket, dp.events_map_fd, self.reader.cpus,
                        self.reader.pages, self.reader.fds())
        except keeper.KeeperError as exc:  # the agent runs; a restart would count more
            log.warning("no ring keeper (%s): a restart will lose what is in the rings, "
                        "and count it", exc)

    def _start_collector(self, dp: Datapath, before: pins.AgentInfo, now: pins.AgentInfo,
                         written: int, deleted: int, replaced: int) -> None:
        """Account for the gap since the last agent, then start reading.

        Per CPU: `ok` submits succeeded, the earlier agents delivered `delivered` of them,
        and `waiting` are still in the kept rings (this agent reads them): the rest are
        lost with the rings (AGENT_RESTART). Failures up to `failures_told` were told;
        the ledger starts there, so it tells the others (PERF_EVENT_RING_BUFFER). What the
        last agent had read but not stored is lost to history (STORE).
        """
        assert self.reader is not None and self.view is not None
        ok, failed = dp.submitted(), dp.submit_failures()
        prev = dp.reader_state()
        if dp.adopted:
            waiting = self.reader.unread()
            lost_rings = sum(max(0, ok[c] - prev[c].delivered - waiting.get(c, 0))
                             for c in range(len(ok)))
            untold = sum(max(0, failed[c] - prev[c].failures_told) for c in range(len(ok)))
            self.gap = RestartGap(now.generation, now.restarts, before.pid, self.reader.adopted,
                                  sum(waiting.values()), lost_rings, untold, before.unstored,
                                  written, deleted, replaced)
            baseline = [st.failures_told for st in prev]
            self._base = list(prev)
            self.losses.add(LostEventSource.AGENT_RESTART, lost_rings)
            if self.writer is not None:
                self.losses.add(LostEventSource.STORE, before.unstored)
        else:
            baseline = list(failed)  # what came before this datapath is not ours
            self._base = [pins.ReaderState(o, f) for o, f in zip(ok, failed, strict=True)]
        dp.save_reader_state(self._base, unstored=0)
        enricher = Enricher(endpoints=self.view, identities=self.view, interfaces=self.view,
                            node_name=self.node_name, policies=self.policies,
                            services=self.view)
        hooks: list[BatchHook] = [self.metrics.observe]
        lost_sources = []
        if self.writer is not None:
            hooks.append(store_hook(self.writer))
            lost_sources.append(self.writer.lost_events)
        self.collector = Collector(self.reader, Decoder(), enricher, self.ring,
                                   submit_failures=dp.submit_failures, losses=self.losses,
                                   kernel_baseline=baseline, on_batch=hooks,
                                   lost_sources=lost_sources, on_read=self._save_reader)
        self.collector.start()

    # -- following the lab ------------------------------------------------------------

    def reconcile(self, lab: Lab) -> None:
        """Make the datapath match `lab` (pods added or gone, services changed)."""
        dp, view = self.datapath, self.view
        if dp is None or view is None:
            return
        with self._changes:
            view.swap(lab)
            dp.sync_endpoints(self._endpoints(lab))
            now = {p.host_ifindex for p in lab.pods if p.host_ifindex}
            for ifindex in sorted(self._attached - now):
                dp.detach(ifindex)
                self._attached.discard(ifindex)
            self.policies.refresh()
            dp.load_services(lab.service_entries())
            for ifindex in sorted(now - self._attached):
                self._attach(ifindex)

    def _lab_gone(self) -> None:
        log.warning("the lab went away (%s); the agent keeps serving what it saw",
                    self.opts.state_dir)

    def _attach(self, ifindex: int) -> str:
        assert self.datapath is not None
        how = self.datapath.attach(ifindex)
        self._attached.add(ifindex)
        return how

    @staticmethod
    def _endpoints(lab: Lab) -> list[DatapathEndpoint]:
        return [_endpoint(p) for p in lab.pods if p.host_ifindex]

    def _pod_views(self) -> list[PodView]:
        if self.view is None:
            return []
        lab = self.view.lab
        ports: dict[str, dict[str, tuple[str, int]]] = {}
        for mpod in lab.manifest.pods:
            ports[mpod.ref] = {p.name: (p.protocol, p.container_port)
                               for c in mpod.containers for p in c.ports if p.name}
        return [PodView(p.namespace, p.name, p.ip, p.identity, p.identity_labels,
                        ports.get(p.ref, {})) for p in lab.pods]

    def _load_policy(self, compiled: CompiledPolicy) -> object:
        if self.datapath is None:
            raise DatapathError("the datapath is not running")
        return self.datapath.load_policy(compiled)

    def _save_reader(self) -> None:
        """Note in the datapath what this agent delivered and told, after every read.

        The collector commits a read only once it is delivered, then calls this: a kill
        between the two costs at most one batch counted as lost though it was read.
        """
        dp, reader = self.datapath, self.reader
        if dp is None or reader is None:
            return
        delivered = reader.delivered()
        told = self.losses.kernel_told()
        states = [pins.ReaderState(base.delivered + delivered.get(cpu, 0),
                                   max(base.failures_told, told.get(cpu, 0)))
                  for cpu, base in enumerate(self._base)]
        unstored = self._unstored_at_close
        if self.writer is not None:
            unstored += self.writer.pending_rows()
        if self._saved == (states, unstored):
            return
        try:
            dp.save_reader_state(states, unstored=unstored)
            self._saved = (states, unstored)
        except OSError:
            log.exception("saving the reader state failed")

    # -- queries (FlowSource) -----------------------------------------------------------

    def flow_by_uuid(self, uuid: str) -> Flow | None:
        found = self.ring.last(1, lambda b: b.uuid.matches(uuid), lost=False)
        return found[0] if found and isinstance(found[0], Flow) else None

    def writer_stats(self) -> WriterStats | None:
        return self.writer.stats() if self.writer is not None else None

    def live_namespaces(self) -> list[str]:
        return sorted({p.namespace for p in self.view.lab.pods}) if self.view else []

    def status(self) -> AgentStatus:
        return AgentStatus(
            version=VERSION, uptime_ns=time.time_ns() - self.started_ns,
            collector=self.collector.snapshot() if self.collector is not None else None,
            pods=len(self.view.lab.pods) if self.view is not None else 0,
            monitor_aggregation=self.opts.aggregation, restart=self.gap)

    # -- stop ---------------------------------------------------------------------------

    def stop(self, *, teardown: bool) -> list[str]:
        """Stop. With `teardown`, the datapath and the rings go too (`spyglass up`'s end);
        without, they stay for the next agent (`spyglass agent`'s end). Errors are
        returned, never raised: every step runs."""
        errors: list[str] = []

        def step(name: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{name}: {exc}")

        if self.watcher is not None:
            step("lab watcher", self.watcher.stop)
        coll, reader = self.collector, self.reader
        if coll is not None:
            step("collector", coll.stop)
        if self.writer is not None:
            writer = self.writer
            step("store writer", writer.close)
            # What close could not write is told by the next agent: this one's ring is done.
            self._unstored_at_close = sum(e.num_events_lost for e in writer.lost_events())
            step("reader state", self._save_reader)
        if reader is not None:
            step("perf rings", lambda: reader.close(keep_slots=not teardown))
        if teardown:
            step("ring keeper", lambda: keeper.stop(self.keeper_socket))
        if self.datapath is not None:
            dp = self.datapath
            step("datapath", lambda: dp.close(detach=teardown, unpin=teardown))
        if self.store is not None:
            step("store", self.store.close)
        self.collector = self.datapath = self.reader = self.watcher = None
        self.writer = None
        self.store = None
        return errors


def _endpoint(pod: LabPod) -> DatapathEndpoint:
    return DatapathEndpoint(ifindex=pod.host_ifindex, ifname=pod.host_ifname, ep_id=pod.ep_id,
                            identity=pod.identity, ipv4=pod.ip)


__all__ = ["POLICY_KINDS", "VERSION", "Agent", "PolicyError", "RestartGap"]
