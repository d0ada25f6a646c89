"""Deploys on a real lab, driven through the engine-faithful harness (``python -m
pulumi.dynamic``), while things go wrong: agents die, replies get lost, services scale,
addresses are freed. See docs/failure-model.md."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from railnet.control.membership import add_member, remove_member
from railnet.core.desired import keepers_of
from railnet.core.document import EnvironmentDocument
from railnet.core.names import environment_id
from railnet.core.resources import Kind
from railnet.lab.local_cluster import Lab, LabNode

from ..provider.harness import Declared, DynamicProvider, Engine, ProviderError, engine_on
from ..provider.test_engine_protocol import program, props
from .conftest import LabNet, file_cluster, inline_cluster, running_lab

pytestmark = pytest.mark.linux

ENV = environment_id("shop", "production")


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(4, dns=False) as net:
        yield net


@pytest.fixture()
def engine(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file)) as eng:
        try:
            yield eng
        finally:
            for node in lab.lab.nodes():  # a test that killed an agent leaves it running
                if lab.lab.agent_pid(node) is None:
                    lab.lab.restart_agent(node)


def node(lab: Lab, name: str) -> LabNode:
    return next(n for n in lab.nodes() if n.name == name)


def held(lab: Lab, name: str) -> EnvironmentDocument | None:
    with lab.client(node(lab, name)) as client:
        text = client.document(ENV)
    return None if text is None else EnvironmentDocument.from_json(text)


def instances_on(lab: Lab, name: str) -> list[str]:
    with lab.client(node(lab, name)) as client:
        reply = client.status(ENV)
    return sorted(f"{i.service}#{i.index}" for e in reply.environments for i in e.instances)


def outputs(engine: Engine, name: str) -> dict[str, Any]:
    return engine.state[name].outputs


# -- sticky placement ----------------------------------------------------------------------


def test_scaling_up_leaves_the_existing_replica_where_it_is(engine: Engine) -> None:
    for start in ("node-1", "node-2", "node-3", "node-4"):
        engine.up(program({"web": {"nodes": [start]}}))
        engine.up(program({"web": {"replicas": 1}}))
        assert outputs(engine, "web")["placement"] == [start]
        address = outputs(engine, "web")["ipv6_addresses"][0]
        engine.up(program({"web": {"replicas": 2}}))
        web = outputs(engine, "web")
        assert web["placement"][0] == start, f"replica 0 moved off {start}"
        assert web["ipv6_addresses"][0] == address
        assert web["placement"][1] != start
        engine.destroy()


# -- dead nodes ----------------------------------------------------------------------------


def test_a_dead_node_outside_the_environment_never_fails_a_deploy(
    lab: LabNet, engine: Engine
) -> None:
    names = [n.name for n in lab.lab.nodes()]
    outside = next(n for n in names if n not in keepers_of(ENV, names))
    inside = [n for n in names if n != outside]
    lab.lab.kill_agent(node(lab.lab, outside))
    engine.up(program({"api": {"nodes": inside[:2]}}))
    engine.up(program({"api": {"nodes": inside[:2]}, "db": {"nodes": inside[2:]}}))
    assert instances_on(lab.lab, inside[2]) == ["db#0"]
    engine.refresh()
    engine.destroy()
    assert all(held(lab.lab, n) is None for n in inside)


def test_a_dead_keeper_that_hosts_nothing_never_fails_a_deploy(lab: LabNet, engine: Engine) -> None:
    names = [n.name for n in lab.lab.nodes()]
    keeper = keepers_of(ENV, names)[0]
    others = [n for n in names if n != keeper]
    engine.up(program({"api": {"nodes": others[:1]}}))
    lab.lab.kill_agent(node(lab.lab, keeper))
    engine.up(program({"api": {"nodes": others[:1]}, "db": {"nodes": others[1:2]}}))
    engine.up(program({"api": {"nodes": others[:1]}}))
    assert instances_on(lab.lab, others[1]) == []
    seen = engine.refresh()
    # Named, without its agent's address: that comes from the railnet:cluster setting,
    # which may be secret config, and an output is stored in clear text.
    assert seen["production"].after.get("unreachable_nodes") == [keeper]
    # Removing the environment's record needs every copy of it, or a stale one could come
    # back later as the environment: the destroy names the silent keeper ...
    with pytest.raises(ProviderError) as failed:
        engine.destroy()
    assert keeper in failed.value.details
    # ... and the next one, once it answers, completes.
    lab.lab.restart_agent(node(lab.lab, keeper))
    engine.destroy()
    assert all(held(lab.lab, n) is None for n in names)


def test_a_dead_hosting_node_fails_the_run_by_name_and_the_next_run_converges(
    lab: LabNet, engine: Engine
) -> None:
    engine.up(program({"api": {"nodes": ["node-1"]}, "db": {"nodes": ["node-3"]}}))
    lab.lab.kill_agent(node(lab.lab, "node-3"))
    with pytest.raises(ProviderError) as failed:
        engine.up(
            program(
                {
                    "api": {"nodes": ["node-1"]},
                    "db": {"nodes": ["node-3"]},
                    "cache": {"nodes": ["node-1"]},
                }
            )
        )
    assert "node-3" in failed.value.details
    assert str(node(lab.lab, "node-3").agent_socket) in failed.value.details
    lab.lab.restart_agent(node(lab.lab, "node-3"))
    engine.state.pop("cache", None)  # the engine records no outputs for a failed create
    engine.up(
        program(
            {
                "api": {"nodes": ["node-1"]},
                "db": {"nodes": ["node-3"]},
                "cache": {"nodes": ["node-1"]},
            }
        )
    )
    one, three = held(lab.lab, "node-1"), held(lab.lab, "node-3")
    assert one is not None and three is not None
    assert one.generation == three.generation and one.service("cache") is not None


def test_moving_every_replica_off_a_dead_node_succeeds_and_completes_later(
    lab: LabNet, engine: Engine
) -> None:
    engine.up(program({"api": {"nodes": ["node-1"]}, "db": {"nodes": ["node-3"]}}))
    lab.lab.kill_agent(node(lab.lab, "node-3"))
    engine.up(program({"api": {"nodes": ["node-1"]}, "db": {"nodes": ["node-2"]}}))
    doc = held(lab.lab, "node-1")
    assert doc is not None and doc.leaving == ("node-3",)
    assert instances_on(lab.lab, "node-2") == ["db#0"]

    # While node-3 is down, refresh reports it instead of failing with a traceback.
    seen = engine.refresh()
    assert "node-3" in " ".join(seen["db"].after.get("unreachable_nodes") or [])

    lab.lab.restart_agent(node(lab.lab, "node-3"))
    engine.up(program({"api": {"nodes": ["node-1"]}, "db": {"nodes": ["node-2"]}}))
    assert held(lab.lab, "node-3") is None
    assert instances_on(lab.lab, "node-3") == []
    doc = held(lab.lab, "node-1")
    assert doc is not None and "node-3" not in {n.name for n in doc.nodes}


def test_moving_every_replica_off_a_dead_keeper_completes_when_it_answers(
    lab: LabNet, engine: Engine
) -> None:
    names = [n.name for n in lab.lab.nodes()]
    keeper = keepers_of(ENV, names)[0]
    other = next(n for n in names if n != keeper)
    engine.up(program({"api": {"nodes": [other]}, "db": {"nodes": [keeper]}}))
    lab.lab.kill_agent(node(lab.lab, keeper))
    engine.up(program({"api": {"nodes": [other]}, "db": {"nodes": [other]}}))
    doc = held(lab.lab, other)
    assert doc is not None and doc.leaving == (keeper,)
    assert outputs(engine, "db")["pending_removals"] == [keeper]

    lab.lab.restart_agent(node(lab.lab, keeper))
    assert instances_on(lab.lab, keeper) == ["db#0"]  # stale until a deploy tells it
    engine.up(program({"api": {"nodes": [other]}, "db": {"nodes": [other]}}))
    # The keeper still keeps the document, and hosts nothing of the environment.
    kept = held(lab.lab, keeper)
    assert kept is not None and kept == held(lab.lab, other)
    assert kept.leaving == () and keeper not in {n.name for n in kept.nodes}
    assert instances_on(lab.lab, keeper) == []
    state = node(lab.lab, keeper).state_dir / "environments" / ENV
    assert not (state / "private.key").exists()


# -- lost replies ----------------------------------------------------------------------------


def test_a_create_whose_reply_was_lost_is_adopted_on_retry(engine: Engine) -> None:
    engine.up(program({"cache": {"nodes": ["node-2"]}}))
    state = engine.state["cache"]
    urn = "urn:pulumi:test::railnet-test::pulumi-python:dynamic/railnet:Service::cache"
    # The engine never saw the reply, so it calls Create again with the same inputs.
    id_, outs = engine.provider.create(urn, state.inputs)
    assert id_ == state.id
    assert outs["ipv4_addresses"] == state.outputs["ipv4_addresses"]
    assert outs["ipv6_addresses"] == state.outputs["ipv6_addresses"]
    # ... and Delete and Update too.
    engine.provider.update(state.id, urn, state.outputs, state.inputs)
    engine.provider.delete(state.id, urn, state.outputs)
    engine.provider.delete(state.id, urn, state.outputs)
    engine.state.pop("cache")


# -- address quarantine ----------------------------------------------------------------------


def test_freed_addresses_are_not_handed_out_again_at_once(engine: Engine) -> None:
    engine.up(program({"old": {"nodes": ["node-1"]}, "keep": {"nodes": ["node-2"]}}))
    freed = set(outputs(engine, "old")["ipv4_addresses"] + outputs(engine, "old")["ipv6_addresses"])
    engine.up(program({"keep": {"nodes": ["node-2"]}}))
    engine.up(program({"keep": {"nodes": ["node-2"]}, "new": {"nodes": ["node-1"]}}))
    engine.up(
        program(
            {"keep": {"nodes": ["node-2"]}, "new": {"nodes": ["node-1"]}, "more": {"replicas": 2}}
        )
    )
    given = set()
    for name in ("new", "more"):
        given |= set(
            outputs(engine, name)["ipv4_addresses"] + outputs(engine, name)["ipv6_addresses"]
        )
    assert not given & freed


# -- shared environments ---------------------------------------------------------------------


def joined(*names: str) -> list[Declared]:
    """A second stack's program: services that join shop/production by reference."""
    return [
        Declared(
            "Service",
            name,
            lambda s, name=name: (
                props(
                    Kind.SERVICE,
                    name=name,
                    project="shop",
                    environment="production",
                    nodes=["node-2"],
                )
                | {"environment_owner": ""}
            ),
        )
        for name in names
    ]


