"""``railnet node install``: set a real node up to run its agent under systemd."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.agent.config import DEFAULT_CONFIG
from railnet.agent.install import UNIT_DIR, install


def add_node_parser(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="set this machine up as a railnet node")
    actions = node.add_subparsers(dest="action", required=True)
    p = actions.add_parser(
        "install",
        help="write the agent's systemd unit and a config skeleton (enables nothing)",
        description="Write railnet-agent.service and, when none exists, a config skeleton "
        "with every setting (an existing config is never overwritten). Nothing is enabled or "
        "started without --enable.",
    )
    p.add_argument("--node", help="this node's name, as the cluster file knows it")
    p.add_argument("--endpoint-host", help="this node's underlay IP (WireGuard endpoints)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}")
    p.add_argument(
        "--unit-dir", type=Path, default=UNIT_DIR, help=f"where the unit goes (default: {UNIT_DIR})"
    )
    p.add_argument(
        "--tls-dir",
        type=Path,
        default=Path("/etc/railnet/tls"),
        help="where the skeleton expects ca.pem, NODE.pem, NODE-key.pem (default: %(default)s)",
    )
    p.add_argument(
        "--enable", action="store_true", help="systemctl enable --now the unit afterwards"
    )
    p.set_defaults(func=run_install)


def run_install(args: argparse.Namespace) -> int:
    done = install(
        node=args.node,
        endpoint_host=args.endpoint_host,
        config=args.config,
        unit_dir=args.unit_dir,
        tls_dir=args.tls_dir,
        enable=args.enable,
    )
    print(f"wrote {done.unit}")
    if done.config_written:
        print(f"wrote {done.config} (fill in what is commented out, then start the unit)")
    else:
        print(f"kept {done.config} (it exists)")
    if done.enabled:
        print("enabled and started railnet-agent.service")
    else:
        print("enable it with: systemctl enable --now railnet-agent.service")
    return 0
