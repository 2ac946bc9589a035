"""Kubernetes Services in the lab: the parsed model, backends from selectors, datapath entries.

The manifest keeps Service documents raw (`RawObject`); this module parses
them with the same "file: document N (Service ns/name): field: problem" errors
and turns them, with the pods of the moment, into what the datapath loads
(`ServiceEntry`, one per service port) and what enrichment asks
(`service_by_id` / `service_by_addr`, the collector's ServiceGetter).

As in Kubernetes:
- a pod is a backend of a port when the selector matches its labels and the
  port's targetPort resolves on it (a named targetPort is looked up among the
  pod's container port names with the same protocol; a pod without that name
  is not a backend of that port);
- a Service without a selector has no backends (its traffic is dropped with
  SERVICE_BACKEND_NOT_FOUND, as Cilium does), and a headless one
  (`clusterIP: None`) gets no address and no translation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from spyglass.lab.errors import ManifestError
from spyglass.lab.manifest import Manifest, Pod, RawObject
from spyglass.model import k8s_names
from spyglass.model.flow import Service as FlowService
from spyglass.model.services import (
    DEFAULT_AFFINITY_TIMEOUT_S,
    DEFAULT_SERVICE_CIDR,
    PROTOCOLS,
    ClusterIPAllocator,
    ServiceEntry,
    ServiceIds,
)

__all__ = ["LabServices", "Service", "ServicePort", "parse_service", "resolve_target_port"]


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str  # a number, or a container port name
    protocol: str = "TCP"


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]
    selector: dict[str, str] = field(default_factory=dict)
    cluster_ip: str = ""  # "" = allocate from the service CIDR; ignored when headless
    headless: bool = False
    affinity: bool = False
    affinity_timeout_s: int = DEFAULT_AFFINITY_TIMEOUT_S
    doc: int = 0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: Pod) -> bool:
        return bool(self.selector) and pod.namespace == self.namespace and all(
            pod.labels.get(k) == v for k, v in self.selector.items())


def _fail(source: str, obj: RawObject, path: str, message: str) -> NoReturn:
    raise ManifestError(f"{source}: document {obj.doc} (Service {obj.namespace}/{obj.name}): "
                        f"{path}: {message}")


def parse_service(obj: RawObject, source: str = "<manifest>") -> Service:
    """A Service document into the model; ManifestError names the field at fault."""
    spec = obj.body.get("spec")
    if not isinstance(spec, dict):
        _fail(source, obj, "spec", "expected a mapping with ports")
    stype = spec.get("type", "ClusterIP")
    if stype != "ClusterIP":
        _fail(source, obj, "spec.type", f"{stype!r} is not supported in the lab; use ClusterIP")
    raw_ports = spec.get("ports")
    if not isinstance(raw_ports, list) or not raw_ports:
        _fail(source, obj, "spec.ports", "expected a non-empty list of ports")
    ports: list[ServicePort] = []
    for i, p in enumerate(raw_ports):
        ports.append(_port(source, obj, p, f"spec.ports[{i}]", len(raw_ports)))
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if (p.port, p.protocol) in seen:
            _fail(source, obj, f"spec.ports[{i}]", f"port {p.port}/{p.protocol} is listed twice")
        seen.add((p.port, p.protocol))
    names = [p.name for p in ports]
    if len(set(names)) != len(names):
        _fail(source, obj, "spec.ports", "port names must be unique")
    selector = spec.get("selector") or {}
    if not isinstance(selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
        _fail(source, obj, "spec.selector", "expected a mapping of label strings to strings")
    for k, v in selector.items():
        err = k8s_names.label_key(k) or k8s_names.label_value(v)
        if err:
            _fail(source, obj, f"spec.selector.{k}", err)
    cip = spec.get("clusterIP", "")
    headless = cip == "None"
    if not isinstance(cip, str):
        _fail(source, obj, "spec.clusterIP", "expected an IPv4 address or None (quoted: "
              "headless)")
    affinity = spec.get("sessionAffinity", "None")
    if affinity not in ("None", "ClientIP"):
        _fail(source, obj, "spec.sessionAffinity", f"{affinity!r}: use None or ClientIP")
    timeout = DEFAULT_AFFINITY_TIMEOUT_S
    cfg = spec.get("sessionAffinityConfig")
    if cfg is not None:
        t = cfg.get("clientIP", {}).get("timeoutSeconds") if isinstance(cfg, dict) else None
        if not isinstance(t, int) or isinstance(t, bool) or not 0 < t <= 86400:
            _fail(source, obj, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                  "expected seconds in 1..86400")
        timeout = t
    return Service(obj.namespace, obj.name, tuple(ports), dict(selector),
                   "" if headless else cip, headless, affinity == "ClientIP", timeout, obj.doc)


def _port(source: str, obj: RawObject, p: Any, path: str, count: int) -> ServicePort:
    if not isinstance(p, dict):
        _fail(source, obj, path, "expected a mapping with port")
    port = p.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        _fail(source, obj, f"{path}.port", f"expected a port number 1..65535, got {port!r}")
    proto = p.get("protocol", "TCP")
    if proto not in PROTOCOLS:
        _fail(source, obj, f"{path}.protocol", f"{proto!r}: the lab translates TCP and UDP")
    name = p.get("name", "")
    if not isinstance(name, str) or (count > 1 and not name):
        _fail(source, obj, f"{path}.name", "required (a string) when a Service has several "
              "ports")
    target = p.get("targetPort", port)
    if isinstance(target, bool) or not isinstance(target, int | str):
        _fail(source, obj, f"{path}.targetPort", "expected a port number or a port name")
    if isinstance(target, int) and not 1 <= target <= 65535:
        _fail(source, obj, f"{path}.targetPort", f"{target} is not a port number 1..65535")
    if isinstance(target, str):
        if target.isdigit():
            target = int(target)
        else:
            err = k8s_names.port_name(target)
            if err:
                _fail(source, obj, f"{path}.targetPort", f"{target!r} {err}")
    return ServicePort(name, port, target, proto)


def resolve_target_port(port: ServicePort, pod: Pod) -> int | None:
    """The pod's port for this service port; None if a named one is not on the pod."""
    if isinstance(port.target_port, int):
        return port.target_port
    for c in pod.containers:
        for cp in c.ports:
            if cp.name == port.target_port and cp.protocol == port.protocol:
                return int(cp.container_port)
    return None


