"""`spyglass lab`: the lab's pods, from another shell while `spyglass up` runs.

These read the lab's state file rather than the API: the file is what `up` keeps for
teardown anyway, and it lets `lab exec` work even when the API is busy or down.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from spyglass.cli.common import client_options, make_client, post_yaml, yaml_file_option
from spyglass.lab.errors import LabError
from spyglass.lab.model import LabPod
from spyglass.lab.state import DEFAULT_STATE_DIR, exec_in_pod, find_pod, load_state, pods_from_state

STATE_DIR_OPTION = click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
                                hidden=True, help="Where `spyglass up` keeps its records.")


def _running_pods(state_dir: str) -> list[LabPod]:
    state = load_state(state_dir)
    if state is None:
        raise click.ClickException("no lab is running: start one with `spyglass up --demo`")
    return pods_from_state(state)


def pod_rows(pods: Sequence[LabPod]) -> list[dict[str, object]]:
    return [{"namespace": p.namespace, "name": p.name, "ip": p.ip,
             "labels": dict(sorted(p.labels.items())), "identity": p.identity}
            for p in pods]


def render_table(rows: Sequence[dict[str, object]]) -> str:
    """Plain aligned columns, like `kubectl get pods -o wide`."""
    header = ("NAMESPACE", "NAME", "IP", "IDENTITY", "LABELS")
    lines = [header] + [
        (str(r["namespace"]), str(r["name"]), str(r["ip"]), str(r["identity"]),
         ",".join(f"{k}={v}" for k, v in r["labels"].items()))  # type: ignore[attr-defined]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "   " + line[-1]
        for line in lines
    )


@click.group("lab")
def lab_group() -> None:
    """The lab's pods: list them, run commands in them."""


@lab_group.command("ls")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@STATE_DIR_OPTION
def ls_cmd(output: str, state_dir: str) -> None:
    """List pods with namespace, name, IP, labels and identity."""
    rows = pod_rows(_running_pods(state_dir))
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_table(rows))


@lab_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("--timeout", type=float, default=None, help="Seconds before the command is killed.")
@STATE_DIR_OPTION
def exec_cmd(pod: str, argv: tuple[str, ...], timeout: float | None, state_dir: str) -> None:
    """Run a command in a pod's network namespace: `spyglass lab exec shop/cart-0 -- curl …`.

    POD is NAMESPACE/POD, or a bare POD in `default` or the only pod of that name.
    The command's output is passed through and its exit code becomes ours.
    """
    try:
        target = find_pod(_running_pods(state_dir), pod)
        done = exec_in_pod(target, list(argv), timeout=timeout)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    sys.exit(done.returncode)


# -- changes go through the API: the `up` process owns the datapath -------------------------


@lab_group.command("add")
@yaml_file_option("Pod documents")
@client_options()
def add_cmd(filename: Any, **kw: Any) -> None:
    """Add pods to the running lab: wired, attached to the datapath, in services' backends."""
    body = post_yaml(kw, "/lab/pods", filename)
    for ref in body["added"]:
        click.echo(f"added {ref}")


@lab_group.command("delete")
@click.argument("pod")
@client_options()
def delete_cmd(pod: str, **kw: Any) -> None:
    """Delete a pod (NAMESPACE/POD, or a bare POD) from the running lab."""
    with make_client(kw) as client:
        body = client.delete(f"/lab/pods/{pod}")
    click.echo(f"deleted {body['deleted']}")


@lab_group.command("scale")
@click.argument("workload")
@click.option("--replicas", type=click.IntRange(0, 1000), required=True)
@client_options()
def scale_cmd(workload: str, replicas: int, **kw: Any) -> None:
    """Scale NAMESPACE/WORKLOAD (its `app` label) to N pods, copying its first pod."""
    with make_client(kw) as client:
        body = client.post("/lab/scale", params=[("workload", workload),
                                                 ("replicas", str(replicas))])
    for ref in body["added"]:
        click.echo(f"added {ref}")
    for ref in body["deleted"]:
        click.echo(f"deleted {ref}")
    if not body["added"] and not body["deleted"]:
        click.echo(f"{workload} already has {replicas} replicas")
