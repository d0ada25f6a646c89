"""``railnet agent``: the flags of one node's agent (``railnet.agent.server`` runs it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.agent.credentials import REVOKED_FILE
from railnet.agent.server import AgentConfig, run_agent
from railnet.core.errors import RailnetError
from railnet.pki.certs import TlsFiles

TLS_FLAGS = ("tls_ca", "tls_cert", "tls_key")


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
        "--tls-revoked",
        type=Path,
        help="revocation list: certificate serials in hex, one per line (default: "
        "revoked.txt beside --tls-ca); checked on every call. SIGHUP, or a change to any TLS "
        "file, reloads them all without a restart",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext gRPC without client authentication (never in production)",
    )
    p.add_argument("--dns-upstream", action="append", default=[], help="host:port, repeatable")
    p.add_argument("--no-dns", action="store_true", help="serve no DNS views")
    p.add_argument("--reconcile-interval", type=float, default=30.0)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_agent_from_flags)


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """The agent's configuration from its flags; TLS is required unless ``--insecure``."""
    tls = None
    revoked = None
    if not args.insecure:
        missing = [f for f in TLS_FLAGS if getattr(args, f) is None]
        if missing:
            flags = ", ".join("--" + f.replace("_", "-") for f in missing)
            raise RailnetError(
                f"mutual TLS needs {flags} (mint them with 'railnet certs init'); "
                "--insecure serves plaintext instead"
            )
        tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
        revoked = args.tls_revoked or args.tls_ca.parent / REVOKED_FILE
    return AgentConfig(
        node=args.node,
        listen=tuple(args.listen),
        state_dir=Path(args.state_dir),
        endpoint_host=args.endpoint_host,
        tls=tls,
        netns_prefix=args.netns_prefix,
        wireguard=args.wireguard,
        dns=not args.no_dns,
        dns_upstreams=tuple(args.dns_upstream),
        reconcile_interval=args.reconcile_interval,
        log_level=args.log_level,
        tls_revoked=revoked,
    )


def run_agent_from_flags(args: argparse.Namespace) -> int:
    return run_agent(agent_config(args))
