"""No plaintext on the underlay: while instances on different nodes exchange a marker over
TCP and UDP, IPv4 and IPv6, a capture of every frame on the lab's underlay bridge shows only
WireGuard UDP between the nodes, and the marker never. (It listens on every interface of
the underlay namespace: a bridge forwards between its ports without showing the frames on
``br0`` itself.)"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec

from .conftest import running_lab

pytestmark = pytest.mark.linux

CAPTURE = str(Path(__file__).with_name("capture.py"))
SPEC = EnvironmentSpec(
    "shop", "production", services=(ServiceSpec("a", ("node-1",)), ServiceSpec("b", ("node-2",)))
)
SEND = """
import socket, sys
marker, port = sys.argv[1].encode(), int(sys.argv[2])
for host in sys.argv[3:]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_connection((host, port), timeout=5) as tcp:
        tcp.sendall(marker)
        assert marker in tcp.recv(4096)
    with socket.socket(family, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(marker, (host, port))
        assert marker in udp.recv(4096)
print("exchanged")
"""


def test_the_underlay_carries_only_wireguard_and_never_the_payload() -> None:
    marker = "railnet-marker-" + secrets.token_hex(8)
    with running_lab(2, dns=False) as net:
        doc = net.deploy(SPEC).document
        b = doc.service("b")
        assert b is not None and b.instances[0].ipv4
        net.serve(net.netns("shop", "production", "b"), "b", 7960)
        capture = subprocess.Popen(
            ["ip", "netns", "exec", net.lab.underlay_netns, sys.executable, CAPTURE, "any", marker],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert capture.stdout is not None and capture.stdout.readline().strip() == "ready"
        a_ns = net.netns("shop", "production", "a")
        sent = net.run(
            a_ns, sys.executable, "-c", SEND, marker, "7960", b.instances[0].ipv4,
            b.instances[0].ipv6,
        )  # fmt: skip
        out, _ = capture.communicate(input="", timeout=30)
        assert sent.returncode == 0 and "exchanged" in sent.stdout, sent.stderr
    seen = json.loads(out)
    assert seen["marker"] == 0
    assert seen["frames"] > 8  # the exchange did cross the underlay, as WireGuard
    ports = {n.endpoint.rsplit(":", 1)[1] for n in doc.nodes}
    underlay = {n.endpoint.rsplit(":", 1)[0] for n in doc.nodes}
    for flow in seen["ip"]:
        proto, rest = flow.split(" ", 1)
        src, dst = rest.split(">")
        if _link_control(proto, src, dst):
            continue  # IPv6 neighbour discovery and multicast listener reports of the links
        assert proto == "udp", f"not WireGuard: {flow}"
        assert src.rsplit(":", 1)[0] in underlay and dst.rsplit(":", 1)[0] in underlay, flow
        assert src.rsplit(":", 1)[1] in ports and dst.rsplit(":", 1)[1] in ports, flow


def _link_control(proto: str, src: str, dst: str) -> bool:
    """ICMPv6 (or its hop-by-hop-headed MLD) from a link-local address or to a multicast
    group, and IGMP reports to a multicast group: the links' own housekeeping, which
    carries no instance traffic."""
    if proto in ("igmp", "proto2"):
        return ipaddress.ip_address(dst.rsplit(":", 1)[0] if ":" in dst else dst).is_multicast
    if proto not in ("icmp6", "proto0"):
        return False
    source = ipaddress.ip_address(src.rsplit(":", 1)[0] if "." in src else src)
    target = ipaddress.ip_address(dst.rsplit(":", 1)[0] if "." in dst else dst)
    return source.is_link_local or target.is_multicast
