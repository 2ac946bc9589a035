"""`{{…}}` placeholders in container commands, filled in when the lab starts a pod.

Pods get their IPs only when the lab comes up and there are no Services yet,
so a manifest cannot name a peer's address. It writes `{{ip:shop/cart-0}}`
instead and the lab substitutes the pod's IP just before starting the
process. The set is deliberately tiny:

- `{{ip:REF}}`: the IP of pod REF (`ns/pod`, or a bare pod name, which
  resolves in the referring pod's own namespace first, like a DNS short name);
- `{{python}}`: the interpreter running the lab (the venv's, with spyglass
  importable), so demo pods can run `{{python}} -m spyglass.lab.demoapp`;
- `{{pod}}` and `{{namespace}}`: the pod's own name and namespace;
- `{{svc:REF}}`: the ClusterIP of Service REF (`ns/name`, or a bare name in the
  referring pod's namespace), so that traffic goes through the service and its
  load balancing rather than to one pod.

Anything else between `{{` and `}}` is an error at manifest load time, not a
surprise at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z]+)\s*(?::\s*([^{}\s]*)\s*)?\}\}")
_NEEDS_ARG = {"ip", "svc"}
_NO_ARG = {"python", "pod", "namespace"}
KINDS = tuple(sorted(_NEEDS_ARG | _NO_ARG))

HELP = "use {{ip:namespace/pod}}, {{svc:namespace/service}}, {{python}}, {{pod}} or {{namespace}}"


def _no_services(ref: str) -> str:
    raise ValueError(f"{{{{svc:{ref}}}}}: there are no Services here")


def render(text: str, values: Mapping[str, str], ip_of: Callable[[str], str],
           svc_of: Callable[[str], str] = _no_services) -> str:
    """Substitute every placeholder in `text`.

    `values` holds the argument-less kinds (python, pod, namespace);
    `ip_of(ref)` returns a pod's IP and raises (PodRefError) for an unknown or
    ambiguous pod; `svc_of(ref)` a Service's ClusterIP (ValueError if none).
    Malformed or unknown placeholders raise ValueError with a message saying
    what is allowed.
    """

    def one(m: re.Match[str]) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind in _NEEDS_ARG:
            if not arg:
                what = "pod: write {{ip:ns/pod}}" if kind == "ip" else \
                    "service: write {{svc:ns/name}}"
                raise ValueError(f"placeholder {m.group(0)!r} needs a {what}")
            return ip_of(arg) if kind == "ip" else svc_of(arg)
        if kind in _NO_ARG:
            if arg is not None:
                raise ValueError(
                    f"placeholder {m.group(0)!r} takes no argument: write {{{{{kind}}}}}")
            return values[kind]
        raise ValueError(f"unknown placeholder {m.group(0)!r}: {HELP}")

    rest = _PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise ValueError(f"malformed placeholder in {text!r}: {HELP}")
    return _PLACEHOLDER.sub(one, text)
