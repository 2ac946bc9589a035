"""Filter flags (`spyglass observe --pod … --not --verdict …`) and query parameters.

This is Hubble's `observe` filter tracker, so the same command line means the
same thing in both tools. Flags are read in order into a LEFT and a RIGHT
FlowFilter:

* either-side flags (`--pod`, `--ip`, `--label`, `--port` …) put the value in
  the SOURCE field on the left and the DESTINATION field on the right, so
  `--pod a --port 80` is (src pod a AND src port 80) OR (dst pod a AND dst port 80);
* `--from-X` sets the source field on both, `--to-X` the destination field on both;
* the rest (`--verdict`, `--protocol`, `--type` …) go to both; a flag without a value
  (`-4`, `-6`) stands for one (`--ip-version v4`).

At the end, equal left and right collapse into one filter. `--not` sends the
next flag to a second tracker whose filters become the denylist. Namespaces
are applied last, as Hubble does: `-n shop --pod web` means the pod shop/web*,
and `-n shop` alone means any pod in shop.

The HTTP API takes the same names as query parameters, so a URL can say what a
command line says; `FILTER_FLAGS` is the one place help texts live.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from spyglass.collector.filters.base import FilterError, ValueProblem
from spyglass.collector.filters.filterset import FilterSet
from spyglass.collector.filters.flowfilter import FIELDS, FlowFilter
from spyglass.collector.filters.names import parse_namespace, split_namespaced
from spyglass.model.safeload import InputLimitError, loads_json

Mode = Literal["either", "from", "to", "both", "ns", "from-ns", "to-ns", "not", "allowlist",
               "denylist"]


@dataclass(frozen=True)
class FilterFlag:
    """One filter flag. `field` is the FlowFilter field (without source_/destination_)."""

    name: str
    help: str
    mode: Mode
    field: str = ""
    short: str | None = None
    example: str = ""
    takes_value: bool = True
    #: The value a flag without one stands for (`--ipv4` is `--ip-version v4`).
    implies: str = ""

    @property
    def metavar(self) -> str:
        return self.field.upper().replace("_", "-") if self.field else "VALUE"


def _sided(base: str, what: str, example: str,
           short: str | None = None) -> list[FilterFlag]:
    return [
        FilterFlag(base, f"Show flows from or to {what} (either side).", "either", base, short,
                   example),
        FilterFlag(f"from-{base}", f"Show flows from {what}.", "from", base, None, example),
        FilterFlag(f"to-{base}", f"Show flows to {what}.", "to", base, None, example),
    ]


FILTER_FLAGS: tuple[FilterFlag, ...] = (
    FilterFlag("not", "Negate the next filter flag: flows it matches are left out.", "not",
               takes_value=False),
    *_sided("pod", "pods whose name starts with this prefix: '[namespace/]prefix' "
            "(without a namespace: any namespace; 'ns/' alone: the whole namespace)",
            "shop/frontend"),
    FilterFlag("namespace", "Show flows from or to pods in this namespace.", "ns", "namespace",
               "n", "kube-system"),
    FilterFlag("from-namespace", "Show flows from pods in this namespace.", "from-ns",
               "namespace", None, "kube-system"),
    FilterFlag("to-namespace", "Show flows to pods in this namespace.", "to-ns", "namespace",
               None, "kube-system"),
    *_sided("ip", "this IP address or CIDR (IPv4 or IPv6)", "10.0.0.0/8"),
    *_sided("label", "endpoints matching this Kubernetes label selector, e.g. "
            "'app=web,tier in (a,b),!canary' ('k8s:app=web' pins the label source)",
            "app=frontend", "l"),
    *_sided("identity", "this security identity (a number, host or world)",
            "host"),
    *_sided("service", "services whose name starts with this prefix: "
            "'[namespace/]prefix'", "shop/backend"),
    *_sided("workload", "this workload: '[kind/]name', e.g. Deployment/web",
            "Deployment/frontend"),
    *_sided("port", "this TCP/UDP/SCTP port number", "8080"),
    FilterFlag("protocol", "Show only flows of this L4 protocol: tcp, udp, sctp, icmp "
               "(v4 or v6), icmpv4, icmpv6.", "both", "protocol", None, "tcp"),
    FilterFlag("verdict", "Show only flows with this verdict: FORWARDED, DROPPED, ERROR, "
               "AUDIT, REDIRECTED, TRACED, TRANSLATED.", "both", "verdict", None, "DROPPED"),
    FilterFlag("type", "Show only events of this type: drop, policy-verdict, trace, or "
               "trace:<point> (to-endpoint, from-endpoint, to-stack …); 'type:N' matches a "
               "numeric sub-type.", "both", "event_type", "t", "trace:to-endpoint"),
    FilterFlag("node-name", "Show only flows seen on nodes matching this glob ('*.lab', "
               "'cluster/worker-*').", "both", "node_name", None, "worker-*"),
    FilterFlag("tcp-flags", "Show only TCP flows with ALL these flags set, e.g. SYN or "
               "SYN,ACK (repeat the flag for OR).", "both", "tcp_flags", None, "SYN"),
    FilterFlag("traffic-direction", "Show only flows in this direction: ingress or egress.",
               "both", "traffic_direction", None, "ingress"),
    FilterFlag("drop-reason-desc", "Show only drops for this reason, e.g. POLICY_DENIED.",
               "both", "drop_reason_desc", None, "POLICY_DENIED"),
    FilterFlag("reply", "Show only replies (true) or only non-replies (false).", "both",
               "reply", None, "true"),
    FilterFlag("ip-version", "Show only flows of this IP version: v4, v6 (or 4, 6), or none "
               "for flows without an IP layer.", "both", "ip_version", None, "v6"),
    FilterFlag("ipv4", "Show only IPv4 flows (the same as --ip-version v4).", "both",
               "ip_version", "4", takes_value=False, implies="v4"),
    FilterFlag("ipv6", "Show only IPv6 flows (the same as --ip-version v6).", "both",
               "ip_version", "6", takes_value=False, implies="v6"),
    FilterFlag("interface", "Show only flows seen on the network interface with this name, "
               "e.g. a pod's lxc… veth (Hubble's FlowFilter can also give an index: use "
               "--allowlist '{\"interface\":[{\"index\":5}]}').", "both", "interface", None,
               "lxc1a2b3c4d"),
    FilterFlag("uuid", "Show only the flow with this uuid, as -o json prints it (repeat "
               "the flag for several).", "both", "uuid", None,
               "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a"),
    FilterFlag("allowlist", "A raw FlowFilter as JSON (Hubble's --allowlist); flows matching "
               "any allowlist filter are shown. Repeatable.", "allowlist", "", None,
               '{"source_pod":["shop/"]}'),
    FilterFlag("denylist", "A raw FlowFilter as JSON (Hubble's --denylist); flows matching "
               "any denylist filter are left out. Repeatable.", "denylist", "", None,
               '{"verdict":["FORWARDED"]}'),
)
_BY_NAME = {f.name: f for f in FILTER_FLAGS}

#: Flag pairs Hubble refuses in one tracker, because the result reads as
#: something other than what was meant; each with the way out.
_CONFLICTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("from-ip", "ip", "from-namespace", "namespace"),
     "select an endpoint by IP or by namespace, not both"),
    (("from-ip", "ip", "from-pod", "pod"), "select an endpoint by IP or by pod, not both"),
    (("to-ip", "ip", "to-namespace", "namespace"),
     "select an endpoint by IP or by namespace, not both"),
    (("to-ip", "ip", "to-pod", "pod"), "select an endpoint by IP or by pod, not both"),
    (("to-pod", "namespace"), "use --to-namespace, or put the namespace in the pod (ns/name)"),
    (("from-pod", "namespace"),
     "use --from-namespace, or put the namespace in the pod (ns/name)"),
    (("to-service", "namespace"),
     "use --to-namespace, or put the namespace in the service (ns/name)"),
    (("from-service", "namespace"),
     "use --from-namespace, or put the namespace in the service (ns/name)"),
    (("label", "from-label"), "use --from-label and --to-label instead of --label"),
    (("label", "to-label"), "use --from-label and --to-label instead of --label"),
    (("service", "from-service"), "use --from-service and --to-service instead of --service"),
    (("service", "to-service"), "use --from-service and --to-service instead of --service"),
    (("port", "from-port"), "use --from-port and --to-port instead of --port"),
    (("port", "to-port"), "use --from-port and --to-port instead of --port"),
    (("identity", "from-identity"),
     "use --from-identity and --to-identity instead of --identity"),
    (("identity", "to-identity"), "use --from-identity and --to-identity instead of --identity"),
    (("workload", "from-workload"),
     "use --from-workload and --to-workload instead of --workload"),
    (("workload", "to-workload"), "use --from-workload and --to-workload instead of --workload"),
)


class _Tracker:
    """One side of the request (allow or deny): the LEFT and RIGHT filters being built."""

    def __init__(self) -> None:
        self.left: dict[str, list[Any]] | None = None
        self.right: dict[str, list[Any]] | None = None
        self.ns: list[str] = []
        self.src_ns: list[str] = []
        self.dst_ns: list[str] = []
        self.changed: list[str] = []

    def add(self, flag: FilterFlag, raw: str) -> None:
        if flag.name not in self.changed:
            self.changed.append(flag.name)
        self._check_conflicts()
        if flag.mode in ("ns", "from-ns", "to-ns"):
            ns = _parse(flag, raw, parse_namespace)
            target = {"ns": self.ns, "from-ns": self.src_ns, "to-ns": self.dst_ns}[flag.mode]
            if ns not in target:
                target.append(ns)
            return
        if flag.mode in ("either", "from", "to"):
            src, dst = f"source_{flag.field}", f"destination_{flag.field}"
            value = _parse(flag, raw, FIELDS[src][0].parse)
            left = src if flag.mode in ("either", "from") else dst
            right = dst if flag.mode in ("either", "to") else src
        else:
            left = right = flag.field
            value = _parse(flag, raw, FIELDS[flag.field][0].parse)
        self.left = _append(self.left, left, value)
        self.right = _append(self.right, right, value)

    def _check_conflicts(self) -> None:
        for group, fix in _CONFLICTS:
            used = [name for name in self.changed if name in group]
            if len(used) > 1:
                raise FilterError(f"filters --{used[0]} and --{used[1]} cannot be combined; "
                                  f"{fix}")

    def filters(self) -> list[FlowFilter]:
        if self.left is None and self.right is None and not (
                self.ns or self.src_ns or self.dst_ns):
            return []
        left, right = self.left or {}, self.right or {}
        for namespaces, sides, prefix in ((self.dst_ns, (left, right), "destination"),
                                          (self.src_ns, (left, right), "source"),
                                          (self.ns, (left,), "source"),
                                          (self.ns, (right,), "destination")):
            if not namespaces:
                continue
            for side in sides:
                _apply_namespaces(side, prefix, namespaces)
        fl = FlowFilter(**{k: tuple(v) for k, v in left.items()})
        fr = FlowFilter(**{k: tuple(v) for k, v in right.items()})
        return [fl] if fl == fr else [fl, fr]


def _append(side: dict[str, list[Any]] | None, field: str, value: Any) -> dict[str, list[Any]]:
    side = {} if side is None else side
    values = side.setdefault(field, [])
    if value not in values:
        values.append(value)
    return side


def _apply_namespaces(side: dict[str, list[Any]], prefix: str, namespaces: list[str]) -> None:
    """Hubble's namespace modifier: put the namespaces into this side's pods and services."""
    pods_key, svc_key = f"{prefix}_pod", f"{prefix}_service"
    pods, svcs = side.get(pods_key, []), side.get(svc_key, [])
    if not pods and not svcs:
        pods = [""]
    for key, values in ((pods_key, pods), (svc_key, svcs)):
        if not values:
            continue
        out: list[str] = []
        for v in values:
            ns, _prefix = split_namespaced(v)
            if ns is not None:
                if ns not in namespaces:
                    raise FilterError(
                        f"{key.split('_')[1]} {v!r} is in namespace {ns!r}, but the namespace "
                        f"filter says {', '.join(namespaces)}; drop one of them, or leave the "
                        f"namespace out of the {key.split('_')[1]} name")
                out.append(v)
            else:
                out.extend(f"{n}/{v}" for n in namespaces)
        side[key] = out


def _parse(flag: FilterFlag, raw: str, parse: Any) -> Any:
    try:
        return parse(raw)
    except ValueProblem as e:
        raise FilterError(e.render_flag(flag.name)) from None


def _raw_filters(flag: FilterFlag, raw: str) -> list[FlowFilter]:
    try:
        data = loads_json(raw, what=f"--{flag.name}")
    except InputLimitError as e:
        raise FilterError(str(e)) from None
    except (json.JSONDecodeError, TypeError) as e:
        why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise FilterError(f"--{flag.name}: not valid JSON ({why}); write it like "
                          f"--{flag.name} '{flag.example}'") from None
    items = data if isinstance(data, list) else [data]
    return [FlowFilter.from_dict(d, where=f"--{flag.name}") for d in items]


def lookup_flag(name: str, kind: str = "flag") -> FilterFlag:
    """The flag for a long name; a clear error with a suggestion otherwise."""
    flag = _BY_NAME.get(name)
    if flag is not None:
        return flag
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = f"--{name}" if kind == "flag" else repr(name)
    raise FilterError(f"unknown filter {kind} {shown}; {hint}valid filters are "
                      f"{', '.join(_BY_NAME)}")


def build_from_flags(items: Sequence[tuple[str, str | None]], kind: str = "flag") -> FilterSet:
    """Build a FilterSet from filter flags in command-line order: [("pod", "shop/web"), …]."""
    allow, deny = _Tracker(), _Tracker()
    raw_allow: list[FlowFilter] = []
    raw_deny: list[FlowFilter] = []
    negate = False
    for name, value in items:
        flag = lookup_flag(name, kind)
        if flag.implies:
            if value not in (None, ""):
                long = next(f.name for f in FILTER_FLAGS
                            if f.field == flag.field and f.takes_value)
                raise FilterError(f"--{flag.name} takes no value (got {value!r}); it means "
                                  f"--{long} {flag.implies} (give --{long} to choose another)")
            value = flag.implies
        elif not flag.takes_value:
            if value not in (None, ""):
                raise FilterError(f"--{flag.name} takes no value (got {value!r}); put it before "
                                  "the filter to negate, like --not --namespace kube-system")
            if negate:
                raise FilterError("two --not in a row; one --not negates the filter after it")
            negate = True
            continue
        if value is None:
            raise FilterError(f"--{flag.name} needs a value, like --{flag.name} {flag.example}")
        if flag.mode in ("allowlist", "denylist"):
            if negate:
                raise FilterError(f"--not cannot negate --{flag.name}; use --denylist for "
                                  "filters whose flows should be left out")
            (raw_allow if flag.mode == "allowlist" else raw_deny).extend(
                _raw_filters(flag, value))
            continue
        (deny if negate else allow).add(flag, value)
        negate = False
    if negate:
        raise FilterError("--not at the end has no filter after it; put it before the filter "
                          "to negate, like --not --namespace kube-system")
    return FilterSet(tuple(allow.filters() + raw_allow), tuple(deny.filters() + raw_deny))


def build_from_query(params: Sequence[tuple[str, str]]) -> FilterSet:
    """Build from HTTP query parameters in order: the flag names (`from-pod` or `from_pod`),
    `not-<name>` for negation, and raw `allowlist`/`denylist` JSON.

    The caller strips non-filter parameters (last, follow, since …) first.
    """
    items: list[tuple[str, str | None]] = []
    for key, value in params:
        name = key.strip().replace("_", "-")
        if name.startswith("not-"):
            items.append(("not", None))
            name = name[4:]
        items.append((name, value))
    return build_from_flags(items, kind="query parameter")
