"""The agent behind `spyglass up`: the composition root that wires every layer.

It is the one place that knows about all of them: the lab makes pods, the datapath
is attached to their veths, the collector reads the datapath's perf rings into the
ring, and the API serves the ring. Start order is chosen so that the first packets of
the demo are already observed (datapath and collector before the pods' processes),
and teardown runs in reverse, each step guarded so that one failure never leaves
the rest of the host dirty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rich.console import Console

from spyglass.agent.policies import PodView, PolicyManager
from spyglass.api.credentials import remove_local_token, token_path
from spyglass.api.metrics import FlowMetrics
from spyglass.bpf.datapath import Datapath, DatapathEndpoint, DatapathError
from spyglass.bpf.datapath import cleanup as bpf_cleanup
from spyglass.collector.collector import BatchHook, Collector
from spyglass.collector.decoder import Decoder
from spyglass.collector.enrich import Enricher
from spyglass.collector.perf import PerfReader
from spyglass.collector.ring import FlowRing
from spyglass.lab.errors import LabError
from spyglass.lab.lab import Lab
from spyglass.lab.manifest import Manifest, Pod, load_manifest, parse_manifest
from spyglass.lab.model import LabPod
from spyglass.lab.services import parse_service
from spyglass.lab.state import teardown_from_state
from spyglass.model.flow import Flow
from spyglass.model.policy import CompiledPolicy
from spyglass.policy.compile import DEFAULT_MAX_ENTRIES
from spyglass.policy.parse import PolicyError, parse_policies
from spyglass.storage import FlowStore, StoreError, StoreWriter, store_hook

STATE_DIR = "/run/spyglass"
PIN_DIR = "/sys/fs/bpf/spyglass"
VERSION = "0.1.0"
DEFAULT_STORE = "chdb:///var/lib/spyglass/flows"
UI_DIR = str(resources.files("spyglass.ui").joinpath("static"))


@dataclass(frozen=True)
class AgentOptions:
    manifest: str | None = None
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 4245
    aggregation: str = "medium"
    interval_s: float = 5.0
    ring_capacity: int = 65535
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    node_name: str = field(default_factory=lambda: os.uname().nodename)
    state_dir: str = STATE_DIR
    pin_dir: str = PIN_DIR
    prefix: str = "sg"
    link_prefix: str = "lxc"
    policy_audit: bool = False
    policy_audit_namespaces: frozenset[str] = frozenset()
    store: str | None = DEFAULT_STORE   # None: no history (the ring only)
    query_store: str | None = None      # a server's read-only user for `query sql`
    retention_days: int = 7
    writer_max_rows: int = 1_000_000
    token: str | None = None
    metrics_public: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    policy_max_entries: int = DEFAULT_MAX_ENTRIES


POLICY_KINDS = ("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")


def demo_manifest_path() -> str:
    return str(resources.files("spyglass.lab").joinpath("manifests/demo.yaml"))


class _LabInterfaces:
    """InterfaceGetter over the lab's host-side veths (pods come and go)."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab

    def ifname(self, ifindex: int) -> str:
        return next((p.host_ifname for p in self._lab.pods if p.host_ifindex == ifindex), "")


