"""A pod's server for the end-to-end tests: TCP byte counter on 8080, UDP echo on 9090,
TCP echo on 7070.

8080 reads until the client half-closes, answers with the byte count, closes. That gives
a real SYN / data / FIN sequence in both directions for any transfer size. 7070 sends
back every byte it gets, for as long as the client keeps the connection (the restart
test's long-lived connection).
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


def echo_conn(conn: socket.socket) -> None:
    with conn:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)


def echo_server() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 7070))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo_conn, args=(conn,), daemon=True).start()


def udp_server() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", 9090))
    while True:
        data, peer = srv.recvfrom(65535)
        srv.sendto(data, peer)


if __name__ == "__main__":
    threading.Thread(target=udp_server, daemon=True).start()
    threading.Thread(target=echo_server, daemon=True).start()
    tcp_server()
