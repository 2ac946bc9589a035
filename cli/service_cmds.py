"""`spyglass service apply|delete|ls`: the lab's Services, changed in the lab itself.

Services belong to the lab, as in Kubernetes: these change its state file (as root,
under its lock) and a running agent loads the new backends into the datapath.
"""

from __future__ import annotations

import json
from typing import Any

import click

from spyglass.cli.common import yaml_file_option
from spyglass.cli.lab_cmds import STATE_DIR_OPTION, changing


@click.group("service")
def service_group() -> None:
    """Services (ClusterIP load balancing in the datapath)."""


@service_group.command("apply")
@yaml_file_option("Service documents")
@STATE_DIR_OPTION
def apply_cmd(filename: Any, state_dir: str) -> None:
    """Add or replace Services; backends follow their selectors as pods come and go."""
    with changing(state_dir) as lab:
        applied = lab.apply_services(filename.read(), filename.name)
    for ref, ip in applied.items():
        click.echo(f"applied Service {ref} ({ip or 'headless'})")


@service_group.command("delete")
@click.argument("service", metavar="NAMESPACE/NAME")
@STATE_DIR_OPTION
def delete_cmd(service: str, state_dir: str) -> None:
    ns, _, name = service.rpartition("/")
    with changing(state_dir) as lab:
        gone = lab.delete_service(f"{ns or 'default'}/{name}")
    click.echo(f"deleted Service {gone}")


@service_group.command("ls")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@STATE_DIR_OPTION
def ls_cmd(output: str, state_dir: str) -> None:
    """List Services with their ClusterIPs, ports and selectors."""
    with changing(state_dir) as lab:
        rows = lab.list_services()
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAMESPACE':<12} {'NAME':<16} {'CLUSTER-IP':<16} {'PORTS':<20} SELECTOR")
    for r in rows:
        sel = ",".join(f"{k}={v}" for k, v in sorted(r["selector"].items()))
        click.echo(f"{r['namespace']:<12} {r['name']:<16} {r['cluster_ip'] or '-':<16} "
                   f"{','.join(r['ports']):<20} {sel}")
