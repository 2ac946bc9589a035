"""Client actions run inside a pod by the end-to-end tests (`spyglass lab exec`).

Prints one JSON line with what it did (notably the ephemeral source port), so the test
can find exactly this connection among the observed flows.
"""

from __future__ import annotations

import json
import socket
import sys


def tcp(host: str, size: int) -> dict[str, object]:
    s = socket.create_connection((host, 8080), timeout=10)
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


def udp(host: str) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((host, 9090))
    s.send(b"ping-udp")
    data = s.recv(100)
    port = s.getsockname()[1]
    s.close()
    return {"proto": "udp", "sport": port, "echo": data.decode()}


if __name__ == "__main__":
    kind, host = sys.argv[1], sys.argv[2]
    out = tcp(host, int(sys.argv[3])) if kind == "tcp" else udp(host)
    print(json.dumps(out))
