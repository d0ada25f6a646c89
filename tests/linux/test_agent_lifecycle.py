"""The agent is the control plane, not the data plane: kill -9, restart, reboot; and the
apply contract (idempotent, compare-and-set, validation, mutual TLS) against real agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from railnet.control.client import AgentAddress, AgentClient, AgentError
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.errors import AgentUnreachable
from railnet.linux.netns import list_netns
from railnet.pki.certs import TlsFiles, mint_ca, mint_certificate

from .conftest import NETCHECK, LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux

PORT = 7100
SPEC = EnvironmentSpec(
    "life",
    "production",
    services=(ServiceSpec("client", ("node-1",)), ServiceSpec("server", ("node-2",))),
)


@pytest.fixture(scope="module")
def net() -> Iterator[LabNet]:
    with running_lab(2) as lab:  # DNS on: the resolver is data plane too
        lab.deploy(SPEC)
        yield lab


def server_v6(net: LabNet) -> str:
    doc = net.deployer.latest(net.deployer.read(SPEC.id))
    assert doc is not None
    svc = doc.service("server")
    assert svc is not None
    return svc.instances[0].ipv6


def identity(net: LabNet, i: int) -> tuple[str, str, list[int]]:
    node = net.lab.node(i)
    with net.lab.client(node) as client:
        key, endpoint = client.ensure(SPEC.id)
    return key, endpoint, net.lab.wireguard_pids(node)


def kernel_snapshot(net: LabNet) -> dict[str, str]:
    """Links (with ifindex), addresses and routes of every namespace of the environment."""
    snap = {}
    for name in list_netns():
        if SPEC.id in name:
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    "sh",
                    "-c",
                    "ip -o link; ip -o addr; ip route; ip -6 route",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            snap[name] = "\n".join(
                line for line in out.splitlines() if "valid_lft" not in line or "fe80" not in line
            )
    return snap


def wg_peers(net: LabNet, i: int) -> list[tuple[str, str, tuple[str, ...]]]:
    with net.lab.client(net.lab.node(i)) as client:
        env = client.status(SPEC.id).environments[0]
    return sorted((p.public_key, p.endpoint, tuple(p.allowed_ips)) for p in env.peers)


def test_tcp_session_survives_agent_kill_and_restart(net: LabNet) -> None:
    server = net.netns("life", "production", "server")
    client = net.netns("life", "production", "client")
    net.serve(server, "srv", PORT)
    before = {i: identity(net, i) for i in (1, 2)}
    session = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            client,
            sys.executable,
            NETCHECK,
            "session",
            server_v6(net),
            str(PORT),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert session.stdin and session.stdout
    try:
        assert session.stdout.readline().strip() == "connected"
        session.stdin.write("one\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == "srv:one"

        for i in (1, 2):
            net.lab.kill_agent(net.lab.node(i), signal.SIGKILL)
        assert all(net.lab.agent_pid(net.lab.node(i)) is None for i in (1, 2))
        session.stdin.write("two\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == "srv:two"
        with pytest.raises(AgentUnreachable), net.lab.client(net.lab.node(1), timeout=1) as dead:
            dead.status()

        for i in (1, 2):
            net.lab.restart_agent(net.lab.node(i))
        after = {i: identity(net, i) for i in (1, 2)}
        assert after == before, "a restart must keep keys, ports and the wireguard-go processes"
        session.stdin.write("three\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == "srv:three"
    finally:
        session.kill()
        session.wait()
    for i in (1, 2):
        with net.lab.client(net.lab.node(i)) as c:
            assert list(c.status(SPEC.id).environments[0].drift) == []


def test_reapplying_the_same_document_changes_nothing(net: LabNet) -> None:
    before = kernel_snapshot(net)
    peers = {i: wg_peers(net, i) for i in (1, 2)}
    assert len(before) == 4  # two environment namespaces, two instances
    with net.lab.client(net.lab.node(1)) as client:
        text = client.document(SPEC.id)
        assert text is not None
        generation = json.loads(text)["generation"]
        assert client.apply(text, generation) == (generation, [])
        assert client.apply(text, 0) == (generation, [])  # a retried call is harmless
    applied = net.deploy(SPEC)
    assert applied.document.generation == generation
    assert applied.changes == {"node-1": [], "node-2": []}
    assert kernel_snapshot(net) == before
    assert {i: wg_peers(net, i) for i in (1, 2)} == peers


def test_stale_generation_is_refused_and_changes_nothing(net: LabNet) -> None:
    with net.lab.client(net.lab.node(1)) as client:
        text = client.document(SPEC.id)
        assert text is not None
        doc = json.loads(text)
        stored = doc["generation"]
        doc["generation"] = stored + 1
        doc["services"][0]["name"] = "renamed"
        before = kernel_snapshot(net)
        with pytest.raises(AgentError) as err:
            client.apply(json.dumps(doc), stored - 1 if stored > 1 else stored + 5)
        assert err.value.code == grpc.StatusCode.ABORTED
        assert f"holds generation {stored}" in str(err.value)
        older = json.loads(text)
        older["services"][0]["name"] = "renamed"
        with pytest.raises(AgentError) as err2:
            client.apply(json.dumps(older), stored)  # same generation, different content
        assert err2.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "generation" in str(err2.value)
        assert client.document(SPEC.id) == text
    assert kernel_snapshot(net) == before


@pytest.mark.parametrize(
    ("mutate", "field", "value"),
    [
        (
            lambda d: d["services"][1]["instances"][0].update(ipv4="10.250.0.1"),
            "services[1].instances[0].ipv4",
            "10.250.0.1",
        ),
        (lambda d: d["services"][0].update(name="Bad_Name"), "services[0].name", "Bad_Name"),
        (lambda d: d["nodes"][0].update(endpoint="nowhere"), "nodes[0].endpoint", "nowhere"),
        (lambda d: d.update(ip_mode="ipv5"), "ip_mode", "ipv5"),
    ],
    ids=["reserved-address", "bad-name", "bad-endpoint", "bad-mode"],
)
def test_invalid_document_names_the_field_and_changes_nothing(
    net: LabNet, mutate: object, field: str, value: str
) -> None:
    with net.lab.client(net.lab.node(1)) as client:
        text = client.document(SPEC.id)
        assert text is not None
        doc = json.loads(text)
        stored = doc["generation"]
        doc["generation"] = stored + 1
        mutate(doc)  # type: ignore[operator]
        before = kernel_snapshot(net)
        with pytest.raises(AgentError) as err:
            client.apply(json.dumps(doc), stored)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(err.value) and value in str(err.value), str(err.value)
        assert client.document(SPEC.id) == text
    assert kernel_snapshot(net) == before


def test_clients_without_the_clusters_certificate_are_refused(
    net: LabNet, tmp_path: object
) -> None:
    node = net.lab.node(1)
    tls = net.lab.directory / "tls"
    address = f"unix:{node.agent_socket}"
    # No client certificate at all.
    channel = grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(root_certificates=(tls / "ca.pem").read_bytes()),
        options=[("grpc.ssl_target_name_override", node.name)],
    )
    from railnet.agent.v1 import agent_pb2, agent_pb2_grpc

    with pytest.raises(grpc.RpcError) as err:
        agent_pb2_grpc.NodeAgentStub(channel).Status(agent_pb2.StatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()
    # A certificate from another CA.
    from pathlib import Path

    other = Path(str(tmp_path))
    ca_cert, ca_key = mint_ca("intruder CA")
    cert, key = mint_certificate(
        ca_cert,
        ca_key,
        "railnet-provider",
        dns_names=[],
        ip_addresses=[],
        server=False,
        client=True,
    )
    (other / "cert.pem").write_bytes(cert)
    (other / "key.pem").write_bytes(key)
    intruder = AgentClient(
        AgentAddress(
            node.name, address, TlsFiles(tls / "ca.pem", other / "cert.pem", other / "key.pem")
        ),
        timeout=5,
    )
    with pytest.raises(AgentUnreachable):
        intruder.status()
    intruder.close()
    # Plaintext.
    plain = AgentClient(AgentAddress(node.name, address, None), timeout=5)
    with pytest.raises(AgentUnreachable), plain:
        plain.status()
    # The cluster's own certificate works.
    with net.lab.client(node) as ok:
        assert ok.status().node == node.name


def test_simulated_reboot_rebuilds_everything_from_state(net: LabNet) -> None:
    server = net.netns("life", "production", "server")
    client = net.netns("life", "production", "client")
    net.serve(server, "srv2", PORT + 1)
    target = server_v6(net)
    assert net.tcp(client, target, PORT + 1).output == "srv2:ping"
    keys = {i: identity(net, i)[:2] for i in (1, 2)}
    before = kernel_snapshot(net)
    node = net.lab.node(2)
    old_wg = net.lab.wireguard_pids(node)
    old_resolver = net.lab.resolver_pid(node)
    assert old_resolver is not None
    # Reboot node-2: agent, resolver, wireguard-go processes and every namespace it made
    # are gone.
    net.lab.kill_agent(node, signal.SIGKILL)
    os.kill(old_resolver, signal.SIGKILL)
    for name in list_netns():
        if name.startswith(node.netns_prefix + "-"):
            subprocess.run(["ip", "netns", "delete", name], check=True)
    for pid in old_wg:
        os.kill(pid, signal.SIGKILL)
    net.stop_servers()
    assert not net.tcp(client, target, PORT + 1, timeout=1).ok

    net.lab.restart_agent(node)
    assert {i: identity(net, i)[:2] for i in (1, 2)} == keys
    assert net.lab.wireguard_pids(node) and net.lab.wireguard_pids(node) != old_wg
    after = kernel_snapshot(net)
    assert sorted(after) == sorted(before)
    server = net.netns("life", "production", "server")
    net.serve(server, "srv3", PORT + 2)
    assert server_v6(net) == target
    assert wait_until(lambda: net.tcp(client, target, PORT + 2, timeout=2).ok, timeout=15)
    probe = net.tcp(client, target, PORT + 2)
    assert probe.output == "srv3:ping"
    # A new resolver serves the rebuilt namespaces, by name.
    assert net.lab.resolver_pid(node) not in (None, old_resolver)
    named = net.run(server, "getent", "ahosts", "client.railway.internal")
    assert named.returncode == 0 and net.tcp(client, "server.railway.internal", PORT + 2).ok
