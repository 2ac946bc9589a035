"""Who may talk to the API: a bearer token, required as soon as one is set.

Flows name pods, addresses and policies, so an API reachable from other hosts
must not be open: `check_listen_security` refuses a non-loopback `--listen`
without a token before anything starts. With a token, every `/api/` request
(HTTP and WebSocket) and `/metrics` (unless `metrics_public`) must carry it.
The OpenAPI page and the static UI stay open: they hold no flow data, and the
UI needs to load before it can ask for the token. Changes need a credential
always (`AuthConfig.may_change`); `guard.RequestGuard` enforces both rules.

Browsers cannot set headers on a WebSocket, so a stream also accepts the token
as `?token=` or through the subprotocol trick: offer the protocols
`["spyglass", "spyglass.bearer.<token>"]` and the server selects `spyglass`.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass

from fastapi import Depends, Request

from spyglass.api.errors import ApiError

TOKEN_ENV = "SPYGLASS_TOKEN"
SUBPROTOCOL = "spyglass"
SUBPROTOCOL_TOKEN_PREFIX = "spyglass.bearer."


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
    """Who may read and who may change.

    `token` (--token): when set, every read needs it too. `local_token`: the random
    credential `spyglass up` writes to /run/spyglass/token for the CLI on this host;
    it is good for everything `token` is. Changes always need one of the two, even
    on loopback, so that no web page can make one. Tokens compare in constant time.
    """

    token: str | None = None
    metrics_public: bool = False
    local_token: str | None = None

    def allows(self, presented: str | None) -> bool:
        """May this caller read? Anyone when no token is set."""
        return self.token is None or self._known(presented)

    def may_change(self, presented: str | None) -> bool:
        """May this caller change policy, pods, services or history?"""
        return self._known(presented)

    def _known(self, presented: str | None) -> bool:
        if presented is None:
            return False
        given = presented.encode()
        ok = False
        for expected in (self.token, self.local_token):
            if expected is not None:
                ok |= hmac.compare_digest(given, expected.encode())
        return ok

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
NEEDS_CREDENTIAL = ("changes need a credential, even on loopback: the CLI sends the local one "
                    "from /run/spyglass/token (root only) by itself; otherwise send "
                    f"`Authorization: Bearer <token>` (--token or {TOKEN_ENV})")


def require_credential(request: Request) -> None:
    """FastAPI dependency for routes that change state (policy, lab, services, import).

    `guard.RequestGuard` already refuses writes without a credential; this keeps the
    rule on the route itself, should a route ever be mounted behind another app.
    """
    config: AuthConfig = request.app.state.auth
    if not config.may_change(bearer(request.headers.get("authorization"))):
        raise ApiError(401, NEEDS_CREDENTIAL)


#: The dependency every route that changes something carries.
WRITE = Depends(require_credential)
