"""Client actions run inside a pod by the end-to-end tests (`spyglass lab exec`).

Prints one JSON line with what it did (notably the ephemeral source port), so the test
can find exactly this connection among the observed flows.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def _chunk(seq: int, size: int = 1000) -> bytes:
    """Chunk `seq` of a stream: its number, then bytes that depend on it."""
    head = seq.to_bytes(8, "big")
    return head + bytes((seq * 31 + i) & 0xFF for i in range(size - len(head)))


def stream(host: str, stop_file: str, interval: float = 0.02) -> dict[str, object]:
    """One connection kept up until `stop_file` exists: a chunk out, the same chunk back,
    every `interval`. Reports the chunks, whether every byte came back intact, and the
    longest wait for an echo (a restart that broke the connection shows here)."""
    s = socket.create_connection(addr(host, 7070), timeout=10)
    port = s.getsockname()[1]
    with open(stop_file + ".sport", "w") as f:  # the test finds the connection by it
        f.write(str(port))
    seq = mismatched = 0
    longest = 0.0
    out, back = hashlib.sha256(), hashlib.sha256()
    error = ""
    try:
        while not os.path.exists(stop_file):
            data = _chunk(seq)
            t = time.monotonic()
            s.sendall(data)
            out.update(data)
            got = b""
            while len(got) < len(data):
                part = s.recv(len(data) - len(got))
                if not part:
                    raise ConnectionResetError("the server closed the connection")
                got += part
            longest = max(longest, time.monotonic() - t)
            back.update(got)
            mismatched += got != data
            seq += 1
            time.sleep(interval)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    s.close()
    return {"proto": "tcp-stream", "sport": port, "chunks": seq, "mismatched": mismatched,
            "intact": out.hexdigest() == back.hexdigest() and not mismatched,
            "longest_echo_s": round(longest, 4), "error": error}


def probe_loop(host: str, stop_file: str, interval: float = 0.05,
               timeout: float = 0.3) -> dict[str, object]:
    """New connections to the byte counter until `stop_file` exists: how many got an
    answer, how many did not (a denied probe never gets one), the longest run of failures."""
    answered = failed = run = longest_run = 0
    while not os.path.exists(stop_file):
        try:
            s = socket.create_connection(addr(host, 8080), timeout=timeout)
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            ok = s.makefile().readline().strip() == "4"
            s.close()
        except OSError:
            ok = False
        if ok:
            answered, run = answered + 1, 0
        else:
            failed, run = failed + 1, run + 1
            longest_run = max(longest_run, run)
        time.sleep(interval)
    return {"proto": "probe-loop", "answered": answered, "failed": failed,
            "longest_failed_run": longest_run}


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
        elif kind == "stream":
            out = stream(host, sys.argv[3])
        elif kind == "probe-loop":
            out = probe_loop(host, sys.argv[3])
        else:
            out = udp(host, *map(float, sys.argv[3:4]))
    except OSError as exc:  # refused, timed out: a denied probe, reported as data
        out = {"proto": kind, "error": type(exc).__name__}
    print(json.dumps(out))
