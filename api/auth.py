"""Who may talk to the API: a bearer token, required as soon as one is set.

Flows name pods, addresses and policies, so an API reachable from other hosts
must not be open: `check_listen_security` refuses a non-loopback `--listen`
without a token before anything starts. With a token, every `/api/` request
(HTTP and WebSocket) and `/metrics` (unless `metrics_public`) must carry it.
The OpenAPI page and the static UI stay open: they hold no flow data, and the
UI needs to load before it can ask for the token.

Browsers cannot set headers on a WebSocket, so a stream also accepts the token
as `?token=` or through the subprotocol trick: offer the protocols
`["spyglass", "spyglass.bearer.<token>"]` and the server selects `spyglass`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from spyglass.api.errors import ApiError, error_body

TOKEN_ENV = "SPYGLASS_TOKEN"
SUBPROTOCOL = "spyglass"
SUBPROTOCOL_TOKEN_PREFIX = "spyglass.bearer."

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ListenSecurityError(ValueError):
    """The API would be reachable from other hosts without a token."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` only; names and wildcards count as exposed."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_security(host: str, token: str | None) -> None:
    """Raise unless `host` is loopback or a token is set (the agent calls this before `up`)."""
    if token:
        if len(token) < 16:
            raise ListenSecurityError(
                "the API token is shorter than 16 characters; use a long random one, e.g. "
                "`export SPYGLASS_TOKEN=$(openssl rand -hex 24)`")
        return
    if not is_loopback(host):
        raise ListenSecurityError(
            f"refusing to listen on {host} without a token: flows would be readable from "
            f"other hosts. Set one with --token or {TOKEN_ENV} (e.g. `export {TOKEN_ENV}="
            "$(openssl rand -hex 24)`), or listen on 127.0.0.1")


def token_from_env(token: str | None) -> str | None:
    """The explicit token, else `SPYGLASS_TOKEN`, else None (an empty value means none)."""
    value = token if token is not None else os.environ.get(TOKEN_ENV)
    return value or None


@dataclass(frozen=True)
class AuthConfig:
    """The API's access rule; `token=None` means open (loopback only, see above)."""

    token: str | None = None
    metrics_public: bool = False

    def allows(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(),
                                                             self.token.encode())

    def protects(self, path: str) -> bool:
        if self.token is None:
            return False
        if path == "/metrics" or path.startswith("/metrics/"):
            return not self.metrics_public
        return path.startswith("/api/")


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def ws_token(headers: dict[str, str], query: dict[str, str]) -> tuple[str | None, bool]:
    """The token a WebSocket presents, and whether it came through the subprotocol trick."""
    token = bearer(headers.get("authorization"))
    if token:
        return token, False
    protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    for proto in protocols:
        if proto.startswith(SUBPROTOCOL_TOKEN_PREFIX):
            return proto[len(SUBPROTOCOL_TOKEN_PREFIX):], True
    return query.get("token") or None, False


UNAUTHORIZED = ("missing or wrong API token: send `Authorization: Bearer <token>` "
                f"(the CLI's --token or {TOKEN_ENV})")


class AuthMiddleware:
    """Checks HTTP requests before routing, so a 401 never depends on a route's own code.

    WebSockets are checked by the stream handler instead: a refusal there is an
    error envelope and close 1008, which clients can read, rather than a bare
    handshake failure.
    """

    def __init__(self, app: ASGIApp, config: AuthConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.config.protects(scope.get("path", "")):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            if not self.config.allows(bearer(headers.get("authorization"))):
                await _send_401(send)
                return
        await self.app(scope, receive, send)


async def _send_401(send: Send) -> None:
    body = json.dumps(error_body(401, UNAUTHORIZED)).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer realm="spyglass"')]})
    await send({"type": "http.response.body", "body": body})


def require_token(request: Request) -> None:
    """FastAPI dependency for write routes (policy apply/delete, import).

    The middleware already guards `/api/`; this makes the rule explicit on the
    routes that change state, and keeps it if a route ever moves elsewhere.
    """
    config: AuthConfig = request.app.state.auth
    if config.token is not None and not config.allows(
            bearer(request.headers.get("authorization"))):
        raise ApiError(401, UNAUTHORIZED)