class Agent:
    """Owns the lab, the datapath and the collector for one `up` run (the API's FlowSource)."""

    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.node_name = opts.node_name
        self.ring = FlowRing(opts.ring_capacity)  # validates the capacity before touching the host
        self.started_ns = time.time_ns()
        self.lab: Lab | None = None
        self.datapath: Datapath | None = None
        self.collector: Collector | None = None
        self.timings: dict[str, float] = {}
        self.manifest: Manifest | None = None
        self._policy_docs: list[Any] = []
        self.store: FlowStore | None = None
        self.store_dsn = opts.store or ""
        self.writer: StoreWriter | None = None
        self.metrics = FlowMetrics()
        self._changes = threading.Lock()  # pod and service changes, one at a time
        self.policies = PolicyManager(self._pod_views, self._load_policy,
                                      audit_namespaces=opts.policy_audit_namespaces,
                                      audit_all=opts.policy_audit,
                                      max_entries=opts.policy_max_entries)

    def start(self, log: Callable[[str], None] = lambda s: None) -> None:
        t0 = time.monotonic()
        path = demo_manifest_path() if self.opts.demo else self.opts.manifest
        assert path is not None
        manifest = self.manifest = load_manifest(path)
        self._policy_docs = [o for kind in POLICY_KINDS for o in manifest.objects_of(kind)]
        parse_policies(self._policy_docs, path)  # refuse bad policy before touching the host
        if self.opts.store:
            log(f"opening the flow store {self.opts.store}")
            self.store = FlowStore.open(self.opts.store, retention_days=self.opts.retention_days,
                                        query_dsn=self.opts.query_store)
            self.writer = StoreWriter(self.store, max_rows=self.opts.writer_max_rows)
        self.lab = Lab(manifest, pod_cidr=self.opts.pod_cidr, prefix=self.opts.prefix,
                       link_prefix=self.opts.link_prefix, state_dir=self.opts.state_dir,
                       service_cidr=self.opts.service_cidr)
        log(f"compiling the datapath (aggregation {self.opts.aggregation})")
        self.datapath = Datapath(pin_dir=self.opts.pin_dir, aggregation=self.opts.aggregation,
                                 interval_s=self.opts.interval_s,
                                 service_cidr=self.opts.service_cidr)
        self.timings["compile_s"] = time.monotonic() - t0
        log(f"creating {len(manifest.pods)} pods")
        for warning in manifest.warnings:
            log(f"[yellow]warning[/]: {warning}")
        self.lab.up(on_wired=self._attach)
        self.timings["ready_s"] = time.monotonic() - t0

    def _attach(self, pods: list[LabPod]) -> None:
        """Program endpoints, attach the datapath and start the collector, before any pod runs."""
        assert self.datapath is not None and self.lab is not None
        for pod in pods:
            self.datapath.upsert_endpoint(_endpoint(pod))
        assert self.manifest is not None
        self.policies.load_objects(self._policy_docs, self.manifest.source)
        self.datapath.load_services(self.lab.service_entries())
        for pod in pods:
            self.datapath.attach(pod.host_ifindex)
        enricher = Enricher(endpoints=self.lab, identities=self.lab,
                            interfaces=_LabInterfaces(self.lab), node_name=self.node_name,
                            policies=self.policies, services=self.lab)
        hooks: list[BatchHook] = [lambda _b, flows: self.metrics.observe(flows)]
        lost_sources = []
        if self.writer is not None:
            hooks.append(store_hook(self.writer))
            lost_sources.append(self.writer.lost_events)  # STORE losses join the stream
        self.collector = Collector(PerfReader(self.datapath.events_map_fd), Decoder(), enricher,
                                   self.ring, submit_failures=self.datapath.submit_failures,
                                   on_batch=hooks, lost_sources=lost_sources)
        self.collector.start()

    # -- changes while up: pods and services (the API's lab and service routes) --------------

    def add_pods(self, yaml_text: str, source: str = "<request>") -> list[str]:
        """`spyglass lab add -f`: every Pod of the YAML, wired, attached, then started."""
        pods = parse_manifest(yaml_text, source).pods
        if not pods:
            raise LabError(f"{source}: no Pod documents to add")
        with self._changes:
            return [self._add(p).ref for p in pods]

    def delete_pod(self, ref: str) -> str:
        with self._changes:
            return self._delete(ref)

    def scale(self, workload: str, replicas: int) -> dict[str, list[str]]:
        """`spyglass lab scale NS/WORKLOAD --replicas N`."""
        with self._changes:
            lab = self._running_lab()
            add, drop = lab.scale_plan(workload, replicas)
            return {"added": [self._add(p).ref for p in add],
                    "deleted": [self._delete(ref) for ref in drop]}

    def apply_services(self, yaml_text: str, source: str = "<request>") -> dict[str, str]:
        """`spyglass service apply -f`: Services by ClusterIP, all parsed before any applies."""
        manifest = parse_manifest(yaml_text, source)
        services = [parse_service(o, source) for o in manifest.objects_of("Service")]
        if not services:
            raise LabError(f"{source}: no Service documents to apply")
        with self._changes:
            lab = self._running_lab()
            applied = {svc.ref: lab.services.apply(svc) for svc in services}
            self._sync_services()
            return applied

    def delete_service(self, ref: str) -> str:
        with self._changes:
            if self._running_lab().services.delete(ref) is None:
                raise LabError(f"no Service {ref} in the lab")
            self._sync_services()
            return ref

    def list_services(self) -> list[dict[str, Any]]:
        lab = self._running_lab()
        return [{"namespace": s.namespace, "name": s.name, "cluster_ip":
                 lab.services.cluster_ips.get(s.ref, "None" if s.headless else ""),
                 "ports": [f"{p.port}/{p.protocol}" for p in s.ports],
                 "selector": s.selector, "affinity": s.affinity}
                for s in lab.services.services]

    def _running_lab(self) -> Lab:
        if self.lab is None or self.datapath is None:
            raise LabError("the lab is not running")
        return self.lab

    def _add(self, pod: Pod) -> LabPod:
        lab, dp = self._running_lab(), self.datapath
        assert dp is not None

        def wired(lp: LabPod) -> None:
            dp.upsert_endpoint(_endpoint(lp))
            self.policies.refresh()  # a new identity may be selected by policies
            dp.attach(lp.host_ifindex)

        added = lab.add_pod(pod, on_wired=wired)
        self._sync_services()
        return added

    def _delete(self, ref: str) -> str:
        lab, dp = self._running_lab(), self.datapath
        assert dp is not None
        pod = lab.pod(ref)
        dp.detach(pod.host_ifindex)
        dp.delete_endpoint(_endpoint(pod))
        lab.delete_pod(pod.ref)
        self._sync_services()
        self.policies.refresh()
        return pod.ref

    def _sync_services(self) -> None:
        assert self.datapath is not None and self.lab is not None
        self.datapath.load_services(self.lab.service_entries())

    def _pod_views(self) -> list[PodView]:
        """The running pods as policy sees them (identities, labels, named ports)."""
        if self.lab is None:
            return []
        ports: dict[str, dict[str, tuple[str, int]]] = {}
        for mpod in self.lab.manifest.pods:  # the lab's: it gains and loses pods while up
            ports[mpod.ref] = {p.name: (p.protocol, p.container_port)
                               for c in mpod.containers for p in c.ports if p.name}
        return [PodView(p.namespace, p.name, p.ip, p.identity, p.identity_labels,
                        ports.get(p.ref, {})) for p in self.lab.pods]

    def _load_policy(self, compiled: CompiledPolicy) -> object:
        if self.datapath is None:
            raise DatapathError("the datapath is not running")
        return self.datapath.load_policy(compiled)

    def flow_by_uuid(self, uuid: str) -> Flow | None:
        found = self.ring.last(1, predicate=lambda e: isinstance(e, Flow) and e.uuid == uuid)
        return found[0] if found and isinstance(found[0], Flow) else None

    def stop(self) -> list[str]:
        """Tear down in reverse order; returns the errors met (teardown goes on past them)."""
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self.collector is not None:
            steps.append(("collector", self.collector.stop))
        if self.datapath is not None:
            steps.append(("datapath", self.datapath.close))
        if self.writer is not None:
            steps.append(("store writer", self.writer.close))
        if self.store is not None:
            steps.append(("store", self.store.close))
        if self.lab is not None:
            steps.append(("lab", self.lab.down))
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        self.collector = self.datapath = self.lab = None
        self.writer = None
        self.store = None
        return errors

    def writer_stats(self) -> dict[str, Any]:
        return self.writer.stats() if self.writer is not None else {}

    def live_namespaces(self) -> list[str]:
        return sorted({p.namespace for p in self.lab.pods}) if self.lab is not None else []

    def status(self) -> dict[str, Any]:
        stats: dict[str, Any] = (self.collector.stats()
                                 if self.collector is not None else {})
        stats["uptime_ns"] = time.time_ns() - self.started_ns
        stats["version"] = VERSION
        stats["pods"] = len(self.lab.pods) if self.lab is not None else 0
        stats["monitor_aggregation"] = self.opts.aggregation
        return stats


