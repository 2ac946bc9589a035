"""How pods are named and found: references, workloads, netns and link names.

Users type pod references in many places (`lab exec`, placeholders in
manifests, `--pod` filters), so they resolve the same way everywhere: like
kubectl, with a default namespace, but forgiving a missing namespace when the
pod name is unique, and never guessing between two candidates.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping

from spyglass.lab.errors import PodRefError

#: Linux limits interface names to 15 characters (IFNAMSIZ - 1).
IFNAMSIZ_MAX = 15

# Kubernetes generates name suffixes from this alphabet (no vowels, no 0/1/3):
# a Deployment's pod is <deployment>-<replicaset hash>-<5 chars>.
_HASH = "[bcdfghjklmnpqrstvwxz2456789]"
_SUFFIXES = (
    re.compile(rf"^(?P<base>.+?)-{_HASH}{{5,10}}-{_HASH}{{5}}$"),  # Deployment
    re.compile(r"^(?P<base>.+?)-[0-9]+$"),  # StatefulSet ordinal / our `-0`
    re.compile(rf"^(?P<base>.+?)-{_HASH}{{5}}$"),  # DaemonSet / Job
)


def workload_name(pod_name: str, labels: Mapping[str, str]) -> str:
    """The workload a pod belongs to: its `app` label, else its name minus the generated suffix."""
    app = labels.get("app", "")
    if app:
        return app
    for pattern in _SUFFIXES:
        m = pattern.match(pod_name)
        if m:
            return m.group("base")
    return pod_name


def netns_name(prefix: str, namespace: str, pod: str) -> str:
    """`<prefix>-<ns>-<pod>`: readable in `ip netns list`, unique per lab prefix."""
    return f"{prefix}-{namespace}-{pod}"


def host_ifname(link_prefix: str, prefix: str, namespace: str, pod: str) -> str:
    """Cilium-style host veth name: `lxc` + hex of a hash, filling the 15-char limit.

    The hash covers the lab prefix too, so a test lab and the real lab never
    produce the same link name for the same pod.
    """
    room = IFNAMSIZ_MAX - len(link_prefix)
    if room < 6:
        raise ValueError(
            f"link prefix {link_prefix!r} is too long: keep it at most "
            f"{IFNAMSIZ_MAX - 6} characters so the name keeps 6+ hash digits"
        )
    digest = hashlib.sha256(f"{prefix}/{namespace}/{pod}".encode()).hexdigest()
    return link_prefix + digest[:room]


def resolve_ref(
    ref: str,
    pods: Iterable[tuple[str, str]],
    *,
    default_namespace: str = "default",
) -> tuple[str, str]:
    """Resolve "ns/pod" or bare "pod" against (namespace, name) pairs.

    A bare name means the pod in `default_namespace` if there is one, else the
    only pod anywhere with that name. Two or more candidates is an error that
    lists them, as is no match (with close names as suggestions).
    """
    known = list(pods)
    ref = ref.strip()
    if not ref or ref.count("/") > 1 or ref.startswith("/") or ref.endswith("/"):
        raise PodRefError(f"bad pod reference {ref!r}: write 'namespace/pod' or 'pod'")
    if "/" in ref:
        ns, name = ref.split("/")
        if (ns, name) in known:
            return ns, name
        raise PodRefError(f"no pod {ref!r} in the lab{_suggest(ref, known)}")
    if (default_namespace, ref) in known:
        return default_namespace, ref
    matches = [(ns, name) for ns, name in known if name == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(f"{ns}/{name}" for ns, name in sorted(matches))
        raise PodRefError(
            f"pod name {ref!r} is ambiguous: it matches {listed}; write 'namespace/pod'"
        )
    raise PodRefError(f"no pod named {ref!r} in the lab{_suggest(ref, known)}")


def _suggest(ref: str, known: list[tuple[str, str]]) -> str:
    full = [f"{ns}/{name}" for ns, name in known]
    bare = "/" not in ref
    pool = [name for _, name in known] if bare else full
    close = difflib.get_close_matches(ref, pool, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {', '.join(repr(c) for c in close)}?"
    if not full:
        return " (the lab has no pods)"
    shown = ", ".join(sorted(full)[:8]) + (", …" if len(full) > 8 else "")
    return f"; pods are: {shown}"
