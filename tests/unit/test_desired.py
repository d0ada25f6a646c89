"""From the declared EnvironmentSpec to the next document: stable ids, stable addresses."""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from typing import Any

import pytest

from railnet.core.addressing import ula_prefix
from railnet.core.desired import (
    KEEPERS,
    EnvironmentSpec,
    ServiceSpec,
    build_document,
    drain,
    fresh_service_id,
    keepers_of,
    place_replicas,
    service_id,
    spec_from_document,
    with_service,
    without_service,
)
from railnet.core.document import QUARANTINE_TTLS, EnvironmentDocument, InstanceEntry, IpMode
from railnet.core.errors import InvalidField
from railnet.core.names import environment_id
from railnet.core.plan import plan_change

pytestmark = pytest.mark.unit

NODES = ["node-1", "node-2", "node-3"]
IDENTITIES = {
    name: (f"{letter * 43}=", f"198.18.0.{i + 1}:51820")
    for i, (name, letter) in enumerate(zip(NODES, "ABC", strict=True))
}


def spec(*services: ServiceSpec, **kwargs: Any) -> EnvironmentSpec:
    return EnvironmentSpec("shop", "production", services=services, **kwargs)


def svc(name: str, *nodes: str, id: str = "") -> ServiceSpec:
    return ServiceSpec(name=name, nodes=tuple(nodes), id=id)


def addresses(doc: EnvironmentDocument, name: str) -> list[tuple[str | None, str]]:
    found = doc.service(name)
    assert found is not None, name
    return [(i.ipv4, i.ipv6) for i in found.instances]


def all_addresses(doc: EnvironmentDocument) -> list[str]:
    return [a for s in doc.services for i in s.instances for a in (i.ipv4, i.ipv6) if a is not None]


# -- the first document ------------------------------------------------------------------------


def test_first_document_is_generation_one_with_allocated_addresses() -> None:
    doc = build_document(
        spec(svc("api", "node-1", "node-2"), svc("db", "node-3")), None, IDENTITIES
    )
    base6 = ula_prefix(doc.id).network_address
    assert doc.generation == 1
    assert doc.id == environment_id("shop", "production")
    assert addresses(doc, "api") == [("10.250.0.3", str(base6 + 3)), ("10.250.0.4", str(base6 + 4))]
    assert addresses(doc, "db") == [("10.250.0.5", str(base6 + 5))]
    api = doc.service("api")
    assert api is not None
    assert api.id == service_id(doc.id, "api")
    assert [i.node for i in api.instances] == ["node-1", "node-2"]


def test_document_lists_exactly_the_hosting_nodes_with_their_identities() -> None:
    doc = build_document(spec(svc("api", "node-3", "node-1", "node-3")), None, IDENTITIES)
    assert [n.name for n in doc.nodes] == ["node-1", "node-3"]
    for node in doc.nodes:
        assert (node.public_key, node.endpoint) == IDENTITIES[node.name]


def test_spec_nodes_are_sorted_and_unique() -> None:
    s = spec(svc("a", "node-3", "node-1"), svc("b", "node-1"))
    assert s.nodes == ["node-1", "node-3"]


def test_built_document_passes_the_agents_validator() -> None:
    doc = build_document(spec(svc("api", "node-1")), None, IDENTITIES)
    assert EnvironmentDocument.from_json(doc.to_json()) == doc


def test_domain_and_ttl_are_carried() -> None:
    doc = build_document(
        spec(svc("api", "node-1"), domain="corp.internal", dns_ttl=30), None, IDENTITIES
    )
    assert (doc.domain, doc.dns_ttl) == ("corp.internal", 30)


def test_key_rotation_is_carried_both_ways() -> None:
    doc = build_document(spec(svc("api", "node-1"), key_rotation="r1"), None, IDENTITIES)
    assert doc.key_rotation == "r1"
    assert spec_from_document(doc).key_rotation == "r1"


