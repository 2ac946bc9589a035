"""Checks every HTTP and WebSocket request passes before any route sees it.

The agent runs as root beside the cluster's traffic, and a browser on the same
machine runs pages from anywhere. Each check closes one door:

1. **Host** must be a name or address this server answers to (loopback names, the
   `--listen` address, `--allowed-host` names; with a wildcard listen, the host's
   own addresses). DNS rebinding gives an attacker's page our address under the
   attacker's name: the Host header still carries that name, and is refused (421).
2. **Origin**, when a browser sends one, must be this server's own. That refuses
   WebSockets opened by foreign pages, which browsers do not restrict, and any
   cross-origin write (403).
3. **Fetch metadata**: a browser marks requests a foreign page makes
   (`Sec-Fetch-Site: cross-site|same-site`), even those without Origin (`<img>`,
   forms); the API and /metrics refuse them (403).
4. **Reads** need the token when one is set (401), as before. (A WebSocket checks its
   token in the stream handler, which can answer with a readable envelope.)
5. **Writes** (any method but GET/HEAD/OPTIONS, except read-only POSTs) need a
   credential even on loopback: the token, or the local one that `spyglass up`
   writes for the CLI (401). A browser cannot attach either without a CORS
   preflight, which is never granted. A write sent as `text/plain`, a form or
   multipart (what a page can send without preflight) is refused first (415).
6. **Bodies** have a size limit per path (413, naming it; checked on
   Content-Length and while streaming), and JSON bodies a nesting limit (400).

Refusals never echo the request's Host or Origin back.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from spyglass.api.auth import NEEDS_CREDENTIAL, UNAUTHORIZED, AuthConfig, bearer
from spyglass.api.errors import error_body
from spyglass.model.safeload import MAX_DEPTH, json_depth

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The default body limit, and the larger ones of paths that take files.
MAX_BODY = 1 << 20
BODY_LIMITS = {"/api/v1/flows/import": 64 << 20}
#: POSTs that only read (their body is a query, not a change).
READ_ONLY_POSTS = frozenset({"/api/v1/query/sql"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What a page may send cross-origin without a CORS preflight (the Fetch standard).
SIMPLE_CONTENT_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded",
                                  "multipart/form-data"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})

BAD_HOST = ("this server does not answer to the host name this request used (a guard "
            "against DNS rebinding); reach it as 127.0.0.1 or localhost, or start it with "
            "--allowed-host NAME")
FOREIGN_ORIGIN = ("cross-origin requests are refused: a page from another origin may not "
                  "use this API; open the dashboard from this server itself")
CROSS_SITE = ("requests made by pages of other sites are refused; open the dashboard from "
              "this server itself")


def _local_addresses() -> frozenset[str]:
    """Every address of this host's interfaces (for a wildcard --listen)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return frozenset(str(ipaddress.ip_address(a.get_attr("IFA_ADDRESS")))
                         for a in ipr.get_addr() if a.get_attr("IFA_ADDRESS"))


@dataclass
class HostPolicy:
    """The names and addresses this server answers to."""

    listen_host: str = "127.0.0.1"
    allowed_hosts: Iterable[str] = ()
    addresses: Callable[[], frozenset[str]] = _local_addresses
    refresh_s: float = 10.0
    _names: frozenset[str] = field(init=False, default=frozenset())
    _cached: frozenset[str] = field(init=False, default=frozenset())
    _at: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        names = {_norm(h) for h in self.allowed_hosts if h.strip()}
        if self.listen_host.strip() not in _WILDCARDS:
            names.add(_norm(self.listen_host))
        self._names = frozenset(names)

    @property
    def wildcard(self) -> bool:
        return self.listen_host.strip() in _WILDCARDS

    def allows(self, host: str) -> bool:
        """Whether a Host header's name (port stripped, any case) is one of ours."""
        name = _norm(host)
        if not name:
            return False
        if name in LOOPBACK_NAMES or name in self._names:
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False
        return ip.is_loopback or (self.wildcard and str(ip) in self._local())

    def _local(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._at > self.refresh_s:
            try:
                self._cached = self.addresses()
            except OSError:
                pass  # keep what we had; loopback and named hosts still work
            self._at = now
        return self._cached


def split_host(value: str) -> tuple[str, int | None]:
    """`name:port`, `[v6]:port` or `name` -> (name, port or None); ('', None) when malformed."""
    text = value.strip()
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        return "", None
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return "", None
    return (parts.hostname or ""), port


def _norm(host: str) -> str:
    name, _ = split_host(host) if not _is_bare_v6(host) else (host.strip("[] "), None)
    return name.lower().rstrip(".")


def _is_bare_v6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host.strip().strip("[]"))
    except ValueError:
        return False
    return ":" in host and not host.strip().startswith("[")


