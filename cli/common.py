"""Options every client command shares: where the API is, the token, TLS and timeouts.

One decorator keeps `--server`, `--token`, `--tls-ca` and `--timeout` (and their
environment variables) identical across `observe`, `status`, `query`, `export`
and `import`, so a script that sets SPYGLASS_SERVER and SPYGLASS_TOKEN once
works with every command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from spyglass.api.credentials import is_loopback_url, read_local_token
from spyglass.cli.client import (
    DEFAULT_SERVER,
    SERVER_ENV,
    TLS_CA_ENV,
    TOKEN_ENV,
    ApiClient,
    CliError,
)

F = TypeVar("F", bound=Callable[..., Any])

CLIENT_KEYS = ("server", "token", "tls_ca", "timeout")


def client_params(timeout_s: float = 5.0) -> list[click.Option]:
    """The shared options as click parameters (for commands built without decorators)."""
    return [
        click.Option(["--server"], default=DEFAULT_SERVER, envvar=SERVER_ENV,
                     show_default=True, help=f"Spyglass API address (env {SERVER_ENV})."),
        click.Option(["--token"], default=None, envvar=TOKEN_ENV, show_envvar=False,
                     help=f"API token, sent as Authorization: Bearer (env {TOKEN_ENV})."),
        click.Option(["--tls-ca"], default=None, envvar=TLS_CA_ENV, metavar="FILE",
                     help=f"PEM CA or certificate to verify an https:// server (env "
                          f"{TLS_CA_ENV})."),
        click.Option(["--timeout"], type=click.FloatRange(min=0.1), default=timeout_s,
                     show_default=True, help="Seconds to wait for the API to answer."),
    ]


def client_options(timeout_s: float = 5.0) -> Callable[[F], F]:
    """Decorator form of `client_params`."""
    def decorate(fn: F) -> F:
        # What click.option does: params are memoised on the function, in reverse.
        memo: list[click.Parameter] = fn.__dict__.setdefault("__click_params__", [])
        memo.extend(reversed(client_params(timeout_s)))
        return fn
    return decorate


def make_client(kw: dict[str, Any]) -> ApiClient:
    """An ApiClient from the shared options in a command's keyword arguments.

    Without --token, a client of a loopback server sends the local credential that
    `spyglass up` wrote (api/credentials.py), so that changes work without typing a
    token; it never goes to another host.
    """
    token = kw.get("token") or None
    if token is None and is_loopback_url(kw["server"]):
        token = read_local_token()
    return ApiClient(kw["server"], timeout=kw["timeout"], token=token, tls_ca=kw.get("tls_ca"))


def parse_time_option(value: str | None, name: str) -> str | None:
    """Check --since/--until locally (same parser as the API) so typos fail at once."""
    if value is None:
        return None
    from spyglass.model.timespec import TimeSpecError, parse_timespec

    try:
        parse_timespec(value, what=name)
    except TimeSpecError as exc:
        raise CliError(f"--{exc}", exit_code=2) from None
    return value


def yaml_file_option(what: str) -> Callable[[F], F]:
    """`-f/--filename FILE` ('-' = stdin) for the commands that send YAML to the agent."""
    return click.option("-f", "--filename", "filename", required=True, type=click.File("r"),
                        help=f"YAML of {what} ('-' = stdin).")


def post_yaml(kw: dict[str, Any], path: str, file: Any) -> Any:
    """POST a YAML file to an API path; the file's name rides along for error messages."""
    with make_client(kw) as client:
        return client.post(path, content=file.read().encode(), content_type="application/yaml",
                           params=[("source", file.name)])
