"""Run the API with uvicorn so that live clients see a clean end.

uvicorn's own shutdown fails open WebSockets with 1012 (service restart) and
only then runs the app's lifespan shutdown, too late for the app to say
goodbye. `SpyglassServer` first tells every stream to close with 1000 and
waits briefly for them, then lets uvicorn finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from spyglass.api.stream import StreamHub


class SpyglassServer(uvicorn.Server):
    """A uvicorn server whose shutdown closes flow streams normally first."""

    def __init__(self, config: uvicorn.Config, hub: StreamHub, grace_s: float = 1.0) -> None:
        super().__init__(config)
        self.hub = hub
        self.grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.shutdown()
        deadline = time.monotonic() + self.grace_s
        while self.hub.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)


#: Hubble-like keepalive: a ping every 15 s, and a client that does not answer in 20 s is gone.
WS_PING_INTERVAL_S = 15.0
WS_PING_TIMEOUT_S = 20.0
#: Clients send nothing but pongs on a stream: a larger message is refused (uvicorn's default
#: would buffer 16 MiB per client).
WS_MAX_MESSAGE = 64 << 10


class TlsError(ValueError):
    """The certificate or key given for HTTPS cannot be used."""


def check_tls(cert: str | None, key: str | None) -> None:
    """Both or neither, both readable, and a key that matches the certificate."""
    if not cert and not key:
        return
    if not cert or not key:
        missing = "--tls-cert" if not cert else "--tls-key"
        raise TlsError(f"HTTPS needs both --tls-cert and --tls-key; {missing} is missing")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename}: give the path of a PEM file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"cannot use --tls-cert {cert} with --tls-key {key} ({exc}); both must "
                       "be PEM and the key must belong to the certificate") from None


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 4245, *,
                log_level: str = "warning", grace_s: float = 1.0,
                ssl_certfile: str | None = None, ssl_keyfile: str | None = None
                ) -> SpyglassServer:
    """A server for an app made by `create_app` (it needs `app.state.streams`).

    The sans-I/O websockets protocol is chosen explicitly: uvicorn's default
    implementation uses the deprecated `websockets.legacy` API. With a
    certificate and key it serves HTTPS and WSS only.
    """
    check_tls(ssl_certfile, ssl_keyfile)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            ws="websockets-sansio", ws_ping_interval=WS_PING_INTERVAL_S,
                            ws_ping_timeout=WS_PING_TIMEOUT_S, ws_max_size=WS_MAX_MESSAGE,
                            ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile)
    return SpyglassServer(config, app.state.streams, grace_s=grace_s)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                    grace_s: float = 1.0, start_timeout_s: float = 10.0,
                    ssl_certfile: str | None = None, ssl_keyfile: str | None = None
                    ) -> Iterator[tuple[SpyglassServer, str]]:
    """Serve `app` from a daemon thread; yields the server and its base URL.

    `port=0` picks a free port, which keeps parallel test runs apart. Leaving
    the block stops the server the normal way (streams get 1000) and joins it.
    """
    server = make_server(app, host, port, grace_s=grace_s, ssl_certfile=ssl_certfile,
                         ssl_keyfile=ssl_keyfile)
    thread = threading.Thread(target=server.run, name="spyglass-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {host}:{port}; "
                                   "is the port already in use?")
            time.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if ssl_certfile else "http"
        yield server, f"{scheme}://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout_s)
