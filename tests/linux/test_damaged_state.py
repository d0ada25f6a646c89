"""One damaged state file harms only its own environment: the agent logs the file's path
and keeps it, the environment's data plane and DNS keep running, status answers for every
other environment, and the provider's next apply repairs the file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec

from .conftest import LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux

BROKEN = EnvironmentSpec(
    "shop", "broken", services=(ServiceSpec("a", ("node-1",)), ServiceSpec("b", ("node-2",)))
)
HEALTHY = EnvironmentSpec("shop", "healthy", services=(ServiceSpec("c", ("node-1",)),))
PORT = 7300


@pytest.fixture(scope="module")
def net() -> Iterator[LabNet]:
    with running_lab(2) as lab:
        lab.deploy(BROKEN)
        lab.deploy(HEALTHY)
        yield lab


def test_a_corrupt_document_harms_only_its_own_environment(net: LabNet) -> None:
    node = net.lab.node(1)
    a = net.netns("shop", "broken", "a")
    b = net.netns("shop", "broken", "b")
    net.serve(b, "b-token", PORT)
    assert net.tcp(a, "b.railway.internal", PORT).output == "b-token:ping"

    damaged = node.state_dir / "environments" / BROKEN.id / "document.json"
    garbage = b'{"id": "' + BROKEN.id.encode() + b'", "generation": "oops'
    damaged.write_bytes(garbage)
    net.lab.restart_agent(node)  # it reads the file again at start

    log = (net.lab.directory / node.name / "agent.log").read_text()
    assert str(damaged) in log
    assert damaged.read_bytes() == garbage  # kept for the operator
    # Status answers for the node: the healthy environment as usual, the damaged one
    # with its file named.
    with net.lab.client(node) as client:
        reply = client.status()
    by_id = {e.env_id: e for e in reply.environments}
    assert by_id[HEALTHY.id].generation == 1 and not list(by_id[HEALTHY.id].drift)
    assert any(str(damaged) in d for d in by_id[BROKEN.id].drift), by_id[BROKEN.id]
    # The damaged environment's data plane and DNS keep working.
    assert net.tcp(a, "b.railway.internal", PORT).output == "b-token:ping"

    # The provider's next apply of the environment repairs the file.
    net.deploy(BROKEN)
    assert damaged.read_bytes() != garbage
    with net.lab.client(node) as client:
        assert client.document(BROKEN.id) is not None
        fixed = {e.env_id: e for e in client.status().environments}[BROKEN.id]
    assert not list(fixed.drift)
    assert wait_until(lambda: net.tcp(a, "b.railway.internal", PORT).ok, timeout=10)
