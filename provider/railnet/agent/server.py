"""``railnet agent``: one node's agent process.

It serves the NodeAgent API with mutual TLS (plaintext only with ``--insecure``), repairs
every stored environment at start (adopting what still runs, rebuilding what is gone), and
repeats that repair periodically. Stopping the agent leaves the data plane running.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from railnet.agent.backends import ResolverBackend
from railnet.agent.linux_network import LinuxNetwork
from railnet.agent.reconciler import Reconciler
from railnet.agent.servicer import NodeAgentServicer
from railnet.agent.state import StateDir
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.agent.wireguard import select_backend
from railnet.certs import TlsFiles, server_credentials
from railnet.core.errors import RailnetError
from railnet.core.names import check_netns_prefix, check_node_name

log = logging.getLogger("railnet.agent")


def udp_port_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def add_agent_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("agent", help="run one node's agent")
    p.add_argument("--node", required=True, help="this node's name, e.g. node-1")
    p.add_argument(
        "--listen",
        action="append",
        required=True,
        help="gRPC address (host:port or unix:PATH); repeat to listen on several",
    )
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument(
        "--endpoint-host",
        required=True,
        help="the underlay address other nodes reach this node's WireGuard sockets at",
    )
    p.add_argument("--netns-prefix", help="prefix of every namespace this agent makes")
    p.add_argument("--wireguard", choices=("auto", "kernel", "userspace"), default="auto")
    p.add_argument("--tls-ca", type=Path)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext gRPC without client authentication (never in production)",
    )
    p.add_argument("--dns-upstream", action="append", default=[], help="host:port, repeatable")
    p.add_argument("--no-dns", action="store_true", help="serve no DNS views")
    p.add_argument("--reconcile-interval", type=float, default=30.0)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_agent)


def build_resolver(args: argparse.Namespace) -> ResolverBackend | None:
    if args.no_dns:
        return None
    from railnet.agent.dns import DnsServer

    server = DnsServer(upstreams=list(args.dns_upstream))
    server.start()
    return server


def run_agent(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {args.node} %(levelname)s %(message)s",
    )
    try:
        node = check_node_name("--node", args.node)
        prefix = check_netns_prefix("--netns-prefix", args.netns_prefix or f"rn-{node}")
        credentials = None
        if args.insecure:
            log.warning(
                "INSECURE: serving plaintext gRPC with no client authentication; "
                "anyone who reaches %s controls this node's networks",
                ", ".join(args.listen),
            )
        else:
            missing = [f for f in ("tls_ca", "tls_cert", "tls_key") if getattr(args, f) is None]
            if missing:
                flags = ", ".join("--" + f.replace("_", "-") for f in missing)
                raise RailnetError(
                    f"mutual TLS needs {flags} (mint them with 'railnet certs init'); "
                    "--insecure serves plaintext instead"
                )
            credentials = server_credentials(TlsFiles(args.tls_ca, args.tls_cert, args.tls_key))
        state = StateDir(args.state_dir)
        wireguard = select_backend(args.wireguard, args.state_dir / "logs")
        reconciler = Reconciler(
            node=node,
            netns_prefix=prefix,
            endpoint_host=args.endpoint_host,
            state=state,
            network=LinuxNetwork(),
            wireguard=wireguard,
            resolver=build_resolver(args),
            port_free=udp_port_free,
        )
    except RailnetError as exc:
        print(f"railnet agent: {exc}", file=sys.stderr)
        return 2
    log.info("node %s: WireGuard backend %s, namespaces %s-*", node, wireguard.name, prefix)
    for env_id, changes in reconciler.reconcile_all().items():
        log.info("environment %s: start-up repair: %s", env_id, "; ".join(changes) or "adopted")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_NodeAgentServicer_to_server(NodeAgentServicer(reconciler), server)
    for address in args.listen:
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    server.start()
    log.info("listening on %s", ", ".join(args.listen))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(args.reconcile_interval):
        for env_id, changes in reconciler.reconcile_all().items():
            if changes:
                log.warning("environment %s: repaired drift: %s", env_id, "; ".join(changes))
    server.stop(grace=2).wait()
    log.info("stopped; the data plane keeps running")
    return 0
