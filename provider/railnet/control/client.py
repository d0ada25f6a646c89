"""A client of one node's agent, shared by the CLI, the lab and the provider, over mutual TLS.

Channels open lazily and are never stored on pickled objects: providers build a client per
call from the cluster description.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from railnet.agent.v1 import agent_pb2 as pb
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.control.cluster import Cluster
from railnet.core.document import advertised_formats
from railnet.core.errors import AgentUnreachable, RailnetError
from railnet.core.names import check_node_name
from railnet.pki.certs import TlsFiles

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class AgentAddress:
    node: str
    address: str
    """``host:port`` or ``unix:PATH``."""
    tls: TlsFiles | None
    """``None`` only for agents started with ``--insecure``."""


def agent_address(cluster: Cluster, node: str, *, read_only: bool = False) -> AgentAddress:
    """How to reach ``node``'s agent, as the cluster description says. ``read_only`` picks
    the operator certificate when the file names one."""
    tls = cluster.operator if read_only and cluster.operator is not None else cluster.tls
    files = None if tls is None else TlsFiles(Path(tls.ca), Path(tls.cert), Path(tls.key))
    return AgentAddress(node, cluster.node(node).agent, files)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client credentials: present our certificate and trust only the cluster CA."""
    ca, cert, key = files.load()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def channel_options(node_name: str) -> list[tuple[str, str]]:
    """Channel options that make the client expect ``node_name``'s certificate.

    Needed whenever the dialled address is not the node's name: an IP address or a
    ``unix:`` socket path.
    """
    check_node_name("node", node_name)
    return [("grpc.ssl_target_name_override", node_name)]


class AgentError(RailnetError):
    """The agent refused a call."""

    def __init__(self, node: str, code: grpc.StatusCode, detail: str) -> None:
        self.node = node
        self.code = code
        self.detail = detail
        super().__init__(f"node {node}: {detail}")


@dataclass(frozen=True)
class HeldReply:
    """What a node said it holds for an environment (``AgentClient.held``)."""

    text: str | None
    """The document's JSON; None when the node holds none, or holds the known one."""
    digest: str
    """Its digest; empty from agents that predate deltas (they take whole documents)."""
    unchanged: bool
    """The node holds the document whose digest the caller gave."""
    delta_version: int = 0
    """The deltas it reads (``railnet.core.delta.DELTA_VERSION``); 0 from agents before."""


class AgentClient:
    def __init__(self, target: AgentAddress, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = target
        self.timeout = timeout
        self._channel: grpc.Channel | None = None
        # The engine calls a provider from several threads at once; one channel each.
        self._lock = threading.Lock()
        self.sent_bytes = 0
        """Bytes of the requests sent (protobuf-encoded), for the benchmarks."""
        self.received_bytes = 0
        """Bytes of the replies received."""
        self.calls = 0
        """RPCs made."""
        self.formats: tuple[int, ...] | None = None
        """The document formats the agent said it reads in its last reply that says so
        (``advertised_formats``: format 1 when it says nothing); None before any."""

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def _stub(self) -> Any:
        with self._lock:
            if self._channel is None:
                t = self.target
                if t.tls is None:
                    self._channel = grpc.insecure_channel(t.address)
                else:
                    self._channel = grpc.secure_channel(
                        t.address, channel_credentials(t.tls), options=channel_options(t.node)
                    )
            return pb_grpc.NodeAgentStub(self._channel)

    def _call(self, method: str, request: Any) -> Any:
        self.sent_bytes += request.ByteSize()
        self.calls += 1
        try:
            reply = getattr(self._stub(), method)(request, timeout=self.timeout)
            self.received_bytes += reply.ByteSize()
            return reply
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                # A channel that failed to connect waits out a growing back-off before it
                # tries again; a node that comes back must be reachable on the next call.
                self.close()
                raise AgentUnreachable(
                    self.target.node, self.target.address, exc.details()
                ) from None
            raise AgentError(self.target.node, code, exc.details()) from None

    def ensure(self, env_id: str, key_rotation: str | None = None) -> tuple[str, str]:
        """The environment's (public key, endpoint) on the node; with ``key_rotation``, a
        key made for that token (staged when the one in service was made for another)."""
        request = pb.EnsureEnvironmentRequest(env_id=env_id)
        if key_rotation is not None:
            request.key_rotation = key_rotation
        r = self._call("EnsureEnvironment", request)
        self.formats = advertised_formats(r.document_formats)
        if key_rotation is not None and r.key_rotation != key_rotation:
            raise RailnetError(
                f"node {self.target.node}: its agent did not make a key for rotation "
                f"{key_rotation!r} (it answered for {r.key_rotation!r}); it predates key "
                "rotation: upgrade it, then run again"
            )
        return r.public_key, r.endpoint

    def apply(
        self, document_json: str, expected_generation: int, *, delta_json: str = ""
    ) -> tuple[int, list[str]]:
        """Apply the whole document, or (``delta_json``, with ``document_json`` empty) the
        change against the document the node holds."""
        r = self._call(
            "ApplyDocument",
            pb.ApplyDocumentRequest(
                document_json=document_json,
                expected_generation=expected_generation,
                delta_json=delta_json,
            ),
        )
        return r.generation, list(r.changes)

    def document(self, env_id: str) -> str | None:
        return self.held(env_id).text

    def held(self, env_id: str, known_digest: str = "") -> HeldReply:
        """What the node holds; when that is the document ``known_digest`` names, the
        reply says so instead of carrying it."""
        r = self._call(
            "GetDocument", pb.GetDocumentRequest(env_id=env_id, known_digest=known_digest)
        )
        self.formats = advertised_formats(r.document_formats)
        if not r.found:
            return HeldReply(None, "", False, r.delta_version)
        if r.unchanged:
            return HeldReply(None, r.digest, True, r.delta_version)
        return HeldReply(r.document_json, r.digest, False, r.delta_version)

    def delete(self, env_id: str, expected_generation: int = 0) -> bool:
        """Remove the environment; with ``expected_generation``, only if the node holds it."""
        r = self._call(
            "DeleteEnvironment",
            pb.DeleteEnvironmentRequest(env_id=env_id, expected_generation=expected_generation),
        )
        return bool(r.existed)

    def status(self, env_id: str = "") -> Any:
        r = self._call("Status", pb.StatusRequest(env_id=env_id))
        self.formats = advertised_formats(r.document_formats)
        return r
