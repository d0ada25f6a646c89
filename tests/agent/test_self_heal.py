# ruff: noqa: F811 - the fixtures agent, applied, client and tls come from test_servicer
"""Self-healing on fake backends: the kernel's events (``FakeKernel`` emits what Linux
would: netlink messages, deleted namespaces, the device's process exiting) reach the
healer through ``FakeDriftWatch``; a peer removed with ``wg`` makes no event and is found
by the device poll. No periodic repair runs here: only the healer can repair."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from railnet.agent.backends import Nudge
from railnet.agent.fakes import FakeDriftWatch
from railnet.agent.healing import Debouncer, SelfHealer
from railnet.control.client import AgentClient
from railnet.core.document import EnvironmentDocument

from .test_servicer import (  # noqa: F401 - agent, applied, client, tls: fixtures
    ENV,
    PEER_KEY,
    SPEC,
    RunningAgent,
    agent,
    applied,
    build,
    client,
    env_netns,
    netns_of,
    tls,
    with_service,
)

pytestmark = pytest.mark.agent

BOUND = 5.0
"""Seconds a test waits for a repair (the healer here debounces 50 ms, polls 100 ms)."""


class Repairs:
    """What the healer reported, for tests to wait on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str], frozenset[str]]] = []
        self.cond = threading.Condition()

    def __call__(self, env_id: str, changes: list[str], sources: frozenset[str]) -> None:
        with self.cond:
            self.seen.append((env_id, changes, sources))
            self.cond.notify_all()

    def wait(
        self, count: int = 1, timeout: float = BOUND
    ) -> list[tuple[str, list[str], frozenset[str]]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.seen) >= count, timeout)
            return list(self.seen)


@pytest.fixture
def repairs() -> Repairs:
    return Repairs()


@pytest.fixture
def healer(
    agent: RunningAgent, applied: EnvironmentDocument, repairs: Repairs
) -> Iterator[SelfHealer]:
    heal = SelfHealer(
        agent.reconciler,
        FakeDriftWatch(agent.kernel),
        debounce=0.05,
        poll=0.1,
        grace=0.05,
        on_repair=repairs,
    )
    heal.start()
    time.sleep(0.2)  # it has tracked what the apply built
    yield heal
    heal.stop()


def drift(client: AgentClient) -> list[str]:
    return list(client.status(ENV).environments[0].drift)


def wait_for(check: object, timeout: float = BOUND) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_deleted_instance_namespace_is_made_again_without_a_periodic_repair(
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
    healer: SelfHealer,
    repairs: Repairs,
) -> None:
    k = agent.kernel
    api_ns = netns_of(agent, applied, "api", 0)
    k.delete_namespace(api_ns)
    (env_id, changes, sources) = repairs.wait()[0]
    assert env_id == ENV and "deleted" in sources
    assert [c.split(" (")[0] for c in changes] == [f"create instance api#0 in {api_ns}"]
    assert k.namespaces[api_ns].linked
    (env,) = client.status(ENV).environments
    assert list(env.drift) == []
    assert "processes that ran in it are gone" in env.lost[0]


def test_a_cut_link_is_rewired_in_place_and_only_that_instance_is_read_inside(
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
    healer: SelfHealer,
    repairs: Repairs,
) -> None:
    k = agent.kernel
    db_ns = netns_of(agent, applied, "db", 0)
    instance = k.namespaces[db_ns]
    k.observed.clear()
    k.cut_link(db_ns)
    (_, changes, _) = repairs.wait()[0]
    assert changes == [f"rewire instance db#0 in {db_ns} in place"]
    assert k.namespaces[db_ns] is instance and instance.linked
    # The repair looked inside the instance the event came from, not inside every one.
    assert (env_netns(agent), frozenset({db_ns})) in k.observed
    assert (env_netns(agent), True) not in k.observed


def test_a_killed_device_comes_back_with_its_key_port_and_peers(
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
    healer: SelfHealer,
    repairs: Repairs,
) -> None:
    k = agent.kernel
    netns = env_netns(agent)
    before = k.device_in(netns)
    assert before is not None
    k.kill_device(netns)
    assert wait_for(lambda: drift(client) == [])
    after = k.device_in(netns)
    assert after is not None and after.pid != before.pid
    assert (after.private_key, after.listen_port) == (before.private_key, before.listen_port)
    assert set(after.peers) == {PEER_KEY}
    assert after.peers[PEER_KEY].allowed_ips == before.peers[PEER_KEY].allowed_ips
    assert "exit" in repairs.wait()[0][2]


def test_a_removed_peer_makes_no_event_and_the_device_poll_puts_it_back(
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
    healer: SelfHealer,
    repairs: Repairs,
) -> None:
    k = agent.kernel
    netns = env_netns(agent)
    k.remove_peer(netns, PEER_KEY)
    (_, changes, sources) = repairs.wait()[0]
    assert sources == {"device"}
    assert [c.split(" (")[0].split(" at ")[0] for c in changes] == ["set peer node-2"]
    device = k.device_in(netns)
    assert device is not None and PEER_KEY in device.peers


