"""EnvironmentDeployer against three in-process agents (mTLS over unix sockets, fake kernels)."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

import railnet.control.deployer
from railnet.control.client import AgentAddress, AgentClient, AgentError
from railnet.control.cluster import Cluster, ClusterNode, ClusterTlsPaths
from railnet.control.deployer import Applied, EnvironmentDeployer, Survey
from railnet.core.desired import (
    EnvironmentSpec,
    ServiceSpec,
    build_document,
    keepers_of,
    service_id,
    with_service,
)
from railnet.core.dns import ResolverView, zone_records
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import DataPlaneError, InvalidField
from railnet.core.local import host_route
from railnet.core.names import environment_netns, instance_netns
from railnet.pki.certs import TlsFiles, write_cluster_tls
from tests.agent.test_servicer import RunningAgent, start_agent

pytestmark = pytest.mark.agent

NODES = ("node-1", "node-2", "node-3")


@dataclass
class FakeCluster:
    cluster: Cluster
    agents: dict[str, RunningAgent]
    deployer: EnvironmentDeployer

    def mutations(self) -> dict[str, int]:
        return {n: a.kernel.mutations for n, a in self.agents.items()}

    def client(self, node: str) -> AgentClient:
        tls = self.cluster.tls
        assert tls is not None
        files = TlsFiles(Path(tls.ca), Path(tls.cert), Path(tls.key))
        return AgentClient(AgentAddress(node, self.agents[node].address, files), timeout=5)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FakeCluster]:
    tls = write_cluster_tls(tmp_path / "tls", list(NODES))
    # unix socket paths must stay short (108 bytes): pytest's tmp_path may not be.
    sockets = Path(tempfile.mkdtemp(prefix="rn-deploy-", dir="/tmp"))
    agents: dict[str, RunningAgent] = {}
    try:
        for node in NODES:
            agents[node] = start_agent(
                node,
                tmp_path / "state" / node,
                tls.nodes[node],
                listen=f"unix:{sockets / node}.sock",
            )
        cluster = Cluster(
            nodes=tuple(
                ClusterNode(n, agents[n].address, f"198.18.0.{i + 1}") for i, n in enumerate(NODES)
            ),
            tls=ClusterTlsPaths(
                str(tls.provider.ca), str(tls.provider.cert), str(tls.provider.key)
            ),
        )
        yield FakeCluster(cluster, agents, EnvironmentDeployer(cluster, timeout=5))
    finally:
        for running in agents.values():
            running.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def spec(*services: ServiceSpec, environment: str = "production") -> EnvironmentSpec:
    return EnvironmentSpec("shop", environment, services=services)


def svc(name: str, *nodes: str) -> ServiceSpec:
    return ServiceSpec(name, tuple(nodes))


BASE = spec(svc("api", "node-1", "node-2"), svc("db", "node-1"))


def addresses(doc: EnvironmentDocument, name: str) -> list[tuple[str | None, str]]:
    found = doc.service(name)
    assert found is not None, name
    return [(i.ipv4, i.ipv6) for i in found.instances]


def assert_mesh(lab: FakeCluster, doc: EnvironmentDocument) -> None:
    """Every node holds exactly what ``doc`` says, and the nodes agree with each other: a
    hosting node builds it, a keeper that hosts nothing stores only the document, and any
    other node has nothing of it."""
    hosting = {n.name for n in doc.nodes}
    assert set(doc.keepers) == set(keepers_of(doc.id, list(lab.agents)))
    for node, agent in lab.agents.items():
        netns = environment_netns(agent.prefix, doc.id)
        k = agent.kernel
        if node not in hosting:
            assert netns not in k.namespaces, node
            assert k.instances_of(netns) == {}, node
            assert agent.reconciler.state.identity(doc.id) is None, node
            kept = doc if node in doc.keepers else None
            assert agent.reconciler.state.document(doc.id) == kept, node
            continue
        assert agent.reconciler.state.document(doc.id) == doc, node
        me = doc.node(node)
        assert me is not None
        device = k.device_in(netns)
        assert device is not None, node
        assert device.public_key == me.public_key
        assert me.endpoint == f"{lab.cluster.node(node).underlay}:{device.listen_port}"
        assert k.namespaces[netns].base is not None
        # Peers: every other hosting node, routed exactly its instances' addresses.
        expected_peers = {}
        for other in doc.nodes:
            if other.name == node:
                continue
            routes = {
                host_route(a)
                for s in doc.services
                for i in s.instances
                if i.node == other.name
                for a in (i.ipv4, i.ipv6)
                if a is not None
            }
            expected_peers[other.public_key] = (other.endpoint, routes)
        assert {
            key: (p.endpoint, p.allowed_ips) for key, p in device.peers.items()
        } == expected_peers, node
        # Instances: exactly this node's, with their addresses, linked.
        expected_instances = {
            instance_netns(agent.prefix, doc.id, s.id, index): {
                a for a in (i.ipv4, i.ipv6) if a is not None
            }
            for s in doc.services
            for index, i in enumerate(s.instances)
            if i.node == node
        }
        found = k.instances_of(netns)
        assert {n: set(ns.addresses) for n, ns in found.items()} == expected_instances, node
        assert all(ns.linked for ns in found.values())
        assert agent.resolver.records(doc.id) == [r.as_tuple() for r in zone_records(doc)]


def held(lab: FakeCluster, env_id: str) -> dict[str, EnvironmentDocument | None]:
    """What every node of the cluster holds (each one asked, not only the environment's)."""
    return lab.deployer.read(env_id, hints=lab.deployer.cluster.names)


# -- apply ---------------------------------------------------------------------------------------


def test_apply_builds_the_mesh_on_every_hosting_node(lab: FakeCluster) -> None:
    applied = lab.deployer.apply(BASE)
    doc = applied.document
    assert doc.generation == 1
    assert [n.name for n in doc.nodes] == ["node-1", "node-2"]
    # Three nodes: every one keeps the document; node-3 hosts nothing and builds nothing.
    assert doc.keepers == keepers_of(BASE.id, list(NODES))
    assert set(applied.changes) == {"node-1", "node-2", "node-3"}
    assert applied.changes["node-1"] and applied.changes["node-2"]
    assert applied.changes["node-3"] == []
    assert applied.removed_from == ()
    assert held(lab, BASE.id) == {"node-1": doc, "node-2": doc, "node-3": doc}
    assert_mesh(lab, doc)
    assert lab.agents["node-3"].kernel.mutations == 0


def test_reapplying_the_same_spec_changes_nothing(lab: FakeCluster) -> None:
    first = lab.deployer.apply(BASE).document
    before = lab.mutations()
    again = lab.deployer.apply(BASE)
    assert again.document == first  # no generation bump
    assert again.changes == {"node-1": [], "node-2": [], "node-3": []}
    assert lab.mutations() == before
    assert held(lab, BASE.id)["node-1"] == first


def test_adding_a_service_keeps_the_others(lab: FakeCluster) -> None:
    first = lab.deployer.apply(BASE).document
    bigger = spec(*BASE.services, svc("worker", "node-3", "node-2"))
    second = lab.deployer.apply(bigger).document
    assert second.generation == 2
    assert addresses(second, "api") == addresses(first, "api")
    assert addresses(second, "db") == addresses(first, "db")
    assert [n.name for n in second.nodes] == list(NODES)
    assert_mesh(lab, second)


def test_moving_an_instance_keeps_its_addresses_and_frees_the_old_node(lab: FakeCluster) -> None:
    first = lab.deployer.apply(BASE).document
    old_key = first.node("node-1")
    moved_spec = spec(svc("api", "node-1", "node-3"), svc("db", "node-1"))
    applied = lab.deployer.apply(moved_spec)
    moved = applied.document
    assert addresses(moved, "api") == addresses(first, "api")
    api = moved.service("api")
    assert api is not None and api.instances[1].node == "node-3"
    # node-2 keeps the document (every node of three does) and hosts nothing any more.
    assert applied.removed_from == ()
    assert any("remove" in c for c in applied.changes["node-2"])
    node2 = lab.agents["node-2"]
    assert node2.kernel.namespaces == {} and node2.kernel.devices == {}
    assert node2.reconciler.state.environment_ids() == []
    assert node2.reconciler.state.document(BASE.id) == moved
    assert moved.node("node-1") == old_key  # node-1's identity is stable
    assert_mesh(lab, moved)


def test_an_unknown_node_is_refused_before_anything_changes(lab: FakeCluster) -> None:
    with pytest.raises(InvalidField) as caught:
        lab.deployer.apply(spec(svc("api", "node-1", "node-9")))
    assert caught.value.value == "node-9"
    assert set(lab.mutations().values()) == {0}
    assert all(a.reconciler.state.environment_ids() == [] for a in lab.agents.values())


def test_fifty_services_over_three_nodes(lab: FakeCluster) -> None:
    many = spec(*(svc(f"svc-{i}", NODES[i % 3], NODES[(i + 1) % 3]) for i in range(50)))
    doc = lab.deployer.apply(many).document
    found = [a for s in doc.services for i in s.instances for a in (i.ipv4, i.ipv6) if a]
    assert len(found) == len(set(found)) == 200
    assert_mesh(lab, doc)


def test_environments_deploy_in_parallel_and_stay_apart(lab: FakeCluster) -> None:
    specs = [
        spec(svc("api", *NODES), svc("db", NODES[i % 3]), environment=f"env{i}") for i in range(8)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        docs = [a.document for a in pool.map(lab.deployer.apply, specs)]
    assert len({d.id for d in docs}) == 8
    for doc in docs:
        assert_mesh(lab, doc)
    for agent in lab.agents.values():
        ports = [d.listen_port for d in agent.kernel.devices.values()]
        assert len(ports) == len(set(ports)) == 8


# -- concurrent writers of one environment --------------------------------------------------------


def _final(lab: FakeCluster, env_id: str) -> EnvironmentDocument:
    docs = held(lab, env_id)
    hosting = [d for d in docs.values() if d is not None]
    assert hosting and all(d == hosting[0] for d in hosting), docs
    return hosting[0]


def test_two_writers_in_one_process_take_turns(lab: FakeCluster) -> None:
    lab.deployer.apply(BASE)
    a = spec(*BASE.services, svc("alpha", "node-1"))
    b = spec(*BASE.services, svc("beta", "node-2"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lab.deployer.apply, [a, b]))
    final = _final(lab, BASE.id)
    assert final.generation == 3
    assert final in [r.document for r in results]
    assert {s.name for s in final.services} in ({"api", "db", "alpha"}, {"api", "db", "beta"})
    assert_mesh(lab, final)


class InterruptedDeployer(EnvironmentDeployer):
    """A deployer that, after its first read, lets a rival writer finish a whole apply.

    That is the interleaving of two providers in different processes: this writer plans
    on what it read, but the nodes have moved on, so its apply meets the agents' CAS.
    """

    def __init__(self, cluster: Cluster, rival: Callable[[EnvironmentDeployer], Applied]) -> None:
        super().__init__(cluster, timeout=5)
        self.rival = rival
        self.rounds = 0
        self.rival_result: Applied | None = None

    def survey(self, env_id: str, hints: Iterable[str] = ()) -> Survey:
        found = super().survey(env_id, hints)
        self.rounds += 1
        if self.rounds == 1:
            with ThreadPoolExecutor(max_workers=1) as other_process:
                rival = EnvironmentDeployer(self.cluster, timeout=5)
                self.rival_result = other_process.submit(self.rival, rival).result()
        return found


@pytest.fixture
def separate_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers in different processes share no lock: only the agents' CAS orders them."""
    monkeypatch.setattr(
        railnet.control.deployer, "environment_lock", lambda env_id: contextlib.nullcontext()
    )


@pytest.mark.usefixtures("separate_processes")
def test_a_writer_that_lost_the_race_retries_on_top_of_the_winner(
    lab: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="railnet.control.deployer")
    first = lab.deployer.apply(BASE).document
    a = spec(*BASE.services, svc("alpha", "node-1"))
    b = spec(*BASE.services, svc("beta", "node-2"))
    writer = InterruptedDeployer(lab.cluster, rival=lambda rival: rival.apply(a))
    mine = writer.apply(b)
    assert writer.rounds == 2
    assert "conflict" in caplog.text
    assert writer.rival_result is not None
    assert writer.rival_result.document.generation == 2
    final = _final(lab, BASE.id)
    assert final == mine.document
    assert final.generation == 3
    # The loser re-planned on the winner's document (generation 2 + 1), and its spec won.
    assert {s.name for s in final.services} == {"api", "db", "beta"}
    assert addresses(final, "api") == addresses(first, "api")
    assert_mesh(lab, final)


def _add(name: str, *nodes: str) -> Callable[[EnvironmentSpec], EnvironmentSpec]:
    """The Service provider's edit: add one service (with its stable id) to what is there."""

    def edit(base: EnvironmentSpec) -> EnvironmentSpec:
        return with_service(base, ServiceSpec(name, tuple(nodes), id=service_id(base.id, name)))

    return edit


@pytest.mark.usefixtures("separate_processes")
def test_an_edit_that_lost_the_race_is_merged_onto_the_winner(lab: FakeCluster) -> None:
    lab.deployer.apply(BASE)
    writer = InterruptedDeployer(
        lab.cluster, rival=lambda rival: rival.update("shop", "production", _add("alpha", "node-1"))
    )
    mine = writer.update("shop", "production", _add("beta", "node-3"))
    assert writer.rounds == 2
    final = _final(lab, BASE.id)
    assert final == mine.document and final.generation == 3
    # Neither edit is lost: the retry re-read the winner's document and edited that.
    assert {s.name for s in final.services} == {"api", "db", "alpha", "beta"}
    assert_mesh(lab, final)


def test_fifty_services_added_concurrently_all_land(lab: FakeCluster) -> None:
    first = lab.deployer.apply(BASE).document
    edits = [_add(f"svc-{i}", NODES[i % 3]) for i in range(50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda e: lab.deployer.update("shop", "production", e), edits))
    final = _final(lab, BASE.id)
    assert final.generation == 51
    assert sorted(r.document.generation for r in results) == list(range(2, 52))
    assert {s.name for s in final.services} == {"api", "db"} | {f"svc-{i}" for i in range(50)}
    assert addresses(final, "api") == addresses(first, "api")
    found = [a for s in final.services for i in s.instances for a in (i.ipv4, i.ipv6) if a]
    assert len(found) == len(set(found)) == 2 * 53
    assert_mesh(lab, final)


def test_a_split_left_by_racing_writers_converges(lab: FakeCluster) -> None:
    # Two writers each won the CAS on one node at the same generation: node-1 holds A,
    # node-2 holds B. The next apply of either spec must bring both nodes to one document.
    first = lab.deployer.apply(BASE).document
    a = spec(*BASE.services, svc("alpha", "node-1"))
    b = spec(*BASE.services, svc("beta", "node-1"))
    identities = {n.name: (n.public_key, n.endpoint) for n in first.nodes}
    doc_a, doc_b = build_document(a, first, identities), build_document(b, first, identities)
    assert doc_a.generation == doc_b.generation == 2
    with lab.client("node-1") as c1, lab.client("node-2") as c2:
        c1.apply(doc_a.to_json(), 1)
        c2.apply(doc_b.to_json(), 1)
    final = lab.deployer.apply(a).document
    assert _final(lab, BASE.id) == final
    assert_mesh(lab, final)


# -- destroy -----------------------------------------------------------------------------------


def test_destroy_removes_the_environment_everywhere(lab: FakeCluster) -> None:
    doc = lab.deployer.apply(spec(*BASE.services, svc("worker", "node-3"))).document
    other = lab.deployer.apply(spec(svc("api", "node-1"), environment="staging")).document
    assert sorted(lab.deployer.destroy(doc.id)) == list(NODES)
    assert held(lab, doc.id) == dict.fromkeys(NODES)
    for agent in lab.agents.values():
        assert agent.reconciler.state.environment_ids() == (
            [other.id] if agent.node == "node-1" else []
        )
        assert all(other.id in name for name in agent.kernel.namespaces)
        assert agent.resolver.records(doc.id) == []
    assert_mesh(lab, other)
    assert lab.deployer.destroy(doc.id) == []


def test_destroy_of_an_unknown_environment(lab: FakeCluster) -> None:
    assert lab.deployer.destroy("enever") == []
    with pytest.raises(InvalidField):
        lab.deployer.read("../x")
    with pytest.raises(InvalidField) as caught:
        lab.deployer.destroy("../x")  # refused locally, before any node is asked
    assert caught.value.field == "env_id"


# -- drift, as the provider's read reports it ---------------------------------------------------


def test_read_reports_the_drift_each_node_has_not_repaired_until_it_is(
    lab: FakeCluster,
) -> None:
    import threading

    from railnet.providers import EnvironmentProvider

    doc = lab.deployer.apply(BASE).document
    provider = EnvironmentProvider()
    provider._lock = threading.Lock()  # as configure leaves it, on this lab's deployer
    provider._cluster = lab.cluster
    provider._deployer = lab.deployer
    props = {"name": "production", "project": "shop"}
    assert provider.read(doc.id, props).outs["drift"] == []

    agent = lab.agents["node-2"]
    api = doc.service("api")
    assert api is not None
    gone = instance_netns(agent.prefix, doc.id, api.id, 1)
    agent.kernel.delete_namespace(gone)
    node_1 = doc.node("node-1")
    assert node_1 is not None
    agent.kernel.remove_peer(environment_netns(agent.prefix, doc.id), node_1.public_key)
    drift = provider.read(doc.id, props).outs["drift"]
    assert [line.split(" ")[:3] for line in drift] == [
        ["node-2:", "create", "instance"],
        ["node-2:", "set", "peer"],
    ], drift
    assert gone in drift[0]
    assert " at 198.18." not in drift[1]  # outputs name nodes, never their addresses
    assert lab.deployer.drift(doc.id, ["node-1", "node-3"]) == []  # only node-2 drifted
    agent.reconciler.reconcile(doc.id)  # the repair (the self-healer's, or the periodic one)
    assert provider.read(doc.id, props).outs["drift"] == []


# -- damaged state -------------------------------------------------------------------------------


def test_a_damaged_identity_harms_only_its_own_environment(lab: FakeCluster) -> None:
    doc = lab.deployer.apply(BASE).document
    other = lab.deployer.apply(spec(svc("api", "node-1"), environment="staging")).document
    agent = lab.agents["node-1"]
    damaged = agent.state_dir / "environments" / doc.id / "identity.json"
    damaged.write_text("{not json")
    before = lab.mutations()

    reports = {r.env_id: r for r in agent.reconciler.status()}
    assert reports[other.id].drift == () and reports[other.id].generation == other.generation
    assert str(damaged) in " ".join(reports[doc.id].drift)
    repaired = agent.reconciler.reconcile_all()
    assert repaired[other.id] == []
    assert str(damaged) in repaired[doc.id][0]
    assert lab.mutations() == before  # nothing of the damaged environment was touched
    assert damaged.read_text() == "{not json"  # kept for the operator
    with pytest.raises(AgentError) as refused:
        lab.deployer.apply(spec(*BASE.services, svc("more", "node-2")))
    assert refused.value.code == grpc.StatusCode.DATA_LOSS
    assert str(damaged) in refused.value.detail


# -- key rotation ------------------------------------------------------------------------------


def private_keys(lab: FakeCluster, env_id: str) -> dict[str, str]:
    return {
        n: (a.state_dir / "environments" / env_id / "private.key").read_text().strip()
        for n, a in lab.agents.items()
        if (a.state_dir / "environments" / env_id / "private.key").exists()
    }


def test_a_new_rotation_token_rotates_every_nodes_key_in_place(lab: FakeCluster) -> None:
    first = lab.deployer.apply(BASE).document
    old = private_keys(lab, BASE.id)
    devices = {n: lab.agents[n].kernel.device_in(environment_netns(lab.agents[n].prefix, BASE.id))
               for n in ("node-1", "node-2")}  # fmt: skip
    applied = lab.deployer.apply(replace(BASE, key_rotation="r1"))
    doc = applied.document
    assert doc.generation == first.generation + 1 and doc.key_rotation == "r1"
    for before, after in zip(first.nodes, doc.nodes, strict=True):
        assert before.name == after.name and before.endpoint == after.endpoint
        assert before.public_key != after.public_key, before.name
    for node, changes in applied.changes.items():
        assert not any("delete WireGuard device" in c for c in changes), node
        if doc.node(node) is not None:  # a keeper that hosts nothing has no key to set
            assert any(c.startswith("set the key of WireGuard device") for c in changes), node
    for node, device in devices.items():  # the same devices, with the new keys
        assert lab.agents[node].kernel.device_in(device.netns if device else "") is device
    assert_mesh(lab, doc)
    new = private_keys(lab, BASE.id)
    for node in old:
        assert new[node] != old[node]
        for path in lab.agents[node].state_dir.rglob("*"):
            assert not path.is_file() or old[node].encode() not in path.read_bytes()
    # The same token again: nothing to do.
    again = lab.deployer.apply(replace(BASE, key_rotation="r1"))
    assert again.document == doc and all(c == [] for c in again.changes.values())


def test_a_rotation_cut_short_converges_with_the_staged_keys(lab: FakeCluster) -> None:
    first = lab.deployer.apply(BASE).document
    rotating = replace(BASE, key_rotation="r1")
    real_apply = AgentClient.apply
    calls: list[str] = []

    def lost(
        self: AgentClient, document_json: str, expected: int, *, delta_json: str = ""
    ) -> tuple[int, list[str]]:
        calls.append(self.target.node)
        if self.target.node == "node-2" and calls.count("node-2") == 1:
            raise railnet.control.deployer.AgentUnreachable("node-2", "x", "reply lost")
        return real_apply(self, document_json, expected, delta_json=delta_json)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AgentClient, "apply", lost)
        with pytest.raises(railnet.control.deployer.AgentUnreachable):
            lab.deployer.apply(rotating)
    # node-1 rotated, node-2 did not: the retry finishes with the same staged key.
    held_1 = lab.agents["node-1"].reconciler.state.document(BASE.id)
    assert held_1 is not None and held_1.key_rotation == "r1"
    doc = lab.deployer.apply(rotating).document
    assert doc.nodes == held_1.nodes
    assert not {n.public_key for n in doc.nodes} & {n.public_key for n in first.nodes}
    assert_mesh(lab, doc)


def test_a_rotation_is_applied_one_node_after_another(lab: FakeCluster) -> None:
    # Nodes that switch keys at the same moment start handshakes that cross (see
    # docs/security.md); other applies stay parallel.
    lab.deployer.apply(BASE)
    real_apply = AgentClient.apply
    spans: list[tuple[float, float]] = []
    hosting = set(BASE.nodes)

    def timed(
        self: AgentClient, document_json: str, expected: int, *, delta_json: str = ""
    ) -> tuple[int, list[str]]:
        started = time.monotonic()
        try:
            time.sleep(0.05)
            return real_apply(self, document_json, expected, delta_json=delta_json)
        finally:
            if self.target.node in hosting:  # keepers that host nothing switch no key
                spans.append((started, time.monotonic()))

    def overlapping() -> bool:
        ordered = sorted(spans)
        return any(b[0] < a[1] for a, b in itertools.pairwise(ordered))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AgentClient, "apply", timed)
        lab.deployer.apply(replace(BASE, key_rotation="r1"))
        assert len(spans) == 2 and not overlapping()
        spans.clear()
        lab.deployer.apply(replace(BASE, key_rotation="r1", dns_ttl=7))
        assert len(spans) == 2 and overlapping()