# -- stability -------------------------------------------------------------------------------


def test_rebuilding_the_same_spec_bumps_only_the_generation() -> None:
    s = spec(svc("api", "node-1", "node-2"), svc("db", "node-3"))
    first = build_document(s, None, IDENTITIES)
    second = build_document(s, first, IDENTITIES)
    assert second.generation == 2
    assert second.with_generation(1) == first


def test_adding_a_service_keeps_existing_addresses_and_avoids_them() -> None:
    first = build_document(spec(svc("api", "node-1", "node-2")), None, IDENTITIES)
    second = build_document(
        spec(svc("web", "node-3"), svc("api", "node-1", "node-2")), first, IDENTITIES
    )
    assert addresses(second, "api") == addresses(first, "api")
    new_api, old_api = second.service("api"), first.service("api")
    assert new_api is not None and old_api is not None
    assert new_api.id == old_api.id
    assert not set(all_addresses(first)) & {a for pair in addresses(second, "web") for a in pair}


def test_removing_a_service_keeps_the_others() -> None:
    first = build_document(spec(svc("a", "node-1"), svc("b", "node-2")), None, IDENTITIES)
    second = build_document(spec(svc("b", "node-2")), first, IDENTITIES)
    assert [s.name for s in second.services] == ["b"]
    assert addresses(second, "b") == addresses(first, "b")
    assert [n.name for n in second.nodes] == ["node-2"]


def test_freed_addresses_rest_before_reuse() -> None:
    t0 = 1_000_000
    first = build_document(spec(svc("a", "node-1"), svc("b", "node-1")), None, IDENTITIES, now=t0)
    second = build_document(
        spec(svc("b", "node-1"), svc("c", "node-1", "node-2")), first, IDENTITIES, now=t0
    )
    assert addresses(second, "b") == addresses(first, "b")
    c = addresses(second, "c")
    # a's pair was freed in this very generation: a client may still hold it, so c must
    # not get it; c takes the next free pairs after b's.
    assert addresses(first, "a")[0] not in c
    assert [pair[0] for pair in c] == ["10.250.0.5", "10.250.0.6"]
    assert len(set(all_addresses(second))) == len(all_addresses(second))
    assert {f.address for f in second.freed} == set(addresses(first, "a")[0])
    assert {f.generation for f in second.freed} == {2}

    ttl = second.dns_ttl
    later = t0 + QUARANTINE_TTLS * ttl
    d = spec(svc("b", "node-1"), svc("c", "node-1", "node-2"), svc("d", "node-3"))
    # The next generation: still resting, however much time passed.
    third = build_document(d, second, IDENTITIES, now=later + 3600)
    assert addresses(third, "d")[0] not in addresses(first, "a")
    # Two generations on, but within 10 TTLs: still resting.
    d2 = spec(*d.services, svc("e", "node-3"))
    fourth = build_document(d2, third, IDENTITIES, now=later - 1)
    assert addresses(first, "a")[0] not in addresses(fourth, "e")
    # Two generations on and 10 TTLs later: free again, lowest first, and out of the list.
    d3 = spec(*d2.services, svc("f", "node-3"))
    fifth = build_document(d3, fourth, IDENTITIES, now=later)
    assert addresses(fifth, "f") == addresses(first, "a")
    assert not {f.address for f in fifth.freed} & set(addresses(first, "a")[0])
    # With no clock (a plan without one), nothing leaves quarantine.
    assert addresses(build_document(d3, fourth, IDENTITIES), "f") != addresses(first, "a")


