"""A run that fails halfway leaves nothing that the next run does not converge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.control.client import AgentError
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.errors import DataPlaneError
from railnet.core.local import InstancePlacement, LocalEnvironment
from tests.agent.test_deploy import FakeCluster, lab  # noqa: F401  (the fixture)

pytestmark = pytest.mark.agent

SPEC = EnvironmentSpec(
    "shop",
    "production",
    services=(ServiceSpec("api", ("node-1", "node-2")), ServiceSpec("db", ("node-3",))),
)


@pytest.fixture
def flaky_node_2(lab: FakeCluster) -> Iterator[list[int]]:  # noqa: F811
    """node-2's kernel refuses the first instance it is asked to build."""
    network = lab.agents["node-2"].reconciler.network
    real = network.create_instance
    failures = [1]

    def create_instance(env: LocalEnvironment, instance: InstancePlacement) -> None:
        if failures[0]:
            failures[0] -= 1
            raise DataPlaneError(f"cannot build {instance.netns}: injected failure")
        real(env, instance)

    network.create_instance = create_instance  # type: ignore[method-assign]
    yield failures


def test_a_failed_apply_converges_on_the_next_run(
    lab: FakeCluster,  # noqa: F811
    flaky_node_2: list[int],
    tmp_path: Path,
) -> None:
    with pytest.raises(AgentError) as err:
        lab.deployer.apply(SPEC)
    assert err.value.node == "node-2" and "injected failure" in str(err.value)
    # Halfway: node-1 and node-3 applied; node-2 stored the document but lacks its instance.
    with lab.client("node-2") as c:
        assert c.status().environments[0].drift
    applied = lab.deployer.apply(SPEC)  # the next run
    assert flaky_node_2 == [0]
    held = {n: lab.deployer.read(SPEC.id)[n] for n in ("node-1", "node-2", "node-3")}
    assert len({d.to_json() for d in held.values() if d is not None}) == 1
    assert applied.document == held["node-1"]
    for node in ("node-1", "node-2", "node-3"):
        with lab.client(node) as c:
            assert list(c.status().environments[0].drift) == []
    assert any("create instance api#1" in line for line in applied.changes["node-2"])
