"""The agent over real gRPC with mutual TLS, on fake backends.

Each test starts an in-process gRPC server with the node's certificate, serving
``NodeAgentServicer`` over a ``Reconciler`` whose kernel is a ``FakeKernel``, and drives it
with the ``AgentClient`` the provider uses. ``RunningAgent`` and ``start_agent`` are shared
with ``test_deploy``.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from railnet.agent.credentials import ServingCredentials
from railnet.agent.dns import FakeDnsServer
from railnet.agent.fakes import FakeDevice, FakeKernel, FakeNetwork, FakeWireGuard
from railnet.agent.reconciler import DEFAULT_PORT_RANGE, Reconciler
from railnet.agent.server import serve
from railnet.agent.state import StateDir
from railnet.agent.v1 import agent_pb2 as pb
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.agent.wireguard import generate_private_key, public_key_of
from railnet.control.client import (
    AgentAddress,
    AgentClient,
    AgentError,
    channel_credentials,
    channel_options,
)
from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.document import READABLE_FORMATS, EnvironmentDocument
from railnet.core.errors import AgentUnreachable
from railnet.core.names import environment_netns, instance_netns
from railnet.pki.certs import ClusterTls, TlsFiles, write_cluster_tls

pytestmark = pytest.mark.agent

RPC_TIMEOUT = 5.0
FIRST_PORT = DEFAULT_PORT_RANGE[0]


# -- the harness -------------------------------------------------------------------------------


def underlay(node: str) -> str:
    return f"198.18.0.{int(node.rsplit('-', 1)[1])}"


@dataclass
class RunningAgent:
    """One node's agent: a gRPC server with mTLS over a reconciler on a fake kernel."""

    node: str
    state_dir: Path
    kernel: FakeKernel
    resolver: FakeDnsServer
    reconciler: Reconciler
    server: grpc.Server
    address: str

    @property
    def prefix(self) -> str:
        return f"rn-{self.node}"

    def stop(self) -> None:
        self.server.stop(None).wait()


def start_agent(
    node: str,
    state_dir: Path,
    tls: TlsFiles,
    *,
    kernel: FakeKernel | None = None,
    resolver: FakeDnsServer | None = None,
    listen: str = "127.0.0.1:0",
    formats: tuple[int, ...] = READABLE_FORMATS,
) -> RunningAgent:
    kernel = kernel if kernel is not None else FakeKernel()
    resolver = resolver if resolver is not None else FakeDnsServer()
    reconciler = Reconciler(
        node=node,
        netns_prefix=f"rn-{node}",
        endpoint_host=underlay(node),
        state=StateDir(state_dir),
        network=FakeNetwork(kernel),
        wireguard=FakeWireGuard(kernel),
        resolver=resolver,
        port_free=lambda port: True,
    )
    server, (port,) = serve(
        reconciler, ServingCredentials(tls), [listen], workers=8, formats=formats
    )
    assert port, f"could not listen on {listen}"
    address = f"127.0.0.1:{port}" if listen == "127.0.0.1:0" else listen
    return RunningAgent(node, state_dir, kernel, resolver, reconciler, server, address)


# -- fixtures ---------------------------------------------------------------------------------

SPEC = EnvironmentSpec(
    "shop",
    "production",
    services=(ServiceSpec("api", ("node-1", "node-2")), ServiceSpec("db", ("node-1",))),
)
ENV = SPEC.id
PEER_PRIVATE = generate_private_key()
PEER_KEY = public_key_of(PEER_PRIVATE)
PEER_ENDPOINT = "198.18.0.2:51820"


@pytest.fixture
def tls(tmp_path: Path) -> ClusterTls:
    return write_cluster_tls(tmp_path / "tls", ["node-1", "node-2"])


@pytest.fixture
def agent(tmp_path: Path, tls: ClusterTls) -> Iterator[RunningAgent]:
    running = start_agent("node-1", tmp_path / "state", tls.nodes["node-1"])
    yield running
    running.stop()


def connect(agent: RunningAgent, tls: ClusterTls) -> AgentClient:
    return AgentClient(AgentAddress("node-1", agent.address, tls.provider), timeout=RPC_TIMEOUT)


