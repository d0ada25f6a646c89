"""The local view of a document, and the pure plan from what a node holds to what it must."""

from __future__ import annotations

import dataclasses

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.document import EnvironmentDocument, IpMode
from railnet.core.local import LocalEnvironment, local_environment
from railnet.core.names import environment_netns, instance_netns, wireguard_ifname
from railnet.core.reconcile import (
    Change,
    ConfigureNamespace,
    CreateDevice,
    CreateInstance,
    CreateNamespace,
    DeleteDevice,
    GuardInstance,
    ObservedDevice,
    ObservedEnvironment,
    ObservedInstance,
    ObservedPeer,
    ReaddressInstance,
    RemoveInstance,
    RemovePeer,
    RewireInstance,
    SetPeer,
    SetPrivateKey,
    plan_device,
    plan_environment,
    plan_removal,
)

pytestmark = pytest.mark.unit

PREFIX = "rn-t"
NODES = ["node-1", "node-2", "node-3"]
KEYS = {n: f"{c * 43}=" for n, c in zip(NODES, "ABC", strict=True)}
MY_KEY = KEYS["node-1"]
MY_PORT = 51820
STRANGER = "D" * 43 + "="


def identities(**endpoints: str) -> dict[str, tuple[str, str]]:
    found = {n: (KEYS[n], f"198.18.0.{i + 1}:51820") for i, n in enumerate(NODES)}
    for name, endpoint in endpoints.items():
        found[name.replace("_", "-")] = (KEYS[name.replace("_", "-")], endpoint)
    return found


def make_doc(
    services: tuple[ServiceSpec, ...] | None = None,
    previous: EnvironmentDocument | None = None,
    ip_mode: IpMode = IpMode.DUAL,
    **endpoints: str,
) -> EnvironmentDocument:
    if services is None:
        services = (
            ServiceSpec("api", ("node-1", "node-2")),
            ServiceSpec("db", ("node-1",)),
            ServiceSpec("worker", ("node-3",)),
        )
    spec = EnvironmentSpec("shop", "production", ip_mode=ip_mode, services=services)
    return build_document(spec, previous, identities(**endpoints))


def local(doc: EnvironmentDocument, node: str = "node-1") -> LocalEnvironment:
    return local_environment(doc, node, PREFIX)


def observed_from(env: LocalEnvironment) -> ObservedEnvironment:
    """What the kernel of a node that matches ``env`` shows."""
    return ObservedEnvironment(
        netns_exists=True,
        base_ready=True,
        device=ObservedDevice(
            public_key=MY_KEY,
            listen_port=MY_PORT,
            peers=tuple(
                ObservedPeer(p.public_key, p.endpoint, frozenset(p.allowed_ips)) for p in env.peers
            ),
        ),
        instances=tuple(
            ObservedInstance(i.netns, i.addresses, True, guard=i.addresses) for i in env.instances
        ),
    )


def plan(
    desired: LocalEnvironment,
    observed: ObservedEnvironment,
    previous: LocalEnvironment | None = None,
) -> tuple[Change, ...]:
    return plan_environment(desired, MY_KEY, MY_PORT, observed, previous)


def with_device(observed: ObservedEnvironment, **changes: object) -> ObservedEnvironment:
    assert observed.device is not None
    return dataclasses.replace(observed, device=dataclasses.replace(observed.device, **changes))


@pytest.fixture
def doc() -> EnvironmentDocument:
    return make_doc()


@pytest.fixture
def env(doc: EnvironmentDocument) -> LocalEnvironment:
    return local(doc)


# -- the local view --------------------------------------------------------------------------


