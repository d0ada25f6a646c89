"""Traffic helpers run inside namespaces: an echo server that says who it is, and probes.

    python netcheck.py serve TOKEN PORT          TCP and UDP echo on [::]:PORT (dual stack)
    python netcheck.py tcp HOST PORT [TIMEOUT]   prints the server's reply or exits 1
    python netcheck.py udp HOST PORT [TIMEOUT]
    python netcheck.py connect HOST PORT [TIMEOUT]  only opens a TCP connection
    python netcheck.py session HOST PORT         a long TCP session driven by stdin lines

Replies are "TOKEN:<payload>", so a probe knows which server answered, not just that one did.
"""

from __future__ import annotations

import socket
import sys
import threading


def serve(token: str, port: int) -> None:
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.bind(("::", port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", port))

    def udp_loop() -> None:
        while True:
            data, peer = udp.recvfrom(65535)
            udp.sendto(token.encode() + b":" + data, peer)

    def handle(conn: socket.socket) -> None:
        with conn:
            while True:
                data = conn.recv(65535)
                if not data:
                    return
                conn.sendall(token.encode() + b":" + data)

    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp(host: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"ping")
            print(conn.recv(65535).decode())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def connect(host: str, port: int, timeout: float) -> int:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("connected")
    return 0


def udp(host: str, port: int, timeout: float) -> int:
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"ping", (host, port))
            data, _ = sock.recvfrom(65535)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(data.decode())
    return 0


def session(host: str, port: int) -> int:
    with socket.create_connection((host, port), timeout=10) as conn:
        print("connected", flush=True)
        for line in sys.stdin:
            conn.sendall(line.strip().encode())
            print(conn.recv(65535).decode(), flush=True)
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif mode in ("tcp", "udp", "connect"):
        timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
        probe = {"tcp": tcp, "udp": udp, "connect": connect}[mode]
        raise SystemExit(probe(sys.argv[2], int(sys.argv[3]), timeout))
    elif mode == "session":
        raise SystemExit(session(sys.argv[2], int(sys.argv[3])))
    else:
        raise SystemExit(f"unknown mode {mode}")
