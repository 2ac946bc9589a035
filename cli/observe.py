"""`spyglass observe`: print recent flows, or follow them live, like `hubble observe`.

Filters are built here, locally, before any request: a typo fails at once with
the filter's own message (exit code 2), and the server gets the validated
filters as query parameters. Hubble's `--not` and left/right semantics depend
on the ORDER of the flags on the command line, which click's per-option values
lose, so `OrderedFilterCommand` records every filter flag occurrence in order.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click

from spyglass.cli.client import CliError
from spyglass.cli.common import client_params, make_client, parse_time_option
from spyglass.cli.printer import COLOR_MODES, OUTPUTS, TIME_FORMATS, Printer
from spyglass.collector.filters import (
    FILTER_FLAGS,
    FilterError,
    FilterSet,
    build_from_flags,
)
from spyglass.model.flow import event_from_response

FILTER_ITEMS = "spyglass.filter_items"
_DEST_PREFIX = "filter_"
#: Short options the command already uses for itself; a filter may not take them.
_OWN_SHORTS = {"-f", "-o", "-h"}


class FilterOption(click.Option):
    """A click option generated from a `FilterFlag`; knows its filter name."""

    def __init__(self, *args: Any, filter_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filter_name = filter_name


class OrderedFilterCommand(click.Command):
    """Records the filter flags in command-line order in `ctx.meta[FILTER_ITEMS]`.

    click's parser already keeps the order of every option occurrence (it uses
    it to process parameters); parsing once more here, without side effects,
    pairs that order with each flag's values.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not ctx.resilient_parsing:
            parser = self.make_parser(ctx)
            opts, _, order = parser.parse_args(args=list(args))
            ctx.meta[FILTER_ITEMS] = ordered_filter_items(opts, order)
        return super().parse_args(ctx, args)


def ordered_filter_items(opts: dict[str, Any], order: Sequence[Any]
                         ) -> list[tuple[str, str | None]]:
    """Pair each filter option occurrence (in `order`) with its next value."""
    used: dict[str, int] = {}
    items: list[tuple[str, str | None]] = []
    for param in order:
        if not isinstance(param, FilterOption) or param.name is None:
            continue
        index = used.get(param.name, 0)
        used[param.name] = index + 1
        values = opts.get(param.name) or []
        value = values[index] if index < len(values) else None
        items.append((param.filter_name, None if param.is_flag else str(value)))
    return items


def filter_options() -> list[click.Option]:
    """One click option per FILTER_FLAGS entry; help texts come from the filter package."""
    options: list[click.Option] = []
    for flag in FILTER_FLAGS:
        decls = [f"--{flag.name}"]
        short = f"-{flag.short.lstrip('-')}" if flag.short else None
        if short and short not in _OWN_SHORTS:
            decls.append(short)
        dest = _DEST_PREFIX + flag.name.replace("-", "_")
        if flag.takes_value:
            options.append(FilterOption([*decls, dest], filter_name=flag.name, multiple=True,
                                        metavar="VALUE", help=flag.help))
        else:
            options.append(FilterOption([*decls, dest], filter_name=flag.name, multiple=True,
                                        is_flag=True, help=flag.help))
    return options


def raw_filters_text(fs: FilterSet) -> str:
    """`--print-raw-filters`: Hubble's allowlist/denylist of JSON FlowFilters."""
    lines = [f"# {fs.describe() if not fs.empty else 'no filters: every flow'}", "allowlist:"]
    lines += [f"- {json.dumps(f.to_dict(), sort_keys=True)}" for f in fs.allow]
    lines.append("denylist:")
    lines += [f"- {json.dumps(f.to_dict(), sort_keys=True)}" for f in fs.deny]
    return "\n".join(lines)


def _observe(**kw: Any) -> None:
    ctx = click.get_current_context()
    try:
        filters = build_from_flags(ctx.meta.get(FILTER_ITEMS, []))
    except FilterError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if kw["print_raw_filters"]:
        click.echo(raw_filters_text(filters))
        return
    if kw["last"] is not None and kw["first"] is not None:
        raise CliError("--last and --first cannot be combined: pick the newest or the oldest "
                       "flows", exit_code=2)
    if kw["first"] is not None and kw["follow"]:
        raise CliError("--first cannot be combined with --follow: use --last N to start a "
                       "live stream with a backlog, or --since T to start from a time",
                       exit_code=2)
    since = parse_time_option(kw["since"], "since")
    until = parse_time_option(kw["until"], "until")
    if kw["follow"] and until is not None:
        raise CliError("--until cannot be combined with --follow: a live stream has no end; "
                       "drop --follow to read a fixed range", exit_code=2)
    if kw["follow"] and since is not None and kw["last"] is not None:
        raise CliError("--since and --last cannot be combined with --follow: --since T "
                       "already prints every flow from T on", exit_code=2)
    params = list(filters.to_params())
    printer = Printer(kw["output"], color=kw["color"], time_format=kw["time_format"],
                      print_node_name=kw["print_node_name"],
                      print_policy_names=kw["print_policy_names"], follow=kw["follow"],
                      spyglass_fields=kw["with_spyglass_fields"])
    with make_client(kw) as client:
        try:
            if kw["follow"]:
                if since is not None:
                    params.append(("since", since))
                elif kw["last"]:
                    params.append(("last", str(kw["last"])))
                for body in client.stream(params, on_idle=sys.stdout.flush):
                    _print(printer, body)
            elif since is not None or until is not None:
                for body in history(client, params, since, until, kw["first"], kw["last"]):
                    _print(printer, body)
            else:
                if kw["first"] is not None:
                    params.append(("first", str(kw["first"])))
                else:
                    params.append(("last", str(20 if kw["last"] is None else kw["last"])))
                for body in client.flows(params):
                    _print(printer, body)
            printer.close()
        except KeyboardInterrupt:
            printer.close()  # Ctrl-C ends a follow: that is the normal way out
        except CliError:
            printer.close()
            raise
        except BrokenPipeError:
            # `observe | head`: the reader left; stop quietly, like other Unix tools.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


