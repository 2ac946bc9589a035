"""A real Hubble gRPC server over the tests' FakeSource, and stubs to call it.

Imported on its own (`from support.grpcserved import Served, serve`): it needs grpcio.
The server listens on an ephemeral loopback port and on a unix socket under the test's
tmp dir; `serve` stops both and closes the channel however the test ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from spyglass.api.hubble import observer_pb2, observer_pb2_grpc, peer_pb2_grpc
from spyglass.api.hubble_grpc import HubbleServer
from spyglass.api.stream import StreamHub
from support.sources import FakeSource

#: Seconds any call may take before the test fails instead of hanging.
WAIT_S = 10


class Served:
    """A started server, its source, and stubs on one channel to its TCP port."""

    def __init__(self, source: FakeSource, server: HubbleServer, channel: grpc.Channel) -> None:
        self.source, self.server, self.channel = source, server, channel
        self.observer = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
        self.peer = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]

    def get(self, **fields: Any) -> list[observer_pb2.GetFlowsResponse]:
        """GetFlows with these request fields, read to its end."""
        req = observer_pb2.GetFlowsRequest(**fields)
        return list(self.observer.GetFlows(req, timeout=WAIT_S))


@contextlib.contextmanager
def serve(source: FakeSource, tmp_path: Path, **server_args: Any) -> Iterator[Served]:
    """Serve `source` on loopback and `tmp_path/run/hubble.sock` for the `with` block."""
    server = HubbleServer(source, StreamHub(source.losses), listen="127.0.0.1:0",
                          socket_path=str(tmp_path / "run" / "hubble.sock"), **server_args)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(source, server, channel)
    finally:
        channel.close()
        server.stop()


def uuids(responses: list[observer_pb2.GetFlowsResponse]) -> list[str]:
    return [r.flow.uuid for r in responses if r.HasField("flow")]