def run_agent(opts: AgentOptions, console: Console) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    from spyglass.api.app import create_app
    from spyglass.api.auth import AuthConfig, check_listen_security, token_from_env
    from spyglass.api.credentials import write_local_token
    from spyglass.api.guard import HostPolicy
    from spyglass.api.lab_routes import lab_router
    from spyglass.api.policy_routes import policy_router
    from spyglass.api.serve import make_server

    token = token_from_env(opts.token)
    check_listen_security(opts.host, token)
    _check_listen(opts.host, opts.port)
    owner = os.getpid()
    agent = Agent(opts)
    token_file = ""
    # Until uvicorn installs its own handlers, SIGTERM must unwind through `finally` too.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        agent.start(log=lambda s: console.print(f"[dim]spyglass:[/] {s}"))
        token_file, local_token = write_local_token(opts.state_dir)
        app = create_app(agent, ui_dir=UI_DIR, metrics=agent.metrics,
                         auth=AuthConfig(token, opts.metrics_public, local_token),
                         tls=bool(opts.tls_cert),
                         hosts=HostPolicy(opts.host, opts.allowed_hosts),
                         routers=[policy_router(agent.policies, agent.flow_by_uuid),
                                  lab_router(agent)])
        server = make_server(app, opts.host, opts.port, ssl_certfile=opts.tls_cert,
                             ssl_keyfile=opts.tls_key)
        scheme = "https" if opts.tls_cert else "http"
        url = f"{scheme}://{opts.host}:{opts.port}"
        console.print(f"[bold green]spyglass is up[/] in {agent.timings['ready_s']:.1f}s: "
                      f"{len(agent.lab.pods) if agent.lab else 0} pods, API at {url}")
        console.print(f"  dashboard:    [bold]{url}/[/]")
        console.print("  watch flows:  [bold].venv/bin/spyglass observe -f[/]  (another terminal)")
        console.print("  stop:         Ctrl-C here (tears everything down)")
        server.run()  # installs its own SIGINT/SIGTERM handlers and returns on either
        return 0
    except KeyboardInterrupt:
        return 130
    except (LabError, DatapathError, PolicyError, StoreError, ValueError) as exc:
        console.print(f"[red]error[/]: {exc}")
        return 1
    except OSError as exc:  # e.g. the state dir for the local credential
        console.print(f"[red]error[/]: {exc.filename or ''}: {exc.strerror or exc}")
        return 1
    finally:
        if os.getpid() != owner:  # never tear down from a forked helper
            os._exit(1)
        signal.signal(signal.SIGTERM, previous)
        if token_file:
            remove_local_token(token_file)
        console.print("[dim]spyglass:[/] tearing down")
        for err in agent.stop():
            console.print(f"[red]teardown error[/]: {err}")