@pytest.fixture()
def second(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file), stack="second") as eng:
        yield eng


def test_stacks_that_share_an_environment_never_remove_each_others_services(
    lab: LabNet, engine: Engine, second: Engine
) -> None:
    engine.up(program({"api": {"nodes": ["node-1"]}}))
    second.up(joined("worker"))
    doc = held(lab.lab, "node-1")
    assert doc is not None and {s.name for s in doc.services} == {"api", "worker"}
    worker = doc.service("worker")
    assert worker is not None and worker.owner == second.urn("Service", "worker")
    # The joining service takes the environment's settings, it does not set them.
    assert second.state["worker"].outputs["private_domain"] == "worker.railway.internal"

    # The owner's destroy removes its own service, then refuses to delete the environment
    # while another stack's service lives in it, and says which.
    with pytest.raises(ProviderError) as refused:
        engine.destroy()
    assert "worker" in refused.value.details
    assert second.urn("Service", "worker") in refused.value.details
    doc = held(lab.lab, "node-2")
    assert doc is not None and [s.name for s in doc.services] == ["worker"]
    assert instances_on(lab.lab, "node-2") == ["worker#0"]

    second.destroy()  # the second stack goes; the first can now finish
    engine.destroy()
    assert held(lab.lab, "node-1") is None and held(lab.lab, "node-2") is None


