"""A pod's server for the end-to-end tests: TCP byte counter on 8080, UDP echo on 9090.

TCP: reads until the client half-closes, answers with the byte count, closes. That gives
a real SYN / data / FIN sequence in both directions for any transfer size.
"""

from __future__ import annotations

import socket
import threading


def tcp_conn(conn: socket.socket) -> None:
    with conn:
        total = 0
        while chunk := conn.recv(65536):
            total += len(chunk)
        conn.sendall(f"{total}\n".encode())


def tcp_server() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 8080))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=tcp_conn, args=(conn,), daemon=True).start()


def udp_server() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", 9090))
    while True:
        data, peer = srv.recvfrom(65535)
        srv.sendto(data, peer)


if __name__ == "__main__":
    threading.Thread(target=udp_server, daemon=True).start()
    tcp_server()