class LabServices:
    """The lab's Services: addresses, ids, and entries for the pods that exist now."""

    def __init__(self, manifest: Manifest, service_cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        self.allocator = ClusterIPAllocator(service_cidr)
        self.ids = ServiceIds()
        self._services: dict[str, Service] = {}
        self._by_id: dict[int, FlowService] = {}
        self._by_addr: dict[tuple[str, int], FlowService] = {}
        self.cluster_ips: dict[str, str] = {}  # "ns/name" -> ClusterIP (not for headless)
        for obj in manifest.objects_of("Service"):
            self.apply(parse_service(obj, manifest.source))

    @property
    def services(self) -> list[Service]:
        return list(self._services.values())

    def apply(self, svc: Service) -> str:
        """Add or replace a Service (`spyglass service apply`); returns its ClusterIP."""
        old = self._services.get(svc.ref)
        if old is not None:
            self._forget(old)
        try:
            if svc.headless:
                ip = ""
            elif svc.cluster_ip:
                ip = self.allocator.reserve(svc.cluster_ip, svc.ref)
            else:
                ip = self.allocator.allocate(svc.ref)
        except ValueError as exc:
            if old is not None:
                self.apply(old)
            raise ManifestError(f"Service {svc.ref}: spec.clusterIP: {exc}") from None
        self._services[svc.ref] = svc
        flow_svc = FlowService(svc.name, svc.namespace)
        if ip:
            self.cluster_ips[svc.ref] = ip
            for p in svc.ports:
                self._by_id[self.ids.id_for(svc.namespace, svc.name, p.name)] = flow_svc
                self._by_addr[(ip, p.port)] = flow_svc
        return ip

    def delete(self, ref: str) -> Service | None:
        svc = self._services.pop(ref, None)
        if svc is not None:
            self._forget(svc)
        return svc

    def _forget(self, svc: Service) -> None:
        ip = self.cluster_ips.pop(svc.ref, "")
        for p in svc.ports:
            sid = self.ids.id_for(svc.namespace, svc.name, p.name)
            self._by_id.pop(sid, None)
            self._by_addr.pop((ip, p.port), None)
            self.ids.release(svc.namespace, svc.name, p.name)
        self.allocator.release(svc.ref)

    def entries(self, pods: Iterable[tuple[Pod, str]]) -> list[ServiceEntry]:
        """Datapath entries for the pods that exist now: (manifest pod, its IP) pairs."""
        pods = list(pods)
        out: list[ServiceEntry] = []
        for svc in self._services.values():
            ip = self.cluster_ips.get(svc.ref)
            if not ip:
                continue  # headless: clients use the pods' addresses
            members = [(pod, pip) for pod, pip in pods if svc.selects(pod)]
            for p in svc.ports:
                backends: dict[tuple[str, int], None] = {}
                for pod, pip in members:
                    target = resolve_target_port(p, pod)
                    if target is not None:
                        backends[(pip, target)] = None
                out.append(ServiceEntry(
                    service_id=self.ids.id_for(svc.namespace, svc.name, p.name), vip=ip,
                    port=p.port, proto=PROTOCOLS[p.protocol], backends=tuple(backends),
                    affinity=svc.affinity, name=svc.name, namespace=svc.namespace,
                    affinity_timeout_s=svc.affinity_timeout_s))
        return out

    # -- ServiceGetter ---------------------------------------------------------------------

    def service_by_id(self, service_id: int) -> FlowService | None:
        return self._by_id.get(service_id)

    def service_by_addr(self, ip: str, port: int) -> FlowService | None:
        return self._by_addr.get((ip, port))