def test_local_environment_holds_this_nodes_instances(doc: EnvironmentDocument) -> None:
    env = local(doc)
    api, db = doc.service("api"), doc.service("db")
    assert api is not None and db is not None
    assert env.netns == environment_netns(PREFIX, doc.id)
    assert env.wg_ifname == wireguard_ifname(PREFIX, doc.id)
    assert {(i.service, i.index) for i in env.instances} == {("api", 0), ("db", 0)}
    by_service = {i.service: i for i in env.instances}
    assert by_service["api"].netns == instance_netns(PREFIX, doc.id, api.id, 0)
    assert by_service["api"].ipv4 == api.instances[0].ipv4
    assert by_service["db"].addresses == {db.instances[0].ipv4, db.instances[0].ipv6}
    assert [i.netns for i in env.instances] == sorted(i.netns for i in env.instances)
    # Instance namespaces nest under the environment's name: that is how they are found.
    assert all(i.netns.startswith(env.netns + "-") for i in env.instances)


def test_peers_are_the_other_nodes_with_exactly_their_instance_addresses(
    doc: EnvironmentDocument,
) -> None:
    env = local(doc)
    api, worker = doc.service("api"), doc.service("worker")
    assert api is not None and worker is not None
    assert [p.node for p in env.peers] == ["node-2", "node-3"]
    node2, node3 = env.peers
    assert node2.public_key == KEYS["node-2"]
    assert node2.endpoint == "198.18.0.2:51820"
    a1 = api.instances[1]
    assert node2.allowed_ips == tuple(sorted([f"{a1.ipv4}/32", f"{a1.ipv6}/128"]))
    w0 = worker.instances[0]
    assert node3.allowed_ips == tuple(sorted([f"{w0.ipv4}/32", f"{w0.ipv6}/128"]))


def test_a_node_without_instances_is_a_peer_with_no_allowed_ips() -> None:
    built = make_doc((ServiceSpec("api", ("node-1",)), ServiceSpec("db", ("node-2",))))
    # build_document lists only hosting nodes; a hand-written document may list more.
    raw = built.to_dict()
    raw["nodes"].append({"name": "node-3", "public_key": KEYS["node-3"], "endpoint": "[::1]:9"})
    doc = EnvironmentDocument.from_dict(raw)
    assert local(doc, "node-3").instances == ()
    assert {p.node for p in local(doc, "node-3").peers} == {"node-1", "node-2"}
    node3 = next(p for p in local(doc, "node-1").peers if p.node == "node-3")
    assert node3.allowed_ips == ()
    assert node3.endpoint == "[::1]:9"


def test_local_environment_of_an_ipv6_only_document() -> None:
    doc = make_doc(ip_mode=IpMode.IPV6)
    env = local(doc)
    assert env.ipv4_cidr is None and env.gateway4 is None and env.resolver4 is None
    assert env.resolvers == (env.resolver6,)
    assert all(i.ipv4 is None and len(i.addresses) == 1 for i in env.instances)
    assert all(ip.endswith("/128") for p in env.peers for ip in p.allowed_ips)


def test_dual_stack_resolvers_and_gateways(env: LocalEnvironment) -> None:
    assert env.resolver4 == "10.250.0.2"
    assert env.gateway4 == "10.250.0.1"
    assert env.gateway6 == "fe80::1"
    assert env.resolvers == (env.resolver4, env.resolver6)
    assert env.resolver6.endswith("::2")


# -- plans -----------------------------------------------------------------------------------


def test_plan_is_empty_when_observed_matches_desired(env: LocalEnvironment) -> None:
    assert plan(env, observed_from(env)) == ()
    assert plan(env, observed_from(env), previous=env) == ()


def test_plan_from_nothing_builds_everything_in_order(env: LocalEnvironment) -> None:
    changes = plan(env, ObservedEnvironment.absent())
    kinds = [type(c) for c in changes]
    assert kinds == [
        CreateNamespace,
        CreateDevice,
        ConfigureNamespace,
        CreateInstance,
        CreateInstance,
        SetPeer,
        SetPeer,
    ]
    assert changes[0] == CreateNamespace(env.netns)
    assert changes[1] == CreateDevice(env.wg_ifname, MY_PORT)
    assert {c.instance for c in changes if isinstance(c, CreateInstance)} == set(env.instances)
    peers = [c for c in changes if isinstance(c, SetPeer)]
    assert [(p.public_key, p.endpoint, p.allowed_ips) for p in peers] == [
        (p.public_key, p.endpoint, p.allowed_ips) for p in env.peers
    ]


