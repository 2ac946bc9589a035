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
from collections.abc import Sequence
from typing import Any

import click

from spyglass.cli.client import DEFAULT_SERVER, SERVER_ENV, ApiClient, CliError
from spyglass.cli.printer import COLOR_MODES, OUTPUTS, TIME_FORMATS, Printer
from spyglass.collector.filters import (
    FILTER_FLAGS,
    FilterError,
    FilterSet,
    build_from_flags,
)
from spyglass.collector.flow import event_from_response

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
                       "live stream with a backlog", exit_code=2)
    params = list(filters.to_params())
    printer = Printer(kw["output"], color=kw["color"], time_format=kw["time_format"],
                      print_node_name=kw["print_node_name"],
                      print_policy_names=kw["print_policy_names"], follow=kw["follow"])
    with ApiClient(kw["server"], timeout=kw["timeout"]) as client:
        try:
            if kw["follow"]:
                if kw["last"]:
                    params.append(("last", str(kw["last"])))
                for body in client.stream(params):
                    _print(printer, body)
                    sys.stdout.flush()
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


def _print(printer: Printer, body: dict[str, Any]) -> None:
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
        click.Option(["--server"], default=DEFAULT_SERVER, envvar=SERVER_ENV,
                     show_default=True, help=f"Spyglass API address (env {SERVER_ENV})."),
        click.Option(["--last"], type=click.IntRange(min=0), default=None,
                     help="Print the newest N flows (default 20; with --follow, 0)."),
        click.Option(["--first"], type=click.IntRange(min=0), default=None,
                     help="Print the oldest N flows still held."),
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
        click.Option(["--print-raw-filters"], is_flag=True,
                     help="Print the filters as allowlist/denylist JSON and exit."),
        click.Option(["--timeout"], type=click.FloatRange(min=0.1), default=5.0,
                     show_default=True, help="Seconds to wait for the API to answer."),
        *filter_options(),
    ]
    return OrderedFilterCommand(
        "observe",
        callback=_observe,
        params=params,
        help=("Print flows from the Spyglass API, like `hubble observe`.\n\n"
              "Without --follow, prints the newest 20 flows and exits. Filter flags are "
              "ANDed within a side and apply in the order given; --not negates the flag "
              "after it, e.g. `spyglass observe --from-pod shop/ --not --verdict FORWARDED`."),
        short_help="Print flows (recent or live).",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


observe_cmd = _build_command()
