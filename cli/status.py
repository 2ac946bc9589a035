"""`spyglass status`: is the agent up, how full is the ring, is anything being lost.

The text mirrors `hubble status` so the same glance works; `-o json` prints the
API's status document as is, for scripts.
"""

from __future__ import annotations

import json
from typing import Any

import click

from spyglass.cli.common import client_options, make_client


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
    if st.get("restart"):  # this agent took over a datapath an earlier one left running
        lines.append(format_restart(st["restart"]))
    if "store" in st:  # agents before the store said nothing about it
        lines += format_store(st["store"] or {})
    return "\n".join(lines)


def format_restart(gap: dict[str, Any]) -> str:
    """The restart line: whose datapath this agent adopted, and what the gap cost.

    Lost counts what no agent will ever read (gone with the rings, or failed submits
    that no agent told); flows the earlier agent read but had not stored are named apart.
    """
    lost = int(gap.get("lost_in_rings") or 0) + int(gap.get("failures_untold") or 0)
    kept = (f"{int(gap.get('waiting_in_rings') or 0):,} events read from the kept rings"
            if gap.get("adopted_rings") else "the rings were not kept")
    text = (f"Restarts: {int(gap.get('restarts') or 0):,} (this agent adopted the datapath of "
            f"pid {gap.get('previous_pid', '?')}: {kept}, {lost:,} lost")
    unstored = int(gap.get("unstored") or 0)
    if unstored:
        text += f", {unstored:,} flows not stored"
    return text + ")"


def format_store(store: dict[str, Any]) -> list[str]:
    """The store's lines: where it is, whether it is up, and the writer's backlog."""
    if not store.get("kind"):
        return ["Store: none (history needs `spyglass up --store ...`)"]
    up = store.get("up")
    state = "up" if up else ("DOWN" if up is False else "unknown")
    lines = [f"Store: {store.get('dsn') or store.get('kind')} ({state})"]
    if store.get("queued_rows") is not None:
        lag = store.get("lag_s")
        lines.append(f"Writer: {int(store['queued_rows']):,} queued, lag "
                     f"{float(lag or 0.0):.1f}s, {int(store.get('written') or 0):,} written, "
                     f"{int(store.get('lost') or 0):,} lost")
    if store.get("last_error"):
        lines.append(f"Store error: {store['last_error']}")
    return lines


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@client_options()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text, or the raw status JSON.")
def status_cmd(output: str, **kw: Any) -> None:
    """Show the agent's health: ring occupancy, flow rate, lost events, restarts and the store."""
    with make_client(kw) as client:
        st = client.status()
        if output == "json":
            click.echo(json.dumps(st, indent=2, sort_keys=True))
        else:
            click.echo(format_status(client.server, st))
