"""The demo's workloads: tiny HTTP services, a load generator and a UDP metrics sink.

They exist to make believable traffic between lab pods: chains of HTTP calls
(frontend -> cart -> db), steady client load, health probes and a trickle of
UDP "statsd" datagrams, so every flow shape the CLI and UI show has something
real behind it. Standard library only, so any pod can run them with the
lab's interpreter:

    python -m spyglass.lab.demoapp serve --port 8080 --name cart --upstream http://IP:5432/q
    python -m spyglass.lab.demoapp loadgen --targets http://IP:8080/ --interval 0.3
    python -m spyglass.lab.demoapp udp-sink --port 8125

Each process dies with its pod: the lab SIGTERMs its process group on teardown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _log(name: str, msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {name} {msg}", flush=True)


def fetch(url: str, timeout: float) -> int:
    """GET url; the HTTP status, or 0 when there is no answer (refused, timeout, dropped)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return 0


class StatsdSender:
    """Fire-and-forget UDP counters, as an app would send to a statsd agent."""

    def __init__(self, target: str | None, every: int) -> None:
        self.addr: tuple[str, int] | None = None
        if target:
            host, _, port = target.rpartition(":")
            self.addr = (host, int(port))
        self.every = max(1, every)
        self.count = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def incr(self, metric: str) -> None:
        self.count += 1
        if self.addr is None or self.count % self.every:
            return
        try:
            self.sock.sendto(f"{metric}:{self.every}|c".encode(), self.addr)
        except OSError:
            pass  # metrics are best effort, as in real life

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> StatsdSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(port: int, name: str, upstreams: Sequence[str], statsd: StatsdSender,
          timeout: float, bind: str = "0.0.0.0") -> None:
    counter = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        server_version = f"demo-{name}/1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/healthz":
                self._send(200, {"service": name, "status": "ok"})
                return
            calls = {u: fetch(u, timeout) for u in upstreams}
            ok = all(200 <= s < 400 for s in calls.values())
            statsd.incr(f"{name}.requests")
            self._send(200 if ok else 502, {"service": name, "path": self.path,
                                            "upstreams": calls})

        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # one line in 50, and every error: enough to see it works, not a disk filler
            seen = next(counter)
            if seen % 50 == 1 or not str(code).startswith(("2", "3")):
                _log(name, f"{self.client_address[0]} {self.command} {self.path} {code} "
                     f"({seen} requests)")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            _log(name, f"{self.client_address[0]} {format % args}")

    ThreadingHTTPServer.allow_reuse_address = True
    httpd = ThreadingHTTPServer((bind, port), Handler)
    httpd.daemon_threads = True
    _log(name, f"listening on {bind}:{port}, upstreams {list(upstreams)}")
    httpd.serve_forever()


def loadgen(name: str, targets: Sequence[str], interval: float, statsd: StatsdSender,
            timeout: float, count: int) -> None:
    _log(name, f"targets {list(targets)} every {interval}s")
    for n, url in enumerate(itertools.cycle(targets), start=1):
        status = fetch(url, timeout)
        statsd.incr(f"{name}.requests")
        if status != 200 or n % 20 == 1:
            _log(name, f"GET {url} -> {status or 'no answer'}")
        if count and n >= count:
            return
        time.sleep(interval)


def udp_sink(name: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    _log(name, f"listening on udp :{port}")
    for n in itertools.count(1):
        data, peer = sock.recvfrom(2048)
        if n % 20 == 1:
            _log(name, f"{peer[0]}: {data[:80]!r} ({n} datagrams)")


def _hostport(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 10.244.0.8:8125, got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demoapp", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="an HTTP service that may call upstreams")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    s.add_argument("--upstream", action="append", default=[], help="URL to call per request")
    g = sub.add_parser("loadgen", help="GET targets round-robin, forever")
    g.add_argument("--targets", nargs="+", required=True)
    g.add_argument("--interval", type=float, default=0.3)
    g.add_argument("--count", type=int, default=0, help="stop after N requests (0: never)")
    u = sub.add_parser("udp-sink", help="receive UDP datagrams (a statsd stand-in)")
    u.add_argument("--port", type=int, default=8125)
    for p in (s, g, u):
        p.add_argument("--name", default="demo")
    for p in (s, g):
        p.add_argument("--statsd", default=None, type=_hostport,
                       help="HOST:PORT to send UDP counters to")
        p.add_argument("--statsd-every", type=int, default=5)
        p.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "udp-sink":
            udp_sink(a.name, a.port)
            return 0
        with StatsdSender(a.statsd, a.statsd_every) as statsd:
            if a.cmd == "serve":
                serve(a.port, a.name, a.upstream, statsd, a.timeout, a.bind)
            else:
                loadgen(a.name, a.targets, a.interval, statsd, a.timeout, a.count)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
