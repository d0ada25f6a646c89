"""``railnet node install``: set a real node up to run its agent under systemd."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from railnet.agent.config import DEFAULT_CONFIG
from railnet.agent.install import UNIT_DIR, install
from railnet.core.errors import InvalidField
from railnet.core.names import check_node_name


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
    p.add_argument(
        "--node",
        metavar="NAME",
        help="this node's name, as the cluster file knows it (default: left for you to fill in)",
    )
    p.add_argument(
        "--endpoint-host",
        metavar="IP",
        help="this node's underlay IP, where WireGuard peers reach it (default: left for you "
        "to fill in)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help="where the config skeleton goes; an existing one is kept (default: %(default)s)",
    )
    p.add_argument(
        "--unit-dir",
        type=Path,
        default=UNIT_DIR,
        metavar="DIR",
        help="where the unit goes (default: %(default)s)",
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
    # Checked before anything is written: a skeleton with a bad name helps nobody.
    if args.node is not None:
        check_node_name("--node", args.node)
    if args.endpoint_host is not None:
        try:
            ipaddress.ip_address(args.endpoint_host)
        except ValueError:
            raise InvalidField(
                "--endpoint-host", args.endpoint_host, "must be this node's underlay IP address"
            ) from None
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
