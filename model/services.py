"""Services as the datapath sees them: `ServiceEntry`, stable service ids, ClusterIP allocation.

A Kubernetes Service with several ports is several entries here, one per
(VIP, port, protocol): that is the unit the datapath looks up, and the unit a
flow names (`destination_service`). Ids are derived from (namespace, name,
port name) by hashing, like identities, so the same service gets the same id
in every run and events read back later still resolve; collisions are probed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass

from spyglass.model import defaults

__all__ = [
    "DEFAULT_AFFINITY_TIMEOUT_S",
    "DEFAULT_SERVICE_CIDR",
    "PROTOCOLS",
    "ClusterIPAllocator",
    "ServiceEntry",
    "ServiceIds",
    "check_ipv4",
]

DEFAULT_SERVICE_CIDR = defaults.SERVICE_CIDR
#: Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 h).
DEFAULT_AFFINITY_TIMEOUT_S = 10800
#: Protocol name -> IP protocol number, for the protocols the datapath translates.
PROTOCOLS: dict[str, int] = {"TCP": 6, "UDP": 17}
_MAX_BACKENDS = 0xFFFF  # sg_lb_svc_value.count is a u16


def check_ipv4(text: object, what: str) -> str:
    """Validate dotted-quad IPv4 text (inet_pton: strict and ~10x cheaper than ipaddress)."""
    if not isinstance(text, str):
        raise ValueError(f"{what}: {text!r} is not an IPv4 address; write it like '10.96.0.10'")
    try:
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise ValueError(f"{what}: {text!r} is not an IPv4 address; write it like "
                         "'10.96.0.10' (IPv6 services are not translated)") from None
    return text


def _check_port(port: object, what: str) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port!r} must be an integer in 1..65535")


@dataclass(frozen=True)
class ServiceEntry:
    """One service port: what sg_services / sg_backends hold for (vip, port, proto).

    An empty `backends` is a service without ready endpoints: its packets are
    dropped with SERVICE_BACKEND_NOT_FOUND (158) rather than sent to the VIP.
    """

    service_id: int
    vip: str
    port: int
    proto: int
    backends: tuple[tuple[str, int], ...]
    affinity: bool = False
    name: str = ""
    namespace: str = ""
    affinity_timeout_s: int = DEFAULT_AFFINITY_TIMEOUT_S

    def __post_init__(self) -> None:
        what = f"service {self.label}"
        sid = self.service_id
        if not isinstance(sid, int) or isinstance(sid, bool) or not 0 < sid < 1 << 32:
            raise ValueError(f"{what}: service_id {sid!r} must be a u32 other than 0 (0 means "
                             "'no service' in events); use ServiceIds to allocate one")
        check_ipv4(self.vip, what)
        _check_port(self.port, what)
        if self.proto not in PROTOCOLS.values():
            raise ValueError(f"{what}: protocol {self.proto!r} is not translated; use TCP (6) "
                             "or UDP (17)")
        backends = tuple(self.backends)
        if len(backends) > _MAX_BACKENDS:
            raise ValueError(f"{what}: {len(backends)} backends, at most {_MAX_BACKENDS}")
        seen: set[tuple[str, int]] = set()
        for b in backends:
            if not isinstance(b, tuple) or len(b) != 2:
                raise ValueError(f"{what}: backend {b!r} must be a (pod IP, target port) pair")
            check_ipv4(b[0], f"{what} backend")
            _check_port(b[1], f"{what} backend {b[0]}")
            if b in seen:
                raise ValueError(f"{what}: backend {b[0]}:{b[1]} is listed twice")
            seen.add(b)
        object.__setattr__(self, "backends", backends)
        t = self.affinity_timeout_s
        if not isinstance(t, int) or isinstance(t, bool) or not 0 < t <= 86400:
            raise ValueError(f"{what}: affinity timeout {t!r} s must be in 1..86400 "
                             "(Kubernetes' limit; the default is 10800)")

    @property
    def label(self) -> str:
        """How messages name it: ns/name, else the address."""
        if self.name:
            return f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.vip}:{self.port}"

    @property
    def proto_name(self) -> str:
        return next(k for k, v in PROTOCOLS.items() if v == self.proto)


class ServiceIds:
    """Stable ids for (namespace, name, port name), probing on collision.

    Hashing rather than counting keeps an id the same across restarts as long
    as no colliding service was added first, which is what makes a flow read
    back from history still name its service.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], int] = {}
        self._taken: dict[int, tuple[str, str, str]] = {}

    def id_for(self, namespace: str, name: str, port_name: str = "") -> int:
        key = (namespace, name, port_name)
        if key in self._by_key:
            return self._by_key[key]
        text = "/".join(key).encode()
        sid = int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "big") or 1
        while sid in self._taken:
            sid = sid % 0xFFFFFFFF + 1  # 1..2^32-1, never 0
        self._by_key[key] = sid
        self._taken[sid] = key
        return sid

    def release(self, namespace: str, name: str, port_name: str = "") -> None:
        sid = self._by_key.pop((namespace, name, port_name), None)
        if sid is not None:
            del self._taken[sid]

    def key_of(self, service_id: int) -> tuple[str, str, str] | None:
        return self._taken.get(service_id)


