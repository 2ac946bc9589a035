"""Security identities: numbers that stand for a set of labels.

Policy in the datapath is keyed by identity, not by IP, so pods that share
labels share an identity and a pod that comes back with a new IP keeps it.
The number is derived from the labels themselves (a hash into Cilium's
cluster-local range), so the same labels give the same identity in every run
and on every node without a shared allocator; a collision is resolved by
probing, and the allocator remembers what it handed out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

#: Cilium's reserved identities.
IDENTITY_UNKNOWN = 0
IDENTITY_HOST = 1
IDENTITY_WORLD = 2
RESERVED_IDENTITY_LABELS: dict[int, str] = {
    IDENTITY_HOST: "reserved:host",
    IDENTITY_WORLD: "reserved:world",
}

#: Cluster-local identities live above the reserved range, as in Cilium.
MIN_IDENTITY = 256
MAX_IDENTITY = 65535  # cluster-local range of a single cluster, as in Cilium
NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"


def pod_labels(namespace: str, labels: dict[str, str]) -> tuple[str, ...]:
    """The identity-relevant labels of a pod, sorted, with Cilium's `k8s:` source."""
    out = {f"k8s:{k}={v}" for k, v in labels.items()}
    out.add(f"{NAMESPACE_LABEL}={namespace}")
    return tuple(sorted(out))


class IdentityAllocator:
    """Maps label sets to identities and back. Not thread-safe: one owner (the agent)."""

    def __init__(self) -> None:
        self._by_labels: dict[tuple[str, ...], int] = {}
        self._by_id: dict[int, tuple[str, ...]] = {
            num: (label,) for num, label in RESERVED_IDENTITY_LABELS.items()
        }

    def allocate(self, labels: Iterable[str]) -> int:
        key = tuple(sorted(set(labels)))
        if not key:
            raise ValueError("an identity needs at least one label")
        found = self._by_labels.get(key)
        if found is not None:
            return found
        span = MAX_IDENTITY - MIN_IDENTITY + 1
        digest = hashlib.sha256("\n".join(key).encode()).digest()
        start = int.from_bytes(digest[:8], "big") % span
        for step in range(span):
            candidate = MIN_IDENTITY + (start + step) % span
            if candidate not in self._by_id:
                self._by_labels[key] = candidate
                self._by_id[candidate] = key
                return candidate
        raise RuntimeError("identity space exhausted")  # pragma: no cover - 16M label sets

    def restore(self, labels: Iterable[str], identity: int) -> None:
        """Take back an identity recorded earlier (a lab reloaded from its state file), so
        that later allocations cannot hand the same number to other labels."""
        key = tuple(sorted(set(labels)))
        held = self._by_id.get(identity)
        if held is not None and held != key:
            raise ValueError(f"identity {identity} is already {held}, not {key}")
        self._by_labels[key] = identity
        self._by_id[identity] = key

    def labels_of(self, identity: int) -> tuple[str, ...] | None:
        return self._by_id.get(identity)
