"""One environment on a 3-node lab: TCP, UDP and ICMP between instances over IPv4 and IPv6,
across nodes and on one node; and isolation from other environments, projects, the host,
the underlay and the agent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import EnvironmentDocument
from railnet.lab.local_cluster import AGENT_PORT

from .conftest import NETCHECK, LabNet, running_lab

pytestmark = pytest.mark.linux

PORT = 7000


def addresses(doc: EnvironmentDocument, service: str, index: int = 0) -> tuple[str, str]:
    svc = doc.service(service)
    assert svc is not None
    inst = svc.instances[index]
    assert inst.ipv4 is not None
    return inst.ipv4, inst.ipv6


class World:
    """Three environments on the same nodes: shop/production (the one under test),
    shop/staging (same project) and blog/production (another project, another CIDR)."""

    def __init__(self, net: LabNet) -> None:
        self.net = net
        self.prod = net.deploy(
            EnvironmentSpec(
                "shop",
                "production",
                services=(
                    ServiceSpec("api", ("node-1",)),
                    ServiceSpec("worker", ("node-2",)),
                    ServiceSpec("db", ("node-1",)),
                ),
            )
        ).document
        self.staging = net.deploy(
            EnvironmentSpec(
                "shop",
                "staging",
                services=(ServiceSpec("api", ("node-1",)), ServiceSpec("worker", ("node-2",))),
            )
        ).document
        self.blog = net.deploy(
            EnvironmentSpec(
                "blog",
                "production",
                ipv4_cidr="10.77.0.0/16",
                services=(ServiceSpec("web", ("node-1",)), ServiceSpec("cms", ("node-3",))),
            )
        ).document
        self.api = net.netns("shop", "production", "api")
        self.worker = net.netns("shop", "production", "worker")
        self.db = net.netns("shop", "production", "db")
        for netns, token in (
            (self.worker, "prod-worker"),
            (self.db, "prod-db"),
            (self.api, "prod-api"),
            (net.netns("shop", "staging", "worker"), "staging-worker"),
            (net.netns("shop", "staging", "api"), "staging-api"),
            (net.netns("blog", "production", "web"), "blog-web"),
        ):
            net.serve(netns, token, PORT)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_lab(3, dns=False) as net:
        yield World(net)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize(
    ("target", "token"),
    [("worker", "prod-worker"), ("db", "prod-db")],
    ids=["cross-node", "same-node"],
)
def test_tcp_udp_icmp_between_instances(world: World, family: str, target: str, token: str) -> None:
    v4, v6 = addresses(world.prod, target)
    host = v4 if family == "ipv4" else v6
    tcp = world.net.tcp(world.api, host, PORT)
    assert tcp.ok and tcp.output == f"{token}:ping", tcp.output
    udp = world.net.udp(world.api, host, PORT)
    assert udp.ok and udp.output == f"{token}:ping", udp.output
    ping = world.net.ping(world.api, host)
    assert ping.ok, ping.output


def test_traffic_crosses_nodes_encrypted_in_wireguard(world: World) -> None:
    """Cross-node packets leave the node only as WireGuard UDP on the environment's port."""
    _, v6 = addresses(world.prod, "worker")
    node1 = world.net.lab.node(1)
    with world.net.lab.client(node1) as client:
        before = client.status(world.prod.id).environments[0]
        sent_before = sum(p.tx_bytes for p in before.peers)
        assert world.net.tcp(world.api, v6, PORT).ok
        after = client.status(world.prod.id).environments[0]
    assert [p.node for p in after.peers] == ["node-2"]
    assert sum(p.tx_bytes for p in after.peers) > sent_before
    assert after.peers[0].last_handshake > 0


def test_other_environment_of_same_project_cannot_reach(world: World) -> None:
    staging_api = world.net.netns("shop", "staging", "api")
    for service in ("worker", "db", "api"):
        v4, v6 = addresses(world.prod, service)
        for host in (v4, v6):
            tcp = world.net.tcp(staging_api, host, PORT, timeout=1.5)
            assert not tcp.output.startswith("prod-"), f"staging reached {service} at {host}: {tcp}"
            udp = world.net.udp(staging_api, host, PORT, timeout=1)
            assert not udp.output.startswith("prod-"), f"staging reached {service} at {host}: {udp}"
        # Each environment is its own address domain: production's ULA is not routed here.
        assert not world.net.ping(staging_api, v6).ok
        assert not world.net.tcp(staging_api, v6, PORT, timeout=1.5).ok


def test_other_project_cannot_reach_by_any_address(world: World) -> None:
    blog_web = world.net.netns("blog", "production", "web")
    for service in ("worker", "db", "api"):
        for host in addresses(world.prod, service):
            assert not world.net.tcp(blog_web, host, PORT, timeout=1.5).ok
            assert not world.net.udp(blog_web, host, PORT, timeout=1).ok
            assert not world.net.ping(blog_web, host).ok


def test_production_cannot_reach_the_others_either(world: World) -> None:
    for service in ("web",):
        for host in addresses(world.blog, service):
            assert not world.net.tcp(world.api, host, PORT, timeout=1.5).ok
            assert not world.net.ping(world.api, host).ok
    for host in addresses(world.staging, "worker")[1:]:
        assert not world.net.tcp(world.api, host, PORT, timeout=1.5).ok


def test_instance_cannot_reach_host_underlay_or_agent(world: World) -> None:
    lab = world.net.lab
    for i in (1, 2, 3):
        underlay = lab.node(i).underlay
        assert not world.net.ping(world.api, underlay).ok
        r = world.net.run(
            world.api, sys.executable, NETCHECK, "connect", underlay, str(AGENT_PORT), "1.5"
        )
        assert r.returncode == 1, r.stdout
    # The agent really listens there: from the node's host namespace it answers.
    node1 = lab.node(1)
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            node1.netns,
            sys.executable,
            NETCHECK,
            "connect",
            node1.underlay,
            str(AGENT_PORT),
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 0 and r.stdout.strip() == "connected", r.stderr
    routes = world.net.run(world.api, "ip", "-4", "route").stdout
    assert "198.18" not in routes


def test_build_exec_reaches_nothing_private(world: World) -> None:
    v4, v6 = addresses(world.prod, "worker")
    cluster = str(world.net.lab.cluster_file)
    base = [
        sys.executable,
        "-m",
        "railnet",
        "build-exec",
        "--cluster",
        cluster,
        "shop/production/api",
        "--",
    ]
    for host in (v4, v6):
        r = subprocess.run(
            [*base, sys.executable, NETCHECK, "tcp", host, str(PORT), "1.5"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1, r.stdout + r.stderr
        assert "prod-" not in r.stdout
    links = subprocess.run([*base, "ip", "-o", "link"], capture_output=True, text=True, timeout=30)
    assert links.returncode == 0, links.stderr
    assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
    # The same command under `railnet exec` does reach the worker: the runtime network.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "railnet",
            "exec",
            "--cluster",
            cluster,
            "shop/production/api",
            "--",
            sys.executable,
            NETCHECK,
            "tcp",
            v4,
            str(PORT),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.strip() == "prod-worker:ping", r.stdout + r.stderr


def test_exec_exits_with_the_commands_code(world: World) -> None:
    cluster = str(world.net.lab.cluster_file)
    for command in ("exec", "build-exec"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "railnet",
                command,
                "--cluster",
                cluster,
                "shop/production/worker",
                "--",
                "sh",
                "-c",
                "exit 7",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 7, (command, r.stderr)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "railnet",
            "exec",
            "--cluster",
            cluster,
            "shop/production/nosuch",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 125 and "nosuch" in r.stderr  # railnet's own failure
