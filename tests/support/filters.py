"""Filters and flows drawn to test every form of a filter against its predicate.

The SQL test (`test_filters_sql`) and the mask test (`test_filters_mask`) draw the same
filter sets from the same values: each field's edge cases (prefixes and whole
namespaces, selectors with every operator, CIDRs across families, globs, interfaces
by name, index or both, ids that exist and ids that don't).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from spyglass.collector.filters import FIELDS, FilterSet, FlowFilter
from spyglass.collector.filters.interface import NetworkInterface
from spyglass.model.enums import DropReason, EventType, TrafficDirection, Verdict
from spyglass.model.flow import Endpoint, Flow, Service, Workload
from support.store import T0

VALUES: dict[str, list[Any]] = {
    "pod": ["shop/", "shop/web", "web", "kube-system/db", "x", "default/web-1"],
    "service": ["shop/", "shop/db", "web", "db-svc", "kube-system/"],
    "workload": ["web", "Deployment/web", "statefulset/", "StatefulSet/db", "deployment/cart"],
    "label": ["app=web", "k8s:app=web", "app in (web,db)", "!canary", "canary", "app!=web",
              "tier notin (front)", "any:app=web", "app=", "reserved:world", "y:app=web",
              "io.kubernetes.pod.namespace=shop,app"],
    "identity": [0, 1, 2, 300, "world", "host", 4294967295],
    "ip": ["10.0.0.1", "10.0.0.0/24", "10.0.0.0/8", "fd00::/64", "fd00::1", "::/0",
           "0.0.0.0/0", "::ffff:10.0.0.1", "::ffff:0:0/96", "255.255.255.255"],
    "port": [53, 80, 0, 65535],
    "protocol": ["tcp", "udp", "icmp", "icmpv4", "icmpv6", "sctp"],
    "tcp_flags": ["SYN", "SYN,ACK", "FIN", "RST,PSH", "CWR"],
    "verdict": ["FORWARDED", "DROPPED", "AUDIT", "VERDICT_UNKNOWN", "TRANSLATED"],
    "drop_reason_desc": ["POLICY_DENIED", "DROP_REASON_UNKNOWN", "TTL_EXCEEDED", "POLICY_DENY"],
    "event_type": ["drop", "trace", "policy-verdict", "trace:to-endpoint", "drop:133",
                   "trace:5", "trace:0"],
    "traffic_direction": ["ingress", "egress", "unknown"],
    "reply": [True, False],
    "node_name": ["node-a", "node-*", "*.lab", "c1/*", "default/node-a", "w?", "[nw]*",
                  "[!n]*", "*/*", "node-[a-b]", "[z-a]*", "c1/node-a"],
    "ip_version": ["IPv4", "IPv6", "IP_NOT_USED", "v6", "4", 1],
    # spread()'s flows are seen on (3, lxc0001), (3, eth0), (5, lxc0001), (2^32-1, lxc0002),
    # on no interface, and with a name but no index (no interface either).
    "interface": ["lxc0001", "eth0", "nope", NetworkInterface(3), NetworkInterface(5, "lxc0001"),
                  NetworkInterface(3, "lxc0002"), NetworkInterface(4294967295),
                  NetworkInterface(7)],
    # spread()'s ids are u0000 … u0119; the others exist nowhere.
    "uuid": ["u0001", "u0119", "u0120", "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a", "U0001"],
}


def filter_values(field: str) -> list[Any]:
    return VALUES[field.removeprefix("source_").removeprefix("destination_")]


@st.composite
def flow_filters(draw: st.DrawFn) -> FlowFilter:
    fields = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    return FlowFilter(**{f: tuple(draw(st.lists(st.sampled_from(filter_values(f)), min_size=1,
                                                max_size=3, unique=True)))
                         for f in fields})


FILTER_SETS = st.builds(FilterSet, st.lists(flow_filters(), max_size=2).map(tuple),
                        st.lists(flow_filters(), max_size=1).map(tuple))


def spread(rnd: random.Random) -> list[Flow]:
    """Deterministic, varied flows that hit the edges each field cares about."""
    out = []
    pods = ["", "web", "web-1", "db-0", "cart"]
    nss = ["", "shop", "kube-system", "default"]
    ips4 = ["", "10.0.0.1", "10.0.0.2", "10.1.2.3", "255.255.255.255"]
    ips6 = ["", "fd00::1", "2001:db8::5", "::ffff:a00:1"]
    labels = [(), ("k8s:app=web",), ("app=web", "k8s:canary"), ("reserved:world",),
              ("k8s:app=db", "k8s:tier=front"), ("y:app=web",), ("k8s:app=",),
              ("k8s:io.kubernetes.pod.namespace=shop", "k8s:app=cart")]
    interfaces = [(0, ""), (3, "lxc0001"), (3, "eth0"), (5, "lxc0001"), (4294967295, "lxc0002"),
                  (0, "lxc0001")]
    for i in range(120):
        version = rnd.choice([4] * 6 + [6] * 3 + [0])  # 0: no IP layer (and no addresses)
        ips = {4: ips4, 6: ips6, 0: [""]}[version]
        ep = lambda: Endpoint(  # noqa: E731
            identity=rnd.choice([0, 1, 2, 300, 4294967295]), namespace=rnd.choice(nss),
            pod_name=rnd.choice(pods), labels=rnd.choice(labels),
            workloads=rnd.choice([(), (Workload("web"),), (Workload("db", "StatefulSet"),),
                                  (Workload("cart", "deployment"),)]))
        out.append(Flow(
            time_ns=T0 + i, uuid=f"u{i:04d}", verdict=rnd.choice(list(Verdict)),
            drop_reason=rnd.choice(list(DropReason)), event_type=rnd.choice(list(EventType)),
            event_subtype=rnd.choice([0, 5, 133, 7]),
            traffic_direction=rnd.choice(list(TrafficDirection)), ip_version=version,
            source_ip=rnd.choice(ips), destination_ip=rnd.choice(ips),
            protocol=rnd.choice([1, 6, 17, 58, 132, 0]),
            source_port=rnd.choice([0, 53, 80, 65535]),
            destination_port=rnd.choice([0, 53, 80, 65535]), tcp_flags=rnd.randrange(256),
            source=ep(), destination=ep(), is_reply=rnd.choice([None, True, False]),
            node_name=rnd.choice(["", "node-a", "node-b.lab", "c1/node-a", "w1", "x/y/z"]),
            source_service=rnd.choice([None, Service("db-svc", "shop"), Service("", "")]),
            destination_service=rnd.choice([None, Service("web", "kube-system")]),
            interface_index=(iface := rnd.choice(interfaces))[0], interface_name=iface[1]))
    return out
