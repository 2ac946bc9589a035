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


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 4245, *,
                log_level: str = "warning", grace_s: float = 1.0) -> SpyglassServer:
    """A server for an app made by `create_app` (it needs `app.state.streams`).

    The sans-I/O websockets protocol is chosen explicitly: uvicorn's default
    implementation uses the deprecated `websockets.legacy` API.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            ws="websockets-sansio")
    return SpyglassServer(config, app.state.streams, grace_s=grace_s)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                    grace_s: float = 1.0, start_timeout_s: float = 10.0
                    ) -> Iterator[tuple[SpyglassServer, str]]:
    """Serve `app` from a daemon thread; yields the server and its base URL.

    `port=0` picks a free port, which keeps parallel test runs apart. Leaving
    the block stops the server the normal way (streams get 1000) and joins it.
    """
    server = make_server(app, host, port, grace_s=grace_s)
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
        yield server, f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout_s)