# -- deltas: a deploy sends what changed, not the environment ---------------------------


def sent(deployer: EnvironmentDeployer) -> int:
    return sum(c.sent_bytes for c in deployer._clients.values())


def big(count: int) -> EnvironmentSpec:
    return spec(*(svc(f"svc-{i:03d}", NODES[i % 3]) for i in range(count)))


def bytes_to_add_one(lab: FakeCluster, count: int) -> int:
    base = replace(big(count), environment=f"size{count}")
    lab.deployer.apply(base)
    before = sent(lab.deployer)
    doc = lab.deployer.apply(replace(base, services=(*base.services, svc("new", "node-2"))))
    assert_mesh(lab, doc.document)
    return sent(lab.deployer) - before


def test_adding_a_service_sends_the_same_bytes_whatever_the_environment_size(
    lab: FakeCluster,
) -> None:
    small, large = bytes_to_add_one(lab, 10), bytes_to_add_one(lab, 150)
    held = lab.agents["node-1"].reconciler.state.document(
        replace(big(150), environment="size150").id
    )
    assert held is not None
    assert large <= small * 1.2, (small, large)
    assert large < len(held.to_json()), "less than one copy of the document in all"


def test_a_node_that_takes_no_deltas_gets_the_whole_document(lab: FakeCluster) -> None:
    lab.deployer.apply(big(30))
    real_held = AgentClient.held

    def old_agent(self: AgentClient, env_id: str, known_digest: str = "") -> Any:
        reply = real_held(self, env_id, "")  # an old agent ignores the digest...
        if self.target.node != "node-3":
            return real_held(self, env_id, known_digest)
        return replace(reply, digest="")  # ...and sends none

    requests: dict[str, list[tuple[bool, bool]]] = {}
    real_apply = AgentClient.apply

    def recorded(
        self: AgentClient, document_json: str, expected: int, *, delta_json: str = ""
    ) -> tuple[int, list[str]]:
        requests.setdefault(self.target.node, []).append((bool(document_json), bool(delta_json)))
        return real_apply(self, document_json, expected, delta_json=delta_json)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AgentClient, "held", old_agent)
        patch.setattr(AgentClient, "apply", recorded)
        doc = lab.deployer.apply(replace(big(30), dns_ttl=9)).document
    assert requests["node-3"] == [(True, False)]
    assert requests["node-1"] == [(False, True)] and requests["node-2"] == [(False, True)]
    assert_mesh(lab, doc)


