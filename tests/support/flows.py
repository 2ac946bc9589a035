"""Flows for tests: `flow(i)` is the i-th of a steady stream of shop SYNs.

Every field can be overridden by keyword (the Flow's own names); `pod` and `dst_pod`
name the two ends in namespace `ns`, and `t` (absolute) or `t0`/`step_ns` place the flow
in time: tests that query by `since=1h` or write to a store (whose TTL drops old rows)
pass a recent `t0`. Flows built from the same `i` are equal, so tests can build what they
expect the same way.
"""

from __future__ import annotations

from typing import Any

from spyglass.model.enums import Protocol, Verdict
from spyglass.model.flow import Endpoint, Flow

#: 2025-11-26T14:06:28.576Z, the time Hubble's docs print (compact lines read naturally).
T0 = 1_764_165_988_576_000_000
NODE = "node-a"


def endpoint(pod: str, ns: str = "shop", identity: int = 300, **kw: Any) -> Endpoint:
    """A pod's endpoint; `labels` default to its app label and namespace label."""
    app = pod.rsplit("-", 1)[0]
    labels = kw.pop("labels", (f"k8s:app={app}", f"k8s:io.kubernetes.pod.namespace={ns}"))
    return Endpoint(identity=identity, namespace=ns, pod_name=pod, labels=tuple(labels), **kw)


def flow(i: int = 0, *, pod: str | None = None, dst_pod: str = "cart-0", ns: str = "shop",
         t: int | None = None, t0: int = T0, step_ns: int = 1_000_000,
         verdict: Verdict = Verdict.FORWARDED, dport: int = 8080, node: str = NODE,
         **fields: Any) -> Flow:
    """The i-th flow: `{pod or frontend-i}` -> `{dst_pod}`:dport, TCP SYN, at t0 + i*step_ns."""
    values: dict[str, Any] = {
        "time_ns": t0 + i * step_ns if t is None else t,
        "uuid": f"u{i:06d}",
        "protocol": Protocol.TCP,
        "tcp_flags": 0x02,
        "source_ip": "10.244.0.2",
        "destination_ip": "10.244.0.3",
        "source_port": 30000 + i % 30000,
        "destination_port": dport,
        "verdict": verdict,
        "is_reply": False,
        "node_name": node,
        "source": endpoint(pod or f"frontend-{i}", ns, 300),
        "destination": endpoint(dst_pod, ns, 301),
    }
    values.update(fields)
    return Flow(**values)


def flows(n: int, start: int = 0, **kw: Any) -> list[Flow]:
    """`flow(i, **kw)` for i in start..start+n."""
    return [flow(i, **kw) for i in range(start, start + n)]