@pytest.fixture
def client(agent: RunningAgent, tls: ClusterTls) -> Iterator[AgentClient]:
    with connect(agent, tls) as c:
        yield c


@pytest.fixture
def stub(agent: RunningAgent, tls: ClusterTls) -> Iterator[Any]:
    """A raw stub, for whole reply messages."""
    channel = grpc.secure_channel(
        agent.address, channel_credentials(tls.provider), options=channel_options("node-1")
    )
    yield pb_grpc.NodeAgentStub(channel)
    channel.close()


def build(
    client: AgentClient,
    spec: EnvironmentSpec = SPEC,
    previous: EnvironmentDocument | None = None,
    peer_endpoint: str = PEER_ENDPOINT,
) -> EnvironmentDocument:
    identities = {"node-1": client.ensure(spec.id), "node-2": (PEER_KEY, peer_endpoint)}
    return build_document(spec, previous, identities)


def with_service(spec: EnvironmentSpec, name: str, *nodes: str) -> EnvironmentSpec:
    return EnvironmentSpec(
        spec.project, spec.environment, services=(*spec.services, ServiceSpec(name, nodes))
    )


def stored(client: AgentClient, env_id: str = ENV) -> EnvironmentDocument | None:
    text = client.document(env_id)
    return None if text is None else EnvironmentDocument.from_json(text)


def refused(call: Any, code: grpc.StatusCode) -> AgentError:
    with pytest.raises(AgentError) as caught:
        call()
    assert caught.value.code == code, caught.value.detail
    return caught.value


@pytest.fixture
def applied(client: AgentClient) -> EnvironmentDocument:
    doc = build(client)
    assert client.apply(doc.to_json(), 0)[0] == 1
    return doc


def env_netns(agent: RunningAgent, env_id: str = ENV) -> str:
    return environment_netns(agent.prefix, env_id)


def netns_of(agent: RunningAgent, doc: EnvironmentDocument, service: str, index: int) -> str:
    svc = doc.service(service)
    assert svc is not None
    return instance_netns(agent.prefix, doc.id, svc.id, index)


# -- EnsureEnvironment ------------------------------------------------------------------------


def test_ensure_returns_a_stable_identity(agent: RunningAgent, client: AgentClient) -> None:
    key, endpoint = client.ensure(ENV)
    assert len(base64.b64decode(key)) == 32
    assert endpoint == f"198.18.0.1:{FIRST_PORT}"
    assert client.ensure(ENV) == (key, endpoint)
    other_key, other_endpoint = client.ensure("eother")
    assert other_key != key
    assert other_endpoint == f"198.18.0.1:{FIRST_PORT + 1}"
    # Ensuring makes no kernel object: the document decides what exists.
    assert agent.kernel.mutations == 0


def test_ensure_survives_an_agent_restart(
    tmp_path: Path, tls: ClusterTls, agent: RunningAgent, client: AgentClient
) -> None:
    first = client.ensure(ENV)
    agent.stop()
    again = start_agent("node-1", agent.state_dir, tls.nodes["node-1"], kernel=agent.kernel)
    try:
        with connect(again, tls) as fresh:
            assert fresh.ensure(ENV) == first
    finally:
        again.stop()


def test_concurrent_ensures_agree(client: AgentClient) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        same = set(pool.map(lambda _: client.ensure(ENV), range(16)))
        many = list(pool.map(lambda i: client.ensure(f"econc{i}"), range(16)))
    assert len(same) == 1
    ports = {endpoint for _, endpoint in many} | {e for _, e in same}
    assert len(ports) == 17


