"""`spyglass service apply|delete|ls`: Services of the running lab, through the API."""

from __future__ import annotations

import json
from typing import Any

import click

from spyglass.cli.common import client_options, make_client, post_yaml, yaml_file_option


@click.group("service")
def service_group() -> None:
    """Services (ClusterIP load balancing in the datapath)."""


@service_group.command("apply")
@yaml_file_option("Service documents")
@client_options()
def apply_cmd(filename: Any, **kw: Any) -> None:
    """Add or replace Services; backends follow their selectors as pods come and go."""
    body = post_yaml(kw, "/services", filename)
    for ref, ip in body["applied"].items():
        click.echo(f"applied Service {ref} ({ip or 'headless'})")


@service_group.command("delete")
@click.argument("service", metavar="NAMESPACE/NAME")
@client_options()
def delete_cmd(service: str, **kw: Any) -> None:
    ns, _, name = service.rpartition("/")
    with make_client(kw) as client:
        body = client.delete(f"/services/{ns or 'default'}/{name}")
    click.echo(f"deleted Service {body['deleted']}")


@service_group.command("ls")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options()
def ls_cmd(output: str, **kw: Any) -> None:
    """List Services with their ClusterIPs, ports and selectors."""
    with make_client(kw) as client:
        rows = client.get("/services")["services"]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAMESPACE':<12} {'NAME':<16} {'CLUSTER-IP':<16} {'PORTS':<20} SELECTOR")
    for r in rows:
        sel = ",".join(f"{k}={v}" for k, v in sorted(r["selector"].items()))
        click.echo(f"{r['namespace']:<12} {r['name']:<16} {r['cluster_ip'] or '-':<16} "
                   f"{','.join(r['ports']):<20} {sel}")
