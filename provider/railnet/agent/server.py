"""``railnet agent``: one node's agent process.

It serves the NodeAgent API with mutual TLS (plaintext only with ``--insecure``), repairs
every stored environment at start (adopting what still runs, rebuilding what is gone), and
repeats that repair periodically. Stopping the agent leaves the data plane running.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from railnet.agent.authz import RoleInterceptor
from railnet.agent.backends import ResolverBackend
from railnet.agent.credentials import ServingCredentials
from railnet.agent.linux_network import LinuxNetwork
from railnet.agent.reconciler import Reconciler
from railnet.agent.servicer import NodeAgentServicer
from railnet.agent.state import StateDir
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.agent.wireguard import select_backend
from railnet.core.errors import RailnetError
from railnet.core.names import check_netns_prefix, check_node_name
from railnet.pki.certs import TlsFiles

log = logging.getLogger("railnet.agent")
TLS_POLL_SECONDS = 2.0
"""How often the agent looks whether its TLS files (or the revocation list) changed."""


def udp_port_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def serve(
    reconciler: Reconciler,
    credentials: ServingCredentials | None,
    listen: Sequence[str],
    workers: int = 16,
) -> tuple[grpc.Server, list[int]]:
    """The NodeAgent API on every ``listen`` address, behind the role check (which a
    plaintext server, having no certificates to read, cannot make); started. Returns the
    server and the port bound for each address (0 for ``unix:`` ones)."""
    identity = credentials
    if identity is not None:
        check = RoleInterceptor(revoked=lambda: identity.revoked)
    else:
        check = RoleInterceptor(enforce=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=[check])
    pb_grpc.add_NodeAgentServicer_to_server(NodeAgentServicer(reconciler), server)
    ports = []
    for address in listen:
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)
        if identity is None:
            ports.append(server.add_insecure_port(address))
        else:
            ports.append(server.add_secure_port(address, identity.credentials()))
    server.start()
    return server, ports


@dataclass(frozen=True)
class AgentConfig:
    """Everything one node's agent runs with (``railnet agent`` fills it from its flags)."""

    node: str
    """This node's name, as the cluster file knows it."""
    listen: tuple[str, ...]
    """gRPC addresses: ``host:port`` or ``unix:PATH``."""
    state_dir: Path
    """Stored documents and private keys."""
    endpoint_host: str
    """The underlay address other nodes reach this node's WireGuard sockets at."""
    tls: TlsFiles | None
    """Mutual TLS material; ``None`` serves plaintext (``--insecure``)."""
    netns_prefix: str | None = None
    """Prefix of every namespace this agent makes; ``rn-<node>`` when unset."""
    wireguard: str = "auto"
    """``auto``, ``kernel`` or ``userspace``."""
    dns: bool = True
    """Serve the environments' DNS views."""
    dns_upstreams: tuple[str, ...] = ()
    """Where names outside the private domain are forwarded (``host:port``)."""
    reconcile_interval: float = 30.0
    """Seconds between full repairs."""
    tls_revoked: Path | None = None
    """The revocation list (serials, hex); checked on every call, reread with the rest."""
    log_level: str = "info"


def build_resolver(config: AgentConfig) -> ResolverBackend | None:
    if not config.dns:
        return None
    from railnet.agent.dns import DnsServer

    server = DnsServer(upstreams=list(config.dns_upstreams))
    server.start()
    return server


def run_agent(config: AgentConfig) -> int:
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s {config.node} %(levelname)s %(message)s",
    )
    try:
        node = check_node_name("--node", config.node)
        prefix = check_netns_prefix("--netns-prefix", config.netns_prefix or f"rn-{node}")
        credentials = None
        if config.tls is None:
            log.warning(
                "INSECURE: serving plaintext gRPC with no client authentication; "
                "anyone who reaches %s controls this node's networks",
                ", ".join(config.listen),
            )
        else:
            credentials = ServingCredentials(config.tls, config.tls_revoked)
        state = StateDir(config.state_dir)
        wireguard = select_backend(config.wireguard, config.state_dir / "logs")
        reconciler = Reconciler(
            node=node,
            netns_prefix=prefix,
            endpoint_host=config.endpoint_host,
            state=state,
            network=LinuxNetwork(),
            wireguard=wireguard,
            resolver=build_resolver(config),
            port_free=udp_port_free,
        )
    except RailnetError as exc:
        print(f"railnet agent: {exc}", file=sys.stderr)
        return 2
    log.info("node %s: WireGuard backend %s, namespaces %s-*", node, wireguard.name, prefix)
    for env_id, changes in reconciler.reconcile_all().items():
        log.info("environment %s: start-up repair: %s", env_id, "; ".join(changes) or "adopted")

    server, _ = serve(reconciler, credentials, config.listen)
    log.info("listening on %s", ", ".join(config.listen))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if credentials is not None:
        tls = credentials
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=tls.reload).start())
    next_repair = time.monotonic() + config.reconcile_interval
    while not stop.wait(min(TLS_POLL_SECONDS, config.reconcile_interval)):
        if credentials is not None:
            credentials.reload_if_changed()
        if time.monotonic() < next_repair:
            continue
        next_repair = time.monotonic() + config.reconcile_interval
        for env_id, changes in reconciler.reconcile_all().items():
            if changes:
                log.warning("environment %s: repaired drift: %s", env_id, "; ".join(changes))
    server.stop(grace=2).wait()
    log.info("stopped; the data plane keeps running")
    return 0