def test_namespace_without_device_gets_device_and_reconfiguration(env: LocalEnvironment) -> None:
    observed = dataclasses.replace(observed_from(env), device=None, base_ready=False)
    changes = plan(env, observed)
    assert changes[:2] == (CreateDevice(env.wg_ifname, MY_PORT), ConfigureNamespace(env.netns))
    assert [c for c in changes if isinstance(c, SetPeer)] == [
        SetPeer(p.node, p.public_key, p.endpoint, p.allowed_ips) for p in env.peers
    ]
    assert not any(isinstance(c, CreateInstance | RemoveInstance) for c in changes)


def test_device_on_another_port_is_replaced(env: LocalEnvironment) -> None:
    changes = plan(env, with_device(observed_from(env), listen_port=MY_PORT + 1))
    assert isinstance(changes[0], DeleteDevice)
    assert changes[0].ifname == env.wg_ifname
    assert changes[1:3] == (CreateDevice(env.wg_ifname, MY_PORT), ConfigureNamespace(env.netns))
    # The new device is empty: every peer is set again, with its endpoint, none removed.
    peers = [c for c in changes if isinstance(c, SetPeer)]
    assert [p.endpoint for p in peers] == [p.endpoint for p in env.peers]
    assert not any(isinstance(c, RemovePeer) for c in changes)
    assert not any(isinstance(c, CreateNamespace) for c in changes)


def test_device_with_another_key_gets_its_key_in_place(env: LocalEnvironment) -> None:
    # A rotation (or a key someone else set): the device, its peers and its sessions' routes
    # stay; only the key changes.
    changes = plan(env, with_device(observed_from(env), public_key=STRANGER))
    assert changes == (SetPrivateKey(env.wg_ifname, MY_KEY),)
    assert MY_KEY in changes[0].describe()


def test_a_peer_whose_key_rotated_is_swapped_keeping_its_roamed_endpoint(
    env: LocalEnvironment,
) -> None:
    old = next(p for p in env.peers if p.node == "node-2")
    rotated = dataclasses.replace(
        env,
        peers=tuple(
            dataclasses.replace(p, public_key=STRANGER) if p.node == "node-2" else p
            for p in env.peers
        ),
    )
    observed = observed_from(env)
    assert observed.device is not None
    roamed = tuple(
        dataclasses.replace(p, endpoint="203.0.113.7:40000")
        if p.public_key == old.public_key
        else p
        for p in observed.device.peers
    )
    changes = plan(rotated, with_device(observed, peers=roamed), previous=env)
    # Set first, then remove: the new key takes the allowed IPs over, and a handshake starts
    # at once, so traffic does not wait for the next packet or a retry.
    assert changes == (
        SetPeer("node-2", STRANGER, "203.0.113.7:40000", old.allowed_ips, handshake=True),
        RemovePeer(old.public_key),
    )
    assert "handshake" in changes[0].describe()


def test_a_rotated_peer_that_the_document_also_moved_gets_the_new_endpoint(
    env: LocalEnvironment,
) -> None:
    old = next(p for p in env.peers if p.node == "node-2")
    rotated = dataclasses.replace(
        env,
        peers=tuple(
            dataclasses.replace(p, public_key=STRANGER, endpoint="198.18.0.2:52000")
            if p.node == "node-2"
            else p
            for p in env.peers
        ),
    )
    changes = plan(rotated, observed_from(env), previous=env)
    assert changes[0] == SetPeer(
        "node-2", STRANGER, "198.18.0.2:52000", old.allowed_ips, handshake=True
    )


def test_base_not_ready_only_reconfigures(env: LocalEnvironment) -> None:
    observed = dataclasses.replace(observed_from(env), base_ready=False)
    assert plan(env, observed) == (ConfigureNamespace(env.netns),)


def test_a_wired_instance_with_other_addresses_is_readdressed_in_place(
    env: LocalEnvironment,
) -> None:
    target = env.instances[0]
    observed = observed_from(env)
    instances = tuple(
        dataclasses.replace(o, addresses=frozenset({"10.250.9.9", target.ipv6}))
        if o.netns == target.netns
        else o
        for o in observed.instances
    )
    changes = plan(env, dataclasses.replace(observed, instances=instances))
    assert target.ipv4 is not None
    assert changes == (ReaddressInstance(target, ("10.250.9.9",), (target.ipv4,)),)


