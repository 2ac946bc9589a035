"""What enrichment needs to know about the world, behind small protocols.

The lab implements these today and a Kubernetes watcher can later; tests use
small fakes. The collector never reaches into the lab directly, which keeps
the data flow one-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spyglass.model.flow import PolicyRef, Service, Workload


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """A local endpoint (pod) as enrichment sees it."""

    id: int
    identity: int
    namespace: str
    pod_name: str
    labels: tuple[str, ...]  # "k8s:app=frontend", … including the namespace label
    ips: tuple[str, ...]
    ifname: str = ""
    workloads: tuple[Workload, ...] = ()


class EndpointGetter(Protocol):
    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None: ...
    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None: ...


class IdentityGetter(Protocol):
    def labels_of(self, identity: int) -> tuple[str, ...] | None: ...


class ServiceGetter(Protocol):
    def service_by_addr(self, ip: str, port: int) -> Service | None: ...
    def service_by_id(self, service_id: int) -> Service | None: ...


class PolicyGetter(Protocol):
    """A cookie names a rule, or (for default deny) every policy that selects the endpoint."""

    def policies_by_cookie(self, cookie: int) -> tuple[PolicyRef, ...]: ...


class InterfaceGetter(Protocol):
    def ifname(self, ifindex: int) -> str: ...


class NoopGetter:
    """Knows nothing: every lookup misses. The default for each protocol."""

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return None

    def endpoint_by_id(self, ep_id: int) -> EndpointInfo | None:
        return None

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        return None

    def service_by_addr(self, ip: str, port: int) -> Service | None:
        return None

    def service_by_id(self, service_id: int) -> Service | None:
        return None

    def policies_by_cookie(self, cookie: int) -> tuple[PolicyRef, ...]:
        return ()

    def ifname(self, ifindex: int) -> str:
        return ""
