"""Capture every frame on an interface (run inside the lab's underlay namespace) and
summarise it when told to stop:

    python capture.py IFACE|any MARKER  prints "ready", then on stdin EOF one JSON line:
        {"frames": N, "ip": {"udp 198.18.0.1:51820>198.18.0.2:51821": count, ...},
         "marker": how many frames contained MARKER}
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
from collections import Counter

ETH_P_ALL = 0x0003


def describe(frame: bytes) -> str | None:
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        l4 = 14 + ihl
    elif ethertype == 0x86DD:
        proto = frame[20]
        src = socket.inet_ntop(socket.AF_INET6, frame[22:38])
        dst = socket.inet_ntop(socket.AF_INET6, frame[38:54])
        l4 = 54
    else:
        return None  # ARP and the like: not IP
    name = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(proto, f"proto{proto}")
    if proto in (6, 17):
        sport, dport = struct.unpack("!HH", frame[l4 : l4 + 4])
        return f"{name} {src}:{sport}>{dst}:{dport}"
    return f"{name} {src}>{dst}"


def main(iface: str, marker: bytes) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if iface != "any":  # "any": every interface of the namespace (each bridge port too)
        sock.bind((iface, 0))
    frames, hits, ip = 0, 0, Counter[str]()
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not sys.stdin.readline():
            break
        if sock in ready:
            frame = sock.recv(65535)
            frames += 1
            hits += marker in frame
            what = describe(frame)
            if what:
                ip[what] += 1
    print(json.dumps({"frames": frames, "ip": dict(ip), "marker": hits}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].encode())
