"""Both WireGuard backends carry the same mesh. The kernel one runs only where the kernel
has WireGuard; elsewhere its test says so and is counted as skipped."""

from __future__ import annotations

import pytest

from railnet.agent.wireguard import KernelWireGuard, Uapi, generate_private_key, public_key_of
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import EnvironmentDocument
from railnet.core.local import host_route

from .conftest import LabNet, running_lab

pytestmark = pytest.mark.linux

SPEC = EnvironmentSpec(
    "wg", "production", services=(ServiceSpec("a", ("node-1",)), ServiceSpec("b", ("node-2",)))
)


def mesh_works(backend: str) -> None:
    with running_lab(2, dns=False, wireguard=backend) as net:
        doc = net.deploy(SPEC).document
        b = doc.service("b")
        assert b is not None
        net.serve(net.netns("wg", "production", "b"), "b", 7300)
        a = net.netns("wg", "production", "a")
        for host in (b.instances[0].ipv4, b.instances[0].ipv6):
            assert host is not None
            assert net.tcp(a, host, 7300).output == "b:ping"
            assert net.ping(a, host).ok
        node = net.lab.node(1)
        with net.lab.client(node) as client:
            env = client.status(SPEC.id).environments[0]
        assert env.peers[0].node == "node-2" and env.peers[0].last_handshake > 0
        uses_uapi = bool(net.lab.wireguard_pids(node))
        assert uses_uapi == (backend == "userspace")
        peer_addresses_follow_changes(net, doc)


def peer_addresses_follow_changes(net: LabNet, doc: EnvironmentDocument) -> None:
    """A service added on node-2 adds its addresses to node-1's peer (without sending the
    others again); its removal replaces the peer's addresses whole."""
    grown = EnvironmentSpec(
        SPEC.project, SPEC.environment, services=(*SPEC.services, ServiceSpec("c", ("node-2",)))
    )
    applied = net.deploy(grown)
    c = applied.document.service("c")
    assert c is not None
    added = [host_route(a) for a in (c.instances[0].ipv4, c.instances[0].ipv6) if a]
    assert [x for x in applied.changes["node-1"] if x.startswith("set peer")] == [
        "set peer node-2 allowed " + ", ".join(f"+{a}" for a in added)
    ]
    b = doc.service("b")
    assert b is not None
    b_routes = {host_route(a) for a in (b.instances[0].ipv4, b.instances[0].ipv6) if a}
    assert held_by_peer(net) == b_routes | set(added)
    net.serve(net.netns("wg", "production", "c"), "c", 7301)
    a_ns = net.netns("wg", "production", "a")
    for host, port, token in (
        (c.instances[0].ipv4, 7301, "c"),
        (c.instances[0].ipv6, 7301, "c"),
        (b.instances[0].ipv4, 7300, "b"),
    ):
        assert host is not None
        assert net.tcp(a_ns, host, port).output == f"{token}:ping"
    net.deploy(SPEC)
    assert held_by_peer(net) == b_routes


def held_by_peer(net: LabNet) -> set[str]:
    with net.lab.client(net.lab.node(1)) as client:
        (peer,) = client.status(SPEC.id).environments[0].peers
    return set(peer.allowed_ips)


def test_userspace_backend_carries_the_mesh() -> None:
    mesh_works("userspace")


@pytest.mark.skipif(not KernelWireGuard.available(), reason="this kernel has no WireGuard module")
def test_kernel_backend_carries_the_mesh() -> None:
    mesh_works("kernel")


def test_keys_are_x25519_pairs_and_uapi_absent_socket_is_not_alive(tmp_path: object) -> None:
    private = generate_private_key()
    assert public_key_of(private) != private
    assert public_key_of(private) == public_key_of(private)
    assert not Uapi("wgnosuchdevice", directory=tmp_path).alive()  # type: ignore[arg-type]
