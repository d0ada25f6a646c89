"""A UDP probe for ``bench.self_heal``, run inside a service instance.

    python heal_probe.py INTERVAL HOST [HOST ...]

Every INTERVAL seconds it sends one datagram to each HOST (port 7301, an echo server)
and prints a line for every reply: ``HOST TOKEN SENT RECEIVED`` (the echo server's name,
and ``time.monotonic()``, which is the same clock in every process of the machine), so a
reader knows which server answered which probe, and when it had been sent.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
import time

PORT = 7301


def main() -> int:
    interval = float(sys.argv[1])
    hosts = sys.argv[2:]
    socks = {}
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        socks[sock.fileno()] = (sock, host)
    print("ready", flush=True)
    next_send = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_send:
            for sock, host in socks.values():
                with contextlib.suppress(OSError):  # no route for a moment: as measured
                    sock.sendto(struct.pack("!d", now), (host, PORT))
            next_send = now + interval
        ready, _, _ = select.select(list(socks), [], [], max(0.0, next_send - time.monotonic()))
        for fd in ready:
            sock, host = socks[fd]
            try:
                data = sock.recv(512)
            except OSError:
                continue
            if len(data) >= 10:  # the echo server answers NAME:PAYLOAD
                (sent,) = struct.unpack("!d", data[-8:])
                token = data[:-9].decode(errors="replace")
                print(f"{host} {token} {sent:.6f} {time.monotonic():.6f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