@pytest.mark.parametrize(
    "guard",
    [None, frozenset(), "only-ipv6", "one-more"],
    ids=["catch-all-drop-missing", "no-source-allowed", "family-missing", "foreign-source"],
)
def test_an_instance_whose_source_guard_drifted_is_guarded_again_in_place(
    env: LocalEnvironment, guard: object
) -> None:
    target = env.instances[0]
    if guard == "only-ipv6":
        guard = frozenset({target.ipv6})
    elif guard == "one-more":
        guard = target.addresses | {"10.250.9.9"}
    observed = observed_from(env)
    instances = tuple(
        dataclasses.replace(o, guard=guard) if o.netns == target.netns else o
        for o in observed.instances
    )
    changes = plan(env, dataclasses.replace(observed, instances=instances))
    assert changes == (GuardInstance(target),)
    assert "api#0" in changes[0].describe() and target.netns in changes[0].describe()


def test_unlinked_instance_is_rewired_in_place(env: LocalEnvironment) -> None:
    # A deleted route, address or veth: the namespace (and what runs in it) stays.
    target = env.instances[1]
    observed = observed_from(env)
    instances = tuple(
        dataclasses.replace(o, linked=False) if o.netns == target.netns else o
        for o in observed.instances
    )
    changes = plan(env, dataclasses.replace(observed, instances=instances))
    assert changes == (RewireInstance(target),)
    assert "in place" in changes[0].describe() and target.netns in changes[0].describe()


def test_a_wanted_instance_namespace_that_exists_is_never_removed(
    env: LocalEnvironment,
) -> None:
    observed = observed_from(env)
    for linked in (True, False):
        for addresses in (frozenset(), frozenset({"10.250.0.200"})):
            for guard in (None, frozenset()):
                instances = tuple(
                    dataclasses.replace(o, linked=linked, addresses=addresses, guard=guard)
                    for o in observed.instances
                )
                for exists in (True, False):
                    seen = dataclasses.replace(
                        observed, instances=instances, netns_exists=exists, base_ready=exists
                    )
                    changes = plan(env, seen, env)
                    assert not any(isinstance(c, (RemoveInstance, CreateInstance)) for c in changes)


def test_an_instance_made_again_says_its_processes_are_gone(env: LocalEnvironment) -> None:
    target = env.instances[0]
    observed = observed_from(env)
    gone = dataclasses.replace(
        observed, instances=tuple(o for o in observed.instances if o.netns != target.netns)
    )
    assert plan(env, gone, env) == (CreateInstance(target, again=True),)
    assert "processes that ran in it are gone" in plan(env, gone, env)[0].describe()
    first = plan(env, gone, None)  # never told about it: a first build
    assert first == (CreateInstance(target),)
    assert "gone" not in first[0].describe()


def test_missing_instance_is_created_and_stray_one_removed(env: LocalEnvironment) -> None:
    observed = observed_from(env)
    stray = ObservedInstance(
        env.netns + "-sold-0", frozenset({"10.250.0.77"}), True, guard=frozenset({"10.250.0.77"})
    )
    kept = observed.instances[1:]
    changes = plan(env, dataclasses.replace(observed, instances=(*kept, stray)))
    assert changes == (RemoveInstance(stray.netns), CreateInstance(env.instances[0]))


def test_roamed_endpoint_is_preserved_on_reapply(env: LocalEnvironment) -> None:
    observed = observed_from(env)
    assert observed.device is not None
    roamed = tuple(
        dataclasses.replace(p, endpoint="203.0.113.9:40000") for p in observed.device.peers
    )
    assert plan(env, with_device(observed, peers=roamed), previous=env) == ()
    # Without a previous document nothing "moved" either.
    assert plan(env, with_device(observed, peers=roamed), previous=None) == ()