def own_origin(origin: str, host_header: str, tls: bool) -> bool:
    """Whether `Origin` is this server as the request reached it (scheme, host, port)."""
    try:
        o = urlsplit(origin.strip())
        o_port = o.port
    except ValueError:
        return False
    scheme = "https" if tls else "http"
    if o.scheme != scheme or not o.hostname or o.path not in ("", "/"):
        return False
    name, port = split_host(host_header)
    default = 443 if tls else 80
    return (o.hostname.lower().rstrip(".") == name.lower().rstrip(".")
            and (o_port or default) == (port or default))


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


class RequestGuard:
    """The ASGI middleware in front of the app; see the module docstring for the rules."""

    def __init__(self, app: ASGIApp, auth: AuthConfig, hosts: HostPolicy, tls: bool = False,
                 max_body: int = MAX_BODY, body_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.auth = auth
        self.hosts = hosts
        self.tls = tls
        self.max_body = max_body
        self.body_limits = BODY_LIMITS if body_limits is None else body_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self.check(scope, headers)
        if refusal is not None:
            if kind == "websocket":
                await _refuse_ws(scope, send, refusal)
            else:
                await _respond(send, refusal)
            return
        if kind == "http" and scope.get("method", "GET") not in SAFE_METHODS:
            limit = self.body_limits.get(scope.get("path", ""), self.max_body)
            hint = (" (`spyglass import` uploads files in parts)"
                    if scope.get("path") == "/api/v1/flows/import" else "")
            body, refusal = await _read_body(receive, headers, limit, hint)
            if refusal is None and _is_json(headers.get("content-type", "")):
                refusal = _json_refusal(body)
            if refusal is not None:
                await _respond(send, refusal)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: dict[str, str]) -> Refusal | None:
        """The first rule the request breaks, or None."""
        host = headers.get("host", "")
        if not self.hosts.allows(host):
            return Refusal(421 if scope["type"] == "http" else 403, BAD_HOST)
        origin = headers.get("origin")
        if origin is not None and not own_origin(origin, host, self.tls):
            return Refusal(403, FOREIGN_ORIGIN)
        path = scope.get("path", "")
        api = path.startswith("/api/") or path == "/metrics" or path.startswith("/metrics/")
        if api and headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            return Refusal(403, CROSS_SITE)
        if scope["type"] == "websocket":
            return None  # the stream checks its token itself, and answers with an envelope
        token = bearer(headers.get("authorization"))
        if self.auth.protects(path) and not self.auth.allows(token):
            return Refusal(401, UNAUTHORIZED)
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype in SIMPLE_CONTENT_TYPES:
            return Refusal(415, f"a {ctype} body is refused here (any web page can send one); "
                                "send YAML as application/yaml or JSON as application/json")
        if path not in READ_ONLY_POSTS and not self.auth.may_change(token):
            return Refusal(401, NEEDS_CREDENTIAL)
        return None


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        key = k.decode("latin-1").lower()
        if key == "host" and key in out:
            out[key] = ""  # two Host headers: ambiguous, refused as unknown
            continue
        out[key] = v.decode("latin-1")
    return out


def _is_json(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def _json_refusal(body: bytes) -> Refusal | None:
    if json_depth(body.decode("utf-8", errors="replace"), MAX_DEPTH) > MAX_DEPTH:
        return Refusal(400, f"the JSON body nests deeper than {MAX_DEPTH} levels; flatten it")
    return None


async def _read_body(receive: Receive, headers: dict[str, str], limit: int, hint: str = ""
                     ) -> tuple[bytes, Refusal | None]:
    too_big = Refusal(413, f"the body is larger than {limit} bytes, the limit here; send "
                           f"less{hint}")
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            return b"", Refusal(400, "Content-Length is not a number")
        if int(declared) > limit:
            return b"", too_big
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", too_big
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), None


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _respond(send: Send, refusal: Refusal) -> None:
    body = json.dumps(error_body(refusal.status, refusal.message)).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="spyglass"'))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse_ws(scope: Scope, send: Send, refusal: Refusal) -> None:
    """Refuse the handshake itself, with the envelope when the server can send one."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error_body(refusal.status, refusal.message)).encode()
        await send({"type": "websocket.http.response.start", "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008})