def test_another_stack_cannot_take_a_service_name_or_declare_the_environment(
    engine: Engine, second: Engine
) -> None:
    engine.up(program({"api": {"nodes": ["node-1"]}}))
    with pytest.raises(ProviderError) as taken:
        second.up(joined("api"))
    assert engine.urn("Service", "api") in taken.value.details
    second.state.clear()
    with pytest.raises(ProviderError) as declared:
        second.up(program({}))
    assert "belongs to" in declared.value.details
    assert engine.urn("Environment", "production") in declared.value.details
    second.state.pop("shop", None)


def test_a_node_joining_the_cluster_moves_nothing(lab: LabNet, tmp_path: Path) -> None:
    # The membership as it was before node-4 joined: three nodes in the store.
    whole = inline_cluster(lab.lab)
    node_4 = lab.cluster.node("node-4")
    with lab.lab.store("provider") as store:
        remove_member(store, "node-4")
    before_join = DynamicProvider({"railnet:cluster": whole})
    engine = Engine(before_join)
    try:
        engine.up(program({"api": {"replicas": 3}}))
        placed = outputs(engine, "api")["placement"]
        assert sorted(placed) == ["node-1", "node-2", "node-3"]
    finally:
        before_join.close()
        with lab.lab.store("provider") as store:
            add_member(store, node_4, {"agent_tcp": lab.lab.node(4).agent_tcp})
    # node-4 joins the cluster; the next run scales api up by one. (For this service a
    # placement recomputed over four nodes would move every replica.)
    engine.provider = DynamicProvider({"railnet:cluster": whole})
    try:
        engine.up(program({"api": {"replicas": 4}}))
        assert outputs(engine, "api")["placement"][:3] == placed
        assert outputs(engine, "api")["placement"][3] == "node-4"
    finally:
        try:
            engine.destroy()
        finally:
            engine.provider.close()