class ClusterIPAllocator:
    """ClusterIPs from a service CIDR: given ones reserved, others derived from the name.

    The address is a hash of "namespace/name" into the range, probing past
    taken ones, so a demo's services keep their addresses from run to run.
    The network address, the first host (Kubernetes gives it to the
    `kubernetes` service) and the broadcast address are never handed out.
    """

    def __init__(self, cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        try:
            net = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"bad service CIDR {cidr!r}: {exc}; write it like "
                             f"'{DEFAULT_SERVICE_CIDR}'") from None
        if net.num_addresses < 8:
            raise ValueError(f"service CIDR {cidr} is too small: use a /29 or larger")
        self.network = net
        self._first = int(net.network_address) + 2
        self._size = net.num_addresses - 3
        self._owner: dict[str, str] = {}  # ip -> "ns/name"
        self._by_owner: dict[str, str] = {}

    def reserve(self, ip: str, owner: str) -> str:
        """Take a given clusterIP; it must be in the CIDR and not another service's."""
        check_ipv4(ip, f"clusterIP of {owner}")
        if ipaddress.IPv4Address(ip) not in self.network:
            raise ValueError(f"clusterIP {ip} of {owner} is outside the service CIDR "
                             f"{self.network}: pick an address in it or omit clusterIP")
        holder = self._owner.get(ip)
        if holder is not None and holder != owner:
            raise ValueError(f"clusterIP {ip} of {owner} is already allocated to {holder}: "
                             "pick another address or omit clusterIP")
        self._take(ip, owner)
        return ip

    def allocate(self, owner: str) -> str:
        """The owner's address: the one it already has, else a fresh one."""
        if owner in self._by_owner:
            return self._by_owner[owner]
        if len(self._owner) >= self._size:
            raise ValueError(f"service CIDR {self.network} is full ({self._size} addresses): "
                             "use a larger one")
        h = int.from_bytes(hashlib.blake2b(owner.encode(), digest_size=8).digest(), "big")
        offset = h % self._size
        while True:
            ip = str(ipaddress.IPv4Address(self._first + offset))
            if ip not in self._owner:
                self._take(ip, owner)
                return ip
            offset = (offset + 1) % self._size

    def release(self, owner: str) -> None:
        ip = self._by_owner.pop(owner, None)
        if ip is not None:
            del self._owner[ip]

    def _take(self, ip: str, owner: str) -> None:
        old = self._by_owner.get(owner)
        if old is not None and old != ip:
            del self._owner[old]
        self._owner[ip] = owner
        self._by_owner[owner] = ip
