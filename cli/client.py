"""The CLI's only way to the flows: the Spyglass HTTP API and its WebSocket stream.

The CLI never opens the ring or the store itself (the agent owns them, and chDB
allows one process per store), so every command is a client. This module turns
every way a request can fail into one `CliError` whose text says what happened
and what to do, and which the commands let click print without a traceback.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import click
import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Data

DEFAULT_SERVER = "http://127.0.0.1:4245"
SERVER_ENV = "SPYGLASS_SERVER"
TOKEN_ENV = "SPYGLASS_TOKEN"
TLS_CA_ENV = "SPYGLASS_TLS_CA"
API = "/api/v1"


class CliError(click.ClickException):
    """A failure to show as one plain line on stderr (no "Error:" prefix, no traceback)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), err=True, file=file)


def normalize_server(server: str) -> str:
    """Accept `http(s)://host:port` or Hubble's bare `host:port`; refuse anything else."""
    text = server.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--server {server!r} is not an API address: use a URL like "
                       f"{DEFAULT_SERVER}", exit_code=2)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise CliError(f"--server {server!r} has a bad port: use a URL like {DEFAULT_SERVER}",
                       exit_code=2) from None
    return text


class ApiClient:
    """A thin, typed client of the Spyglass API (REST through httpx, stream through websockets)."""

    def __init__(self, server: str = DEFAULT_SERVER, *, timeout: float = 5.0,
                 token: str | None = None, tls_ca: str | None = None) -> None:
        self.server = normalize_server(server)
        self.timeout = timeout
        self.token = token or None
        self._ssl = _ssl_context(tls_ca) if self.server.startswith("https://") else None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.server, timeout=timeout, headers=headers,
                                  verify=self._ssl if self._ssl is not None else True)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- REST ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        body = self._get(f"{API}/status", [])
        if not isinstance(body, dict) or "max_flows" not in body:
            raise self._not_spyglass("a status without max_flows")
        return body

    def flows(self, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        return self.flows_page(params)[0]

    def flows_page(self, params: Sequence[tuple[str, str]]
                   ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of GET /flows and its `next` cursor (None: nothing more)."""
        body = self._get(f"{API}/flows", params)
        flows = body.get("flows") if isinstance(body, dict) else None
        if not isinstance(flows, list):
            raise self._not_spyglass("a reply without a flows list")
        nxt = body.get("next")
        return flows, str(nxt) if nxt else None

    def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """GET an API path (under /api/v1) and return its JSON body."""
        return self._get(f"{API}{path}", params)

    def post(self, path: str, *, json_body: Any = None, content: bytes | None = None,
             params: Sequence[tuple[str, str]] = (), content_type: str | None = None) -> Any:
        """POST to an API path (under /api/v1) and return its JSON body."""
        headers = {"Content-Type": content_type} if content_type else None
        return self._request("POST", f"{API}{path}", params, json_body=json_body,
                             content=content, headers=headers)

    def delete(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """DELETE an API path (under /api/v1) and return its JSON body."""
        return self._request("DELETE", f"{API}{path}", params)

    def _get(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        return self._request("GET", path, params)

    def _request(self, method: str, path: str, params: Sequence[tuple[str, str]], *,
                 json_body: Any = None, content: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        try:
            resp = self._http.request(method, path, params=list(params), json=json_body,
                                      content=content, headers=headers)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc):
                raise CliError(f"cannot verify the TLS certificate of {self.server} ({exc}): "
                               f"pass its CA with --tls-ca FILE (env {TLS_CA_ENV})") from None
            raise self.unreachable() from None
        except httpx.TimeoutException:
            raise CliError(f"the Spyglass API at {self.server} did not answer within "
                           f"{self.timeout:g}s: is the agent overloaded or stuck? "
                           "(see `spyglass up`'s output)") from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to the Spyglass API at {self.server} failed: {exc}"
                           ) from None
        try:
            body = resp.json()
        except ValueError:
            raise self._not_spyglass(f"HTTP {resp.status_code} that is not JSON") from None
        if resp.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            if not message:
                raise self._not_spyglass(f"HTTP {resp.status_code}")
            if resp.status_code == 401 and not self.token:
                message = f"{message}; this API needs a token: pass --token or set {TOKEN_ENV}"
            raise CliError(str(message), exit_code=2 if resp.status_code == 400 else 1)
        return body

    # -- stream ----------------------------------------------------------------

    def stream_url(self, params: Sequence[tuple[str, str]]) -> str:
        scheme = "wss" if self.server.startswith("https://") else "ws"
        base = scheme + self.server[self.server.index("://"):]
        query = urlencode(list(params))
        return f"{base}{API}/flows/stream" + (f"?{query}" if query else "")

    def stream(self, params: Sequence[tuple[str, str]],
               on_idle: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
        """Yield GetFlowsResponse dicts until the server ends the stream.

        `on_idle` runs whenever no message is waiting, before the stream blocks: the
        place to flush output once per burst instead of once per flow (a write per
        flow cost `observe -f` more than the rest of its work under a flood).

        A normal close (server shutdown) raises `CliError` with exit code 0 so
        the command can say why it stopped; a refused request raises the
        server's message with exit code 2.
        """
        url = self.stream_url(params)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = connect(url, open_timeout=self.timeout, close_timeout=1, max_size=2**24,
                         additional_headers=headers, ssl=self._ssl)
        except (ConnectionRefusedError, TimeoutError, OSError) as exc:
            if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
                raise self.unreachable() from None
            raise CliError(f"cannot open the flow stream at {url}: {exc}") from None
        except InvalidURI:
            raise CliError(f"bad stream address {url}: check --server", exit_code=2) from None
        except InvalidHandshake as exc:
            raise self._not_spyglass(f"a refused WebSocket handshake ({exc})") from None
        with ws:
            try:
                for message in _messages(ws, on_idle):
                    try:
                        body = json.loads(message)
                    except ValueError:
                        raise self._not_spyglass("a stream message that is not JSON") from None
                    if isinstance(body, dict) and body.get("ok") is False:
                        status = int(body.get("status", 400))
                        message = str(body.get("error", "the server refused the stream"))
                        if status == 401 and not self.token:
                            message += f"; this API needs a token: pass --token or set {TOKEN_ENV}"
                        raise CliError(message, exit_code=2 if status == 400 else 1)
                    yield body
            except ConnectionClosed:
                pass
            code, reason = ws.close_code, ws.close_reason
        if code in (1000, 1001, 1012):
            raise CliError(f"the Spyglass API closed the stream ({reason or 'shutting down'})",
                           exit_code=0)
        raise CliError(f"the flow stream from {self.server} broke (close code {code}"
                       f"{': ' + reason if reason else ''}); is the agent still running?")

    # -- errors ----------------------------------------------------------------

    def unreachable(self) -> CliError:
        return CliError(f"cannot reach the Spyglass API at {self.server}: is `spyglass up` "
                        "running? (use --server to point elsewhere)")

    def _not_spyglass(self, what: str) -> CliError:
        return CliError(f"{self.server} does not look like a Spyglass API (got {what}): "
                        "check --server")


def _ssl_context(ca: str | None) -> ssl.SSLContext:
    """Verify the server against `ca` (a PEM file) or the system's CAs."""
    if ca is None:
        return ssl.create_default_context()
    if not os.path.isfile(ca):
        raise CliError(f"--tls-ca {ca}: no such file; give the PEM certificate (or CA) the "
                       "server was started with", exit_code=2)
    try:
        return ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise CliError(f"--tls-ca {ca} is not a PEM certificate ({exc})", exit_code=2) from None


def _messages(ws: ClientConnection, on_idle: Callable[[], None] | None) -> Iterator[Data]:
    """The stream's messages; `on_idle` is called each time none is waiting."""
    while True:
        try:
            yield ws.recv(timeout=0)
        except TimeoutError:
            if on_idle is not None:
                on_idle()
            yield ws.recv()
