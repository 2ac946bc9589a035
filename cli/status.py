"""`spyglass status`: is the agent up, how full is the ring, is anything being lost.

The text mirrors `hubble status` so the same glance works; `-o json` prints the
API's status document as is, for scripts.
"""

from __future__ import annotations

import json
from typing import Any

import click

from spyglass.cli.client import DEFAULT_SERVER, SERVER_ENV, ApiClient


def format_uptime(ns: int) -> str:
    """Go-style short durations: `45s`, `1m23s`, `2h3m4s`, `3d4h5m6s`."""
    secs = max(0, int(ns // 1_000_000_000))
    days, rem = divmod(secs, 86_400)
    hours, rem = divmod(rem, 3_600)
    minutes, seconds = divmod(rem, 60)
    out = ""
    if days:
        out += f"{days}d"
    if days or hours:
        out += f"{hours}h"
    if days or hours or minutes:
        out += f"{minutes}m"
    return out + f"{seconds}s"


def format_status(server: str, st: dict[str, Any]) -> str:
    """The `hubble status`-like text for a status document."""
    num, cap = int(st.get("num_flows", 0)), int(st.get("max_flows", 0))
    pct = 100.0 * num / cap if cap else 0.0
    lines = [
        f"Healthcheck (via {server}): Ok",
        f"Current/Max Flows: {num:,}/{cap:,} ({pct:.2f}%)",
        f"Flows/s: {float(st.get('flows_rate', 0.0)):.2f}",
    ]
    lost = {k: int(v) for k, v in (st.get("lost_events") or {}).items() if int(v)}
    if lost:
        lines.append("Lost events:")
        lines += [f"  {source}: {count:,}" for source, count in sorted(lost.items())]
    else:
        lines.append("Lost events: none")
    lines.append(f"Node: {st.get('node_name', '?')}   "
                 f"Uptime: {format_uptime(int(st.get('uptime_ns', 0)))}")
    return "\n".join(lines)


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", default=DEFAULT_SERVER, envvar=SERVER_ENV, show_default=True,
              help=f"Spyglass API address (env {SERVER_ENV}).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text, or the raw status JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for the API to answer.")
def status_cmd(server: str, output: str, timeout: float) -> None:
    """Show the agent's health: ring occupancy, flow rate and lost events."""
    with ApiClient(server, timeout=timeout) as client:
        st = client.status()
        if output == "json":
            click.echo(json.dumps(st, indent=2, sort_keys=True))
        else:
            click.echo(format_status(client.server, st))