def test_a_full_range_reuses_the_longest_resting_address_first_and_the_plan_says_so() -> None:
    tiny = {"ipv4_cidr": "10.9.0.0/28"}  # 12 assignable hosts: .3 to .14
    names = [f"s{i}" for i in range(12)]
    full = build_document(spec(*(svc(n, "node-1") for n in names), **tiny), None, IDENTITIES, now=1)
    gone = build_document(
        spec(*(svc(n, "node-1") for n in names[2:]), **tiny), full, IDENTITIES, now=2
    )
    older = addresses(full, "s0")[0][0]
    newer = addresses(full, "s1")[0][0]
    assert {older, newer} <= {f.address for f in gone.freed}
    back = build_document(
        spec(*(svc(n, "node-1") for n in names[2:]), svc("x", "node-1"), **tiny),
        gone,
        IDENTITIES,
        now=3,
    )
    assert addresses(back, "x")[0][0] in {older, newer}
    warnings = [c.message for c in plan_change(gone, back, now=3).consequences]
    assert any(addresses(back, "x")[0][0] in m and "quarantine" in m for m in warnings)


def test_renaming_with_the_stable_id_keeps_id_and_addresses() -> None:
    first = build_document(spec(svc("api", "node-1", "node-2")), None, IDENTITIES)
    old = first.service("api")
    assert old is not None
    second = build_document(spec(svc("gateway", "node-1", "node-2", id=old.id)), first, IDENTITIES)
    new = second.service("gateway")
    assert second.service("api") is None
    assert new is not None
    assert new.id == old.id
    assert new.instances == old.instances


def test_renaming_without_an_id_makes_a_new_service() -> None:
    first = build_document(spec(svc("api", "node-1")), None, IDENTITIES)
    second = build_document(spec(svc("web", "node-1")), first, IDENTITIES)
    web = second.service("web")
    assert web is not None
    assert web.id == service_id(first.id, "web") != first.services[0].id


def test_moving_an_instance_keeps_its_addresses() -> None:
    first = build_document(spec(svc("api", "node-1", "node-2")), None, IDENTITIES)
    second = build_document(spec(svc("api", "node-1", "node-3")), first, IDENTITIES)
    assert addresses(second, "api") == addresses(first, "api")
    api = second.service("api")
    assert api is not None
    assert [i.node for i in api.instances] == ["node-1", "node-3"]
    assert [n.name for n in second.nodes] == ["node-1", "node-3"]


def test_scale_down_keeps_the_first_instances_and_scale_up_stays_unique() -> None:
    three = spec(svc("api", *NODES), svc("db", "node-1"))
    first = build_document(three, None, IDENTITIES)
    down = build_document(spec(svc("api", "node-1"), svc("db", "node-1")), first, IDENTITIES)
    assert addresses(down, "api") == addresses(first, "api")[:1]
    assert addresses(down, "db") == addresses(first, "db")
    up = build_document(three, down, IDENTITIES)
    assert addresses(up, "api")[0] == addresses(first, "api")[0]
    assert addresses(up, "db") == addresses(first, "db")
    assert len(set(all_addresses(up))) == len(all_addresses(up)) == 8
    assert up.generation == 3


def test_stable_across_many_updates() -> None:
    doc = build_document(spec(svc("api", "node-1"), svc("db", "node-2")), None, IDENTITIES)
    api, db = addresses(doc, "api"), addresses(doc, "db")
    for i in range(10):
        extra = [svc(f"job{j}", NODES[j % 3]) for j in range(i)]
        doc = build_document(
            spec(*extra, svc("db", "node-2"), svc("api", "node-1")), doc, IDENTITIES
        )
        assert addresses(doc, "api") == api
        assert addresses(doc, "db") == db
    assert doc.generation == 11


def test_fifty_services_get_unique_assignable_addresses() -> None:
    services = [svc(f"svc-{i}", NODES[i % 3], NODES[(i + 1) % 3]) for i in range(50)]
    doc = build_document(spec(*services), None, IDENTITIES)
    found = all_addresses(doc)
    assert len(found) == 200
    assert len(set(found)) == 200
    plan = doc.addresses
    assert all(plan.is_assignable(ipaddress.ip_address(a)) for a in found)
    assert len({s.id for s in doc.services}) == 50