def test_nodes_travel_only_to_agents_that_need_them(lab: FakeCluster) -> None:
    """Agents of delta version 2 get deltas without the unchanged node list; an agent that
    says no version (one before) gets it in every delta, and all of them converge."""
    lab.deployer.apply(big(30))
    real_held = AgentClient.held

    def older(self: AgentClient, env_id: str, known_digest: str = "") -> Any:
        reply = real_held(self, env_id, known_digest)
        return replace(reply, delta_version=0) if self.target.node == "node-3" else reply

    sent: dict[str, list[dict[str, Any]]] = {}
    real_apply = AgentClient.apply

    def recorded(
        self: AgentClient, document_json: str, expected: int, *, delta_json: str = ""
    ) -> tuple[int, list[str]]:
        sent.setdefault(self.target.node, []).append(json.loads(delta_json or "{}"))
        return real_apply(self, document_json, expected, delta_json=delta_json)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AgentClient, "held", older)
        patch.setattr(AgentClient, "apply", recorded)
        doc = lab.deployer.apply(replace(big(30), dns_ttl=9)).document
    assert [d.get("same_nodes") for d in sent["node-3"]] == [None]
    assert "nodes" in sent["node-3"][0]["header"]
    for node in ("node-1", "node-2"):
        assert [d.get("same_nodes") for d in sent[node]] == [True]
        assert "nodes" not in sent[node][0]["header"]
    assert_mesh(lab, doc)