#: What one history request asks for (the API's most per page).
PAGE = 10000


def history(client: Any, filter_params: list[tuple[str, str]], since: str | None,
            until: str | None, first: int | None, last: int | None
            ) -> Iterator[dict[str, Any]]:
    """Flows of a time range, oldest first, paging through the API's cursor.

    `--first N`/`--last N` bound the count; without them every flow in the range
    is printed. `--last` pages backwards and prints once it has all N, so the
    output is still oldest first.
    """
    base = list(filter_params)
    if since is not None:
        base.append(("since", since))
    if until is not None:
        base.append(("until", until))
    if last is not None:
        kept: list[dict[str, Any]] = []
        for page in _pages(client, base, "last", last):
            kept[:0] = page
        yield from kept
        return
    for page in _pages(client, base, "first", first):
        yield from page


def _pages(client: Any, base: list[tuple[str, str]], selector: str, total: int | None
           ) -> Iterator[list[dict[str, Any]]]:
    """Pages until `total` flows (None: all) or the range is exhausted."""
    got, cursor = 0, None
    while total is None or got < total:
        n = PAGE if total is None else min(PAGE, total - got)
        params = [*base, (selector, str(n))]
        if cursor is not None:
            params.append(("after", cursor))
        flows, cursor = client.flows_page(params)
        got += len(flows)
        if flows:
            yield flows
        if cursor is None or not flows:
            return


def _print(printer: Printer, body: dict[str, Any]) -> None:
    if printer.output == "json":
        # The server's message is already the GetFlowsResponse to print: re-reading it
        # into a Flow only to write it back cost most of `observe -o json`'s time.
        printer.print_response(body)
        return
    try:
        ev = event_from_response(body)
    except (ValueError, KeyError, TypeError) as exc:
        click.echo(f"skipping an event this CLI cannot read ({type(exc).__name__}: {exc}); "
                   "are the CLI and the agent the same version?", err=True)
        return
    node = body.get("node_name")
    printer.print(ev, node_name=str(node) if node is not None else None)


def _build_command() -> click.Command:
    params: list[click.Parameter] = [
        click.Option(["--last"], type=click.IntRange(min=0), default=None,
                     help="Print the newest N flows (default 20; with --follow, 0; with "
                          "--since/--until, of that range)."),
        click.Option(["--first"], type=click.IntRange(min=0), default=None,
                     help="Print the oldest N flows still held (or of the --since range)."),
        click.Option(["--since"], default=None, metavar="TIME",
                     help="Read history from TIME: 5m, 1h30m, 2d ago or RFC3339. With "
                          "--follow, history then live flows, no gap or repeat."),
        click.Option(["--until"], default=None, metavar="TIME",
                     help="End of the history range (exclusive), same forms as --since."),
        click.Option(["-f", "--follow"], is_flag=True,
                     help="Keep printing new flows until Ctrl-C."),
        click.Option(["-o", "--output"], type=click.Choice(OUTPUTS), default="compact",
                     show_default=True, help="compact | dict | json (= jsonpb) | table."),
        click.Option(["--color"], type=click.Choice(COLOR_MODES), default="auto",
                     show_default=True, help="Colour the output."),
        click.Option(["--time-format"], type=click.Choice(TIME_FORMATS), default="StampMilli",
                     show_default=True, help="How timestamps are printed (UTC)."),
        click.Option(["--print-node-name"], is_flag=True, help="Print the node of each flow."),
        click.Option(["--print-policy-names"], is_flag=True,
                     help="Print the policies that allowed or denied each flow."),
        click.Option(["--with-spyglass-fields"], is_flag=True,
                     help="With -o json, keep what Spyglass adds to Hubble's schema (packets, "
                          "bytes, service_address, its own loss sources by name); "
                          "without it, -o json is Hubble's GetFlowsResponse exactly."),
        click.Option(["--print-raw-filters"], is_flag=True,
                     help="Print the filters as allowlist/denylist JSON and exit."),
        *client_params(),
        *filter_options(),
    ]
    return OrderedFilterCommand(
        "observe",
        callback=_observe,
        params=params,
        help=("Print flows from the Spyglass API, like `hubble observe`.\n\n"
              "Without --follow, prints the newest 20 flows and exits; with --since/--until, "
              "every flow of that range from the store (or --first/--last N of it). Filter "
              "flags are ANDed within a side and apply in the order given; --not negates the flag "
              "after it, e.g. `spyglass observe --from-pod shop/ --not --verdict FORWARDED`."),
        short_help="Print flows (recent or live).",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


observe_cmd = _build_command()