def test_ensure_refuses_a_bad_env_id(client: AgentClient) -> None:
    error = refused(lambda: client.ensure("../etc"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "env_id" in error.detail


def test_private_key_file_is_0600(agent: RunningAgent, client: AgentClient) -> None:
    client.ensure(ENV)
    key_file = agent.state_dir / "environments" / ENV / "private.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
    assert public_key_of(key_file.read_text().strip()) == client.ensure(ENV)[0]


def test_private_key_never_leaves_the_state_dir(
    caplog: pytest.LogCaptureFixture, agent: RunningAgent, client: AgentClient, stub: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    replies: list[bytes] = [
        stub.EnsureEnvironment(pb.EnsureEnvironmentRequest(env_id=ENV)).SerializeToString()
    ]
    doc = build(client)
    replies.append(
        stub.ApplyDocument(
            pb.ApplyDocumentRequest(document_json=doc.to_json(), expected_generation=0)
        ).SerializeToString()
    )
    replies.append(stub.Status(pb.StatusRequest()).SerializeToString())
    replies.append(stub.Status(pb.StatusRequest(env_id=ENV)).SerializeToString())
    replies.append(stub.GetDocument(pb.GetDocumentRequest(env_id=ENV)).SerializeToString())
    with pytest.raises(grpc.RpcError) as caught:  # error replies, too
        stub.ApplyDocument(pb.ApplyDocumentRequest(document_json="{}", expected_generation=0))
    replies.append(caught.value.details().encode())

    private = (agent.state_dir / "environments" / ENV / "private.key").read_text().strip()
    forms = [private.encode(), base64.b64decode(private), base64.b64decode(private).hex().encode()]
    assert "new identity" in caplog.text  # the agent's log was captured
    for form in forms:
        for reply in replies:
            assert form not in reply
        assert form not in caplog.text.encode()
        assert form not in (agent.state_dir / "environments" / ENV / "document.json").read_bytes()
    # The public key is what replies carry.
    assert public_key_of(private).encode() in replies[0]


# -- ApplyDocument -----------------------------------------------------------------------------


def test_apply_builds_the_node(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    netns = env_netns(agent)
    key, endpoint = client.ensure(ENV)
    device = k.device_in(netns)
    assert device is not None
    assert device.public_key == key
    assert str(device.listen_port) == endpoint.rsplit(":", 1)[1]
    api, db = applied.service("api"), applied.service("db")
    assert api is not None and db is not None
    instances = k.instances_of(netns)
    assert {
        netns_of(agent, applied, "api", 0): {api.instances[0].ipv4, api.instances[0].ipv6},
        netns_of(agent, applied, "db", 0): {db.instances[0].ipv4, db.instances[0].ipv6},
    } == {name: set(ns.addresses) for name, ns in instances.items()}
    assert all(ns.linked for ns in instances.values())
    peer = device.peers[PEER_KEY]
    assert peer.endpoint == PEER_ENDPOINT
    a1 = api.instances[1]
    assert peer.allowed_ips == {f"{a1.ipv4}/32", f"{a1.ipv6}/128"}
    records = agent.resolver.records(ENV)
    assert ("api.railway.internal", "A", a1.ipv4, 5) in records
    assert stored(client) == applied


def test_reapplying_changes_nothing(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    before = agent.kernel.mutations
    assert before > 0
    # The same document again, whatever generation the caller thought the node had.
    assert client.apply(applied.to_json(), 0) == (1, [])
    assert client.apply(applied.to_json(), 1) == (1, [])
    assert agent.kernel.mutations == before


def test_compare_and_set_accepts_the_next_generation(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    second = build(client, with_service(SPEC, "web", "node-1"), applied)
    generation, changes = client.apply(second.to_json(), 1)
    assert generation == 2
    assert any("create instance web#0" in c for c in changes)
    assert stored(client) == second
    before = agent.kernel.mutations
    assert client.apply(second.to_json(), 2) == (2, [])
    assert agent.kernel.mutations == before


def test_stale_expected_generation_is_aborted_and_changes_nothing(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    second = build(client, with_service(SPEC, "web", "node-1"), applied)
    client.apply(second.to_json(), 1)
    third = build(client, with_service(SPEC, "cache", "node-1"), second)
    state_file = agent.state_dir / "environments" / ENV / "document.json"
    before = (agent.kernel.mutations, state_file.read_bytes())
    error = refused(lambda: client.apply(third.to_json(), 1), grpc.StatusCode.ABORTED)
    assert "generation 2" in error.detail
    assert (agent.kernel.mutations, state_file.read_bytes()) == before
    assert stored(client) == second


def test_a_different_document_at_the_same_generation_is_refused(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    rival = build(client, with_service(SPEC, "web", "node-1")).with_generation(1)
    before = agent.kernel.mutations
    error = refused(lambda: client.apply(rival.to_json(), 1), grpc.StatusCode.INVALID_ARGUMENT)
    assert "generation" in error.detail
    assert agent.kernel.mutations == before
    assert stored(client) == applied


def test_invalid_document_names_the_field_and_changes_nothing(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    raw = build(client, previous=applied).to_dict()
    raw["services"][0]["instances"][0]["ipv4"] = "10.250.0.1"
    before = agent.kernel.mutations
    error = refused(lambda: client.apply(json.dumps(raw), 1), grpc.StatusCode.INVALID_ARGUMENT)
    assert "services[0].instances[0].ipv4" in error.detail
    assert "'10.250.0.1'" in error.detail
    error = refused(lambda: client.apply("not json", 1), grpc.StatusCode.INVALID_ARGUMENT)
    assert "document" in error.detail
    assert agent.kernel.mutations == before
    assert stored(client) == applied


def test_document_without_this_node_is_refused(agent: RunningAgent, client: AgentClient) -> None:
    client.ensure(ENV)
    only_peer = EnvironmentSpec("shop", "production", services=(ServiceSpec("api", ("node-2",)),))
    doc = build_document(only_peer, None, {"node-2": (PEER_KEY, PEER_ENDPOINT)})
    error = refused(lambda: client.apply(doc.to_json(), 0), grpc.StatusCode.INVALID_ARGUMENT)
    assert "node-1" in error.detail and "nodes" in error.detail
    assert agent.kernel.mutations == 0
    assert stored(client) is None


def test_document_with_another_key_for_this_node_is_refused(
    agent: RunningAgent, client: AgentClient
) -> None:
    _, endpoint = client.ensure(ENV)
    identities = {"node-1": (PEER_KEY, endpoint), "node-2": ("Q" * 43 + "=", PEER_ENDPOINT)}
    doc = build_document(SPEC, None, identities)
    error = refused(lambda: client.apply(doc.to_json(), 0), grpc.StatusCode.FAILED_PRECONDITION)
    assert "nodes[0].public_key" in error.detail
    assert PEER_KEY in error.detail
    assert agent.kernel.mutations == 0


def test_document_with_another_endpoint_for_this_node_is_refused(
    agent: RunningAgent, client: AgentClient
) -> None:
    key, _ = client.ensure(ENV)
    identities = {"node-1": (key, "198.18.0.1:1"), "node-2": (PEER_KEY, PEER_ENDPOINT)}
    doc = build_document(SPEC, None, identities)
    error = refused(lambda: client.apply(doc.to_json(), 0), grpc.StatusCode.FAILED_PRECONDITION)
    assert "nodes[0].endpoint" in error.detail
    assert agent.kernel.mutations == 0


def test_apply_before_ensure_is_not_found(agent: RunningAgent, client: AgentClient) -> None:
    identities = {"node-1": (public_key_of(generate_private_key()), "198.18.0.1:51820")}
    identities["node-2"] = (PEER_KEY, PEER_ENDPOINT)
    doc = build_document(SPEC, None, identities)
    error = refused(lambda: client.apply(doc.to_json(), 0), grpc.StatusCode.NOT_FOUND)
    assert ENV in error.detail and "node-1" in error.detail
    assert agent.kernel.mutations == 0
    assert client.status().environments == []


# -- GetDocument / DeleteEnvironment -------------------------------------------------------------


def test_get_document_of_an_unknown_environment(client: AgentClient) -> None:
    assert client.document("enothing") is None
    client.ensure("enothing")
    assert client.document("enothing") is None


def test_delete_removes_everything_and_a_second_delete_says_so(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    client.ensure("ekeep")
    old_key = client.ensure(ENV)[0]
    assert client.delete(ENV) is True
    assert agent.kernel.namespaces == {}
    assert agent.kernel.devices == {}
    assert agent.resolver.records(ENV) == []
    assert stored(client) is None
    assert not (agent.state_dir / "environments" / ENV).exists()
    assert [e.env_id for e in client.status().environments] == ["ekeep"]
    assert client.delete(ENV) is False
    # Keys are forgotten with the environment: ensuring again makes a new identity.
    assert client.ensure(ENV)[0] != old_key


def test_delete_of_an_environment_never_seen(client: AgentClient) -> None:
    assert client.delete("eunknown") is False


# -- Status, drift and repair -------------------------------------------------------------------


def test_status_reports_instances_peers_and_records(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    agent.kernel.handshake(env_netns(agent), PEER_KEY, when=1700000000, rx_bytes=10, tx_bytes=20)
    status = client.status(ENV)
    assert status.node == "node-1"
    (env,) = status.environments
    key, endpoint = client.ensure(ENV)
    assert (env.env_id, env.project, env.environment, env.generation) == (
        ENV,
        "shop",
        "production",
        1,
    )
    assert env.netns == env_netns(agent)
    assert env.public_key == key
    assert f"198.18.0.1:{env.listen_port}" == endpoint
    assert list(env.drift) == []
    (peer,) = env.peers
    api = applied.service("api")
    assert api is not None
    assert (peer.node, peer.public_key, peer.endpoint) == ("node-2", PEER_KEY, PEER_ENDPOINT)
    assert (peer.last_handshake, peer.rx_bytes, peer.tx_bytes) == (1700000000, 10, 20)
    assert set(peer.allowed_ips) == {f"{api.instances[1].ipv4}/32", f"{api.instances[1].ipv6}/128"}
    assert sorted((i.service, i.index, i.ipv4) for i in env.instances) == [
        ("api", 0, api.instances[0].ipv4),
        ("db", 0, applied.services[1].instances[0].ipv4),
    ]
    names = {(r.name, r.type) for r in env.records}
    assert {("api.railway.internal", "A"), ("db.railway.internal", "AAAA")} <= names


def test_status_of_an_ensured_environment_without_document(client: AgentClient) -> None:
    client.ensure(ENV)
    (env,) = client.status().environments
    assert env.generation == 0
    assert list(env.drift) == ["no document applied yet"]


def test_drift_is_reported_then_repaired_by_reapplying(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    api_ns = netns_of(agent, applied, "api", 0)
    k.remove_peer(env_netns(agent), PEER_KEY)
    k.delete_namespace(api_ns)
    (env,) = client.status(ENV).environments
    drift = list(env.drift)
    assert any(line.startswith("set peer node-2") for line in drift)
    assert any(line.startswith("create instance api#0") for line in drift)
    assert len(drift) == 2
    assert env.peers == []
    # Status only looks.
    assert api_ns not in k.namespaces

    before = k.mutations
    assert client.apply(applied.to_json(), 1) == (1, drift)
    assert k.mutations > before
    assert api_ns in k.namespaces and k.namespaces[api_ns].linked
    assert PEER_KEY in (k.device_in(env_netns(agent)) or pytest.fail("no device")).peers
    assert list(client.status(ENV).environments[0].drift) == []


def test_periodic_reconcile_repairs_drift(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    db_ns = netns_of(agent, applied, "db", 0)
    instance = k.namespaces[db_ns]
    k.cut_link(db_ns)
    k.unconfigure(env_netns(agent))
    changes = agent.reconciler.reconcile(ENV)
    assert changes == [
        f"configure namespace {env_netns(agent)} (forwarding, resolver, mesh routes)",
        f"rewire instance db#0 in {db_ns} in place",
    ]
    assert k.namespaces[db_ns] is instance  # patched, not rebuilt: its processes stay
    assert instance.linked
    assert agent.reconciler.reconcile(ENV) == []


def test_a_deleted_source_guard_is_drift_repaired_in_place(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    api_ns = netns_of(agent, applied, "api", 0)
    instance = k.namespaces[api_ns]
    k.drop_guard(api_ns)
    (env,) = client.status(ENV).environments
    assert list(env.drift) == [f"restore the source guard of instance api#0 in {api_ns}"]
    changes = agent.reconciler.reconcile(ENV)
    assert changes == list(env.drift)
    assert k.log[-1] == f"guard_sources {api_ns}"
    assert k.namespaces[api_ns] is instance  # the same namespace, not a rebuilt one
    assert instance.guard == instance.addresses
    assert list(client.status(ENV).environments[0].drift) == []


def test_device_with_a_foreign_key_gets_its_key_back_in_place(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    netns = env_netns(agent)
    device = agent.kernel.device_in(netns)
    agent.kernel.replace_device(netns, private_key=generate_private_key())
    (env,) = client.status(ENV).environments
    assert [line.split(" (")[0] for line in env.drift] == [
        f"set the key of WireGuard device {device.ifname if device else '?'}"
    ]
    client.apply(applied.to_json(), 1)
    assert agent.kernel.device_in(netns) is device
    assert device is not None and device.public_key == client.ensure(ENV)[0]
    assert device.peers[PEER_KEY].endpoint == PEER_ENDPOINT


def test_roamed_endpoint_survives_reapply_until_the_document_moves_it(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    netns = env_netns(agent)
    agent.kernel.roam(netns, PEER_KEY, "203.0.113.7:40000")
    assert list(client.status(ENV).environments[0].drift) == []
    assert client.apply(applied.to_json(), 1) == (1, [])
    device = agent.kernel.device_in(netns)
    assert device is not None
    assert device.peers[PEER_KEY].endpoint == "203.0.113.7:40000"
    # Another service on node-1 changes the document but not node-2's endpoint.
    second = build(client, with_service(SPEC, "web", "node-1"), applied)
    client.apply(second.to_json(), 1)
    assert device.peers[PEER_KEY].endpoint == "203.0.113.7:40000"
    # Now the document moves node-2: the agent follows.
    third = build(client, with_service(SPEC, "web", "node-1"), second, "198.18.0.2:52000")
    _, changes = client.apply(third.to_json(), 2)
    assert changes == [changes[0]] and "198.18.0.2:52000" in changes[0]
    assert device.peers[PEER_KEY].endpoint == "198.18.0.2:52000"


# -- restart and reboot ------------------------------------------------------------------------


def test_restart_adopts_and_reboot_rebuilds_from_the_state_dir(
    tls: ClusterTls, agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    key, endpoint = client.ensure(ENV)
    namespaces_before = {n: set(ns.addresses) for n, ns in k.namespaces.items()}
    device = k.device_in(env_netns(agent))
    assert device is not None
    peers_before = {key_: (p.endpoint, set(p.allowed_ips)) for key_, p in device.peers.items()}
    records_before = agent.resolver.records(ENV)

    # The agent restarts; the data plane stays: adopting changes nothing.
    agent.stop()
    restarted = start_agent("node-1", agent.state_dir, tls.nodes["node-1"], kernel=k)
    before = k.mutations
    assert restarted.reconciler.reconcile_all() == {ENV: []}
    assert k.mutations == before
    restarted.stop()

    # The node reboots: namespaces, devices and the DNS server's views are gone.
    k.reboot()
    rebooted = start_agent("node-1", agent.state_dir, tls.nodes["node-1"], kernel=k)
    try:
        with connect(rebooted, tls) as fresh:
            assert len(fresh.status(ENV).environments[0].drift) > 0
            repaired = rebooted.reconciler.reconcile_all()
            assert list(repaired) == [ENV] and len(repaired[ENV]) >= 5
            assert {n: set(ns.addresses) for n, ns in k.namespaces.items()} == namespaces_before
            device = k.device_in(env_netns(rebooted))
            assert device is not None
            assert device.public_key == key
            assert f"198.18.0.1:{device.listen_port}" == endpoint
            assert {
                key_: (p.endpoint, set(p.allowed_ips)) for key_, p in device.peers.items()
            } == peers_before
            assert rebooted.resolver.records(ENV) == records_before
            assert list(fresh.status(ENV).environments[0].drift) == []
            assert fresh.ensure(ENV) == (key, endpoint)
            assert stored(fresh) == applied
    finally:
        rebooted.stop()


def test_one_broken_environment_does_not_stop_the_others(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    other = EnvironmentSpec("shop", "staging", services=(ServiceSpec("api", ("node-1",)),))
    doc = build_document(other, None, {"node-1": client.ensure(other.id)})
    client.apply(doc.to_json(), 0)
    agent.kernel.reboot()
    # Someone else grabbed the staging environment's port while the node was down.
    port = int(client.ensure(other.id)[1].rsplit(":", 1)[1])
    agent.kernel.devices["wgsquatter"] = FakeDevice(
        "wgsquatter", "elsewhere", generate_private_key(), port
    )
    done = agent.reconciler.reconcile_all()
    assert done[ENV] and not done[ENV][0].startswith("error")
    assert done[other.id] == [done[other.id][0]]
    assert done[other.id][0].startswith("error") and str(port) in done[other.id][0]
    assert agent.kernel.device_in(env_netns(agent)) is not None


def test_a_stop_ends_a_repair_of_every_environment_between_environments(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    other = EnvironmentSpec("shop", "staging", services=(ServiceSpec("api", ("node-1",)),))
    client.apply(build_document(other, None, {"node-1": client.ensure(other.id)}).to_json(), 0)
    agent.kernel.reboot()
    stop = threading.Event()
    stop.set()
    assert agent.reconciler.reconcile_all(stop) == {}  # stopped before the first one
    assert agent.kernel.device_in(env_netns(agent)) is None

    class StopAfterOne(threading.Event):
        def is_set(self) -> bool:
            self.asked = getattr(self, "asked", 0) + 1
            return self.asked > 1

    done = agent.reconciler.reconcile_all(StopAfterOne())
    assert len(done) == 1  # the one under way finished, the other waits for the next start
    assert agent.reconciler.reconcile_all().keys() == {ENV, other.id}


# -- mutual TLS --------------------------------------------------------------------------------


def _call_with(channel: grpc.Channel) -> grpc.StatusCode:
    stub = pb_grpc.NodeAgentStub(channel)
    try:
        stub.EnsureEnvironment(pb.EnsureEnvironmentRequest(env_id=ENV), timeout=RPC_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        channel.close()
    return grpc.StatusCode.OK


def test_a_client_without_certificate_is_refused(
    tmp_path: Path, agent: RunningAgent, tls: ClusterTls
) -> None:
    ca = tls.provider.ca.read_bytes()
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    code = _call_with(
        grpc.secure_channel(agent.address, no_cert, options=channel_options("node-1"))
    )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert _call_with(grpc.insecure_channel(agent.address)) == grpc.StatusCode.UNAVAILABLE
    assert agent.reconciler.state.environment_ids() == []


def test_a_client_certificate_from_another_ca_is_refused(
    tmp_path: Path, agent: RunningAgent, tls: ClusterTls
) -> None:
    stranger = write_cluster_tls(tmp_path / "other-tls", ["node-1"]).provider
    mixed = TlsFiles(ca=tls.provider.ca, cert=stranger.cert, key=stranger.key)
    code = _call_with(
        grpc.secure_channel(
            agent.address, channel_credentials(mixed), options=channel_options("node-1")
        )
    )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert agent.reconciler.state.environment_ids() == []


def test_the_provider_certificate_is_accepted(agent: RunningAgent, tls: ClusterTls) -> None:
    channel = grpc.secure_channel(
        agent.address, channel_credentials(tls.provider), options=channel_options("node-1")
    )
    assert _call_with(channel) == grpc.StatusCode.OK


def test_the_client_checks_it_reached_the_node_it_meant(
    agent: RunningAgent, tls: ClusterTls
) -> None:
    wrong = AgentClient(AgentAddress("node-2", agent.address, tls.provider), timeout=RPC_TIMEOUT)
    with wrong, pytest.raises(AgentUnreachable) as caught:
        wrong.ensure(ENV)
    assert caught.value.node == "node-2"
    assert agent.reconciler.state.environment_ids() == []


def test_a_deleted_instance_namespace_is_made_again_and_status_says_what_was_lost(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    k = agent.kernel
    api_ns = netns_of(agent, applied, "api", 0)
    k.delete_namespace(api_ns)
    (env,) = client.status(ENV).environments
    assert [line.split(" (")[0] for line in env.drift] == [f"create instance api#0 in {api_ns}"]
    assert "processes that ran in it are gone" in env.drift[0]
    assert list(env.lost) == []
    agent.reconciler.reconcile(ENV)
    assert k.namespaces[api_ns].linked
    (env,) = client.status(ENV).environments
    assert list(env.drift) == []
    (line,) = env.lost
    assert f"instance api#0: namespace {api_ns} was gone" in line
    assert "processes that ran in it are gone" in line
