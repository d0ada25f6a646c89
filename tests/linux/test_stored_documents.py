"""The environments' documents live in the control store: one lineage per environment,
compared writes, and the store (not what some node still holds) says what exists.

Each scenario here lost or resurrected state when the nodes replicated the documents among
themselves (see the issue "The control state in etcd")."""

from __future__ import annotations

import dataclasses
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.control.deployer import EnvironmentDeployer
from railnet.control.stored import DocumentConflict, StoredDocuments
from railnet.core.desired import EnvironmentSpec, ServiceSpec, with_service
from railnet.core.errors import AgentUnreachable
from railnet.core.names import environment_id
from railnet.core.store_keys import environment_prefix
from railnet.core.stored_document import parts
from railnet.store.etcd import StoreUnavailable

from .conftest import LabNet, running_lab

pytestmark = pytest.mark.linux


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3, dns=False) as net:
        yield net


def spec(env: str, *services: tuple[str, str]) -> EnvironmentSpec:
    return EnvironmentSpec(
        "stored", env, services=tuple(ServiceSpec(name, (node,)) for name, node in services)
    )


def stored_parts(lab: LabNet, env_id: str) -> dict[str, str]:
    prefix = environment_prefix(env_id)
    with lab.lab.store("operator") as store:
        _, entries = store.list(prefix)
    return {e.key.removeprefix(prefix): e.value.decode() for e in entries}


def test_a_deploy_writes_the_document_into_the_store(lab: LabNet) -> None:
    doc = lab.deploy(spec("one", ("api", "node-1"), ("db", "node-2"))).document
    assert stored_parts(lab, doc.id) == parts(doc)
    # What the hosting nodes hold is the store's document, byte for byte.
    for node in ("node-1", "node-2"):
        with lab.lab.client(lab.lab.node(int(node[-1]))) as client:
            assert client.held(doc.id, "").text == doc.to_json()


def test_of_two_writers_from_one_read_one_lands_and_the_other_is_told(lab: LabNet) -> None:
    doc = lab.deploy(spec("race", ("api", "node-1"))).document
    cluster = lab.cluster
    with EnvironmentDeployer(cluster) as first, EnvironmentDeployer(cluster) as second:
        documents = [d.stored_documents() for d in (first, second)]
        assert documents[0] is not None and documents[1] is not None
        read = [d.read(doc.id) for d in documents]  # type: ignore[union-attr]
        a = dataclasses.replace(doc, generation=doc.generation + 1, key_rotation="a")
        b = dataclasses.replace(doc, generation=doc.generation + 1, key_rotation="b")
        documents[0].write(doc.id, read[0], a)  # type: ignore[union-attr]
        with pytest.raises(DocumentConflict):
            documents[1].write(doc.id, read[1], b)  # type: ignore[union-attr]
        # Its retry reads again and builds on the winner: no two documents of one generation.
        assert documents[1].read(doc.id).document == a  # type: ignore[union-attr]
    lab.deploy(spec("race", ("api", "node-1")))  # back to what the nodes may hold


