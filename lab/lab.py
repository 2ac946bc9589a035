"""The lab: a manifest's pods as network namespaces on this host, plus the processes in them.

The lab has a lifecycle of its own, like a cluster's pods: `spyglass lab up` makes it and
returns, its workloads keep running in their own sessions, and `lab down` removes it. The
agent is a separate process that attaches to whatever lab exists and follows its changes.
Everything the lab is lives in its state file (`state.py`): the documents it was made
from and every pod as created, so `Lab.load` rebuilds it in any process (the agent, `lab
add` from another shell), and `locked` keeps changes from two shells apart.

Everything is planned in the constructor (IPs, names, identities, endpoint ids) without
touching the system, so enrichment and tests can use a Lab before, or without, bringing
it up. `up()` either completes or tears down what it made before raising. The Lab is also
the enrichment source for the collector: it implements `EndpointGetter`, `IdentityGetter`
and `ServiceGetter`, and `service_entries()` is what the agent loads into the datapath.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from spyglass.lab import ipam, procs
from spyglass.lab import netns as nl
from spyglass.lab.errors import LabError
from spyglass.lab.manifest import (
    Container,
    Manifest,
    Pod,
    parse_documents,
    parse_manifest,
    service_ref,
)
from spyglass.lab.model import LabPod, ProcessRecord
from spyglass.lab.naming import host_ifname, netns_name, resolve_ref, workload_name
from spyglass.lab.placeholders import render
from spyglass.lab.services import LabServices, parse_service
from spyglass.lab.state import (
    DEFAULT_STATE_DIR,
    STATE_VERSION,
    exec_in_pod,
    load_state,
    pods_from_state,
    save_state,
    state_path,
    teardown,
    teardown_pod,
)
from spyglass.model import defaults
from spyglass.model.flow import Service as FlowService
from spyglass.model.getters import EndpointInfo
from spyglass.model.identity import IdentityAllocator, pod_labels
from spyglass.model.services import DEFAULT_SERVICE_CIDR, ServiceEntry

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$")
#: How long a just-started container must survive before `up()` calls the pod started.
SETTLE_SECONDS = 0.5


def namespace_identity_labels(manifest: Manifest, namespace: str) -> dict[str, str]:
    """Namespace labels as Cilium adds them to pod identities (for namespaceSelector)."""
    ns = manifest.namespace(namespace)
    labels = ns.labels if ns else {}
    return {f"io.cilium.k8s.namespace.labels.{k}": v for k, v in labels.items()}


class Lab:
    """Pods from a manifest, as netns + veth pairs + processes, with a state file."""

    def __init__(self, manifest: Manifest, *, pod_cidr: str = defaults.POD_CIDR,
                 prefix: str = defaults.LAB_PREFIX, state_dir: str = DEFAULT_STATE_DIR,
                 link_prefix: str = defaults.LINK_PREFIX,
                 identities: IdentityAllocator | None = None,
                 python: str = sys.executable, grace: float = 3.0,
                 service_cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        if not _PREFIX.match(prefix):
            raise LabError(f"bad lab prefix {prefix!r}: use 1-16 letters, digits, '-', '_' "
                           f"or '.', e.g. 'sg'")
        self.manifest = manifest
        self.pod_cidr = pod_cidr
        self.prefix = prefix
        self.link_prefix = link_prefix
        self.state_dir = state_dir
        self.log_dir = os.path.join(state_dir, "lab")
        self.identities = identities if identities is not None else IdentityAllocator()
        self.python = python
        self.grace = grace
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        try:
            self.services = LabServices(manifest, service_cidr)
        except ValueError as exc:
            raise LabError(str(exc)) from None
        self.service_cidr = service_cidr
        self._docs: list[dict[str, Any]] = [
            _with_cluster_ip(d, self.services.cluster_ips) for d in manifest.documents]
        self._state: dict[str, Any] | None = None
        ips = ipam.allocate(pod_cidr, len(manifest.pods))
        self._pods: list[LabPod] = []
        for ep_id, (pod, ip) in enumerate(zip(manifest.pods, ips, strict=True), start=1):
            self._pods.append(self._plan_pod(pod, ip, ep_id))
        self._index()

    def _plan_pod(self, pod: Pod, ip: str, ep_id: int) -> LabPod:
        """A pod's names, address and identity, before anything exists on the host."""
        ident_labels = pod_labels(pod.namespace, {
            **pod.labels, **namespace_identity_labels(self.manifest, pod.namespace)})
        return LabPod(
            namespace=pod.namespace, name=pod.name, ip=ip, labels=dict(pod.labels),
            identity=self.identities.allocate(ident_labels), identity_labels=ident_labels,
            ep_id=ep_id, netns=netns_name(self.prefix, pod.namespace, pod.name),
            host_ifname=host_ifname(self.link_prefix, self.prefix, pod.namespace, pod.name),
            workload=workload_name(pod.name, pod.labels))

    @classmethod
    def load(cls, state_dir: str = DEFAULT_STATE_DIR, **kwargs: Any) -> Lab:
        """The lab that is up, rebuilt from its state file (LabError when none is up).

        The pods are the recorded ones (with their addresses, identities, links and
        processes), not a fresh plan: only the lab that made them decided those.
        """
        state = load_state(state_dir)
        if state is None:
            raise LabError(f"no lab is up ({state_path(state_dir)} does not exist): start one "
                           "with `spyglass lab up --demo` or `spyglass lab up --manifest FILE`")
        try:
            manifest = parse_documents(state["documents"], str(state.get("source", "lab")))
            lab = cls(manifest, pod_cidr=state["pod_cidr"], prefix=state["prefix"],
                      state_dir=state_dir, link_prefix=state["link_prefix"],
                      service_cidr=state["service_cidr"], identities=IdentityAllocator(),
                      **kwargs)
        except KeyError as exc:
            raise LabError(f"{state_path(state_dir)} lacks {exc}: it was written by another "
                           "version; bring that lab down with `spyglass down`") from None
        lab._pods = pods_from_state(state)
        for pod in lab._pods:
            lab.identities.restore(pod.identity_labels, pod.identity)
        lab._state = state
        lab._index()
        return lab

    # -- the pods -------------------------------------------------------------------------

    @property
    def pods(self) -> list[LabPod]:
        return list(self._pods)

    def pod(self, ref: str) -> LabPod:
        """By "ns/pod", or bare "pod" (in `default`, else the only pod of that name)."""
        ns, name = resolve_ref(ref, [(p.namespace, p.name) for p in self._pods])
        return self._by_ref[f"{ns}/{name}"]

    def exec(self, ref: str, argv: list[str], timeout: float | None = None,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside a pod's netns and capture its output (text)."""
        return exec_in_pod(self.pod(ref), argv, timeout=timeout, input=input)

    @property
    def is_up(self) -> bool:
        return self._state is not None

    def render_argv(self, pod: Pod, container: Container) -> list[str]:
        """The container's argv with `{{…}}` placeholders filled in (see placeholders.py)."""
        values = {"python": self.python, "pod": pod.name, "namespace": pod.namespace}

        def ip_of(ref: str) -> str:
            ns, name = resolve_ref(ref, [(p.namespace, p.name) for p in self._pods],
                                   default_namespace=pod.namespace)
            return self._by_ref[f"{ns}/{name}"].ip

        def svc_of(ref: str) -> str:
            ns, name = service_ref(ref, pod.namespace)
            ip = self.services.cluster_ips.get(f"{ns}/{name}")
            if not ip:
                raise LabError(f"{{{{svc:{ref}}}}}: Service {ns}/{name} has no ClusterIP")
            return ip

        return [render(a, values, ip_of, svc_of) for a in container.argv]

    # -- services (the agent loads service_entries() into the datapath) -------------------

    def service_entries(self) -> list[ServiceEntry]:
        """What the datapath's service maps must hold for the pods of the moment."""
        by_ref = {p.ref: p for p in self.manifest.pods}
        return self.services.entries((by_ref[p.ref], p.ip) for p in self._pods
                                     if p.ref in by_ref)

    def service_by_id(self, service_id: int) -> FlowService | None:
        return self.services.service_by_id(service_id)

    def service_by_addr(self, ip: str, port: int) -> FlowService | None:
        return self.services.service_by_addr(ip, port)

    # -- EndpointGetter / IdentityGetter --------------------------------------------------

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return self._by_ip.get(ip)

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        return self._by_id.get(ep_id)

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        return self.identities.labels_of(identity)

    # -- lifecycle ------------------------------------------------------------------------

    def up(self, on_wired: Callable[[list[LabPod]], None] | None = None, *,
           start_workloads: bool = True) -> None:
        """Create netns, veths, addresses, routes; then start the containers.

        Networking for every pod comes first so a client never starts before
        its server has an address. `on_wired` runs between the two; with
        `start_workloads=False` the containers wait for `start_workloads()`, so
        that `spyglass up` can attach its agent first and see the very first
        packets. On any failure everything made so far is torn down before the
        error propagates.
        """
        if self._state is not None:
            raise LabError("this lab is already up")
        existing = load_state(self.state_dir)
        if existing is not None:
            raise LabError(f"a lab is already up (state in {state_path(self.state_dir)}, "
                           f"started by pid {existing.get('owner_pid')}): run `spyglass down` "
                           f"first")
        self._preflight()
        self._state = {"version": STATE_VERSION, "prefix": self.prefix,
                       "pod_cidr": self.pod_cidr, "service_cidr": self.service_cidr,
                       "link_prefix": self.link_prefix, "source": self.manifest.source,
                       "owner_pid": os.getpid(), "started": time.time(),
                       "state_dir": self.state_dir, "documents": [], "pods": []}
        try:
            os.makedirs(self.log_dir, exist_ok=True)
            self._save()
            for i in range(len(self._pods)):
                self._wire(i)
            if on_wired is not None:
                on_wired(self.pods)
            if start_workloads:
                self.start_workloads()
        except BaseException as e:
            try:
                self.down()
            except LabError as te:
                e.add_note(f"and cleaning up after it failed too: {te}")
            raise

    def start_workloads(self) -> None:
        """Start the containers of every pod that runs none yet, then check they live."""
        if self._state is None:
            raise LabError("the lab is not up")
        by_ref = {p.ref: p for p in self.manifest.pods}
        for i, lp in enumerate(self._pods):
            pod = by_ref.get(lp.ref)
            if pod is not None and not lp.processes:
                self._start(i, pod)
        self._settle()

    def down(self) -> list[str]:
        """Full teardown of what this lab made; idempotent. Returns what was done."""
        if self._state is None:
            return []
        done = teardown(self._state, self.state_dir, grace=self.grace, popens=self._popens)
        self._state = None
        self._popens.clear()
        self._pods = [dataclasses.replace(p, netns_cookie=0, host_ifindex=0, host_mac="",
                                          pod_mac="", processes=(), owned=())
                      for p in self._pods]
        self._index()
        return done

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- changes while up (`spyglass lab add|delete|scale`, `service apply|delete`) ----------
    # The agent follows them through the state file; nothing here talks to it.

    def add_pods(self, yaml_text: str, source: str = "<request>") -> list[str]:
        """Every Pod document of the YAML, wired and started; the refs added."""
        manifest = parse_manifest(yaml_text, source)
        if not manifest.pods:
            raise LabError(f"{source}: no Pod documents to add")
        return [self.add_pod(pod, _document_of(manifest.documents, "Pod", pod.namespace,
                                               pod.name)).ref
                for pod in manifest.pods]

    def scale(self, workload: str, replicas: int) -> dict[str, list[str]]:
        """NAMESPACE/WORKLOAD to `replicas` pods: copies of its first pod, or fewer."""
        add, drop = self.scale_plan(workload, replicas)
        added = []
        for pod in add:
            template = next(p for p in self.manifest.pods if p.namespace == pod.namespace
                            and workload_name(p.name, p.labels) == workload_name(
                                pod.name, pod.labels))
            doc = _document_of(self._docs, "Pod", template.namespace, template.name)
            copy = {**doc, "metadata": {**doc.get("metadata", {}), "name": pod.name}}
            added.append(self.add_pod(pod, copy).ref)
        return {"added": added, "deleted": [self.delete_pod(ref).ref for ref in drop]}

    def apply_services(self, yaml_text: str, source: str = "<request>") -> dict[str, str]:
        """Services by ClusterIP, all parsed before any applies; ref -> ClusterIP."""
        manifest = parse_manifest(yaml_text, source)
        objects = manifest.objects_of("Service")
        services = [parse_service(o, source) for o in objects]
        if not services:
            raise LabError(f"{source}: no Service documents to apply")
        applied = {}
        for svc, obj in zip(services, objects, strict=True):
            applied[svc.ref] = self.services.apply(svc)
            self._docs = [d for d in self._docs if not _is(d, "Service", svc.namespace,
                                                           svc.name)]
            self._docs.append(_with_cluster_ip(dict(obj.body), self.services.cluster_ips))
        self._refresh_manifest()
        return applied

    def delete_service(self, ref: str) -> str:
        if self.services.delete(ref) is None:
            raise LabError(f"no Service {ref} in the lab")
        ns, _, name = ref.rpartition("/")
        self._docs = [d for d in self._docs if not _is(d, "Service", ns or "default", name)]
        self._refresh_manifest()
        return ref

    def documents(self) -> list[dict[str, Any]]:
        """The lab's manifest as its state file keeps it (Services with their ClusterIPs)."""
        return [dict(d) for d in self._docs]

    def list_services(self) -> list[dict[str, Any]]:
        return [{"namespace": s.namespace, "name": s.name, "cluster_ip":
                 self.services.cluster_ips.get(s.ref, "None" if s.headless else ""),
                 "ports": [f"{p.port}/{p.protocol}" for p in s.ports],
                 "selector": s.selector, "affinity": s.affinity}
                for s in self.services.services]

    def add_pod(self, pod: Pod, document: dict[str, Any] | None = None,
                on_wired: Callable[[LabPod], None] | None = None) -> LabPod:
        """Wire and start one more pod; `on_wired` runs before its containers start.

        `document` is the pod's manifest document, kept in the state file.
        """
        if self._state is None:
            raise LabError("the lab is not up: start it with `spyglass lab up`")
        if pod.ref in self._by_ref:
            raise LabError(f"pod {pod.ref} already exists: pick another name")
        used = {p.ip for p in self._pods}
        ip = next((a for a in ipam.allocate(self.pod_cidr, len(self._pods) + 1)
                   if a not in used), None)
        if ip is None:  # pragma: no cover - allocate() raises first when the CIDR is full
            raise LabError(f"pod CIDR {self.pod_cidr} is full")
        self._pods.append(self._plan_pod(pod, ip, max((p.ep_id for p in self._pods),
                                                      default=0) + 1))
        self.manifest = dataclasses.replace(self.manifest, pods=(*self.manifest.pods, pod))
        if document is not None:
            self._docs.append(dict(document))
        self._index()
        i = len(self._pods) - 1
        try:
            self._wire(i)
            if on_wired is not None:
                on_wired(self._pods[i])
            self._start(i, pod)
        except BaseException:
            self.delete_pod(pod.ref)
            raise
        return self._pods[i]

    def delete_pod(self, ref: str) -> LabPod:
        """Stop and remove one pod; the rest of the lab is untouched."""
        if self._state is None:
            raise LabError("the lab is not up: start it with `spyglass up`")
        gone = self.pod(ref)
        teardown_pod(gone, grace=self.grace, popens=self._popens)
        self._pods = [p for p in self._pods if p.ref != gone.ref]
        self.manifest = dataclasses.replace(
            self.manifest, pods=tuple(p for p in self.manifest.pods if p.ref != gone.ref))
        self._docs = [d for d in self._docs if not _is(d, "Pod", gone.namespace, gone.name)]
        self._index()
        self._save()
        return gone

    def scale_plan(self, workload: str, replicas: int) -> tuple[list[Pod], list[str]]:
        """Pods to add and refs to delete so that NAMESPACE/WORKLOAD has `replicas` pods.

        New pods copy the first pod of the workload and are named `<workload>-<n>` with
        the lowest free ordinals; scaling down removes the highest ordinals first.
        """
        ns, _, name = workload.rpartition("/")
        ns = ns or "default"
        if replicas < 0:
            raise LabError(f"replicas must be 0 or more, not {replicas}")
        mine = [p for p in self.manifest.pods
                if p.namespace == ns and workload_name(p.name, p.labels) == name]
        if not mine:
            known = sorted({f"{p.namespace}/{workload_name(p.name, p.labels)}"
                            for p in self.manifest.pods})
            raise LabError(f"no workload {ns}/{name} in the lab (workloads: {', '.join(known)})")
        if replicas >= len(mine):
            taken = {p.name for p in self.manifest.pods if p.namespace == ns}
            names = (f"{name}-{n}" for n in range(10_000) if f"{name}-{n}" not in taken)
            add = [dataclasses.replace(mine[0], name=next(names))
                   for _ in range(replicas - len(mine))]
            return add, []

        def ordinal(p: Pod) -> tuple[int, str]:
            tail = p.name.rsplit("-", 1)[-1]
            return (int(tail) if tail.isdigit() else -1, p.name)

        drop = sorted(mine, key=ordinal, reverse=True)[:len(mine) - replicas]
        return [], [p.ref for p in drop]

    # -- internals ------------------------------------------------------------------------

    def _index(self) -> None:
        self._by_ref = {p.ref: p for p in self._pods}
        infos = [p.endpoint_info() for p in self._pods]
        self._by_ip = {i.ips[0]: i for i in infos}
        self._by_id = {i.id: i for i in infos}

    def _save(self) -> None:
        assert self._state is not None
        self._state["pods"] = [p.to_dict() for p in self._pods if p.owned]
        self._state["documents"] = self._docs
        save_state(self.state_dir, self._state)

    def _refresh_manifest(self) -> None:
        """The manifest again from the documents (after a Service changed), then saved."""
        pods = self.manifest.pods
        self.manifest = dataclasses.replace(parse_documents(self._docs, self.manifest.source),
                                            pods=pods)
        if self._state is not None:
            self._save()

    def _update(self, i: int, **changes: Any) -> None:
        self._pods[i] = dataclasses.replace(self._pods[i], **changes)
        self._index()
        self._save()

    def _owned(self, i: int, what: str) -> tuple[str, ...]:
        return (*self._pods[i].owned, what)

    def _preflight(self) -> None:
        problems = [f"netns {p.netns} exists" for p in self._pods if nl.netns_exists(p.netns)]
        problems += [f"link {p.host_ifname} exists" for p in self._pods
                     if nl.link_index(p.host_ifname)]
        if problems:
            raise LabError("cannot bring the lab up: " + ", ".join(problems)
                           + ": another lab is up or a previous one was not torn down; "
                           "run `spyglass down`")
        clashes = nl.overlapping_routes(self.pod_cidr)
        if clashes:
            raise LabError(f"pod CIDR {self.pod_cidr} overlaps host routes "
                           f"({', '.join(clashes)}): pass a different --pod-cidr")

    def _wire(self, i: int) -> None:
        p = self._pods[i]
        nl.create_netns(p.netns)
        self._update(i, netns_cookie=nl.netns_cookie(p.netns), owned=self._owned(i, "netns"))
        index = nl.create_link(p.netns, p.host_ifname)
        self._update(i, host_ifindex=index, owned=self._owned(i, "link"))
        link = nl.configure_link(p.netns, p.host_ifname, index, p.ip)
        self._update(i, host_mac=link.host_mac, pod_mac=link.pod_mac)
        nl.add_host_route(index, p.ip)
        self._update(i, owned=self._owned(i, "route"))
        nl.add_host_neigh(index, p.ip, link.pod_mac)
        self._update(i, owned=self._owned(i, "neigh"))

    def _start(self, i: int, pod: Pod) -> None:
        runnable = [c for c in pod.containers if c.argv]
        for c in runnable:
            name = f"{pod.namespace}_{pod.name}" + (f"_{c.name}" if len(runnable) > 1 else "")
            log = os.path.join(self.log_dir, f"{name}.log")
            with open(log, "w"):
                pass  # a fresh log per run
            popen, rec = procs.start(self._pods[i].netns, c.name, self.render_argv(pod, c),
                                     dict(c.env), log)
            self._popens[rec.pid] = popen
            self._update(i, processes=(*self._pods[i].processes, rec))

    def _settle(self) -> None:
        """Fail fast if a container dies right away (a typo in its command, a port in use)."""
        if not self._popens:
            return
        time.sleep(SETTLE_SECONDS)
        failed = []
        for p in self._pods:
            for rec in p.processes:
                code = self._popens[rec.pid].poll()
                if code not in (None, 0):
                    failed.append(f"{p.ref} container {rec.container} exited with code {code}"
                                  f"{_tail(rec)} (log: {rec.log})")
        if failed:
            raise LabError("a pod failed to start: " + "; ".join(failed))


def _with_cluster_ip(doc: dict[str, Any], cluster_ips: dict[str, str]) -> dict[str, Any]:
    """A Service's document with the ClusterIP it was given written in, so that every later
    load of the lab (an agent, `lab add`) reserves that address instead of choosing again."""
    meta = doc.get("metadata") or {}
    ref = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    ip = cluster_ips.get(ref) if doc.get("kind") == "Service" else None
    if not ip:
        return dict(doc)
    return {**doc, "spec": {**(doc.get("spec") or {}), "clusterIP": ip}}


def _is(doc: dict[str, Any], kind: str, namespace: str, name: str) -> bool:
    meta = doc.get("metadata") or {}
    return (doc.get("kind") == kind and meta.get("name") == name
            and (meta.get("namespace") or "default") == namespace)


def _document_of(docs: Sequence[dict[str, Any]], kind: str, namespace: str,
                 name: str) -> dict[str, Any]:
    found = next((d for d in docs if _is(d, kind, namespace, name)), None)
    if found is None:  # pragma: no cover - every parsed object comes from a document
        raise LabError(f"no {kind} document for {namespace}/{name}")
    return found


def _tail(rec: ProcessRecord, lines: int = 3) -> str:
    try:
        with open(rec.log, encoding="utf-8", errors="replace") as f:
            text = f.read().strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""