def test_endpoint_is_pushed_when_the_document_moved_it() -> None:
    before = make_doc()
    after = make_doc(previous=before, node_2="198.18.0.22:51999")
    env_before, env_after = local(before), local(after)
    observed = observed_from(env_before)
    changes = plan(env_after, observed, previous=env_before)
    node2 = next(p for p in env_after.peers if p.node == "node-2")
    assert changes == (SetPeer("node-2", node2.public_key, "198.18.0.22:51999", node2.allowed_ips),)


def test_allowed_ips_change_keeps_the_roamed_endpoint() -> None:
    """A new service on a peer adds its addresses to those the peer has (nothing else is
    sent), and the endpoint WireGuard holds stays."""
    before = make_doc()
    after = make_doc(
        (
            ServiceSpec("api", ("node-1", "node-2")),
            ServiceSpec("db", ("node-1",)),
            ServiceSpec("worker", ("node-3", "node-3")),
        ),
        previous=before,
    )
    env_before, env_after = local(before), local(after)
    changes = plan(env_after, observed_from(env_before), previous=env_before)
    node3 = next(p for p in env_after.peers if p.node == "node-3")
    old3 = next(p for p in env_before.peers if p.node == "node-3")
    assert len(node3.allowed_ips) == 4 and len(old3.allowed_ips) == 2
    added = tuple(a for a in node3.allowed_ips if a not in old3.allowed_ips)
    assert len(added) == 2
    assert changes == (SetPeer("node-3", node3.public_key, None, added, replace=False),)
    assert changes[0].describe() == f"set peer node-3 allowed +{added[0]}, +{added[1]}"
    # A removal replaces the peer's addresses whole (WireGuard takes none away alone).
    back = plan(env_before, observed_from(env_after), previous=env_after)
    assert back == (SetPeer("node-3", old3.public_key, None, old3.allowed_ips),)


def test_peer_that_lost_its_endpoint_gets_it_back(env: LocalEnvironment) -> None:
    observed = observed_from(env)
    assert observed.device is not None
    first, *rest = observed.device.peers
    lost = dataclasses.replace(first, endpoint=None)
    changes = plan(env, with_device(observed, peers=(lost, *rest)), previous=env)
    peer = env.peers[0]
    assert changes == (SetPeer(peer.node, peer.public_key, peer.endpoint, peer.allowed_ips),)


def test_missing_peer_is_added_with_its_endpoint(env: LocalEnvironment) -> None:
    observed = observed_from(env)
    assert observed.device is not None
    changes = plan(env, with_device(observed, peers=observed.device.peers[1:]))
    peer = env.peers[0]
    assert changes == (SetPeer(peer.node, peer.public_key, peer.endpoint, peer.allowed_ips),)


def test_a_peer_restored_after_drift_starts_a_handshake_at_once(env: LocalEnvironment) -> None:
    """A peer the node was told of before, missing from its device (removed with ``wg``):
    the other node still sends under the session this device forgot, so this one starts a
    new one now rather than leave the other's traffic dropped until its rekey timeout."""
    observed = observed_from(env)
    assert observed.device is not None
    changes = plan(env, with_device(observed, peers=observed.device.peers[1:]), previous=env)
    peer = env.peers[0]
    assert changes == (
        SetPeer(peer.node, peer.public_key, peer.endpoint, peer.allowed_ips, handshake=True),
    )
    assert "handshake now" in changes[0].describe()


def test_a_device_made_again_handshakes_with_the_peers_it_had(env: LocalEnvironment) -> None:
    """wireguard-go was killed: the new device has the same key and port, and the other
    nodes still hold sessions with the old one. A first build (no previous document)
    waits for traffic instead: the other nodes may not know this one yet."""
    observed = dataclasses.replace(observed_from(env), device=None, base_ready=False)
    again = [c for c in plan(env, observed, previous=env) if isinstance(c, SetPeer)]
    assert [(p.public_key, p.handshake) for p in again] == [(p.public_key, True) for p in env.peers]
    first = [c for c in plan(env, ObservedEnvironment.absent()) if isinstance(c, SetPeer)]
    assert [p.handshake for p in first] == [False for _ in env.peers]


