"""The node-side commands: `up`, `agent`, `down` and `doctor`.

With `lab`, these are the commands that act on the host; every other command is a
client of the API that the agent serves. Their options derive from
`agent.options`, which holds every default once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console

from spyglass.agent.options import AgentOptions, LabOptions, click_options, from_params
from spyglass.cli import doctor as doc
from spyglass.model import defaults

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


def _preflight(console: Console) -> None:
    checks = doc.run_checks()
    missing = doc.blocking(checks)
    if missing:
        print_checks(console, checks)
        first = missing[0]
        raise click.ClickException(f"{first.detail}: {first.fix or 'see above'}")


@click.command("up")
@click_options(LabOptions, AgentOptions)
def up_cmd(**kw: Any) -> None:
    """The lab and the agent together, until Ctrl-C; then both are torn down.

    The same as `spyglass lab up` followed by `spyglass agent`, except that the pods'
    workloads start only once the agent watches, so it sees their very first packets.
    """
    from spyglass.agent.run import ListenError, run_up

    lab_opts, opts = from_params(LabOptions, kw), from_params(AgentOptions, kw)
    lab_opts.manifest_path()  # --demo xor --manifest, before anything else
    opts.check()
    console = Console(stderr=True, highlight=False)
    _preflight(console)
    try:
        code = run_up(lab_opts, opts, console)
    except (ListenError, ValueError) as exc:  # address taken, or unsafe without a token
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@click.command("agent")
@click_options(AgentOptions)
def agent_cmd(**kw: Any) -> None:
    """Attach to the lab that is up: datapath, collector, store and API, until Ctrl-C.

    A datapath an earlier agent left (pinned maps, attached programs, the rings its keeper
    holds) is adopted: connections, policy and services carry on, and the events written
    meanwhile are read or counted. When this agent stops, the datapath keeps running.
    """
    from spyglass.agent.run import ListenError, run_agent

    opts = from_params(AgentOptions, kw)
    opts.check()
    console = Console(stderr=True, highlight=False)
    _preflight(console)
    try:
        code = run_agent(opts, console)
    except (ListenError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@click.command("down")
@click.option("--state-dir", default=defaults.STATE_DIR, hidden=True)
@click.option("--pin-dir", default=defaults.PIN_DIR, hidden=True)
@click.option("--link-prefix", default=defaults.LINK_PREFIX, hidden=True)
def down_cmd(state_dir: str, pin_dir: str, link_prefix: str) -> None:
    """Remove everything of Spyglass on this host: the agent, the lab, the datapath."""
    from spyglass.agent.run import teardown_leftovers

    removed = teardown_leftovers(state_dir, pin_dir, link_prefix)
    console = Console(highlight=False)
    if not removed:
        console.print("nothing of Spyglass was left on this host")
    for item in removed:
        console.print(f"removed {item}" if not item.startswith(("removed", "stopped",
                                                                 "killed")) else item)
