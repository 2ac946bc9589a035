"""Client actions run inside a pod by the end-to-end tests (`spyglass lab exec`).

Prints one JSON line with what it did (notably the ephemeral source port), so the test
can find exactly this connection among the observed flows.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def addr(host: str, default_port: int) -> tuple[str, int]:
    """HOST or HOST:PORT."""
    name, _, port = host.partition(":")
    return name, int(port) if port else default_port


def tcp(host: str, size: int, timeout: float = 10) -> dict[str, object]:
    s = socket.create_connection(addr(host, 8080), timeout=timeout)
    port = s.getsockname()[1]
    payload = b"x" * 65536
    sent = 0
    while sent < size:
        n = min(len(payload), size - sent)
        s.sendall(payload[:n])
        sent += n
    s.shutdown(socket.SHUT_WR)
    answer = s.makefile().readline().strip()
    s.close()
    return {"proto": "tcp", "sport": port, "sent": sent, "answer": int(answer)}


def tcp_slow(host: str, seconds: float) -> dict[str, object]:
    """One connection kept busy for `seconds`: a chunk every 0.1 s, then the answer."""
    s = socket.create_connection((host, 8080), timeout=10)
    port = s.getsockname()[1]
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s.sendall(b"y" * 1000)
        sent += 1000
        time.sleep(0.1)
    s.shutdown(socket.SHUT_WR)
    answer = s.makefile().readline().strip()
    s.close()
    return {"proto": "tcp", "sport": port, "sent": sent, "answer": int(answer)}


def udp(host: str, timeout: float = 5) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.connect(addr(host, 9090))
    s.send(b"ping-udp")
    data = s.recv(100)
    port = s.getsockname()[1]
    s.close()
    return {"proto": "udp", "sport": port, "echo": data.decode()}


if __name__ == "__main__":
    kind, host = sys.argv[1], sys.argv[2]
    try:
        if kind == "tcp":
            out = tcp(host, int(sys.argv[3]), *map(float, sys.argv[4:5]))
        elif kind == "tcp-slow":
            out = tcp_slow(host, float(sys.argv[3]))
        else:
            out = udp(host, *map(float, sys.argv[3:4]))
    except OSError as exc:  # refused, timed out: a denied probe, reported as data
        out = {"proto": kind, "error": type(exc).__name__}
    print(json.dumps(out))
