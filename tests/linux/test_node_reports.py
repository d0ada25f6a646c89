"""What each node reports to the control store: liveness under a lease, and the document it
applied per environment; and the data plane carries on without the store."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest

from railnet.control.inspect import status_report
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import EnvironmentDocument
from railnet.core.names import environment_id
from railnet.core.status import assess
from railnet.core.store_keys import REPORTS, alive_key, applied_key
from railnet.store.etcd import EtcdStore, StoreError

from .conftest import LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux

SPEC = EnvironmentSpec(
    "reports",
    "production",
    services=(ServiceSpec("api", ("node-1",)), ServiceSpec("db", ("node-2",))),
)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3) as net:
        yield net


def reported(store: EtcdStore, key: str) -> dict[str, object] | None:
    try:
        _, entry = store.get(key)
    except StoreError:
        return None
    return None if entry is None else dict(json.loads(entry.value))


def wait_applied(
    store: EtcdStore, nodes: tuple[str, ...], doc: EnvironmentDocument, timeout: float
) -> None:
    """Until each of ``nodes`` reports ``doc`` applied; fails naming the first that does
    not, with what it reports."""
    wanted = {"generation": doc.generation, "digest": doc.digest}
    for node in nodes:
        key = applied_key(node, doc.id)
        assert wait_until(lambda k=key: reported(store, k) == wanted, timeout=timeout), (
            node,
            reported(store, key),
        )


def test_every_agent_reports_itself_alive(lab: LabNet) -> None:
    with lab.lab.store("operator") as store:
        for node in lab.lab.nodes():
            assert wait_until(lambda n=node: reported(store, alive_key(n.name)), timeout=10), node


def test_a_node_reports_the_document_it_applied(lab: LabNet) -> None:
    doc = lab.deploy(SPEC).document
    env_id = environment_id("reports", "production")
    with lab.lab.store("operator") as store:
        wait_applied(store, ("node-1", "node-2"), doc, timeout=10)
        _, hosts = store.list(REPORTS)
        applied_by = {e.key.split("/")[4] for e in hosts if e.key.endswith("/" + env_id)}
        # node-3 neither hosts nor (being no keeper, maybe) holds it: only holders report.
        assert {"node-1", "node-2"} <= applied_by


def test_the_data_plane_outlives_the_store(lab: LabNet) -> None:
    doc = lab.deploy(SPEC).document
    db = doc.service("db")
    assert db is not None
    api_ns = lab.netns("reports", "production", "api")
    lab.serve(lab.netns("reports", "production", "db"), "db", 7710)
    members = lab.lab.etcd_members()
    for member in members[:2]:
        lab.lab.stop_etcd(member)
    try:
        # No quorum: instances still connect and resolve, and agents still answer.
        assert lab.tcp(api_ns, db.instances[0].ipv4, 7710).output == "db:ping"
        assert lab.tcp(api_ns, "db.railway.internal", 7710).output == "db:ping"
        with lab.lab.client(lab.lab.node(1)) as client:
            assert client.status().environments
    finally:
        for member in members[:2]:
            lab.lab.start_etcd(member)
    # Once quorum is back, the nodes report again on their own: a change made then is
    # reported by both of its nodes.
    assert wait_until(lambda: _deployed(lab), timeout=30)
    changed = lab.deploy(
        EnvironmentSpec(
            "reports", "production", services=(*SPEC.services, ServiceSpec("w", ("node-2",)))
        )
    ).document
    with lab.lab.store("operator") as store:
        wait_applied(store, ("node-1", "node-2"), changed, timeout=30)


def _deployed(lab: LabNet) -> bool:
    try:
        lab.deploy(SPEC)
        return True
    except Exception:
        return False


def test_a_dead_agent_stops_being_alive_when_its_lease_runs_out(lab: LabNet) -> None:
    node = lab.lab.node(3)
    with lab.lab.store("operator") as store:
        assert wait_until(lambda: reported(store, alive_key(node.name)), timeout=10)
        assert all(n["store"] == "alive" for n in assess(status_report(lab.cluster), time.time()))
        lab.lab.kill_agent(node, signal.SIGKILL)
        try:
            assert wait_until(lambda: reported(store, alive_key(node.name)) is None, timeout=20)
            judged = {n["node"]: n for n in assess(status_report(lab.cluster), time.time())}
            assert judged[node.name]["store"] == "not alive"
            assert not judged[node.name]["reachable"]
            assert judged["node-1"]["store"] == "alive" and judged["node-1"]["reachable"]
        finally:
            lab.lab.restart_agent(node)
        assert wait_until(lambda: reported(store, alive_key(node.name)), timeout=10)
