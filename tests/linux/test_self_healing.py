"""Self-healing: the agent notices drift when it happens (netlink events, wireguard-go
exits, namespace deletion, the device's peers) and repairs it in place, long before its
periodic repair (set to an hour here, so only the watcher can heal).

Each test breaks one thing with the tools an operator would use (``kill -9``, ``wg``,
``ip route``, ``ip netns del``) while an echo server runs in an instance on node-2, and
waits (with a generous bound) for traffic from node-1 to flow again."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import EnvironmentDocument
from railnet.core.names import veth_ifname

from .conftest import LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux

HEAL_BOUND = 10.0
"""Seconds a test waits for a repair; the benchmark (bench/healing.py) measures the real
time, and these only say that it happens."""
SPEC = EnvironmentSpec(
    "heal",
    "production",
    services=(ServiceSpec("client", ("node-1",)), ServiceSpec("server", ("node-2",))),
)
PORT = 7300


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(2, dns=False, reconcile_interval=1) as net:
        net.deploy(SPEC)
        yield net


@pytest.fixture()
def server(lab: LabNet) -> Iterator[subprocess.Popen[str]]:
    proc = lab.serve(lab.netns("heal", "production", "server"), "srv", PORT)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


def document(lab: LabNet) -> EnvironmentDocument:
    doc = lab.deployer.latest(lab.deployer.read(SPEC.id))
    assert doc is not None
    return doc


def server_addresses(lab: LabNet) -> tuple[str, str]:
    svc = document(lab).service("server")
    assert svc is not None and svc.instances[0].ipv4
    return svc.instances[0].ipv4, svc.instances[0].ipv6


def answers(lab: LabNet, host: str) -> bool:
    client = lab.netns("heal", "production", "client")
    probe = lab.tcp(client, host, PORT, timeout=1)
    return probe.ok and probe.output == "srv:ping"


def flowing(lab: LabNet) -> bool:
    return all(answers(lab, host) for host in server_addresses(lab))


def drift(lab: LabNet, i: int) -> list[str]:
    with lab.lab.client(lab.lab.node(i)) as client:
        return list(client.status(SPEC.id).environments[0].drift)


def test_deleted_routes_come_back_and_the_running_process_keeps_its_network(
    lab: LabNet, server: subprocess.Popen[str]
) -> None:
    """The server was started before the fault; after the repair the very same process
    answers on both families: its namespace was patched, not rebuilt."""
    assert flowing(lab)
    ns = lab.netns("heal", "production", "server")
    doc = document(lab)
    svc = doc.service("server")
    assert svc is not None
    veth = veth_ifname(doc.id, svc.id, 0)
    env_ns = ns.rsplit("-", 2)[0]
    inode = os.stat(f"/var/run/netns/{ns}").st_ino
    # Inside the instance, and the environment's routes towards it.
    for family in ("-4", "-6"):
        subprocess.run(["ip", "-n", ns, family, "route", "flush", "default"], check=True)
        subprocess.run(["ip", "-n", env_ns, family, "route", "flush", "dev", veth], check=True)
    assert not answers(lab, server_addresses(lab)[1])
    assert wait_until(lambda: flowing(lab), timeout=HEAL_BOUND), drift(lab, 2)
    assert server.poll() is None
    assert os.stat(f"/var/run/netns/{ns}").st_ino == inode, "the namespace was rebuilt"
    assert wait_until(lambda: drift(lab, 2) == [], timeout=HEAL_BOUND), drift(lab, 2)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
