"""Attaching the programs to a veth with tc (clsact + direct-action bpf filters).

Our filters carry the name `spyglass:<program>`. The name is how detach and a
post-crash cleanup recognise what is ours, so they never remove someone else's
filter or qdisc: a clsact qdisc is deleted only when no foreign filter is left
on it.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

INGRESS_PARENT = 0xFFFFFFF2  # ffff:fff2, clsact ingress
EGRESS_PARENT = 0xFFFFFFF3  # ffff:fff3, clsact egress
FILTER_PREFIX = "spyglass:"


@dataclass(frozen=True)
class TcFilter:
    """One bpf filter as the kernel lists it."""

    ifindex: int
    parent: int
    handle: int
    info: int  # prio << 16 | protocol (network order), as tcmsg carries it
    name: str

    @property
    def ours(self) -> bool:
        return self.name.startswith(FILTER_PREFIX)

    @property
    def hook(self) -> str:
        return "ingress" if self.parent == INGRESS_PARENT else "egress"


def filter_name(program: str) -> str:
    return f"{FILTER_PREFIX}{program}"


def list_filters(ipr: IPRoute, ifindex: int) -> list[TcFilter]:
    """The bpf filters on both clsact hooks (empty if there is no clsact)."""
    out: list[TcFilter] = []
    for parent in (INGRESS_PARENT, EGRESS_PARENT):
        try:
            msgs = ipr.get_filters(index=ifindex, parent=parent)
        except NetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
                continue
            raise
        for msg in msgs:
            if not msg["handle"]:  # the chain header the kernel lists first
                continue
            opts = msg.get_attr("TCA_OPTIONS")
            name = (opts.get_attr("TCA_BPF_NAME") if opts is not None else None) or ""
            out.append(TcFilter(ifindex, parent, msg["handle"], msg["info"], name))
    return out


def has_clsact(ipr: IPRoute, ifindex: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


def attach(ipr: IPRoute, ifindex: int, *, ingress: tuple[int, str],
           egress: tuple[int, str]) -> list[str]:
    """Add clsact (if missing) and our two filters; (fd, program name) per hook.

    Where a filter of ours is already on the hook (an earlier agent's), its program is
    swapped in place with `tc filter replace`: the kernel switches atomically, so no
    packet ever passes without a program, and established connections keep their
    state. Returns "added" or "replaced" per hook.
    """
    if not has_clsact(ipr, ifindex):
        ipr.tc("add", "clsact", ifindex)
    ours = {f.parent: f for f in list_filters(ipr, ifindex) if f.ours}
    done: list[str] = []
    try:
        for parent, (fd, prog) in ((INGRESS_PARENT, ingress), (EGRESS_PARENT, egress)):
            flt = ours.get(parent)
            if flt is None:
                ipr.tc("add-filter", "bpf", ifindex, ":1", fd=fd, name=filter_name(prog),
                       parent=parent, classid=1, direct_action=True)
                done.append("added")
            else:
                ipr.tc("replace-filter", "bpf", ifindex, flt.handle, fd=fd,
                       name=filter_name(prog), parent=parent, classid=1, direct_action=True,
                       prio=flt.info >> 16, protocol=socket.ntohs(flt.info & 0xFFFF))
                done.append("replaced")
    except Exception:
        if not ours:  # a fresh attach that failed half way: leave nothing behind
            detach(ipr, ifindex)
        raise
    return done


def remove_ours(ipr: IPRoute, ifindex: int) -> list[TcFilter]:
    removed = []
    for flt in list_filters(ipr, ifindex):
        if not flt.ours:
            continue
        ipr.tc("del-filter", "bpf", ifindex, flt.handle, parent=flt.parent, info=flt.info)
        removed.append(flt)
    return removed


def detach(ipr: IPRoute, ifindex: int) -> list[str]:
    """Remove our filters, then the clsact qdisc if nothing foreign is left on it.

    Returns what was removed. A link that is already gone is not an error: its
    filters went with it (pods are often deleted before they are detached).
    """
    done: list[str] = []
    try:
        for flt in remove_ours(ipr, ifindex):
            done.append(f"filter {flt.name} ({flt.hook}) on ifindex {ifindex}")
        if has_clsact(ipr, ifindex) and not list_filters(ipr, ifindex):
            ipr.tc("del", "clsact", ifindex)
            done.append(f"clsact qdisc on ifindex {ifindex}")
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise
    return done


def cleanup_links(ifname_prefix: str) -> list[str]:
    """Detach from every link named `ifname_prefix*` that carries our filters."""
    done: list[str] = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if not name.startswith(ifname_prefix):
                continue
            if any(f.ours for f in list_filters(ipr, link["index"])):
                done += [f"{name}: {what}" for what in detach(ipr, link["index"])]
    return done
