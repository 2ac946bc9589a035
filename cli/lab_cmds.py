"""`spyglass lab`: the lab's lifecycle (`up`, `down`) and its pods, from any shell.

The lab is not the agent's: these commands read and change the lab's state file
directly (as root, under the lab's lock), and a running agent follows the file. So
`lab add` works with no agent running, and an agent restart never touches the pods.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from spyglass.agent.options import LabOptions, click_options, from_params
from spyglass.cli.common import yaml_file_option
from spyglass.lab.errors import LabError, PodRefError
from spyglass.lab.lab import Lab
from spyglass.lab.manifest import load_manifest
from spyglass.lab.model import LabPod
from spyglass.lab.state import (
    DEFAULT_STATE_DIR,
    exec_in_pod,
    find_pod,
    load_state,
    locked,
    pods_from_state,
    teardown_from_state,
)

STATE_DIR_OPTION = click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
                                hidden=True, help="Where the lab keeps its records.")


def _running_pods(state_dir: str) -> list[LabPod]:
    state = load_state(state_dir)
    if state is None:
        raise click.ClickException("no lab is up: start one with `spyglass lab up --demo` "
                                   "(or `spyglass up --demo`)")
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
    """The lab: bring it up and down, list and change its pods, run commands in them."""


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


# -- the lab's lifecycle and its changes: done here, as root; a running agent follows them -----


def changing(state_dir: str) -> Any:
    """The lab, loaded under its lock, saved by its own methods; errors as CLI errors."""
    return _Changing(state_dir)


class _Changing:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self._lock: Any = None

    def __enter__(self) -> Lab:
        self._lock = locked(self.state_dir)
        self._lock.__enter__()
        try:
            return Lab.load(self.state_dir)
        except LabError as exc:
            self._lock.__exit__(None, None, None)
            raise click.ClickException(str(exc)) from None

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._lock.__exit__(None, None, None)
        if isinstance(exc, LabError):
            raise click.ClickException(str(exc)) from None


@lab_group.command("up")
@click_options(LabOptions)
def up_cmd(**kw: Any) -> None:
    """Create the lab's pods and start their workloads, then return (they keep running).

    Attach an agent with `spyglass agent`; remove the lab with `spyglass lab down`.
    """
    opts = from_params(LabOptions, kw)
    try:
        manifest = load_manifest(opts.manifest_path())
        for warning in manifest.warnings:
            click.echo(f"warning: {warning}", err=True)
        with locked(opts.state_dir):
            lab = Lab(manifest, pod_cidr=opts.pod_cidr, prefix=opts.prefix,
                      link_prefix=opts.link_prefix, state_dir=opts.state_dir,
                      service_cidr=opts.service_cidr)
            lab.up()
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"the lab is up: {len(lab.pods)} pods ({opts.state_dir}); attach the agent "
               "with `spyglass agent`")


@lab_group.command("down")
@STATE_DIR_OPTION
def down_cmd(state_dir: str) -> None:
    """Remove the lab's pods and their workloads (a running agent keeps running)."""
    try:
        with locked(state_dir):
            done = teardown_from_state(state_dir)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    if not done:
        click.echo("no lab is up")
    for line in done:
        click.echo(line)


@lab_group.command("add")
@yaml_file_option("Pod documents")
@STATE_DIR_OPTION
def add_cmd(filename: Any, state_dir: str) -> None:
    """Add pods to the lab: wired and started; the agent attaches to them."""
    with changing(state_dir) as lab:
        added = lab.add_pods(filename.read(), filename.name)
    for ref in added:
        click.echo(f"added {ref}")


@lab_group.command("delete")
@click.argument("pod")
@STATE_DIR_OPTION
def delete_cmd(pod: str, state_dir: str) -> None:
    """Delete a pod (NAMESPACE/POD, or a bare POD) from the lab."""
    with changing(state_dir) as lab:
        try:
            gone = lab.delete_pod(pod)
        except PodRefError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"deleted {gone.ref}")


@lab_group.command("scale")
@click.argument("workload")
@click.option("--replicas", type=click.IntRange(0, 1000), required=True)
@STATE_DIR_OPTION
def scale_cmd(workload: str, replicas: int, state_dir: str) -> None:
    """Scale NAMESPACE/WORKLOAD (its `app` label) to N pods, copying its first pod."""
    with changing(state_dir) as lab:
        body = lab.scale(workload, replicas)
    for ref in body["added"]:
        click.echo(f"added {ref}")
    for ref in body["deleted"]:
        click.echo(f"deleted {ref}")
    if not body["added"] and not body["deleted"]:
        click.echo(f"{workload} already has {replicas} replicas")
