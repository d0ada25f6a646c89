"""Run inside an instance namespace (as root, so with CAP_NET_ADMIN): try to send UDP with
a neighbour's source address, and a control datagram with the instance's own.

    python spoof.py listen PORT SECONDS          print every payload received, then exit
    python spoof.py send4 SRC DST PORT PAYLOAD   a raw IPv4 packet (IP_HDRINCL), any source
    python spoof.py send6 SRC DST PORT PAYLOAD   IPv6 from SRC, which is added to eth0 first
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys
import time


def listen(port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.settimeout(0.2)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            continue
        print(data.decode(errors="replace"), flush=True)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def send4(src: str, dst: str, port: int, payload: bytes) -> None:
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        raw.sendto(header + udp, (dst, 0))


def send6(src: str, dst: str, port: int, payload: bytes) -> None:
    """From ``src``: added to eth0 for the send when it is not the instance's own, and
    removed again (while it is there, the neighbour's address is local to this namespace)."""
    address = f"{ipaddress.ip_address(src)}/128"
    add = ["ip", "-6", "addr", "add", address, "dev", "eth0", "nodad"]
    added = subprocess.run(add, capture_output=True).returncode == 0
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind((src, 0))
            sock.sendto(payload, (dst, port))
    finally:
        if added:
            subprocess.run(["ip", "-6", "addr", "del", address, "dev", "eth0"], check=True)


def main(argv: list[str]) -> int:
    if argv[0] == "listen":
        listen(int(argv[1]), float(argv[2]))
    elif argv[0] == "send4":
        send4(argv[1], argv[2], int(argv[3]), argv[4].encode())
    elif argv[0] == "send6":
        send6(argv[1], argv[2], int(argv[3]), argv[4].encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
