"""A TCP stream of small numbered chunks, to watch one connection live through a change.

    python stream.py receive PORT                 take one connection on PORT (IPv4 and
                                                  IPv6); print "ready", and at the end one
                                                  JSON line (below)
    python stream.py send HOST PORT [INTERVAL]    one chunk every INTERVAL seconds (0.01)
                                                  until stdin closes, then "end"; exit 0
                                                  only if every chunk was sent

The receiver's line: ``{"chunks": N, "in_order": bool, "ended": bool, "longest_pause": S,
"pause_at": S}``: how many chunks came, whether they came numbered 0..N-1, whether the
"end" line came (the connection never broke), the longest time between two arrivals, and
when it began (seconds after the first chunk). Standard library only: it runs inside
instance namespaces with ``ip netns exec``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

CHUNK = 64


def receive(port: int) -> int:
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", port))
    server.listen(1)
    print("ready", flush=True)
    conn, _ = server.accept()
    expected, in_order, ended = 0, True, False
    first = last = 0.0
    longest, pause_at = 0.0, 0.0
    buffered = b""
    with conn:
        while not ended:
            data = conn.recv(65536)
            if not data:
                break
            now = time.monotonic()
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                word = line.strip()
                if word == b"end":
                    ended = True
                    break
                if expected == 0:
                    first = last = now
                if int(word) != expected:
                    in_order = False
                expected += 1
                if now - last > longest:
                    longest, pause_at = now - last, last - first
                last = now
    print(
        json.dumps(
            {
                "chunks": expected,
                "in_order": in_order,
                "ended": ended,
                "longest_pause": round(longest, 4),
                "pause_at": round(pause_at, 3),
            }
        ),
        flush=True,
    )
    return 0


def send(host: str, port: int, interval: float) -> int:
    conn = socket.create_connection((host, port), timeout=30)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("connected", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    seq = 0
    with conn:
        while not stop.is_set():
            conn.sendall(f"{seq}".encode().ljust(CHUNK - 1) + b"\n")
            seq += 1
            time.sleep(interval)
        conn.sendall(b"end\n")
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # until the receiver closes: everything arrived
    print(f"sent {seq}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["receive"] and len(argv) == 2:
        return receive(int(argv[1]))
    if argv[:1] == ["send"] and len(argv) in (3, 4):
        return send(argv[1], int(argv[2]), float(argv[3]) if len(argv) == 4 else 0.01)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