def test_a_node_holding_another_document_of_the_same_generation_converges(
    lab: FakeCluster,
) -> None:
    first = lab.deployer.apply(big(12)).document
    # Another writer's document at the same generation on node-2 (racing writers).
    other = replace(first, dns_ttl=first.dns_ttl + 1)
    agent = lab.agents["node-2"].reconciler
    agent.state.save_document(other)
    doc = lab.deployer.apply(replace(big(12), dns_ttl=30)).document
    assert doc.generation > first.generation
    assert_mesh(lab, doc)


def test_a_delta_never_reaches_a_node_holding_another_base(lab: FakeCluster) -> None:
    from railnet.core.delta import DocumentDelta

    first = lab.deployer.apply(big(5)).document
    nxt = build_document(
        replace(big(5), dns_ttl=11),
        first,
        {n.name: (n.public_key, n.endpoint) for n in first.nodes},
    )
    delta = DocumentDelta.between(first, nxt)
    assert delta is not None
    lab.agents["node-1"].reconciler.state.save_document(replace(first, dns_ttl=99))
    with lab.client("node-1") as client, pytest.raises(AgentError) as caught:
        client.apply("", first.generation, delta_json=delta.to_json())
    assert caught.value.code == grpc.StatusCode.ABORTED
    assert "another document" in caught.value.detail
    with lab.client("node-2") as client:
        assert client.apply("", first.generation, delta_json=delta.to_json())[0] == nxt.generation
        # The same delta again (a lost reply, retried) is accepted as what it built.
        assert client.apply("", first.generation, delta_json=delta.to_json())[0] == nxt.generation
    assert lab.agents["node-2"].reconciler.state.document(first.id) == nxt