def test_changing_the_cidr_renumbers_into_the_new_range() -> None:
    first = build_document(spec(svc("api", "node-1")), None, IDENTITIES)
    second = build_document(
        spec(svc("api", "node-1"), ipv4_cidr="192.168.10.0/24"), first, IDENTITIES
    )
    assert second.ipv4_cidr == "192.168.10.0/24"
    assert addresses(second, "api")[0][0] == "192.168.10.3"
    assert second.services[0].id == first.services[0].id


# -- IPv6-only -------------------------------------------------------------------------------


def test_ipv6_only_document_has_no_ipv4_anywhere() -> None:
    doc = build_document(
        spec(svc("api", "node-1", "node-2"), ip_mode=IpMode.IPV6), None, IDENTITIES
    )
    assert doc.ip_mode is IpMode.IPV6
    assert doc.ipv4_cidr is None
    assert all(v4 is None for v4, _ in addresses(doc, "api"))
    assert EnvironmentDocument.from_json(doc.to_json()) == doc


def test_switching_ip_mode_keeps_ipv6_and_drops_or_adds_ipv4() -> None:
    dual = build_document(spec(svc("api", "node-1"), svc("db", "node-2")), None, IDENTITIES)
    legacy = build_document(
        spec(svc("api", "node-1"), svc("db", "node-2"), ip_mode=IpMode.IPV6), dual, IDENTITIES
    )
    assert [a[0] for a in addresses(legacy, "api") + addresses(legacy, "db")] == [None, None]
    assert [a[1] for a in addresses(legacy, "api")] == [a[1] for a in addresses(dual, "api")]
    assert [a[1] for a in addresses(legacy, "db")] == [a[1] for a in addresses(dual, "db")]
    assert legacy.generation == 2
    back = build_document(spec(svc("api", "node-1"), svc("db", "node-2")), legacy, IDENTITIES)
    v4 = [a[0] for a in addresses(back, "api") + addresses(back, "db")]
    assert None not in v4 and len(set(v4)) == 2
    assert [a[1] for a in addresses(back, "api")] == [a[1] for a in addresses(dual, "api")]


# -- errors ---------------------------------------------------------------------------------


def test_duplicate_service_names_are_refused_at_the_second() -> None:
    with pytest.raises(InvalidField) as caught:
        build_document(spec(svc("api", "node-1"), svc("api", "node-2")), None, IDENTITIES)
    assert caught.value.field == "services[1].name"


def test_bad_service_name_names_its_index() -> None:
    with pytest.raises(InvalidField) as caught:
        build_document(spec(svc("ok", "node-1"), svc("Bad_Name", "node-1")), None, IDENTITIES)
    assert caught.value.field == "services[1].name"
    assert caught.value.value == "Bad_Name"


def test_bad_project_environment_and_cidr_are_refused() -> None:
    with pytest.raises(InvalidField, match="project"):
        build_document(EnvironmentSpec("Shop", "prod"), None, IDENTITIES)
    with pytest.raises(InvalidField, match="environment"):
        build_document(EnvironmentSpec("shop", "prod_1"), None, IDENTITIES)
    with pytest.raises(InvalidField, match="ipv4_cidr"):
        build_document(spec(ipv4_cidr="8.8.8.0/24"), None, IDENTITIES)


def test_a_node_without_identity_is_named() -> None:
    with pytest.raises(InvalidField) as caught:
        build_document(spec(svc("api", "node-9")), None, IDENTITIES)
    assert caught.value.field == "nodes"
    assert caught.value.value == "node-9"


def test_the_cidr_running_out_is_reported() -> None:
    with pytest.raises(InvalidField) as caught:
        build_document(
            spec(svc("api", *(["node-1"] * 13)), ipv4_cidr="10.1.0.0/28"), None, IDENTITIES
        )
    assert caught.value.field == "ipv4_cidr"


