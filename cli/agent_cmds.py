"""The node-side commands: `up`, `down` and `doctor`.

These are the only commands that act on the host; every other command is a client
of the API that `up` serves.
"""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from spyglass.cli import doctor as doc

STYLE = {doc.OK: "green", doc.MISSING: "red", doc.WARN: "yellow"}


def print_checks(console: Console, checks: list[doc.Check]) -> None:
    console.print(f"Spyglass doctor (kernel {os.uname().release})")
    for c in checks:
        console.print(f"  [{STYLE[c.status]}]{c.status:<8}[/] {c.detail}", highlight=False)
        if c.status != doc.OK and c.fix:
            console.print(f"           fix: {c.fix}", highlight=False)


@click.command("doctor")
@click.option("--fix", is_flag=True, help="Apply the fixes that can be applied automatically.")
def doctor_cmd(fix: bool) -> None:
    """Check every requirement of the datapath and say how to fix what is missing."""
    console = Console(highlight=False)
    checks = doc.run_checks()
    if fix:
        for c in checks:
            if c.status == doc.MISSING and c.fixer is not None:
                console.print(f"fixing {c.name}: {c.fix}")
                try:
                    c.fixer()
                except Exception as exc:  # report and go on to the next fix
                    console.print(f"  [red]failed[/]: {exc}")
        checks = doc.run_checks()
    print_checks(console, checks)
    if doc.blocking(checks):
        sys.exit(1)


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:4245")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parse_days(ctx: click.Context, param: click.Parameter, value: str) -> int:
    text = value.strip().lower().removesuffix("d")
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{value!r}: give whole days, e.g. 7d or 30")
    return int(text)


@click.command("up")
@click.option("--demo", is_flag=True, help="Use the bundled demo manifest (a small shop app).")
@click.option("--manifest", "manifest", type=click.Path(exists=True, dir_okay=False),
              help="A multi-document YAML of Namespace/Pod objects.")
@click.option("--listen", default="127.0.0.1:4245", show_default=True,
              help="Address of the API.")
@click.option("--monitor-aggregation", default="medium", show_default=True,
              type=click.Choice(["none", "disabled", "lowest", "low", "medium", "max",
                                 "maximum"]),
              help="none reports every packet; the others report a connection when it is new, "
                   "when its TCP flags gain a bit, when it closes, and every interval.")
@click.option("--monitor-interval", default=5.0, show_default=True, type=float,
              help="Seconds between reports of an active connection.")
@click.option("--ring-capacity", default=65535, show_default=True, type=int,
              help="Flows kept in memory; must be 2^n-1.")
@click.option("--pod-cidr", default="10.244.0.0/16", show_default=True)
@click.option("--service-cidr", default="10.96.0.0/12", show_default=True,
              help="ClusterIPs are allocated here; other addresses in it are dropped.")
@click.option("--node-name", default=None, help="Defaults to the host name.")
@click.option("--policy-audit", is_flag=True,
              help="Report what policy would drop (verdict AUDIT) without dropping it.")
@click.option("--policy-audit-namespace", "audit_namespaces", multiple=True, metavar="NS",
              help="Audit mode for the pods of one namespace (repeatable).")
@click.option("--store", default="chdb:///var/lib/spyglass/flows", show_default=True,
              help="Flow history: chdb:///ABS/PATH (embedded ClickHouse), "
                   "http(s)://user:pass@host:8123/db (a ClickHouse server), or none.")
@click.option("--query-store", default=None, metavar="URL",
              help="With a ClickHouse server: the read-only user `spyglass store ddl` prints "
                   "(http(s)://spyglass_query:PASS@host:8123/db); `query sql` runs as it.")
@click.option("--retention", default="7d", show_default=True, callback=_parse_days,
              help="How long history is kept (days, e.g. 7d or 30).")
@click.option("--token", default=None, envvar="SPYGLASS_TOKEN", show_envvar=True,
              help="API bearer token; required to listen on a non-loopback address.")
@click.option("--metrics-public", is_flag=True, help="Serve /metrics without the token.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another name or address clients use to reach the API (repeatable); "
                   "requests naming any other Host are refused (DNS rebinding).")
@click.option("--policy-max-entries", default=250_000, show_default=True,
              type=click.IntRange(min=1),
              help="Refuse a policy change that would make more datapath entries than this.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM private key of --tls-cert.")
@click.option("--state-dir", default="/run/spyglass", hidden=True,
              help="Where the lab's records live (tests run their own).")
@click.option("--pin-dir", default="/sys/fs/bpf/spyglass", hidden=True)
@click.option("--prefix", default="sg", hidden=True, help="Name prefix of the lab's netns.")
@click.option("--link-prefix", default="lxc", hidden=True, help="Name prefix of host veths.")
def up_cmd(demo: bool, manifest: str | None, listen: str, monitor_aggregation: str,
           monitor_interval: float, ring_capacity: int, pod_cidr: str, service_cidr: str,
           node_name: str | None, policy_audit: bool, audit_namespaces: tuple[str, ...],
           store: str, query_store: str | None, retention: int, token: str | None,
           metrics_public: bool,
           allowed_hosts: tuple[str, ...], policy_max_entries: int,
           tls_cert: str | None, tls_key: str | None,
           state_dir: str, pin_dir: str, prefix: str, link_prefix: str) -> None:
    """Create the lab, attach the datapath, run the collector and serve the API until Ctrl-C."""
    from spyglass.agent.agent import AgentOptions, ListenError, run_agent

    if demo == bool(manifest):
        raise click.UsageError("give exactly one of --demo or --manifest FILE")
    host, port = _parse_listen(listen)
    console = Console(stderr=True, highlight=False)
    checks = doc.run_checks()
    missing = doc.blocking(checks)
    if missing:
        print_checks(console, checks)
        first = missing[0]
        raise click.ClickException(f"{first.detail}: {first.fix or 'see above'}")
    opts = AgentOptions(
        manifest=manifest, demo=demo, host=host, port=port,
        aggregation=monitor_aggregation, interval_s=monitor_interval,
        ring_capacity=ring_capacity, pod_cidr=pod_cidr, service_cidr=service_cidr,
        node_name=node_name or os.uname().nodename,
        state_dir=state_dir, pin_dir=pin_dir, prefix=prefix, link_prefix=link_prefix,
        policy_audit=policy_audit, policy_audit_namespaces=frozenset(audit_namespaces),
        store=None if store.lower() == "none" else store, retention_days=retention,
        query_store=query_store,
        token=token, metrics_public=metrics_public, tls_cert=tls_cert, tls_key=tls_key,
        allowed_hosts=allowed_hosts, policy_max_entries=policy_max_entries,
    )
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        code = run_agent(opts, console)
    except (ListenError, ValueError) as exc:  # address taken, or unsafe without a token
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@click.command("down")
@click.option("--state-dir", default="/run/spyglass", hidden=True)
@click.option("--pin-dir", default="/sys/fs/bpf/spyglass", hidden=True)
@click.option("--link-prefix", default="lxc", hidden=True)
def down_cmd(state_dir: str, pin_dir: str, link_prefix: str) -> None:
    """Remove everything a `spyglass up` left behind (after a crash, or from another shell)."""
    from spyglass.agent.agent import teardown_leftovers

    removed = teardown_leftovers(state_dir, pin_dir, link_prefix)
    console = Console(highlight=False)
    if not removed:
        console.print("nothing of Spyglass was left on this host")
    for item in removed:
        console.print(f"removed {item}")