def test_an_apply_looks_only_at_the_instances_its_change_touches(lab: FakeCluster) -> None:
    base = big(30)
    lab.deployer.apply(base)
    for agent in lab.agents.values():
        agent.kernel.observed_only.clear()
    doc = lab.deployer.apply(replace(base, services=(*base.services, svc("new", "node-2"))))
    new = doc.document.service("new")
    assert new is not None
    made = instance_netns(lab.agents["node-2"].prefix, doc.document.id, new.id, 0)
    looked = {node: agent.kernel.observed_only for node, agent in lab.agents.items()}
    assert looked["node-2"] == [frozenset({made})]
    assert looked["node-1"] == [frozenset()] and looked["node-3"] == [frozenset()]
    assert_mesh(lab, doc.document)
    # A re-apply of the held document reads everything again: it is how a retry repairs.
    for agent in lab.agents.values():
        agent.kernel.observed_only.clear()
    lab.deployer.apply(replace(base, services=(*base.services, svc("new", "node-2"))))
    assert all(agent.kernel.observed_only == [] for agent in lab.agents.values())


def test_an_apply_trusts_the_device_it_built_and_sends_only_the_new_addresses(
    lab: FakeCluster,
) -> None:
    base = big(30)
    lab.deployer.apply(base)
    for agent in lab.agents.values():
        agent.kernel.device_reads = 0
    applied = lab.deployer.apply(replace(base, services=(*base.services, svc("new", "node-2"))))
    doc = applied.document
    assert {n: a.kernel.device_reads for n, a in lab.agents.items()} == dict.fromkeys(NODES, 0)
    new = doc.service("new")
    assert new is not None
    added = {f"+{host_route(a)}" for a in (new.instances[0].ipv4, new.instances[0].ipv6) if a}
    for node in ("node-1", "node-3"):
        (line,) = [c for c in applied.changes[node] if c.startswith("set peer")]
        assert line.startswith("set peer node-2 allowed "), line
        assert set(line.removeprefix("set peer node-2 allowed ").split(", ")) == added, line
    assert_mesh(lab, doc)
    # A rotation gives every peer a new key: the device is read (roamed endpoints live there).
    rotated = lab.deployer.apply(replace(base, services=doc_services(doc), key_rotation="r1"))
    assert all(a.kernel.device_reads > 0 for a in lab.agents.values())
    assert_mesh(lab, rotated.document)


