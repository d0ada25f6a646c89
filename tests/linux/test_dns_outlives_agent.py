"""DNS is data plane: the resolver process keeps answering while the agent is killed,
restarted and upgraded, and a restarted agent adopts it. Real agents, a real resolver
process, real queries from inside an instance namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec

from .conftest import LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux

DNSLOOP = str(Path(__file__).with_name("dnsloop.py"))
SPEC = EnvironmentSpec(
    "resolve",
    "production",
    services=(ServiceSpec("client", ("node-1",)), ServiceSpec("worker", ("node-1", "node-2"))),
)
RATE = 50


@pytest.fixture(scope="module")
def net() -> Iterator[LabNet]:
    with running_lab(2) as lab:
        lab.deploy(SPEC)
        yield lab


class ResolveLoop:
    """``dnsloop.py`` running in the client instance: ~50 queries a second."""

    def __init__(self, net: LabNet) -> None:
        doc = net.deployer.latest(net.deployer.read(SPEC.id))
        assert doc is not None
        worker = doc.service("worker")
        assert worker is not None
        expected = [a for i in worker.instances for a in (i.ipv4, i.ipv6) if a]
        netns = net.netns("resolve", "production", "client")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, DNSLOOP,
             "worker.railway.internal", str(RATE), *expected],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"the loop did not start: {line} {self.proc.stderr}"

    def finish(self) -> dict[str, object]:
        out, err = self.proc.communicate("", timeout=30)
        assert self.proc.returncode == 0, err
        return dict(json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture()
def loop(net: LabNet) -> Iterator[ResolveLoop]:
    running = ResolveLoop(net)
    try:
        yield running
    finally:
        running.kill()


def test_dns_answers_through_ten_agent_kills_and_restarts(net: LabNet, loop: ResolveLoop) -> None:
    node = net.lab.node(1)
    resolver = net.lab.resolver_pid(node)
    assert resolver is not None
    agents = set()
    for _ in range(10):
        net.lab.kill_agent(node)  # SIGKILL: no chance to clean up
        agents.add(net.lab.restart_agent(node))
    report = loop.finish()
    assert len(agents) == 10
    assert net.lab.resolver_pid(node) == resolver, "the restarted agents did not adopt it"
    assert report["sent"] > 10 * RATE * 0.2, report  # the loop ran through the restarts
    assert report["lost"] == 0 and report["wrong"] == 0, report


def test_dns_answers_through_an_agent_upgrade(net: LabNet, loop: ResolveLoop) -> None:
    node = net.lab.node(1)
    resolver = net.lab.resolver_pid(node)
    old = net.lab.agent_pid(node)
    assert old is not None
    new = net.lab.upgrade_agent(node)  # started while the old one runs; it hands over
    assert new != old and net.lab.agent_pid(node) == new
    with pytest.raises(ProcessLookupError):
        os.kill(old, 0)
    report = loop.finish()
    assert net.lab.resolver_pid(node) == resolver
    assert report["lost"] == 0 and report["wrong"] == 0, report
    # The new agent serves: a change still reaches the resolver it adopted.
    grown = EnvironmentSpec(
        SPEC.project, SPEC.environment, services=(*SPEC.services, ServiceSpec("extra", ("node-1",)))
    )
    net.deploy(grown)
    netns = net.netns("resolve", "production", "client")
    found = net.run(netns, "getent", "ahosts", "extra.railway.internal")
    assert found.returncode == 0, found
    net.deploy(SPEC)


def test_a_resolver_that_exits_is_started_again_with_every_view(net: LabNet) -> None:
    node = net.lab.node(1)
    resolver = net.lab.resolver_pid(node)
    assert resolver is not None
    os.kill(resolver, signal.SIGKILL)
    assert wait_until(lambda: net.lab.resolver_pid(node) not in (None, resolver), timeout=10)
    netns = net.netns("resolve", "production", "client")
    assert wait_until(
        lambda: net.run(netns, "getent", "ahosts", "worker.railway.internal").returncode == 0,
        timeout=10,
    )
