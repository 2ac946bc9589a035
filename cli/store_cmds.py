"""`spyglass store ddl`: the schema as SQL, for a ClickHouse cluster an operator runs.

Spyglass creates and migrates its own tables on a single store; a cluster is
prepared by its operator, so this prints the same schema definition as
ReplicatedMergeTree tables plus Distributed tables over them. It only prints:
it opens no store and needs no agent.
"""

from __future__ import annotations

import click

from spyglass.cli.client import CliError


@click.group("store", context_settings={"help_option_names": ["-h", "--help"]})
def store_group() -> None:
    """The flow store's schema."""


@store_group.command("ddl")
@click.option("--cluster", default=None, metavar="NAME",
              help="ClickHouse cluster name: print ReplicatedMergeTree + Distributed DDL.")
@click.option("--database", default="spyglass", show_default=True)
@click.option("--retention", "retention_days", type=click.IntRange(min=1), default=7,
              show_default=True, help="Days flows are kept (TTL).")
def ddl_cmd(cluster: str | None, database: str, retention_days: int) -> None:
    """Print the CREATE statements of the tables, and of a read-only user for `query sql`.

    Give that user's address to `spyglass up --query-store`: users' SQL then runs
    with SELECT on flows and lost_events only, whatever the query tries.
    """
    from spyglass.storage.schema import ddl, query_user_ddl

    try:
        statements = ddl(cluster=cluster, database=database, retention_days=retention_days)
        user = query_user_ddl(database, cluster)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    click.echo("\n\n".join(s.rstrip().rstrip(";") + ";" for s in statements))
    click.echo("\n-- A read-only user for `query sql` (spyglass up --query-store "
               f"http://spyglass_query:PASSWORD@HOST:8123/{database}):")
    click.echo("\n".join(s + ";" for s in user))
