"""``plan_change`` on real documents: what a change of desired state does to the network.

Every document here comes from ``build_document`` with the planning identities, so the
addresses are the ones the provider would assign and the peers and namespaces are the ones
each agent's reconcile would touch.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.document import EnvironmentDocument, IpMode
from railnet.core.plan import (
    Consequence,
    DnsChange,
    EnvironmentPlan,
    NamespaceChange,
    PeerChanges,
    ServiceChange,
    Severity,
    plan_change,
    planning_identities,
    planning_node,
)
from railnet.core.plan_render import (
    PlanReport,
    plan_lines,
    render_json,
    render_markdown,
    render_text,
)

pytestmark = pytest.mark.unit

NODES = ("node-1", "node-2", "node-3")
IDENTITIES = {
    name: (planning_node(name).public_key, planning_node(name).endpoint) for name in NODES
}
ENV_ID = "e18863a1e6704"
"""environment_id("shop", "production")"""
V6 = "fd72:ba41:2170::"
"""The ULA prefix of shop/production."""
DOMAIN = "railway.internal"
# Service ids are name-derived; instance namespaces sort by them (db0 < api < db < worker).
API, DB, WORKER, DATABASE = "s276a4dcac", "s620688483", "sf56212c36", "s156085c98"


def svc(name: str, *nodes: str, id: str = "") -> ServiceSpec:
    return ServiceSpec(name=name, nodes=nodes, id=id)


def doc(
    *services: ServiceSpec, previous: EnvironmentDocument | None = None, **settings: Any
) -> EnvironmentDocument:
    spec = EnvironmentSpec("shop", "production", services=services, **settings)
    return build_document(spec, previous, IDENTITIES)


def counts(services: tuple[int, int], instances: tuple[int, int]) -> tuple[tuple[str, int], ...]:
    return (
        ("services_before", services[0]),
        ("services_after", services[1]),
        ("instances_before", instances[0]),
        ("instances_after", instances[1]),
    )


def created(node: str, holds: str) -> NamespaceChange:
    return NamespaceChange(node, holds, created=True)


def destroyed(node: str, holds: str) -> NamespaceChange:
    return NamespaceChange(node, holds, created=False)


def a(name: str, added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> DnsChange:
    return DnsChange(f"{name}.{DOMAIN}", "A", added, removed)


def aaaa(name: str, added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> DnsChange:
    return DnsChange(f"{name}.{DOMAIN}", "AAAA", added, removed)


@pytest.fixture
def three() -> EnvironmentDocument:
    """api on node-1 and node-2, db on node-3: every node hosts something."""
    return doc(svc("api", "node-1", "node-2"), svc("db", "node-3"))


# -- identities --------------------------------------------------------------------------------


def test_planning_node_is_derived_from_the_name_alone() -> None:
    one = planning_node("node-1")
    assert one.public_key == "z14+ktrtLjnwo4ZIojGC3UyNAXjSgkIB0/GNmnJOEDA="
    assert one.endpoint == "[2001:db8:cf5e:3e92:daed:2e39:f0a3:8648]:51820"
    assert len(base64.b64decode(one.public_key, validate=True)) == 32
    others = [planning_node(n) for n in NODES]
    assert len({n.public_key for n in others}) == 3
    assert len({n.endpoint for n in others}) == 3


def test_planning_identities_keep_known_nodes_and_stand_in_for_new_ones() -> None:
    real = (base64.b64encode(bytes(range(32))).decode(), "198.18.0.1:51820")
    spec = EnvironmentSpec("shop", "production", services=(svc("api", "node-1"),))
    held = build_document(spec, None, {"node-1": real})
    identities = planning_identities(["node-1", "node-2"], held)
    assert identities["node-1"] == real
    stand_in = planning_node("node-2")
    assert identities["node-2"] == (stand_in.public_key, stand_in.endpoint)
    assert planning_identities(["node-3"], None) == {
        "node-3": (planning_node("node-3").public_key, planning_node("node-3").endpoint)
    }


def test_plan_needs_at_least_one_document() -> None:
    with pytest.raises(ValueError, match="at least one document"):
        plan_change(None, None)


# -- the environment appears or goes away ---------------------------------------------------------


def test_creating_an_environment(three: EnvironmentDocument) -> None:
    plan = plan_change(None, three)
    assert plan == EnvironmentPlan(
        project="shop",
        environment="production",
        env_id=ENV_ID,
        action="create",
        services=(
            ServiceChange("api", "added", "2 instance(s) on node-1, node-2"),
            ServiceChange("db", "added", "1 instance(s) on node-3"),
        ),
        dns=(
            a("api", ("10.250.0.3", "10.250.0.4")),
            aaaa("api", (f"{V6}3", f"{V6}4")),
            a("db", ("10.250.0.5",)),
            aaaa("db", (f"{V6}5",)),
        ),
        peers=(
            PeerChanges("node-1", ("node-2", "node-3"), ()),
            PeerChanges("node-2", ("node-1", "node-3"), ()),
            PeerChanges("node-3", ("node-1", "node-2"), ()),
        ),
        namespaces=(
            created("node-1", "environment"),
            created("node-1", "api#0"),
            created("node-2", "environment"),
            created("node-2", "api#1"),
            created("node-3", "environment"),
            created("node-3", "db#0"),
        ),
        consequences=(),
        counts=counts((0, 2), (0, 3)),
    )
    assert plan.severities == frozenset()
    assert not plan.empty


def test_deleting_an_environment_takes_its_services(three: EnvironmentDocument) -> None:
    plan = plan_change(three, None)
    assert plan.action == "delete"
    assert plan.env_id == ENV_ID
    assert plan.services == (
        ServiceChange("api", "removed", "2 instance(s) stop"),
        ServiceChange("db", "removed", "1 instance(s) stop"),
    )
    assert plan.dns == (
        a("api", removed=("10.250.0.3", "10.250.0.4")),
        aaaa("api", removed=(f"{V6}3", f"{V6}4")),
        a("db", removed=("10.250.0.5",)),
        aaaa("db", removed=(f"{V6}5",)),
    )
    assert plan.peers == (
        PeerChanges("node-1", (), ("node-2", "node-3")),
        PeerChanges("node-2", (), ("node-1", "node-3")),
        PeerChanges("node-3", (), ("node-1", "node-2")),
    )
    assert plan.namespaces == (
        destroyed("node-1", "environment"),
        destroyed("node-1", "api#0"),
        destroyed("node-2", "environment"),
        destroyed("node-2", "api#1"),
        destroyed("node-3", "environment"),
        destroyed("node-3", "db#0"),
    )
    assert plan.consequences == (
        Consequence(Severity.DELETE, "deleting shop/production takes 2 service(s) with it"),
        Consequence(Severity.DELETE, "service api is deleted (2 instance(s) stop)"),
        Consequence(Severity.DELETE, "service db is deleted (1 instance(s) stop)"),
    )
    assert plan.severities == frozenset({Severity.DELETE})
    assert plan.counts == counts((2, 0), (3, 0))


def test_an_ipv6_only_environment_gets_only_aaaa_records() -> None:
    plan = plan_change(None, doc(svc("api", "node-1"), svc("db", "node-2"), ip_mode=IpMode.IPV6))
    assert plan.dns == (aaaa("api", (f"{V6}3",)), aaaa("db", (f"{V6}4",)))
    assert plan.services == (
        ServiceChange("api", "added", "1 instance(s) on node-1"),
        ServiceChange("db", "added", "1 instance(s) on node-2"),
    )


def test_a_service_without_instances_is_added_on_no_node() -> None:
    plan = plan_change(None, doc(svc("api")))
    assert plan.services == (ServiceChange("api", "added", "no instances"),)
    assert (plan.dns, plan.peers, plan.namespaces) == ((), (), ())
    assert plan.counts == counts((0, 1), (0, 0))


# -- services --------------------------------------------------------------------------------------


def test_adding_a_service_on_a_new_node() -> None:
    before = doc(svc("api", "node-1"))
    after = doc(svc("api", "node-1"), svc("worker", "node-2"), previous=before)
    plan = plan_change(before, after)
    assert plan == EnvironmentPlan(
        project="shop",
        environment="production",
        env_id=ENV_ID,
        action="update",
        services=(ServiceChange("worker", "added", "1 instance(s) on node-2"),),
        dns=(a("worker", ("10.250.0.4",)), aaaa("worker", (f"{V6}4",))),
        peers=(
            PeerChanges("node-1", ("node-2",), ()),
            PeerChanges("node-2", ("node-1",), ()),
        ),
        namespaces=(created("node-2", "environment"), created("node-2", "worker#0")),
        consequences=(),
        counts=counts((1, 2), (1, 2)),
    )


def test_removing_a_service_drops_its_connections_and_its_node() -> None:
    before = doc(svc("api", "node-1"), svc("worker", "node-2"))
    after = doc(svc("api", "node-1"), previous=before)
    plan = plan_change(before, after)
    assert plan.action == "update"
    assert plan.services == (ServiceChange("worker", "removed", "1 instance(s) stop"),)
    assert plan.dns == (a("worker", removed=("10.250.0.4",)), aaaa("worker", removed=(f"{V6}4",)))
    assert plan.peers == (
        PeerChanges("node-1", (), ("node-2",)),
        PeerChanges("node-2", (), ("node-1",)),
    )
    assert plan.namespaces == (destroyed("node-2", "environment"), destroyed("node-2", "worker#0"))
    assert plan.consequences == (
        Consequence(
            Severity.CONNECTIONS_DROP, "worker#0 on node-2 stops: its open connections drop"
        ),
        Consequence(Severity.DELETE, "service worker is deleted (1 instance(s) stop)"),
    )
    assert plan.severities == frozenset({Severity.CONNECTIONS_DROP, Severity.DELETE})
    assert plan.counts == counts((2, 1), (2, 1))


def test_renaming_changes_only_dns() -> None:
    before = doc(svc("api", "node-1"), svc("database", "node-1", "node-2"))
    after = doc(
        svc("api", "node-1"), svc("postgres", "node-1", "node-2", id=DATABASE), previous=before
    )
    # Same id, same instances, same addresses: the kernel objects are named after the id.
    assert after.services[1].id == before.services[1].id == DATABASE
    assert after.services[1].instances == before.services[1].instances
    plan = plan_change(before, after)
    assert plan.action == "update"
    assert plan.services == (ServiceChange("postgres", "renamed", "from database"),)
    assert plan.dns == (
        a("database", removed=("10.250.0.4", "10.250.0.5")),
        aaaa("database", removed=(f"{V6}4", f"{V6}5")),
        a("postgres", ("10.250.0.4", "10.250.0.5")),
        aaaa("postgres", (f"{V6}4", f"{V6}5")),
    )
    assert plan.peers == ()
    assert plan.namespaces == ()
    assert plan.consequences == ()


def test_renaming_and_reusing_the_old_name_in_one_update() -> None:
    before = doc(svc("api", "node-1"), svc("db", "node-1"))
    after = doc(
        svc("postgres", "node-1", id=DB), svc("db", "node-1"), svc("api", "node-1"), previous=before
    )
    plan = plan_change(before, after)
    assert plan.services == (
        ServiceChange("db", "added", "1 instance(s) on node-1"),
        ServiceChange("postgres", "renamed", "from db"),
    )
    # db.<domain> now answers with the new service's address, postgres with the old one's.
    assert plan.dns == (
        a("db", ("10.250.0.5",), ("10.250.0.4",)),
        aaaa("db", (f"{V6}5",), (f"{V6}4",)),
        a("postgres", ("10.250.0.4",)),
        aaaa("postgres", (f"{V6}4",)),
    )
    assert plan.namespaces == (created("node-1", "db#0"),)
    assert plan.peers == ()
    assert plan.consequences == (
        Consequence(
            Severity.ADDRESS_CHANGE,
            "db.railway.internal now names a different service than before: clients of the "
            "old one reach the new one",
        ),
    )


def test_scaling_up_adds_instances_peers_and_namespaces() -> None:
    before = doc(svc("api", "node-1"), svc("db", "node-1"))
    after = doc(svc("api", "node-1", "node-2", "node-3"), svc("db", "node-1"), previous=before)
    plan = plan_change(before, after)
    assert plan.services == (ServiceChange("api", "scaled", "1 → 3 instance(s)"),)
    # db holds .4: the new instances take the next free pairs.
    assert plan.dns == (
        a("api", ("10.250.0.5", "10.250.0.6")),
        aaaa("api", (f"{V6}5", f"{V6}6")),
    )
    assert plan.peers == (
        PeerChanges("node-1", ("node-2", "node-3"), ()),
        PeerChanges("node-2", ("node-1", "node-3"), ()),
        PeerChanges("node-3", ("node-1", "node-2"), ()),
    )
    assert plan.namespaces == (
        created("node-2", "environment"),
        created("node-2", "api#1"),
        created("node-3", "environment"),
        created("node-3", "api#2"),
    )
    assert plan.consequences == ()
    assert plan.counts == counts((2, 2), (2, 4))


def test_scaling_down_stops_the_last_instances() -> None:
    before = doc(svc("api", "node-1", "node-2", "node-3"), svc("db", "node-1"))
    after = doc(svc("api", "node-1"), svc("db", "node-1"), previous=before)
    plan = plan_change(before, after)
    assert plan.services == (ServiceChange("api", "scaled", "3 → 1 instance(s)"),)
    assert plan.dns == (
        a("api", removed=("10.250.0.4", "10.250.0.5")),
        aaaa("api", removed=(f"{V6}4", f"{V6}5")),
    )
    assert plan.peers == (
        PeerChanges("node-1", (), ("node-2", "node-3")),
        PeerChanges("node-2", (), ("node-1", "node-3")),
        PeerChanges("node-3", (), ("node-1", "node-2")),
    )
    assert plan.namespaces == (
        destroyed("node-2", "environment"),
        destroyed("node-2", "api#1"),
        destroyed("node-3", "environment"),
        destroyed("node-3", "api#2"),
    )
    assert plan.consequences == (
        Consequence(Severity.CONNECTIONS_DROP, "api#1 on node-2 stops: its open connections drop"),
        Consequence(Severity.CONNECTIONS_DROP, "api#2 on node-3 stops: its open connections drop"),
    )
    assert plan.counts == counts((2, 2), (4, 2))


def test_re_placing_keeps_addresses_and_drops_connections(three: EnvironmentDocument) -> None:
    after = doc(svc("api", "node-1", "node-3"), svc("db", "node-3"), previous=three)
    assert [(i.node, i.ipv4, i.ipv6) for i in after.services[0].instances] == [
        ("node-1", "10.250.0.3", f"{V6}3"),
        ("node-3", "10.250.0.4", f"{V6}4"),
    ]
    plan = plan_change(three, after)
    assert plan.services == (ServiceChange("api", "re-placed", "#1 node-2 → node-3"),)
    assert plan.dns == ()
    assert plan.peers == (
        PeerChanges("node-1", (), ("node-2",)),
        PeerChanges("node-2", (), ("node-1", "node-3")),
        PeerChanges("node-3", (), ("node-2",)),
    )
    assert plan.namespaces == (
        destroyed("node-2", "environment"),
        destroyed("node-2", "api#1"),
        created("node-3", "api#1"),
    )
    assert plan.consequences == (
        Consequence(
            Severity.CONNECTIONS_DROP,
            "api#1 moves node-2 → node-3: its open connections drop (it keeps its addresses)",
        ),
    )


def test_swapping_nodes_moves_both_instances_and_keeps_the_mesh() -> None:
    before = doc(svc("api", "node-1", "node-2"))
    after = doc(svc("api", "node-2", "node-1"), previous=before)
    plan = plan_change(before, after)
    assert plan.services == (
        ServiceChange("api", "re-placed", "#0 node-1 → node-2, #1 node-2 → node-1"),
    )
    assert plan.dns == ()
    assert plan.peers == ()
    assert plan.namespaces == (
        destroyed("node-1", "api#0"),
        created("node-1", "api#1"),
        destroyed("node-2", "api#1"),
        created("node-2", "api#0"),
    )
    assert [c.message for c in plan.consequences] == [
        "api#0 moves node-1 → node-2: its open connections drop (it keeps its addresses)",
        "api#1 moves node-2 → node-1: its open connections drop (it keeps its addresses)",
    ]


def test_a_rename_and_a_move_are_both_reported() -> None:
    before = doc(svc("database", "node-1"))
    after = doc(svc("postgres", "node-2", id=DATABASE), previous=before)
    plan = plan_change(before, after)
    assert plan.services == (
        ServiceChange("postgres", "renamed", "from database"),
        ServiceChange("postgres", "re-placed", "#0 node-1 → node-2"),
    )
    assert plan.namespaces == (
        destroyed("node-1", "environment"),
        destroyed("node-1", "postgres#0"),
        created("node-2", "environment"),
        created("node-2", "postgres#0"),
    )
    assert plan.severities == frozenset({Severity.CONNECTIONS_DROP})


# -- environment settings ------------------------------------------------------------------------


def test_dual_to_ipv6_removes_every_a_record_and_keeps_aaaa(three: EnvironmentDocument) -> None:
    after = doc(
        svc("api", "node-1", "node-2"), svc("db", "node-3"), previous=three, ip_mode=IpMode.IPV6
    )
    plan = plan_change(three, after)
    assert plan.services == ()
    assert plan.dns == (
        a("api", removed=("10.250.0.3", "10.250.0.4")),
        a("db", removed=("10.250.0.5",)),
    )
    assert all(d.rtype == "A" for d in plan.dns)
    assert plan.peers == ()
    assert plan.consequences == (
        Consequence(
            Severity.RECORDS_REMOVED,
            "dual stack → IPv6 only: every A record goes away; IPv4 clients of "
            "*.railway.internal stop resolving",
        ),
        Consequence(
            Severity.ADDRESS_CHANGE,
            "api#0 IPv4 10.250.0.3 → none: clients holding the old address lose it",
        ),
        Consequence(
            Severity.ADDRESS_CHANGE,
            "api#1 IPv4 10.250.0.4 → none: clients holding the old address lose it",
        ),
        Consequence(
            Severity.ADDRESS_CHANGE,
            "db#0 IPv4 10.250.0.5 → none: clients holding the old address lose it",
        ),
    )
    assert plan.severities == frozenset({Severity.RECORDS_REMOVED, Severity.ADDRESS_CHANGE})


def test_ipv6_to_dual_adds_a_records_without_consequences() -> None:
    before = doc(svc("api", "node-1"), svc("db", "node-2"), ip_mode=IpMode.IPV6)
    after = doc(svc("api", "node-1"), svc("db", "node-2"), previous=before)
    plan = plan_change(before, after)
    assert plan.dns == (a("api", ("10.250.0.3",)), a("db", ("10.250.0.4",)))
    # Instances are readdressed in place: no namespace is rebuilt, nothing drops.
    assert plan.namespaces == ()
    assert plan.consequences == ()


def test_a_new_ipv4_cidr_changes_every_ipv4_address(three: EnvironmentDocument) -> None:
    after = doc(
        svc("api", "node-1", "node-2"),
        svc("db", "node-3"),
        previous=three,
        ipv4_cidr="10.43.0.0/16",
    )
    plan = plan_change(three, after)
    assert plan.dns == (
        a("api", ("10.43.0.3", "10.43.0.4"), ("10.250.0.3", "10.250.0.4")),
        a("db", ("10.43.0.5",), ("10.250.0.5",)),
    )
    assert plan.consequences == (
        Consequence(
            Severity.ADDRESS_CHANGE,
            "api#0 IPv4 10.250.0.3 → 10.43.0.3: clients holding the old address lose it",
        ),
        Consequence(
            Severity.ADDRESS_CHANGE,
            "api#1 IPv4 10.250.0.4 → 10.43.0.4: clients holding the old address lose it",
        ),
        Consequence(
            Severity.ADDRESS_CHANGE,
            "db#0 IPv4 10.250.0.5 → 10.43.0.5: clients holding the old address lose it",
        ),
    )
    # The agent readdresses a wired instance in place: no namespace is rebuilt.
    assert plan.namespaces == ()


def test_a_new_domain_moves_every_name(three: EnvironmentDocument) -> None:
    after = doc(
        svc("api", "node-1", "node-2"), svc("db", "node-3"), previous=three, domain="corp.internal"
    )
    plan = plan_change(three, after)
    assert plan.dns == (
        DnsChange("api.corp.internal", "A", ("10.250.0.3", "10.250.0.4"), ()),
        DnsChange("api.corp.internal", "AAAA", (f"{V6}3", f"{V6}4"), ()),
        a("api", removed=("10.250.0.3", "10.250.0.4")),
        aaaa("api", removed=(f"{V6}3", f"{V6}4")),
        DnsChange("db.corp.internal", "A", ("10.250.0.5",), ()),
        DnsChange("db.corp.internal", "AAAA", (f"{V6}5",), ()),
        a("db", removed=("10.250.0.5",)),
        aaaa("db", removed=(f"{V6}5",)),
    )
    assert plan.consequences == (
        Consequence(
            Severity.RECORDS_REMOVED,
            "domain railway.internal → corp.internal: every old name stops resolving",
        ),
    )
    assert (plan.services, plan.peers, plan.namespaces) == ((), (), ())


def test_an_unchanged_environment_is_same(three: EnvironmentDocument) -> None:
    again = doc(svc("api", "node-1", "node-2"), svc("db", "node-3"), previous=three)
    assert again.generation == 2
    plan = plan_change(three, again)
    assert plan.action == "same"
    assert plan.empty
    assert plan.severities == frozenset()
    assert plan.counts == counts((2, 2), (3, 3))
    assert plan_lines(plan) == ["shop/production: same"]


# -- the mesh --------------------------------------------------------------------------------------


def test_peers_follow_the_nodes_that_host_the_environment() -> None:
    two = doc(svc("api", "node-1", "node-2"))
    grown = doc(svc("api", "node-1", "node-2"), svc("db", "node-3"), previous=two)
    joined = plan_change(two, grown)
    assert joined.peers == (
        PeerChanges("node-1", ("node-3",), ()),
        PeerChanges("node-2", ("node-3",), ()),
        PeerChanges("node-3", ("node-1", "node-2"), ()),
    )
    assert joined.namespaces == (created("node-3", "environment"), created("node-3", "db#0"))

    left = plan_change(grown, doc(svc("api", "node-1", "node-2"), previous=grown))
    assert left.peers == (
        PeerChanges("node-1", (), ("node-3",)),
        PeerChanges("node-2", (), ("node-3",)),
        PeerChanges("node-3", (), ("node-1", "node-2")),
    )
    assert left.namespaces == (destroyed("node-3", "environment"), destroyed("node-3", "db#0"))


def test_a_node_that_keeps_hosting_keeps_its_peers() -> None:
    before = doc(svc("api", "node-1", "node-2"), svc("db", "node-1"))
    after = doc(svc("api", "node-1", "node-2"), svc("db", "node-2"), previous=before)
    plan = plan_change(before, after)
    # db moves between two nodes that both stay in the mesh: allowed IPs change, peers do not.
    assert plan.peers == ()
    assert plan.namespaces == (destroyed("node-1", "db#0"), created("node-2", "db#0"))


def test_namespaces_are_ordered_by_node_then_kernel_name() -> None:
    plan = plan_change(
        None, doc(svc("worker", "node-1"), svc("api", "node-1"), svc("database", "node-1"))
    )
    # Instance namespaces are named after service ids: database < api < worker.
    assert sorted([DATABASE, API, WORKER]) == [DATABASE, API, WORKER]
    assert plan.namespaces == (
        created("node-1", "environment"),
        created("node-1", "database#0"),
        created("node-1", "api#0"),
        created("node-1", "worker#0"),
    )
    assert plan.peers == ()


# -- determinism and serialisation ---------------------------------------------------------------


def _busy_change() -> tuple[EnvironmentDocument, EnvironmentDocument]:
    before = doc(
        svc("api", "node-1", "node-2"),
        svc("db", "node-3"),
        svc("worker", "node-1"),
        svc("cache", "node-2"),
    )
    after = doc(
        svc("api", "node-1", "node-3", "node-2"),
        svc("postgres", "node-3", id=DB),
        svc("worker", "node-2"),
        svc("queue", "node-1"),
        previous=before,
        ip_mode=IpMode.IPV6,
    )
    return before, after


def _reversed(d: EnvironmentDocument) -> EnvironmentDocument:
    return replace(d, services=d.services[::-1], nodes=d.nodes[::-1])


def _render_all(plan: EnvironmentPlan) -> tuple[str, str, str]:
    report = PlanReport((plan,))
    return render_text(report), render_markdown(report), render_json(report)


def test_plans_are_deterministic_and_ordered() -> None:
    before, after = _busy_change()
    first = plan_change(before, after)
    assert plan_change(before, after) == first
    assert _render_all(plan_change(before, after)) == _render_all(first)
    # The order services and nodes are listed in does not change the plan.
    assert plan_change(_reversed(before), _reversed(after)) == first
    assert [(c.service, c.change) for c in first.services] == [
        ("api", "scaled"),
        ("api", "re-placed"),
        ("cache", "removed"),
        ("postgres", "renamed"),
        ("queue", "added"),
        ("worker", "re-placed"),
    ]
    assert [(d.name, d.rtype) for d in first.dns] == [
        (f"api.{DOMAIN}", "A"),
        (f"api.{DOMAIN}", "AAAA"),
        (f"cache.{DOMAIN}", "A"),
        (f"cache.{DOMAIN}", "AAAA"),
        (f"db.{DOMAIN}", "A"),
        (f"db.{DOMAIN}", "AAAA"),
        (f"postgres.{DOMAIN}", "AAAA"),
        (f"queue.{DOMAIN}", "AAAA"),
        (f"worker.{DOMAIN}", "A"),
    ]
    assert [p.node for p in first.peers] == sorted(p.node for p in first.peers)
    assert [n.node for n in first.namespaces] == sorted(n.node for n in first.namespaces)


def _plan_from_dict(raw: dict[str, Any]) -> EnvironmentPlan:
    return EnvironmentPlan(
        project=raw["project"],
        environment=raw["environment"],
        env_id=raw["env_id"],
        action=raw["action"],
        services=tuple(ServiceChange(**c) for c in raw["services"]),
        dns=tuple(
            DnsChange(d["name"], d["type"], tuple(d["added"]), tuple(d["removed"]), d["pending"])
            for d in raw["dns"]
        ),
        peers=tuple(
            PeerChanges(p["node"], tuple(p["added"]), tuple(p["removed"])) for p in raw["peers"]
        ),
        namespaces=tuple(NamespaceChange(**n) for n in raw["namespaces"]),
        consequences=tuple(
            Consequence(Severity(c["severity"]), c["message"], c["subject"])
            for c in raw["consequences"]
        ),
        counts=tuple(raw["counts"].items()),
    )


def test_to_dict_round_trips_through_json() -> None:
    before, after = _busy_change()
    for plan in (plan_change(before, after), plan_change(None, after), plan_change(before, None)):
        raw = plan.to_dict()
        text = json.dumps(raw, ensure_ascii=False)
        assert json.loads(text) == raw
        again = _plan_from_dict(json.loads(text))
        assert again == plan
        assert [c.subject for c in again.consequences] == [c.subject for c in plan.consequences]


def test_to_dict_exact() -> None:
    before = doc(svc("api", "node-1"), svc("worker", "node-2"))
    plan = plan_change(before, doc(svc("api", "node-1"), previous=before))
    assert plan.to_dict() == {
        "project": "shop",
        "environment": "production",
        "env_id": ENV_ID,
        "action": "update",
        "services": [{"service": "worker", "change": "removed", "detail": "1 instance(s) stop"}],
        "dns": [
            {
                "name": f"worker.{DOMAIN}",
                "type": "A",
                "added": [],
                "removed": ["10.250.0.4"],
                "pending": 0,
            },
            {
                "name": f"worker.{DOMAIN}",
                "type": "AAAA",
                "added": [],
                "removed": [f"{V6}4"],
                "pending": 0,
            },
        ],
        "peers": [
            {"node": "node-1", "added": [], "removed": ["node-2"]},
            {"node": "node-2", "added": [], "removed": ["node-1"]},
        ],
        "namespaces": [
            {"node": "node-2", "holds": "environment", "created": False},
            {"node": "node-2", "holds": "worker#0", "created": False},
        ],
        "consequences": [
            {
                "severity": "connections-drop",
                "subject": "worker#0",
                "message": "worker#0 on node-2 stops: its open connections drop",
            },
            {
                "severity": "delete",
                "subject": "worker",
                "message": "service worker is deleted (1 instance(s) stop)",
            },
        ],
        "counts": {
            "services_before": 2,
            "services_after": 1,
            "instances_before": 2,
            "instances_after": 1,
        },
    }


# -- known gaps (strict: they fail loudly once fixed, so the marker comes off) ---------------------


def test_new_addresses_keep_instance_namespaces(three: EnvironmentDocument) -> None:
    """The agent readdresses a wired instance in place: its namespace, and connections on
    the addresses it keeps (here IPv6), survive a switch to IPv6 only."""
    after = doc(
        svc("api", "node-1", "node-2"), svc("db", "node-3"), previous=three, ip_mode=IpMode.IPV6
    )
    plan = plan_change(three, after)
    assert plan.namespaces == ()
    assert Severity.CONNECTIONS_DROP not in plan.severities
    assert Severity.ADDRESS_CHANGE in plan.severities
