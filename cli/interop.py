"""`spyglass export` and `spyglass import`: Hubble's JSON lines out of and into history.

Export pages through `GET /api/v1/flows` (oldest first, by cursor) and writes
what `hubble observe --input-file` reads. Import checks the whole file first,
so a bad line fails the import with its line number before anything is
stored, then uploads in bounded parts to the agent, which alone owns the store
(a chDB path admits one process).
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

import click

from spyglass.cli.client import CliError
from spyglass.cli.common import client_params, make_client, parse_time_option
from spyglass.cli.observe import FILTER_ITEMS, OrderedFilterCommand, filter_options, history
from spyglass.collector.filters import FilterError, build_from_flags
from spyglass.model.hubble_json import chunks, export_line, parse_lines

#: Lines per upload request: well under the API's body limit even for fat flows.
UPLOAD_LINES = 5000
#: storage.schema's DEFAULT_RETENTION_DAYS and MAX_IMPORT_RETENTION_DAYS, restated so that
#: the CLI starts without importing the store (pyarrow, pandas); a test holds them equal.
DEFAULT_RETENTION_DAYS = 7
MAX_IMPORT_RETENTION_DAYS = 25_000


def _days(ctx: click.Context, param: click.Parameter, value: Any) -> int:
    """Whole days, 1 to MAX_IMPORT_RETENTION_DAYS, spelled `30` or `30d` as `up --retention`."""
    text = str(value).strip().lower().removesuffix("d")
    if not text.isdigit():
        raise click.BadParameter(f"{value!r} is not a number of days; give whole days, e.g. 30 "
                                 "or 30d", ctx, param)
    days = int(text)
    if not 1 <= days <= MAX_IMPORT_RETENTION_DAYS:
        raise click.BadParameter(f"{value!r} is out of range; give 1 to "
                                 f"{MAX_IMPORT_RETENTION_DAYS} days", ctx, param)
    return days


def _export(**kw: Any) -> None:
    ctx = click.get_current_context()
    try:
        filters = build_from_flags(ctx.meta.get(FILTER_ITEMS, []))
    except FilterError as exc:
        raise CliError(str(exc), exit_code=2) from None
    since = parse_time_option(kw["since"], "since")
    until = parse_time_option(kw["until"], "until")
    out: IO[str] = sys.stdout
    if kw["out"] and kw["out"] != "-":
        try:
            out = open(kw["out"], "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CliError(f"cannot write {kw['out']}: {exc.strerror or exc}") from None
    written = 0
    try:
        with make_client(kw) as client:
            for body in history(client, filters.to_params(), since, until, kw["first"], None):
                line = export_line(body)
                if line is not None:
                    out.write(line + "\n")
                    written += 1
        out.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    finally:
        if out is not sys.stdout:
            out.close()
    if out is not sys.stdout:
        click.echo(f"exported {written} flows to {kw['out']}", err=True)


def _export_command() -> click.Command:
    cmd = OrderedFilterCommand(
        "export", callback=_export,
        help=("Write stored flows as Hubble JSON lines ({\"flow\": …, \"node_name\": …, "
              "\"time\": …}), readable by `hubble observe --input-file`. Takes observe's "
              "filter flags."),
        short_help="Export history as Hubble JSON lines.",
        context_settings={"help_option_names": ["-h", "--help"]},
        params=[
            click.Option(["--since"], required=True, metavar="TIME",
                         help="Start: 5m, 1h30m, 2d ago or RFC3339."),
            click.Option(["--until"], default=None, metavar="TIME",
                         help="End (exclusive); default now."),
            click.Option(["--first"], type=click.IntRange(min=1), default=None,
                         help="Only the oldest N flows of the range."),
            click.Option(["-o", "--output"], type=click.Choice(["hubble-json"]),
                         default="hubble-json", show_default=True, help="Output format."),
            click.Option(["--out"], default=None, metavar="FILE",
                         help="Write to FILE instead of stdout."),
        ])
    cmd.params += client_params(30.0) + filter_options()
    return cmd


export_cmd = _export_command()


def _read_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file; give a Hubble export (events.log) or the "
                       "output of `hubble observe -o json`", exit_code=2) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start}); is it compressed? "
                       "Decompress it first (e.g. `gunzip -k`)", exit_code=2) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", exit_code=2) from None


def _import(file: str, dry_run: bool, retention: int, **kw: Any) -> None:
    lines = _read_lines(file)
    result = parse_lines(lines)
    if result.error_count:
        raise CliError(f"{file}: {result.error_text()}; nothing was imported", exit_code=2)
    summary = (f"{len(result.flows)} flows, {result.skipped} non-flow lines skipped"
               + (f", {result.approximated} with names Spyglass does not know (stored as "
                  "UNKNOWN)" if result.approximated else ""))
    if dry_run:
        click.echo(f"{file}: would import {summary}")
        return
    imported = 0
    kept: list[str] = []
    with make_client(kw) as client:
        for first, part in chunks(lines, UPLOAD_LINES):
            try:
                body = client.post("/flows/import", content="\n".join(part).encode(),
                                   params=[("first_line", str(first)),
                                           ("retention_days", str(retention))],
                                   content_type="application/x-ndjson")
            except CliError as exc:
                if not imported:
                    raise
                raise CliError(f"{exc.format_message()}; the {imported} flows before line "
                               f"{first} were stored (kept --retention {retention} days)",
                               exit_code=exc.exit_code) from None
            if isinstance(body, dict):
                imported += int(body.get("imported", 0))
                if body.get("kept_until"):
                    kept.append(str(body["kept_until"]))
    if imported != len(result.flows):
        raise CliError(f"{file}: the agent stored {imported} flows, not {len(result.flows)}: "
                       "check its log")
    if imported and not kept:
        raise CliError(f"{file}: the agent stored {imported} flows but does not say how long it "
                       "keeps them (it is older than this CLI): flows older than its store's "
                       "retention may be dropped; upgrade the agent and import again")
    # Every part is kept at least until the first part's date (parts are sent in order).
    until = f", kept until {min(kept)[:10]} (--retention {retention})" if kept else ""
    click.echo(f"{file}: imported {summary}{until}")


import_cmd = click.Command(
    "import", callback=_import,
    params=[click.Argument(["file"], metavar="FILE"),
            click.Option(["--dry-run"], is_flag=True,
                         help="Check the file and report; store nothing."),
            click.Option(["--retention"], default=str(DEFAULT_RETENTION_DAYS), callback=_days,
                         show_default=True, metavar="DAYS",
                         help="Keep the imported flows this many days from now, however old "
                              "they are (their own retention, not the store's)."),
            *client_params(60.0)],
    help=("Load Hubble JSON flow lines (Hubble's exporter file, or `hubble observe -o json` "
          "output; - for stdin) into the flow history, through the agent's API.\n\n"
          "The whole file is checked first: any bad line stops the import, with its line "
          "number, before anything is stored. Lost-event and node-status lines are skipped.\n\n"
          "Imported history is kept for --retention days from the import, whatever its age "
          "(a flow from 2022 is not dropped by the store's own retention)."),
    short_help="Import Hubble JSON lines into history.",
    context_settings={"help_option_names": ["-h", "--help"]})