def test_removed_peers_are_removed() -> None:
    before = make_doc()
    after = make_doc(
        (ServiceSpec("api", ("node-1", "node-2")), ServiceSpec("db", ("node-1",))),
        previous=before,
    )
    env_before, env_after = local(before), local(after)
    changes = plan(env_after, observed_from(env_before), previous=env_before)
    assert changes == (RemovePeer(KEYS["node-3"]),)


def test_unknown_peer_on_the_device_is_removed(env: LocalEnvironment) -> None:
    observed = observed_from(env)
    assert observed.device is not None
    extra = ObservedPeer(STRANGER, "192.0.2.1:1", frozenset({"10.250.0.99/32"}))
    changes = plan(env, with_device(observed, peers=(*observed.device.peers, extra)))
    assert changes == (RemovePeer(STRANGER),)


def test_instances_outliving_their_environment_namespace_are_rewired(
    env: LocalEnvironment,
) -> None:
    # Instance namespaces are named of their own: when the environment namespace is
    # deleted they stay (with the processes in them) and only their veths die.
    observed = observed_from(env)
    stale = dataclasses.replace(
        observed,
        netns_exists=False,
        base_ready=False,
        instances=tuple(dataclasses.replace(o, linked=False) for o in observed.instances),
    )
    changes = plan(env, stale, env)
    assert changes[0] == CreateNamespace(env.netns)
    assert [c for c in changes if isinstance(c, RewireInstance)] == [
        RewireInstance(i) for i in sorted(env.instances, key=lambda i: i.netns)
    ]
    assert not any(isinstance(c, (RemoveInstance, CreateInstance)) for c in changes)


def test_device_plan_is_empty_when_the_device_matches(env: LocalEnvironment) -> None:
    assert plan_device(env, MY_KEY, MY_PORT, observed_from(env).device) == ()


def test_device_plan_sees_a_removed_peer_a_lost_device_and_a_moved_port(
    env: LocalEnvironment,
) -> None:
    device = observed_from(env).device
    assert device is not None
    lost_peer = dataclasses.replace(device, peers=device.peers[1:])
    (change,) = plan_device(env, MY_KEY, MY_PORT, lost_peer)
    assert isinstance(change, SetPeer) and change.public_key == device.peers[0].public_key
    assert change.endpoint == env.peers[0].endpoint
    assert plan_device(env, MY_KEY, MY_PORT, None) == (CreateDevice(env.wg_ifname, MY_PORT),)
    moved = dataclasses.replace(device, listen_port=MY_PORT + 1)
    assert plan_device(env, MY_KEY, MY_PORT, moved) == (CreateDevice(env.wg_ifname, MY_PORT),)


def test_every_change_describes_itself(env: LocalEnvironment) -> None:
    changes = [
        *plan(env, ObservedEnvironment.absent()),
        DeleteDevice(env.netns, env.wg_ifname, "reason"),
        *plan_removal(env.env_id, env.netns, env.wg_ifname),
        RemoveInstance("ns-x"),
        RewireInstance(env.instances[0]),
        CreateInstance(env.instances[0], again=True),
        RemovePeer(STRANGER),
        SetPeer("node-9", STRANGER, None, ()),
    ]
    text = [c.describe() for c in changes]
    assert all(text)
    assert any(env.netns in t and "create namespace" in t for t in text)
    assert any(str(MY_PORT) in t for t in text)
    assert any("api#0" in t for t in text)
    assert "set peer node-9 allowed -" in text


def test_removal_closes_dns_before_the_device_and_the_namespace(env: LocalEnvironment) -> None:
    changes = plan_removal(env.env_id, env.netns, env.wg_ifname)
    kinds = [type(c).__name__ for c in changes]
    assert kinds == ["RemoveResolverView", "DeleteDevice", "DeleteNamespace"]
    device = changes[1]
    assert isinstance(device, DeleteDevice)
    assert (device.netns, device.ifname) == (env.netns, env.wg_ifname)
    names = (env.netns, env.env_id, env.wg_ifname)
    assert all(any(n in c.describe() for n in names) for c in changes)
