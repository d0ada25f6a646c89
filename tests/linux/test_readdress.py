"""Switching an environment between dual stack and IPv6 only readdresses its instances in
place: namespaces and IPv6 connections survive, IPv4 goes and comes back, nothing drifts."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import IpMode

from .conftest import NETCHECK, running_lab

pytestmark = pytest.mark.linux

DUAL = EnvironmentSpec(
    "flip",
    "production",
    services=(ServiceSpec("client", ("node-1",)), ServiceSpec("server", ("node-2",))),
)


def test_dual_to_ipv6_only_and_back_keeps_namespaces_and_ipv6_sessions() -> None:
    with running_lab(2) as net:
        doc = net.deploy(DUAL).document
        server = doc.service("server")
        assert server is not None and server.instances[0].ipv4
        v4, v6 = server.instances[0].ipv4, server.instances[0].ipv6
        server_ns = net.netns("flip", "production", "server")
        client_ns = net.netns("flip", "production", "client")
        net.serve(server_ns, "srv", 7800)
        session = subprocess.Popen(
            ["ip", "netns", "exec", client_ns, sys.executable, NETCHECK, "session", v6, "7800"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert session.stdin and session.stdout
        try:
            assert session.stdout.readline().strip() == "connected"

            def say(word: str) -> str:
                assert session.stdin and session.stdout
                session.stdin.write(word + "\n")
                session.stdin.flush()
                return session.stdout.readline().strip()

            assert say("one") == "srv:one"
            legacy = net.deploy(replace(DUAL, ip_mode=IpMode.IPV6))
            assert not any(
                "create instance" in c or "remove instance" in c
                for changes in legacy.changes.values()
                for c in changes
            )
            assert net.netns("flip", "production", "server") == server_ns
            assert say("two") == "srv:two"  # the IPv6 session lived through it
            assert not net.tcp(client_ns, v4, 7800, timeout=1).ok
            addresses = net.run(server_ns, "ip", "-4", "-o", "addr", "show", "eth0").stdout
            assert v4 not in addresses and net.run(server_ns, "ip", "-4", "route").stdout == ""
            resolv = Path(f"/etc/netns/{client_ns}/resolv.conf").read_text()
            assert "nameserver 10." not in resolv and "nameserver fd" in resolv
            for node in net.lab.nodes():
                with net.lab.client(node) as c:
                    assert list(c.status(doc.id).environments[0].drift) == []

            back = net.deploy(DUAL).document
            server_back = back.service("server")
            assert server_back is not None and server_back.instances[0].ipv6 == v6
            v4_again = server_back.instances[0].ipv4
            assert v4_again is not None
            assert net.tcp(client_ns, v4_again, 7800).output == "srv:ping"
            assert say("three") == "srv:three"
            for node in net.lab.nodes():
                with net.lab.client(node) as c:
                    assert list(c.status(doc.id).environments[0].drift) == []
        finally:
            session.kill()
            session.wait()
