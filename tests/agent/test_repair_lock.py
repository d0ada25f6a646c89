# ruff: noqa: F811 - the fixtures agent, applied, client and tls come from test_servicer
"""A periodic repair looks inside every instance namespace, which takes long in a large
environment: it looks before taking the environment's lock, so an apply never waits for
that look, and a look that an apply overtook is not trusted."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from railnet.control.client import AgentClient
from railnet.core.document import EnvironmentDocument

from .test_servicer import (  # noqa: F401 - agent, applied, client, tls: fixtures
    ENV,
    SPEC,
    RunningAgent,
    agent,
    applied,
    build,
    client,
    tls,
    with_service,
)

pytestmark = pytest.mark.agent


def test_an_apply_does_not_wait_for_a_repairs_deep_look(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    network = agent.reconciler.network
    real_observe = network.observe
    looking, release = threading.Event(), threading.Event()
    deep_looks: list[bool] = []

    def slow_observe(env: Any, deep: Any = True, only: Any = None) -> Any:
        if deep is True and not looking.is_set():
            looking.set()
            assert release.wait(10)
        deep_looks.append(deep is True)
        return real_observe(env, deep, only=only)

    network.observe = slow_observe  # type: ignore[method-assign]
    repaired: list[list[str]] = []
    repair = threading.Thread(target=lambda: repaired.append(agent.reconciler.reconcile(ENV)))
    repair.start()
    try:
        assert looking.wait(10)
        # The repair is in the middle of its look: an apply goes through meanwhile.
        nxt = build(client, with_service(SPEC, "cache", "node-1"), applied)
        generation, changes = client.apply(nxt.to_json(), applied.generation)
        assert generation == nxt.generation
        assert any("create instance cache#0" in c for c in changes)
        assert repair.is_alive()  # still looking: the apply did not wait for it
    finally:
        release.set()
        repair.join(10)
        network.observe = real_observe  # type: ignore[method-assign]
    # The look was taken before the apply, so the repair looked again (before the lock
    # again) rather than undo the apply's new instance.
    assert repaired == [[]]
    assert deep_looks.count(True) == 2
    assert list(client.status(ENV).environments[0].drift) == []


def test_a_look_nothing_overtook_is_used_once(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    network = agent.reconciler.network
    real_observe = network.observe
    deep_looks: list[bool] = []

    def counted(env: Any, deep: Any = True, only: Any = None) -> Any:
        deep_looks.append(deep is True)
        return real_observe(env, deep, only=only)

    network.observe = counted  # type: ignore[method-assign]
    try:
        assert agent.reconciler.reconcile(ENV) == []
    finally:
        network.observe = real_observe  # type: ignore[method-assign]
    assert deep_looks == [True]