def test_concurrent_adds_from_two_stacks_all_land_with_unique_addresses(lab: LabNet) -> None:
    lab.deploy(spec("many", ("seed", "node-1")))
    cluster = lab.cluster
    errors: list[BaseException] = []

    def add(deployer: EnvironmentDeployer, names: list[str]) -> None:
        for name in names:
            node = f"node-{1 + hash(name) % 3}"
            try:
                deployer.update(
                    "stored",
                    "many",
                    lambda base, n=name, at=node: with_service(
                        base, ServiceSpec(n, (at,), f"s{n}")
                    ),
                )
            except BaseException as exc:
                errors.append(exc)

    with EnvironmentDeployer(cluster) as one, EnvironmentDeployer(cluster) as two:
        threads = [
            threading.Thread(target=add, args=(one, [f"a{i}" for i in range(10)])),
            threading.Thread(target=add, args=(two, [f"b{i}" for i in range(10)])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    env_id = environment_id("stored", "many")
    documents = StoredDocuments(lab.lab.store("operator"))
    try:
        doc = documents.read(env_id).document
    finally:
        documents.store.close()
    assert doc is not None
    names = {s.name for s in doc.services}
    assert names == {"seed", *(f"a{i}" for i in range(10)), *(f"b{i}" for i in range(10))}
    addresses = [i.ipv4 for s in doc.services for i in s.instances]
    assert len(addresses) == len(set(addresses)) == 21


def test_a_destroy_that_cannot_reach_the_nodes_fails_and_keeps_the_record(
    lab: LabNet, tmp_path: Path
) -> None:
    doc = lab.deploy(spec("reach", ("api", "node-2"))).document
    # A runner with a wrong route to every agent: the store still says where it lives.
    cluster = dataclasses.replace(
        lab.cluster,
        nodes=tuple(
            dataclasses.replace(n, agent=f"unix:{tmp_path}/{n.name}.sock")
            for n in lab.cluster.nodes
        ),
    )
    with EnvironmentDeployer(cluster, timeout=5) as lost, pytest.raises(AgentUnreachable) as raised:
        lost.destroy(doc.id)
    # It names the first node it could not reach (every node keeps a copy in a lab of 3).
    assert "unreachable" in str(raised.value) and "node node-1" in str(raised.value)
    assert stored_parts(lab, doc.id) == parts(doc)  # nothing was removed
    assert "node-2" in lab.deployer.destroy(doc.id)
    assert stored_parts(lab, doc.id) == {}


def test_a_node_restored_from_an_old_backup_does_not_bring_a_destroyed_environment_back(
    lab: LabNet, tmp_path: Path
) -> None:
    doc = lab.deploy(spec("restored", ("api", "node-3"))).document
    node = lab.lab.node(3)
    backup = tmp_path / "node-3.tar"
    with tarfile.open(backup, "w") as tar:
        tar.add(node.state_dir, arcname="state")
    assert "node-3" in lab.deployer.destroy(doc.id)
    assert stored_parts(lab, doc.id) == {}
    # The old backup comes back; its agent rebuilds what the backup holds.
    lab.lab.kill_agent(node)
    shutil.rmtree(node.state_dir)
    with tarfile.open(backup) as tar:
        tar.extractall(node.state_dir.parent, filter="tar")
    lab.lab.restart_agent(node)
    with lab.lab.client(node) as client:
        assert client.held(doc.id, "").text == doc.to_json()  # the leftover is back
    # What the providers consult (an Environment's owner check among them) is the store's:
    # the environment does not exist.
    assert lab.deployer.current(doc.id, ["node-3"]) is None
    # Another stack declares an environment of that name: it is a new one, not refused as
    # the destroyed stack's, and the restored leftovers make way for it.
    owner = "urn:pulumi:other::app::railnet:index:Environment::restored"
    fresh = lab.deploy(
        dataclasses.replace(spec("restored", ("web", "node-3")), owner=owner)
    ).document
    assert [s.name for s in fresh.services] == ["web"] and fresh.owner == owner
    with lab.lab.client(node) as client:
        held = client.held(doc.id, "").text
    assert held == fresh.to_json()
    assert "node-3" in lab.deployer.destroy(doc.id)


def test_without_quorum_a_deploy_fails_closed_and_changes_nothing(lab: LabNet) -> None:
    doc = lab.deploy(spec("quorum", ("api", "node-1"))).document
    members = lab.lab.etcd_members()
    for member in members[:2]:
        lab.lab.stop_etcd(member)
    try:
        # The membership was read before the store went away (the provider reads it once
        # per run): the deploy itself fails on the store, before any node changes.
        with (
            EnvironmentDeployer(lab.cluster) as deployer,
            pytest.raises(StoreUnavailable) as raised,
        ):
            deployer.apply(spec("quorum", ("api", "node-1"), ("db", "node-2")))
        assert all(m.local_endpoint in str(raised.value) for m in members)
        for i in (1, 2, 3):
            with lab.lab.client(lab.lab.node(i)) as client:
                held = client.held(doc.id, "").text
            assert held in (None, doc.to_json())  # db was never placed anywhere
    finally:
        for member in members[:2]:
            lab.lab.start_etcd(member)


def test_a_node_holding_a_generation_above_the_store_takes_the_next_one(lab: LabNet) -> None:
    doc = lab.deploy(spec("above", ("api", "node-1"))).document
    # node-1 holds a later generation than the store (restored from a backup of an earlier
    # life of this name, say): the next deploy goes above it instead of being refused.
    ahead = dataclasses.replace(doc, generation=doc.generation + 5)
    with lab.lab.client(lab.lab.node(1)) as client:
        client.apply(ahead.to_json(), doc.generation)
    nxt = lab.deploy(spec("above", ("api", "node-1"), ("db", "node-2"))).document
    assert nxt.generation == doc.generation + 6
    assert stored_parts(lab, doc.id) == parts(nxt)
    with lab.lab.client(lab.lab.node(1)) as client:
        assert client.held(doc.id, "").text == nxt.to_json()


def test_a_destroy_checked_against_a_document_fails_when_the_store_moved_on(
    lab: LabNet,
) -> None:
    doc = lab.deploy(spec("checked", ("api", "node-1"))).document
    joined = lab.deploy(spec("checked", ("api", "node-1"), ("other", "node-2"))).document
    with pytest.raises(DocumentConflict):
        lab.deployer.destroy(doc.id, expected=doc)
    assert stored_parts(lab, doc.id) == parts(joined)  # nothing removed
    assert "node-1" in lab.deployer.destroy(doc.id, expected=joined)
