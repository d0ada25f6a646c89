"""The cluster's membership lives in the control store: every runner reads the same nodes and
cordons, edits are compared transactions, and a store that does not answer fails the read."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from railnet.control.cluster import Cluster, ClusterNode, load_cluster, store_address
from railnet.control.deployer import EnvironmentDeployer
from railnet.control.membership import add_member, remove_member, set_cordon
from railnet.control.stored import StoredDocuments
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.errors import InvalidField
from railnet.core.store_keys import DOCUMENTS_HERE
from railnet.store.etcd import Delete, EtcdStore, StoreDenied, StoreUnavailable

from .conftest import LabNet, file_cluster, running_lab, wait_until

pytestmark = pytest.mark.linux


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3, dns=False) as net:
        yield net


def railnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railnet", *args], capture_output=True, text=True, timeout=60
    )


def copy_of(lab: LabNet, directory: Path) -> Path:
    """A second runner's cluster file: its own copy, in its own directory."""
    raw = json.loads(lab.lab.cluster_file.read_text())
    for section in ("tls", "operator"):
        raw[section] = {k: str(lab.lab.directory / v) for k, v in raw[section].items()}
    path = directory / "cluster.json"
    path.write_text(json.dumps(raw))
    return path


def test_the_cluster_file_says_only_how_to_reach_the_store(lab: LabNet) -> None:
    raw = json.loads(lab.lab.cluster_file.read_text())
    assert "nodes" not in raw
    assert set(raw) == {"lab", "tls", "operator", "store"}
    cluster = load_cluster(lab.lab.cluster_file, "test")
    assert cluster.names == ["node-1", "node-2", "node-3"]
    assert cluster.node("node-2").agent == f"unix:{lab.lab.node(2).agent_socket}"


def test_two_runners_see_one_membership(lab: LabNet, tmp_path: Path) -> None:
    other = copy_of(lab, tmp_path)
    r = railnet("cluster", "cordon", "node-3", "--cluster", str(lab.lab.cluster_file))
    assert r.returncode == 0, r.stderr
    try:
        # The other runner's file was not touched, and it sees the cordon all the same.
        assert load_cluster(other, "the other runner").node("node-3").cordoned
        shown = railnet("cluster", "show", "--json", "--cluster", str(other))
        assert shown.returncode == 0, shown.stderr
        nodes = {n["name"]: n for n in json.loads(shown.stdout)["nodes"]}
        assert nodes["node-3"]["cordoned"] and not nodes["node-1"]["cordoned"]
    finally:
        r = railnet("cluster", "uncordon", "node-3", "--cluster", str(other))
        assert r.returncode == 0, r.stderr
    assert not load_cluster(lab.lab.cluster_file, "test").node("node-3").cordoned


def test_adding_and_removing_a_member_through_the_cli(lab: LabNet) -> None:
    cluster = str(lab.lab.cluster_file)
    r = railnet(
        "cluster", "add-node", "node-9", "--agent", "unix:/run/nowhere.sock", "--cluster", cluster
    )
    assert r.returncode == 0, r.stderr
    assert "node-9" in load_cluster(lab.lab.cluster_file, "test").names
    again = railnet(
        "cluster", "add-node", "node-9", "--agent", "unix:/run/x.sock", "--cluster", cluster
    )
    assert again.returncode == 2 and "already a member" in again.stderr, again.stderr
    taken = railnet(
        "cluster", "add-node", "node-8", "--agent", "unix:/run/nowhere.sock", "--cluster", cluster
    )
    assert taken.returncode == 2 and "node-9" in taken.stderr, taken.stderr
    gone = railnet("cluster", "remove-node", "node-9", "--force", "--cluster", cluster)
    assert gone.returncode == 0, gone.stderr
    assert "node-9" not in load_cluster(lab.lab.cluster_file, "test").names


def test_concurrent_adds_of_one_name_let_exactly_one_win(lab: LabNet) -> None:
    cluster = load_cluster(lab.lab.cluster_file, "test")
    results = race(cluster, lambda i: ClusterNode("node-7", f"unix:/run/racer-{i}.sock"))
    results = ["won" if r == "node-7" else r for r in results]
    try:
        assert len(results) == 4, results
        assert results.count("won") == 1, results
        assert all(isinstance(r, InvalidField) for r in results if r != "won")
    finally:
        with EtcdStore(store_address(cluster)) as store:
            remove_member(store, "node-7")


def race(cluster: Cluster, member: Callable[[int], ClusterNode], runners: int = 4) -> list[object]:
    """``runners`` threads add ``member(i)`` at once, each with its own client: per runner,
    the name it added, or the error it got."""
    results: list[object] = []

    def add(i: int) -> None:
        node = member(i)
        with EtcdStore(store_address(cluster)) as store:
            try:
                add_member(store, node)
                results.append(node.name)
            except InvalidField as exc:
                results.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_an_operator_reads_the_membership_and_cannot_change_it(lab: LabNet) -> None:
    cluster = load_cluster(lab.lab.cluster_file, "test")
    with EtcdStore(store_address(cluster, read_only=True)) as store:
        with pytest.raises(StoreDenied):
            set_cordon(store, "node-1", True)
        with pytest.raises(StoreDenied):
            add_member(store, ClusterNode("node-6", "unix:/run/six.sock"))
    assert not load_cluster(lab.lab.cluster_file, "test").node("node-1").cordoned


