"""A pod as the running lab knows it, and its JSON form in the state file.

The same record serves the `spyglass up` process (enrichment getters) and
other shells (`spyglass lab ls`, `lab exec`, `down`) that only have the
state file, so everything those need (netns, IP, labels, identity, links,
PIDs) is in it and round-trips through `to_dict`/`from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spyglass.model.flow import Workload
from spyglass.model.getters import EndpointInfo


@dataclass(frozen=True)
class ProcessRecord:
    """A container process we started: its PID and start time (so a reused PID is not killed)."""

    container: str
    pid: int
    starttime: int  # /proc/<pid>/stat field 22, in clock ticks since boot
    argv: tuple[str, ...] = ()
    log: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"container": self.container, "pid": self.pid, "starttime": self.starttime,
                "argv": list(self.argv), "log": self.log}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessRecord:
        return cls(str(d["container"]), int(d["pid"]), int(d["starttime"]),
                   tuple(str(a) for a in d.get("argv", ())), str(d.get("log", "")))


@dataclass(frozen=True)
class LabPod:
    namespace: str
    name: str
    ip: str
    labels: dict[str, str]
    identity: int
    identity_labels: tuple[str, ...]  # "k8s:app=cart", …, "k8s:io.kubernetes.pod.namespace=shop"
    ep_id: int
    netns: str
    host_ifname: str
    workload: str
    netns_cookie: int = 0  # 0 until the netns exists
    host_ifindex: int = 0  # 0 until the link exists
    host_mac: str = ""
    pod_mac: str = ""
    processes: tuple[ProcessRecord, ...] = ()
    #: which of our resources exist, in creation order: "netns", "link", "route", "neigh"
    owned: tuple[str, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def pid(self) -> int:
        """The first container's PID, 0 when the pod runs nothing."""
        return self.processes[0].pid if self.processes else 0

    def endpoint_info(self) -> EndpointInfo:
        return EndpointInfo(
            id=self.ep_id,
            identity=self.identity,
            namespace=self.namespace,
            pod_name=self.name,
            labels=self.identity_labels,
            ips=(self.ip,),
            ifname=self.host_ifname,
            workloads=(Workload(self.workload, "Deployment"),),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "name": self.name, "ip": self.ip,
            "labels": dict(self.labels), "identity": self.identity,
            "identity_labels": list(self.identity_labels), "ep_id": self.ep_id,
            "netns": self.netns, "host_ifname": self.host_ifname, "workload": self.workload,
            "netns_cookie": self.netns_cookie, "host_ifindex": self.host_ifindex,
            "host_mac": self.host_mac,
            "pod_mac": self.pod_mac, "processes": [p.to_dict() for p in self.processes],
            "owned": list(self.owned),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabPod:
        return cls(
            namespace=str(d["namespace"]), name=str(d["name"]), ip=str(d["ip"]),
            labels={str(k): str(v) for k, v in d.get("labels", {}).items()},
            identity=int(d.get("identity", 0)),
            identity_labels=tuple(str(x) for x in d.get("identity_labels", ())),
            ep_id=int(d.get("ep_id", 0)), netns=str(d["netns"]),
            host_ifname=str(d["host_ifname"]), workload=str(d.get("workload", "")),
            netns_cookie=int(d.get("netns_cookie", 0)),
            host_ifindex=int(d.get("host_ifindex", 0)), host_mac=str(d.get("host_mac", "")),
            pod_mac=str(d.get("pod_mac", "")),
            processes=tuple(ProcessRecord.from_dict(p) for p in d.get("processes", ())),
            owned=tuple(str(x) for x in d.get("owned", ())),
        )
