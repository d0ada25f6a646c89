"""Run inside one instance: try every target over TCP, UDP and ICMP, IPv4 and IPv6, and by
its DNS name; print one JSON object: target label → {probe: true|false}.

    python isolation_probe.py TARGETS_JSON PORT

TARGETS_JSON: [{"label": "shop/production/x", "token": ..., "name": "x.railway.internal",
"ipv4": ... or null, "ipv6": ...}, ...]. A TCP or UDP probe succeeds only when the reply
carries the target's token (an address that exists in this environment too reaches a
different instance, which is not the target); a DNS probe only when the name resolves to
the target's own addresses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TIMEOUT = 1.0


def tcp(host: str, port: int, token: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as conn:
            conn.sendall(b"probe")
            return conn.recv(256).decode(errors="replace") == f"{token}:probe"
    except OSError:
        return False


def udp(host: str, port: int, token: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.sendto(b"probe", (host, port))
            return sock.recv(256).decode(errors="replace") == f"{token}:probe"
        except OSError:
            return False


def icmp(host: str) -> bool:
    done = subprocess.run(
        ["ping", "-n", "-c", "1", "-W", "1", host], capture_output=True, timeout=10
    )
    return done.returncode == 0


def dns(name: str, addresses: set[str]) -> bool:
    try:
        found = {a[4][0] for a in socket.getaddrinfo(name, None)}
    except OSError:
        return False
    return bool(found) and found <= addresses


def probe(target: dict[str, Any], port: int) -> dict[str, bool]:
    result: dict[str, bool] = {}
    for family in ("ipv4", "ipv6"):
        host = target[family]
        if host is None:
            continue
        result[f"tcp/{family}"] = tcp(host, port, target["token"])
        result[f"udp/{family}"] = udp(host, port, target["token"])
        result[f"icmp/{family}"] = icmp(host)
    own = {a for a in (target["ipv4"], target["ipv6"]) if a}
    result["dns"] = dns(target["name"], own)
    return result


def main(targets_json: str, port: int) -> None:
    targets = json.loads(targets_json)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda t: probe(t, port), targets))
    print(json.dumps({t["label"]: r for t, r in zip(targets, results, strict=True)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
