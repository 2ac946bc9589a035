"""`spyglass policy apply|delete|ls` and `spyglass explain`: policy against a running `up`.

Both go through the API: the agent owns the datapath maps and the compiled policy that
`explain` reads, so the CLI never compiles anything itself.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spyglass.cli.client import CliError
from spyglass.cli.common import client_options, make_client, post_yaml, yaml_file_option


@click.group("policy")
def policy_group() -> None:
    """Network policies in force: apply, delete, list."""


@policy_group.command("apply")
@yaml_file_option("NetworkPolicy / CiliumNetworkPolicy documents")
@client_options()
def apply_cmd(filename: Any, **kw: Any) -> None:
    """Apply policies: all documents or none. Takes effect within a second."""
    body = post_yaml(kw, "/policies", filename)
    for name in body["applied"]:
        click.echo(f"applied {name}")
    click.echo(f"compiled {body['entries']} entries in {body['compile_ms']:.1f} ms, "
               f"loaded into the datapath in {body['load_ms']:.1f} ms")


@policy_group.command("delete")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--kind", default=None,
              help="NetworkPolicy, CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy, when "
                   "a name is ambiguous.")
@client_options()
def delete_cmd(name: str, namespace: str, kind: str | None, **kw: Any) -> None:
    """Delete a policy by name. NAME may be NAMESPACE/NAME."""
    if "/" in name:
        namespace, name = name.split("/", 1)
    params = [("kind", kind)] if kind else []
    with make_client(kw) as client:
        client.delete(f"/policies/{namespace}/{name}", params)
    click.echo(f"deleted {namespace}/{name}")


@policy_group.command("ls")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options()
def ls_cmd(output: str, **kw: Any) -> None:
    """List the policies in force."""
    with make_client(kw) as client:
        rows = client.get("/policies")["policies"]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'KIND':<32} {'NAMESPACE':<16} NAME")
    for r in rows:
        click.echo(f"{r['kind']:<32} {r['namespace'] or '-':<16} {r['name']}")


@click.command("explain")
@click.option("--from", "from_", metavar="NAMESPACE/POD", help="The client pod.")
@click.option("--to", metavar="NAMESPACE/POD|IP", help="The server pod, or an address.")
@click.option("--port", type=click.IntRange(0, 65535), help="Destination port.")
@click.option("--protocol", default="tcp", show_default=True,
              type=click.Choice(["tcp", "udp", "sctp", "icmp"], case_sensitive=False))
@click.option("--flow", "flow_id", metavar="UUID", help="A flow's uuid from `observe -o json`.")
@click.option("--format", "fmt", type=click.Choice(["kubernetes", "cilium"]),
              default="kubernetes", show_default=True,
              help="Policy kind of the suggested YAML.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@client_options()
def explain_cmd(from_: str | None, to: str | None, port: int | None, protocol: str,
                flow_id: str | None, fmt: str, output: str, **kw: Any) -> None:
    """Why traffic is allowed or dropped by policy, and the minimal policy that would allow it.

    The answer comes from the same compiled tables the datapath was loaded from.
    """
    if flow_id:
        params = [("flow", flow_id)]
    elif from_ and to and port is not None:
        params = [("from", from_), ("to", to), ("port", str(port)), ("protocol", protocol)]
    else:
        raise CliError("give --from NAMESPACE/POD --to NAMESPACE/POD|IP --port N, or --flow UUID",
                       exit_code=2)
    params.append(("format", fmt))
    with make_client(kw) as client:
        body = client.get("/explain", params)
    if output == "json":
        click.echo(json.dumps(body, indent=2))
    else:
        sys.stdout.write(body["text"].rstrip("\n") + "\n")
