"""Real mutual TLS over gRPC with the cluster's material: who may connect, over TCP and a
unix socket, and what the client insists on seeing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from railnet.agent.credentials import ServingCredentials
from railnet.control.client import channel_credentials, channel_options
from railnet.pki.certs import ClusterTls, TlsFiles, write_cluster_tls

pytestmark = pytest.mark.agent

RPC_TIMEOUT = 5.0
ECHO_METHOD = "/railnet.test.Echo/Echo"


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterTls:
    return write_cluster_tls(tmp_path / "tls", ["node-1", "node-2"])


# --------------------------------------------------------------------------- real mTLS


@dataclass(frozen=True)
class EchoServer:
    tcp: str
    unix: str


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    # Echo the peer's verified name too: proves the server saw the client certificate.
    peer: bytes = context.auth_context().get("x509_common_name", [b"?"])[0]
    return request + b" from " + peer


@pytest.fixture
def echo_server(cluster: ClusterTls, tmp_path: Path) -> Iterator[EchoServer]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("railnet.test.Echo", {"Echo": handler}),)
    )
    identity = ServingCredentials(cluster.nodes["node-1"])
    port = server.add_secure_port("127.0.0.1:0", identity.credentials())
    socket_path = tmp_path / "agent.sock"
    assert server.add_secure_port(f"unix:{socket_path}", identity.credentials()) != 0
    server.start()
    try:
        yield EchoServer(tcp=f"127.0.0.1:{port}", unix=f"unix:{socket_path}")
    finally:
        server.stop(0)


def call(target: str, credentials: grpc.ChannelCredentials, node: str = "node-1") -> bytes:
    with grpc.secure_channel(target, credentials, options=channel_options(node)) as channel:
        echo = channel.unary_unary(ECHO_METHOD)
        reply: bytes = echo(b"ping", timeout=RPC_TIMEOUT)
    assert isinstance(reply, bytes)
    return reply


def test_provider_certificate_is_accepted(cluster: ClusterTls, echo_server: EchoServer) -> None:
    reply = call(echo_server.tcp, channel_credentials(cluster.provider))

    assert reply == b"ping from railnet-provider"


def test_unix_socket_with_node_name_override_is_accepted(
    cluster: ClusterTls, echo_server: EchoServer
) -> None:
    reply = call(echo_server.unix, channel_credentials(cluster.provider))

    assert reply == b"ping from railnet-provider"


def test_client_without_certificate_is_refused(
    cluster: ClusterTls, echo_server: EchoServer
) -> None:
    anonymous = grpc.ssl_channel_credentials(root_certificates=cluster.ca_cert.read_bytes())

    with pytest.raises(grpc.RpcError) as refused:
        call(echo_server.tcp, anonymous)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_certificate_from_another_ca_is_refused(
    cluster: ClusterTls, echo_server: EchoServer, tmp_path: Path
) -> None:
    stranger = write_cluster_tls(tmp_path / "stranger", ["node-1"]).provider
    # Trusts our CA, so only the server's check of the client certificate can fail.
    impostor = TlsFiles(ca=cluster.ca_cert, cert=stranger.cert, key=stranger.key)

    with pytest.raises(grpc.RpcError) as refused:
        call(echo_server.tcp, channel_credentials(impostor))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_a_server_with_another_node_name(
    cluster: ClusterTls, echo_server: EchoServer
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call(echo_server.tcp, channel_credentials(cluster.provider), node="node-2")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_node_certificate_cannot_act_as_a_client(
    cluster: ClusterTls, echo_server: EchoServer
) -> None:
    # Node certificates carry serverAuth only: a node's key cannot impersonate the provider.
    node_2 = cluster.nodes["node-2"]

    with pytest.raises(grpc.RpcError) as refused:
        call(echo_server.tcp, channel_credentials(node_2))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