def test_rename_and_reuse_of_the_old_name_in_one_update() -> None:
    first = build_document(spec(svc("api", "node-1")), None, IDENTITIES)
    old = first.services[0]
    second = build_document(
        spec(svc("gateway", "node-1", id=old.id), svc("api", "node-2")), first, IDENTITIES
    )
    gateway, api = second.service("gateway"), second.service("api")
    assert gateway is not None and api is not None
    assert gateway.instances == (
        InstanceEntry("node-1", old.instances[0].ipv4, old.instances[0].ipv6),
    )
    assert api.id != old.id


# -- editing one service of what the nodes hold ------------------------------------------------


def test_spec_from_document_rebuilds_the_same_document() -> None:
    first = build_document(
        spec(svc("api", "node-1", "node-2"), svc("db", "node-3"), domain="corp.internal"),
        None,
        IDENTITIES,
    )
    again = build_document(spec_from_document(first), first, IDENTITIES)
    assert again.with_generation(first.generation) == first


def test_spec_from_document_of_an_ipv6_only_environment() -> None:
    doc = build_document(spec(svc("api", "node-1"), ip_mode=IpMode.IPV6), None, IDENTITIES)
    back = spec_from_document(doc)
    assert back.ip_mode is IpMode.IPV6
    assert build_document(back, doc, IDENTITIES).with_generation(1) == doc


def test_with_service_adds_at_the_end_and_replaces_by_id_in_place() -> None:
    base = spec_from_document(
        build_document(spec(svc("api", "node-1"), svc("db", "node-2")), None, IDENTITIES)
    )
    api_id = base.services[0].id
    added = with_service(base, ServiceSpec("web", ("node-3",), id="sweb"))
    assert [s.name for s in added.services] == ["api", "db", "web"]
    renamed = with_service(added, ServiceSpec("gateway", ("node-1", "node-2"), id=api_id))
    assert [s.name for s in renamed.services] == ["gateway", "db", "web"]
    assert renamed.services[0].nodes == ("node-1", "node-2")
    assert [s.name for s in without_service(renamed, api_id).services] == ["db", "web"]
    assert without_service(renamed, "snothing") == renamed


def test_with_service_refuses_a_second_service_of_the_same_name() -> None:
    base = spec_from_document(build_document(spec(svc("api", "node-1")), None, IDENTITIES))
    with pytest.raises(InvalidField) as caught:
        with_service(base, ServiceSpec("api", ("node-2",), id="sother"))
    assert caught.value.field == "name"
    assert caught.value.value == "api"


def test_a_new_service_never_replaces_a_renamed_one() -> None:
    env_id = environment_id("shop", "production")
    first = build_document(spec(svc("api", "node-1")), None, IDENTITIES)
    renamed = with_service(
        spec_from_document(first), ServiceSpec("gateway", ("node-1",), id=first.services[0].id)
    )
    try:
        with_service(
            renamed, ServiceSpec("api", ("node-2",), id=service_id(env_id, "api")), create=True
        )
    except InvalidField as exc:
        assert exc.field == "service_id" and "gateway" in str(exc)
    else:
        raise AssertionError("a create that reuses a renamed service's id must be refused")
    taken = {s.id for s in renamed.services}
    sid = fresh_service_id(env_id, "api", taken)
    assert sid not in taken
    both = with_service(renamed, ServiceSpec("api", ("node-2",), id=sid), create=True)
    assert {s.name for s in both.services} == {"gateway", "api"}


# -- placement -------------------------------------------------------------------------------


def test_place_replicas_round_robin_from_a_name_derived_start() -> None:
    placed = place_replicas(5, ["node-3", "node-1", "node-2"], "api")
    assert placed == place_replicas(5, NODES, "api")  # deterministic, order-insensitive
    counts = Counter(placed)
    assert sorted(counts.values()) == [1, 2, 2]
    # consecutive replicas land on different nodes
    assert all(a != b for a, b in itertools.pairwise(placed))