def doc_services(doc: EnvironmentDocument) -> tuple[ServiceSpec, ...]:
    return tuple(svc(s.name, *(i.node for i in s.instances)) for s in doc.services)


@pytest.mark.parametrize(
    ("node", "backend", "method"),
    [("node-2", "network", "create_instance"), ("node-1", "wireguard", "configure")],
)
def test_an_apply_after_one_that_failed_part_way_builds_what_it_left_out(
    lab: FakeCluster, monkeypatch: pytest.MonkeyPatch, node: str, backend: str, method: str
) -> None:
    """An apply trusts only what the last finished reconcile built: after one that failed
    part-way (its document is stored), the next reads everything and finishes the job."""
    base = big(6)
    lab.deployer.apply(base)
    target = getattr(lab.agents[node].reconciler, backend)

    def broken(*args: Any) -> None:
        raise DataPlaneError(f"{method} failed on purpose")

    monkeypatch.setattr(target, method, broken)
    with pytest.raises(AgentError):
        lab.deployer.apply(replace(base, services=(*base.services, svc("first", "node-2"))))
    monkeypatch.undo()
    doc = lab.deployer.apply(
        replace(base, services=(*base.services, svc("first", "node-2"), svc("then", "node-3")))
    ).document
    assert_mesh(lab, doc)