def test_no_store_means_no_cluster_never_an_empty_one(lab: LabNet) -> None:
    members = lab.lab.etcd_members()
    for member in members[:2]:
        lab.lab.stop_etcd(member)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            load_cluster(lab.lab.cluster_file, "test")
        assert all(m.local_endpoint in str(raised.value) for m in members)
        shown = railnet("cluster", "show", "--cluster", str(lab.lab.cluster_file))
        assert shown.returncode == 3, shown
        lines = shown.stderr.strip().splitlines()
        assert len(lines) == 1 and "did not answer" in lines[0], shown.stderr
    finally:
        for member in members[:2]:
            lab.lab.start_etcd(member)
    assert wait_until(lambda: _answers(lab), timeout=30)


def _answers(lab: LabNet) -> bool:
    try:
        return len(load_cluster(lab.lab.cluster_file, "test").nodes) == 3
    except StoreUnavailable:
        return False


def test_a_cluster_file_moves_its_nodes_into_the_store(lab: LabNet, tmp_path: Path) -> None:
    cluster = load_cluster(lab.lab.cluster_file, "test")
    assert cluster.store is not None
    # A file as the release before the store wrote it: the nodes listed in it.
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(file_cluster(lab.lab)))
    with EtcdStore(store_address(cluster)) as store:
        for name in cluster.names:
            remove_member(store, name)
    assert load_cluster(lab.lab.cluster_file, "test").nodes == ()
    flags = move_flags(cluster)
    try:
        r = railnet("cluster", "move-to-store", "--cluster", str(path), *flags)
        assert r.returncode == 0, r.stderr
        assert "nodes" not in json.loads(path.read_text())
        assert load_cluster(path, "moved").nodes == cluster.nodes
        assert load_cluster(lab.lab.cluster_file, "test").nodes == cluster.nodes
        again = railnet("cluster", "move-to-store", "--cluster", str(path), *flags)
        assert again.returncode == 2 and "already names a control store" in again.stderr
    finally:
        restore_members(lab, cluster)


def move_flags(cluster: Cluster) -> list[str]:
    """``railnet cluster move-to-store``'s flags for the lab's own store."""
    assert cluster.store is not None
    flags = [f for e in cluster.store.endpoints for f in ("--store-endpoint", e)]
    return [*flags, "--store-server-name", cluster.store.server_name]


def restore_members(lab: LabNet, cluster: Cluster) -> None:
    """Put back every member of ``cluster`` that the store lacks (after a test removed
    them), and mark the store as holding the documents again."""
    with EtcdStore(store_address(cluster)) as store:
        present = {n.name for n in load_cluster(lab.lab.cluster_file, "test").nodes}
        for node in cluster.nodes:
            if node.name not in present:
                add_member(store, node)
        StoredDocuments(store).mark_documents_here()


def test_concurrent_adds_of_one_agent_address_let_exactly_one_win(lab: LabNet) -> None:
    cluster = load_cluster(lab.lab.cluster_file, "test")
    results = race(cluster, lambda i: ClusterNode(f"racer-{i}", "unix:/run/one-agent.sock"))
    won = [r for r in results if isinstance(r, str)]
    try:
        assert len(results) == 4 and len(won) == 1, results
    finally:
        with EtcdStore(store_address(cluster)) as store:
            for name in won:
                remove_member(store, name)


def test_no_node_may_take_a_store_users_name(lab: LabNet) -> None:
    cluster = load_cluster(lab.lab.cluster_file, "test")
    with EtcdStore(store_address(cluster)) as store:
        for name in ("root", "railnet-provider", "railnet-operator"):
            with pytest.raises(InvalidField) as raised:
                add_member(store, ClusterNode(name, f"unix:/run/{name}.sock"))
            assert raised.value.field == "node" and "reserved" in str(raised.value)


def test_move_to_store_brings_the_documents_in_keeping_every_address(
    lab: LabNet, tmp_path: Path
) -> None:
    cluster = load_cluster(lab.lab.cluster_file, "test")
    assert cluster.store is not None
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(file_cluster(lab.lab)))
    # An environment deployed the way the release before the store did: its documents on
    # the nodes only.
    spec = EnvironmentSpec(
        "moved",
        "production",
        services=(ServiceSpec("api", ("node-1",)), ServiceSpec("db", ("node-2",))),
    )
    with EnvironmentDeployer(load_cluster(path, "the old file")) as before:
        doc = before.apply(spec).document
    with EtcdStore(store_address(cluster)) as store:
        store.commit([], [Delete(DOCUMENTS_HERE)])
        for name in cluster.names:
            remove_member(store, name)
    flags = move_flags(cluster)
    try:
        r = railnet("cluster", "move-to-store", "--cluster", str(path), *flags)
        assert r.returncode == 0, r.stderr
        assert "moved/production" in r.stdout
        with EtcdStore(store_address(cluster, read_only=True)) as store:
            documents = StoredDocuments(store)
            assert documents.documents_here()
            # The same document: generation, keys, every address.
            assert documents.read(doc.id).document == doc
    finally:
        restore_members(lab, cluster)