def test_place_replicas_without_offset_starts_at_the_first_node() -> None:
    assert place_replicas(4, ["node-2", "node-1"]) == ("node-1", "node-2", "node-1", "node-2")
    assert place_replicas(0, NODES) == ()


def test_place_replicas_spreads_starts_over_names() -> None:
    starts = {place_replicas(1, NODES, f"svc{i}")[0] for i in range(30)}
    assert starts == set(NODES)


def test_place_replicas_errors() -> None:
    with pytest.raises(InvalidField, match="replicas"):
        place_replicas(-1, NODES)
    with pytest.raises(InvalidField, match="nodes"):
        place_replicas(1, [])


def test_scaling_up_keeps_every_existing_replica_where_it_is() -> None:
    one = place_replicas(1, NODES, "api")
    # Even when the fresh start for this id would put replica 0 elsewhere:
    for node in NODES:
        two = place_replicas(2, NODES, "api", current=(node,))
        assert two[0] == node and two[1] != node
    assert place_replicas(2, NODES, "api", current=one)[0] == one[0]


def test_scaling_down_removes_the_highest_indices() -> None:
    three = ("node-3", "node-1", "node-2")
    assert place_replicas(2, NODES, "api", current=three) == ("node-3", "node-1")


def test_a_node_joining_the_cluster_moves_nothing() -> None:
    before = place_replicas(5, NODES, "api")
    after = place_replicas(5, [*NODES, "node-4"], "api", current=before)
    assert after == before


def test_only_the_replicas_of_a_node_that_left_move() -> None:
    before = place_replicas(3, NODES, "api")
    after = place_replicas(3, ["node-1", "node-2"], "api", current=before)
    moved = [i for i in range(3) if before[i] != after[i]]
    assert moved == [before.index("node-3")]
    assert set(after) == {"node-1", "node-2"}


def test_new_replicas_go_to_the_least_loaded_nodes() -> None:
    placed = place_replicas(6, [*NODES, "node-4"], "api", current=("node-1", "node-1"))
    assert placed[:2] == ("node-1", "node-1")
    load = {n: placed.count(n) for n in [*NODES, "node-4"]}
    assert max(load.values()) - min(load.values()) <= 1


# -- keepers ---------------------------------------------------------------------------------


def test_keepers_are_a_stable_few_of_the_cluster() -> None:
    env = environment_id("shop", "production")
    nodes = [f"node-{i}" for i in range(1, 11)]
    keep = keepers_of(env, nodes)
    assert len(keep) == KEEPERS == len(set(keep)) and set(keep) <= set(nodes)
    assert keepers_of(env, list(reversed(nodes))) == keep  # the file's order does not matter
    assert set(keepers_of(env, nodes[:2])) == set(nodes[:2])  # fewer nodes than keepers
    assert keepers_of(env, []) == ()


def test_keepers_differ_between_environments() -> None:
    nodes = [f"node-{i}" for i in range(1, 21)]
    chosen = {keepers_of(environment_id("shop", f"env{i}"), nodes) for i in range(30)}
    assert len(chosen) > 20
    first = Counter(k[0] for k in chosen)
    assert max(first.values()) < 10, first  # no node keeps every environment


def test_a_node_joining_or_leaving_changes_at_most_one_keeper() -> None:
    nodes = [f"node-{i}" for i in range(1, 13)]
    for i in range(50):
        env = environment_id("shop", f"env{i}")
        keep = set(keepers_of(env, nodes))
        joined = set(keepers_of(env, [*nodes, "node-99"]))
        assert len(keep - joined) <= 1 and joined - keep <= {"node-99"}
        for gone in nodes:
            left = set(keepers_of(env, [n for n in nodes if n != gone]))
            assert keep - left <= {gone}
            assert len(left - keep) <= 1


# -- cordoned nodes ----------------------------------------------------------------------------


