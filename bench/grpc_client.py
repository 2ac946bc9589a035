"""A Hubble gRPC client for the benches: GetFlows with follow, counting what comes.

    .venv/bin/python bench/grpc_client.py 127.0.0.1:4244 [--source-port 40002]

It is what `hubble observe -f` does minus the printing: it follows from now and counts
the flows and the lost events by source. Every half second that the counts changed, and
once more at the end (SIGINT or SIGTERM), it prints them as one JSON line:
{"flows": n, "lost": {"CLIENT_QUEUE": k, ...}}; the last line is the total. A process of
its own, so that its CPU is not the agent's and the bench can read it from /proc.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from typing import Any

import grpc

from spyglass.api.hubble import flow_pb2, observer_pb2, observer_pb2_grpc
from spyglass.model.enums import LostEventSource  # Hubble's sources and Spyglass's own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="host:port or unix:/path of the gRPC API")
    ap.add_argument("--source-port", action="append", default=[],
                    help="whitelist flows from this port (repeatable)")
    a = ap.parse_args()
    whitelist = [flow_pb2.FlowFilter(source_port=a.source_port)] if a.source_port else []
    flows = 0
    lost: Counter[str] = Counter()
    channel = grpc.insecure_channel(a.target)
    stub: Any = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
    call = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True, whitelist=whitelist))
    done = threading.Event()

    def stop(_sig: int, _frame: object) -> None:
        done.set()
        call.cancel()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def tell() -> None:
        told: tuple[int, dict[str, int]] = (-1, {})
        while not done.wait(0.5):
            now = (flows, dict(lost))
            if now != told:
                print(json.dumps({"flows": now[0], "lost": now[1]}), flush=True)
                told = now

    threading.Thread(target=tell, daemon=True).start()
    try:
        for resp in call:
            kind = resp.WhichOneof("response_types")
            if kind == "flow":
                flows += 1
            elif kind == "lost_events":
                le = resp.lost_events
                lost[LostEventSource(le.source).name] += le.num_events_lost
    except grpc.RpcError as exc:
        if not done.is_set():
            print(json.dumps({"error": f"{exc.code()}: {exc.details()}"}), flush=True)
            sys.exit(1)
    done.set()
    print(json.dumps({"flows": flows, "lost": dict(lost)}), flush=True)


if __name__ == "__main__":
    main()