class ListenError(RuntimeError):
    """The API's address cannot be bound: said before anything is created on the host."""


def _endpoint(pod: LabPod) -> DatapathEndpoint:
    return DatapathEndpoint(ifindex=pod.host_ifindex, ifname=pod.host_ifname, ep_id=pod.ep_id,
                            identity=pod.identity, ipv4=pod.ip)


def _check_listen(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {host}:{port} ({exc.strerror}): is another `spyglass up` "
                f"running? Stop it, or choose another address with --listen") from None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _default_signals_in_child() -> None:
    """Forked helpers (pyroute2 forks to enter namespaces) must die on a signal, not unwind.

    A child of os.fork() inherits our handlers and our Python stack: SIGTERM or Ctrl-C
    there would raise KeyboardInterrupt and run the agent's `finally`, tearing the lab
    down from inside a helper while the agent is still building it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_signals_in_child)


def teardown_leftovers(state_dir: str = STATE_DIR, pin_dir: str = PIN_DIR,
                       link_prefix: str = "lxc") -> list[str]:
    """`spyglass down`: remove what a crashed or still-running `up` made, by the records it kept."""
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        removed += teardown_from_state(state_dir)
    removed += bpf_cleanup(pin_dir, link_prefix)
    token = token_path(state_dir)
    if os.path.exists(token):
        remove_local_token(token)
        removed.append(f"local credential {token}")
    return removed