def test_draining_moves_only_the_instances_on_a_cordoned_node() -> None:
    before = spec(
        svc("api", "node-1", "node-2", id="sapi"),
        svc("db", "node-3", id="sdb"),
        svc("worker", "node-2", "node-2", id="swrk"),
    )
    after = drain(before, cordoned={"node-2"}, schedulable=["node-1", "node-3"])
    api, db, worker = after.services
    assert api.nodes[0] == "node-1" and api.nodes[1] in ("node-1", "node-3")
    assert db == before.services[1]  # nothing of it was on node-2: untouched
    assert "node-2" not in worker.nodes and len(worker.nodes) == 2
    assert "node-2" not in after.nodes
    # ids, names and order are kept: build_document then keeps every address.
    assert [(s.id, s.name) for s in after.services] == [(s.id, s.name) for s in before.services]


def test_a_drained_instance_keeps_its_addresses() -> None:
    first = build_document(spec(svc("api", "node-1", "node-2", id="sapi")), None, IDENTITIES)
    drained = drain(
        spec_from_document(first), cordoned={"node-2"}, schedulable=["node-1", "node-3"]
    )
    second = build_document(drained, first, IDENTITIES)
    assert addresses(second, "api") == addresses(first, "api")
    assert [i.node for i in second.services[0].instances] != ["node-1", "node-2"]
    assert "node-2" not in [n.name for n in second.nodes]


def test_draining_spreads_the_moved_replicas_over_the_least_loaded_nodes() -> None:
    before = spec(svc("web", "node-1", "node-2", "node-2", "node-3", id="sweb"))
    after = drain(before, cordoned={"node-2"}, schedulable=["node-1", "node-3", "node-4"])
    web = after.services[0].nodes
    assert web[0] == "node-1" and web[3] == "node-3"
    load = Counter(web)
    assert "node-2" not in load and load["node-4"] >= 1
    assert max(load.values()) - min(load[n] for n in ("node-1", "node-3", "node-4")) <= 1


def test_draining_with_nothing_cordoned_changes_nothing() -> None:
    before = spec(svc("api", "node-1", "node-2", id="sapi"))
    assert drain(before, cordoned=set(), schedulable=NODES) == before


def test_draining_onto_no_node_names_the_cordon() -> None:
    with pytest.raises(InvalidField, match="cordoned"):
        drain(spec(svc("api", "node-1", id="sapi")), cordoned={"node-1"}, schedulable=[])


def test_keepers_skip_cordoned_nodes_and_move_at_most_the_cordoned_ones() -> None:
    env = environment_id("shop", "production")
    nodes = [f"node-{i}" for i in range(1, 8)]
    before = keepers_of(env, nodes)
    cordoned = before[0]
    after = keepers_of(env, [n for n in nodes if n != cordoned])
    assert cordoned not in after
    assert set(before) - {cordoned} <= set(after) and len(after) == len(before)


@pytest.mark.parametrize(
    "services",
    [
        (svc("api", "node-1", "node-2"), svc("db", "node-2"), svc("web", "node-3")),  # added
        (svc("api", "node-1"), svc("db", "node-2")),  # scaled down
        (svc("db", "node-2"),),  # removed
        (svc("web", "node-3"), svc("api", "node-1", "node-2"), svc("db", "node-2")),  # reordered
    ],
)
def test_the_next_document_is_the_validators_and_keeps_unchanged_entries(
    services: tuple[ServiceSpec, ...],
) -> None:
    first = build_document(
        spec(svc("api", "node-1", "node-2"), svc("db", "node-2")), None, IDENTITIES
    )
    second = build_document(spec(*services), first, IDENTITIES)
    assert EnvironmentDocument.from_json(second.to_json()) == second
    assert second.to_json() == EnvironmentDocument.from_dict(second.to_dict()).to_json()
    db = second.service("db")
    assert db is first.service("db")  # the same entry: read once, its JSON written once