# -- nodes outside the environment -----------------------------------------------------------


class CountingSocket:
    """A unix socket standing in for an agent that must never be asked: it counts every
    connection and closes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            peer.close()

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)


def test_a_deploy_never_asks_a_node_outside_the_environment(lab: LabNet) -> None:
    """Two more nodes join the cluster file, neither hosting nor keeping shop/production:
    a new environment, a service placed on a node the environment never had, a refresh, a
    second stack joining, and the destroy, all leave them unasked."""
    whole = file_cluster(lab.lab)
    real = [n["name"] for n in whole["nodes"]]  # type: ignore[attr-defined]
    # Outsiders: names that the environment's keepers never include.
    outsiders = [
        name
        for name in (f"far-{i}" for i in range(40))
        if name not in keepers_of(ENV, [*real, name])
    ][:2]
    keep = keepers_of(ENV, [*real, *outsiders])
    assert not set(outsiders) & set(keep)
    directory = Path(tempfile.mkdtemp(prefix="rn-far-", dir="/tmp"))
    traps = [CountingSocket(directory / f"{name}.sock") for name in outsiders]
    cluster = dict(
        whole,
        nodes=whole["nodes"]  # type: ignore[operator]
        + [{"name": n, "agent": f"unix:{t.path}"} for n, t in zip(outsiders, traps, strict=True)],
    )
    first = Engine(DynamicProvider({"railnet:cluster": json.dumps(cluster)}))
    other = Engine(DynamicProvider({"railnet:cluster": json.dumps(cluster)}), stack="second")
    try:
        first.up(program({"api": {"nodes": ["node-1"]}}))
        # A node that never had the environment: the survey cannot start from it.
        fresh = next(n for n in real if n != "node-1")
        first.up(program({"api": {"nodes": ["node-1"]}, "db": {"nodes": [fresh]}}))
        first.refresh()
        other.up(joined("worker"))
        other.destroy()
        first.destroy()
        assert all(held(lab.lab, n) is None for n in real)
    finally:
        for provider in (first.provider, other.provider):
            provider.close()
        for trap in traps:
            trap.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert [t.connections for t in traps] == [0, 0], "a node outside the environment was asked"