def test_an_apply_gives_each_resolver_only_the_names_it_changes(lab: FakeCluster) -> None:
    base = big(30)
    first = lab.deployer.apply(base).document
    hosting = [n.name for n in first.nodes]
    whole = {node: len(lab.agents[node].resolver.applied) for node in hosting}
    doc = lab.deployer.apply(replace(base, services=(*base.services, svc("new", "node-2"))))
    new = doc.document.service("new")
    assert new is not None
    reverse = {
        ipaddress.ip_address(a).reverse_pointer
        for a in (new.instances[0].ipv4, new.instances[0].ipv6)
        if a is not None
    }
    for node in hosting:
        resolver = lab.agents[node].resolver
        assert len(resolver.applied) == whole[node], node  # no whole view sent again
        change = resolver.updated[-1]
        assert change.base_serial == first.generation and change.head.serial == 2, node
        assert {r.name for r in change.records} == {
            "new.railway.internal",
            "0.new.railway.internal",
            *reverse,
        }, node
        assert change.removed == (), node
    assert_mesh(lab, doc.document)  # every node's records are the whole document's


def test_a_resolver_that_lost_its_view_is_sent_it_whole(lab: FakeCluster) -> None:
    base = big(6)
    lab.deployer.apply(base)
    resolver = lab.agents["node-1"].resolver
    env_id = lab.deployer.apply(base).document.id
    resolver.remove(env_id)  # e.g. a resolver started again with nothing
    applied = len(resolver.applied)
    doc = lab.deployer.apply(replace(base, services=(*base.services, svc("new", "node-1"))))
    assert len(resolver.applied) == applied + 1
    assert resolver.applied[-1] == ResolverView.from_document(
        doc.document, environment_netns(lab.agents["node-1"].prefix, env_id)
    )
    assert_mesh(lab, doc.document)
