"""`spyglass query …`: history aggregations and read-only SQL, as DataFrames.

The API answers with typed tables; this rebuilds the pandas DataFrame (time
columns as UTC timestamps) so that every output comes from one object:
`-o table` (rich), `json` (one array of records), `csv`, or `--out FILE.parquet`
for analysis elsewhere. Like every client command it never opens the store.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from typing import Any

import click
import pandas as pd
from rich.console import Console
from rich.table import Table

from spyglass.cli.client import CliError
from spyglass.cli.common import client_options, make_client, parse_time_option
from spyglass.cli.observe import FILTER_ITEMS, OrderedFilterCommand, filter_options
from spyglass.collector.filters import FilterError, build_from_flags
from spyglass.model.tables import table_to_frame

OUTPUTS = ("table", "json", "csv")


def render(df: pd.DataFrame, output: str, *, width: int | None = None) -> str:
    """The DataFrame as text in `output` form (tested exactly, so no colour)."""
    if output == "json":
        text = df.to_json(orient="records", date_format="iso", date_unit="ns")
        return json.dumps(json.loads(text), indent=2) if text else "[]"
    if output == "csv":
        return str(df.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")).rstrip("\n")
    if df.empty:
        return "(no rows)"
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(
            df[col])
        table.add_column(str(col).upper(), justify="right" if numeric else "left")
    bare = [is_identifier(str(c)) for c in df.columns]
    for row in df.itertuples(index=False, name=None):
        table.add_row(*(_cell(v, b) for v, b in zip(row, bare, strict=True)))
    console = Console(width=width or 200, color_system=None, record=True, file=io.StringIO())
    console.print(table)
    return "\n".join(line.rstrip() for line in console.export_text().rstrip("\n").split("\n"))


#: Column names (or their last `_` word) that hold identifiers, not amounts: printed as
#: bare numbers (port 8080, identity 16777217, drop code 133), never with separators.
IDENTIFIER_WORDS = frozenset({"port", "identity", "code", "type", "subtype", "id", "index",
                              "ifindex", "cpu", "version", "proto", "protocol", "uid", "pid"})


def is_identifier(column: str) -> bool:
    """Does this column hold identifiers (ports, identities, codes) rather than counts?"""
    name = column.lower()
    return name in IDENTIFIER_WORDS or name.rsplit("_", 1)[-1] in IDENTIFIER_WORDS


def _cell(v: Any, identifier: bool = False) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NaT:
        return ""
    if isinstance(v, pd.Timestamp):
        return str(v.strftime("%Y-%m-%d %H:%M:%S.%f"))[:-3]
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v) if identifier else f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def emit(df: pd.DataFrame, output: str, out: str | None) -> None:
    """Print, or write Parquet to `out` (and say so on stderr)."""
    if out:
        if not out.endswith(".parquet"):
            raise CliError(f"--out {out}: only Parquet is written to files; name it "
                           "something.parquet (or use -o csv > file.csv)", exit_code=2)
        try:
            df.to_parquet(out, index=False)
        except OSError as exc:
            raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
        click.echo(f"wrote {len(df)} rows to {out}", err=True)
        return
    width = None if sys.stdout.isatty() else 200
    click.echo(render(df, output, width=width))


def _range_params(kw: dict[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name in ("since", "until"):
        value = parse_time_option(kw.get(name), name)
        if value is not None:
            params.append((name, value))
    return params


def _run(kw: dict[str, Any], path: str, params: list[tuple[str, str]]) -> None:
    with make_client(kw) as client:
        body = client.get(path, params)
    if not isinstance(body, dict) or "columns" not in body:
        raise CliError(f"{kw['server']} did not answer {path} with a table; is it a Spyglass "
                       "API of the same version?")
    emit(table_to_frame(body), kw["output"], kw["out"])


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--out", default=None, metavar="FILE.parquet",
                      help="Write the result to a Parquet file instead of printing it.")(fn)
    fn = click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table",
                      show_default=True, help="How to print the result.")(fn)
    fn = client_options(timeout_s=30.0)(fn)
    return fn


def _ranged(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--until", default=None, metavar="TIME",
                      help="End of the range (exclusive); default now.")(fn)
    fn = click.option("--since", default="1h", show_default=True, metavar="TIME",
                      help="Start of the range: 5m, 1h30m, 2d ago or RFC3339.")(fn)
    return fn


_NS = click.option("-n", "--namespace", "namespaces", multiple=True, metavar="NS",
                   help="Only these namespaces (repeat for several).")


@click.group("query", context_settings={"help_option_names": ["-h", "--help"]})
def query_group() -> None:
    """Ask the flow history: service map, drops, top talkers, counts over time, SQL."""


@query_group.command("service-map")
@_ranged
@_NS
@_common
def service_map_cmd(namespaces: tuple[str, ...], **kw: Any) -> None:
    """Edges between workloads with flow counts, verdicts, bytes and first/last seen."""
    _run(kw, "/service-map", _range_params(kw) + [("namespace", ns) for ns in namespaces])


@query_group.command("drops")
@_ranged
@_NS
@click.option("--by", type=click.Choice(["reason", "policy", "pod_pair"]), default="reason",
              show_default=True, help="Summarise drops by this.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@_common
def drops_cmd(namespaces: tuple[str, ...], by: str, limit: int, **kw: Any) -> None:
    """Dropped flows by reason, by denying policy, or by pod pair."""
    _run(kw, "/drops", _range_params(kw) + [("by", by), ("limit", str(limit))]
         + [("namespace", ns) for ns in namespaces])


@query_group.command("top")
@_ranged
@click.option("--by", type=click.Choice(["source", "destination", "pair"]), default="source",
              show_default=True, help="Rank sources, destinations or pairs.")
@click.option("--metric", type=click.Choice(["flows", "bytes"]), default="flows",
              show_default=True)
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@_common
def top_cmd(by: str, metric: str, limit: int, **kw: Any) -> None:
    """Top talkers by flows or bytes."""
    _run(kw, "/top", _range_params(kw) + [("by", by), ("metric", metric),
                                          ("limit", str(limit))])


def _timeseries(**kw: Any) -> None:
    ctx = click.get_current_context()
    try:
        filters = build_from_flags(ctx.meta.get(FILTER_ITEMS, []))
    except FilterError as exc:
        raise CliError(str(exc), exit_code=2) from None
    params = _range_params(kw) + [("bucket", kw["bucket"])] + filters.to_params()
    _run(kw, "/timeseries", params)


def _timeseries_command() -> click.Command:
    cmd = OrderedFilterCommand(
        "timeseries", callback=_timeseries,
        help="Flow counts per time bucket (and by verdict); takes observe's filter flags.",
        context_settings={"help_option_names": ["-h", "--help"]},
        params=[
            click.Option(["--since"], default="1h", show_default=True, metavar="TIME",
                         help="Start of the range: 5m, 1h30m, 2d ago or RFC3339."),
            click.Option(["--until"], default=None, metavar="TIME",
                         help="End of the range (exclusive); default now."),
            click.Option(["--bucket"], default="1m", show_default=True,
                         help="Bucket width: 10s, 1m, 1h…"),
            click.Option(["-o", "--output"], type=click.Choice(OUTPUTS), default="table",
                         show_default=True, help="How to print the result."),
            click.Option(["--out"], default=None, metavar="FILE.parquet",
                         help="Write the result to a Parquet file instead of printing it."),
        ])
    from spyglass.cli.common import client_params

    cmd.params += client_params(30.0) + filter_options()
    return cmd


query_group.add_command(_timeseries_command())


@query_group.command("sql")
@click.argument("sql")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="Most rows returned.")
@click.option("--query-timeout", "query_timeout", type=click.FloatRange(0.1, 300),
              default=10.0, show_default=True, help="Seconds the query may run.")
@_common
def sql_cmd(sql: str, limit: int, query_timeout: float, **kw: Any) -> None:
    """Run one read-only SELECT on the flows tables (flows, lost_events).

    Example: spyglass query sql "SELECT verdict, count() AS n FROM flows GROUP BY verdict"
    """
    with make_client(kw) as client:
        body = client.post("/query/sql", json_body={"sql": sql, "limit": limit,
                                                     "timeout_s": query_timeout})
    emit(table_to_frame(body), kw["output"], kw["out"])