def test_a_burst_of_faults_is_one_repair(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument, repairs: Repairs
) -> None:
    # A window of its own, wide enough that a loaded machine cannot split the burst.
    heal = SelfHealer(
        agent.reconciler, FakeDriftWatch(agent.kernel), debounce=0.3, grace=0.05, on_repair=repairs
    )
    heal.start()
    try:
        time.sleep(0.2)
        k = agent.kernel
        api_ns = netns_of(agent, applied, "api", 0)
        db_ns = netns_of(agent, applied, "db", 0)
        k.cut_link(api_ns)
        k.cut_link(db_ns)
        k.unconfigure(env_netns(agent))
        (_, changes, _) = repairs.wait()[0]
        assert len(changes) == 3, changes
        time.sleep(0.8)  # the repair's own events came, and started nothing
        assert len(repairs.seen) == 1, repairs.seen
    finally:
        heal.stop()


def test_the_agents_own_applies_start_no_repair(
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
    healer: SelfHealer,
    repairs: Repairs,
) -> None:
    """An apply changes namespaces, veths and the device (events, all of them); the
    healer takes them for the apply's own and does not look again."""
    k = agent.kernel
    grown = build(client, with_service(SPEC, "web", "node-1"), applied)
    before = k.mutations
    assert client.apply(grown.to_json(), 1)[0] == 2
    assert k.mutations > before
    time.sleep(0.6)  # several debounce windows and polls
    assert repairs.seen == []
    assert healer.ignored > 0  # the events came, and were the apply's
    # It watches what the apply built: a fault there is healed.
    web_ns = netns_of(agent, grown, "web", 0)
    k.delete_namespace(web_ns)
    assert wait_for(lambda: web_ns in k.namespaces and k.namespaces[web_ns].linked)


def test_after_an_apply_the_watch_looks_again_at_that_environment_only(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument, repairs: Repairs
) -> None:
    """The watch takes in what an apply built by looking again at its environment alone
    (the full look waits for the poll, set beyond the test here), and watches it."""
    watch = FakeDriftWatch(agent.kernel)
    heal = SelfHealer(
        agent.reconciler, watch, debounce=0.05, poll=60, grace=0.05, on_repair=repairs
    )
    heal.start()
    try:
        time.sleep(0.2)
        assert watch.retracked == []  # the first look is the full one
        grown = build(client, with_service(SPEC, "web", "node-1"), applied)
        assert client.apply(grown.to_json(), 1)[0] == 2
        assert wait_for(lambda: watch.retracked == [frozenset({ENV})])
        time.sleep(0.2)  # past the grace: what happens now is not the apply's own
        web_ns = netns_of(agent, grown, "web", 0)
        k = agent.kernel
        k.delete_namespace(web_ns)
        assert wait_for(lambda: web_ns in k.namespaces and k.namespaces[web_ns].linked)
        assert repairs.seen and "deleted" in repairs.seen[0][2]
    finally:
        heal.stop()


def test_a_repair_that_fails_is_tried_again_later(
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
    healer: SelfHealer,
    repairs: Repairs,
) -> None:
    k = agent.kernel
    netns = env_netns(agent)
    network = agent.reconciler.network
    real = network.configure_namespace
    calls: list[float] = []

    def broken(env: object) -> None:
        calls.append(time.monotonic())
        raise OSError("netlink said no")

    network.configure_namespace = broken  # type: ignore[method-assign]
    try:
        k.unconfigure(netns)
        assert wait_for(lambda: len(calls) >= 2)
        assert calls[1] - calls[0] >= 0.09  # not at once: after the backoff
    finally:
        network.configure_namespace = real  # type: ignore[method-assign]
    assert wait_for(lambda: drift(client) == [])


def test_without_a_healer_drift_stays_and_status_reports_it(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    api_ns = netns_of(agent, applied, "api", 0)
    k.delete_namespace(api_ns)
    time.sleep(0.3)
    assert [c.split(" (")[0] for c in drift(client)] == [f"create instance api#0 in {api_ns}"]
    assert api_ns not in k.namespaces


# -- the debouncer, alone ------------------------------------------------------------------


def test_the_debouncer_coalesces_per_environment_from_the_first_nudge() -> None:
    d = Debouncer(0.1)
    d.add(Nudge("e1", None, "netlink", 0.0), now=10.0)
    d.add(Nudge("e1", "ns-a", "netlink", 0.0), now=10.05)
    d.add(Nudge("e2", None, "exit", 0.0), now=10.06)
    assert d.next_due() == pytest.approx(10.1)
    assert d.pop_due(10.09) == []
    (first,) = d.pop_due(10.1)
    assert (first.env_id, first.instances, first.sources) == ("e1", {"ns-a"}, {"netlink"})
    d.add(Nudge("e1", None, "device", 0.0), now=10.12)  # a new window after the repair
    due = d.pop_due(10.3)
    assert [(x.env_id, x.sources) for x in due] == [("e1", {"device"}), ("e2", {"exit"})]
    assert len(d) == 0 and d.next_due() is None
