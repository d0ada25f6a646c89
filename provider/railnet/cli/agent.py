"""``railnet agent``: the flags of one node's agent (``railnet.agent.server`` runs it).

Every flag is also a key of the agent's config file (``railnet.agent.config.SETTINGS``);
``--config FILE`` reads it and the flags given override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.agent.config import DEFAULT_CONFIG, SETTINGS, load_agent_config
from railnet.agent.server import run_agent

METAVARS = {
    "node": "NAME",
    "listen": "ADDR",
    "state_dir": "DIR",
    "endpoint_host": "IP",
    "netns_prefix": "PREFIX",
    "wireguard": "{auto,kernel,userspace}",
    "dns_upstream": "HOST:PORT",
    "reconcile_interval": "SECONDS",
    "log_level": "{debug,info,warning,error}",
    "log_format": "{text,json}",
    "metrics_listen": "HOST:PORT",
}


def add_agent_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "agent",
        help="run one node's agent",
        description="Run one node's agent. Every flag is also a key of the config file "
        "(--state-dir is state_dir); the flags given override the file.",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the agent's TOML config file; every key is a flag below (default: none, "
        f"flags only; the systemd unit uses {DEFAULT_CONFIG})",
    )
    for s in SETTINGS:
        if s.kind is bool:
            if s.key == "dns":
                p.add_argument(
                    "--no-dns",
                    dest="dns",
                    action="store_const",
                    const=False,
                    help="serve no DNS views (dns = false in the file)",
                )
            elif s.key == "self_heal":
                p.add_argument(
                    "--no-self-heal",
                    dest="self_heal",
                    action="store_const",
                    const=False,
                    help="leave drift to the periodic repair (self_heal = false in the file)",
                )
            else:
                p.add_argument(s.flag, dest=s.key, action="store_const", const=True, help=s.help)
            continue
        extra: dict[str, Any] = {"action": "append"} if s.kind is list else {}
        if s.kind is float:
            extra["type"] = float
        shown = f" (default: {_shown(s.default)})" if s.default not in (None, []) else ""
        metavar = METAVARS.get(s.key, "FILE" if s.key.startswith("tls_") else None)
        p.add_argument(s.flag, dest=s.key, metavar=metavar, help=s.help + shown, **extra)
    p.set_defaults(func=run_agent_from_flags)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def run_agent_from_flags(args: argparse.Namespace) -> int:
    flags = {s.key: getattr(args, s.key) for s in SETTINGS}
    return run_agent(load_agent_config(args.config, flags))
