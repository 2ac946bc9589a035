"""Who may read Hubble's gRPC API: the REST API's rules, in gRPC's terms.

- The unix socket needs nothing: it is mode 0600, so only its owner (root) can connect,
  the trust Hubble's own socket gives.
- Loopback TCP needs nothing while no `--token` is set, as the REST API's loopback.
- Any other address needs TLS (`--grpc-tls-cert/--grpc-tls-key`), and a credential on
  every call: the token as `authorization: Bearer <token>` metadata, or, with
  `--grpc-tls-client-ca` (mTLS, as Hubble Relay talks to Cilium's nodes), a client
  certificate that CA signed. A verified certificate stands in for the token because
  Hubble Relay and the hubble CLI authenticate that way and send no token.

`check_grpc_listen` refuses an exposed listener before anything starts; `TokenCheck`
refuses a call without the credential with UNAUTHENTICATED and the way to fix it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from spyglass.api.auth import TOKEN_ENV, AuthConfig, ListenSecurityError, bearer, is_loopback

UNAUTHENTICATED = ("missing or wrong token: send `authorization: Bearer <token>` metadata "
                   f"(the agent's --token or {TOKEN_ENV}); the hubble CLI cannot, so give it "
                   "a client certificate instead (the agent's --grpc-tls-client-ca)")


def default_server_name(node: str, cluster: str = "default") -> str:
    """The name Cilium gives a node's Hubble server certificate, so that certificates made
    for Cilium (and Hubble Relay's checks of them) work unchanged."""
    return f"{node}.{cluster}.hubble-grpc.cilium.io"


def _read(path: str, what: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read the {what}: "
                         f"{exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{flag} {path}: not a PEM file (no '-----BEGIN' line); give the "
                         f"{what} in PEM form")
    return data


@dataclass(frozen=True)
class GrpcTls:
    """The server's certificate and key, and the CA its clients' certificates need (mTLS)."""

    cert: str
    key: str
    client_ca: str | None = None
    server_name: str = ""

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC's server credentials; ValueError names the file that is missing or wrong."""
        cert = _read(self.cert, "certificate", "--grpc-tls-cert")
        key = _read(self.key, "private key", "--grpc-tls-key")
        ca = _read(self.client_ca, "client CA", "--grpc-tls-client-ca") \
            if self.client_ca else None
        try:
            return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                               require_client_auth=ca is not None)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"--grpc-tls-cert/--grpc-tls-key: gRPC refused them: {exc}") \
                from None


def listen_host(listen: str) -> str:
    """The host of `host:port` or `[v6]:port`."""
    return listen.rsplit(":", 1)[0].strip("[]")


def check_grpc_listen(listen: str, tls: GrpcTls | None, token: str | None) -> None:
    """Raise ListenSecurityError unless flows on `listen` are readable only as the rules say."""
    if not listen or is_loopback(listen_host(listen)):
        return
    if tls is None:
        raise ListenSecurityError(
            f"--grpc-listen {listen}: refusing to serve Hubble's gRPC API beyond loopback "
            "without TLS; give --grpc-tls-cert and --grpc-tls-key (and --grpc-tls-client-ca "
            "for mTLS), or listen on 127.0.0.1")
    if not tls.mutual and not token:
        raise ListenSecurityError(
            f"--grpc-listen {listen}: TLS alone lets anyone read flows; set a token (--token "
            f"or {TOKEN_ENV}) that clients send as `authorization: Bearer`, or require client "
            "certificates with --grpc-tls-client-ca")


def needs_token(listen: str, tls: GrpcTls | None, auth: AuthConfig) -> bool:
    """Must every call on the TCP listener carry the token? Not when mTLS already checked
    a certificate, and not on loopback while no --token is set."""
    if tls is not None and tls.mutual:
        return False
    return auth.token is not None or not is_loopback(listen_host(listen))


class TokenCheck(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call needs the token (or the local credential) as bearer metadata."""

    def __init__(self, auth: AuthConfig) -> None:
        self.auth = auth

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        presented = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                presented = bearer(value)
        if handler is None or self.auth.allows(presented):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    codec = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}
    if handler.unary_stream is not None or handler.stream_stream is not None:
        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
            yield  # pragma: no cover - abort raises

        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(refuse_stream, **codec)
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **codec)

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)

    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)
    return grpc.unary_unary_rpc_method_handler(refuse, **codec)


__all__ = ["GrpcTls", "TokenCheck", "check_grpc_listen", "default_server_name", "listen_host",
           "needs_token"]
