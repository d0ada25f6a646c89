"""``railnet lab up|down``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.agent.dns import Upstream
from railnet.cli.errors import EXIT_OK, need_root
from railnet.lab.local_cluster import DEFAULT_DIR, MAX_NODES, Lab, NoLab


def add_lab_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lab",
        help="a local multi-node cluster in network namespaces",
        description="A local cluster on this machine: every node a network namespace on a "
        "private underlay (198.18.0.0/24), with its own agent. Needs root.",
    )
    sub = p.add_subparsers(dest="lab_command", required=True)
    up = sub.add_parser(
        "up",
        help="build the lab and start an agent per node",
        description="Build the lab and start an agent per node; writes DIR/cluster.json.",
    )
    up.add_argument(
        "--nodes",
        type=int,
        default=3,
        metavar="N",
        help=f"how many nodes, 1 to {MAX_NODES} (default: %(default)s)",
    )
    up.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help="a new or empty directory for the lab's files (default: %(default)s)",
    )
    up.add_argument(
        "--wireguard",
        choices=("auto", "kernel", "userspace"),
        default="auto",
        help="the agents' WireGuard backend; auto picks the kernel's when it has one "
        "(default: %(default)s)",
    )
    up.add_argument(
        "--dns-upstream",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="where names outside the private domain go (repeatable; default: none, "
        "such names get REFUSED)",
    )
    up.set_defaults(func=run_up)
    down = sub.add_parser(
        "down",
        help="remove the lab and everything it made",
        description="Remove every namespace, process and file the lab made, and nothing "
        "else. With no lab in DIR it says so and exits 0, so it fits cleanup scripts.",
    )
    down.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help="the lab's directory (default: %(default)s)",
    )
    down.set_defaults(func=run_down)


def run_up(args: argparse.Namespace) -> int:
    for upstream in args.dns_upstream:
        Upstream.parse("--dns-upstream", upstream)
    need_root("railnet lab up", "it makes network namespaces")
    Lab.up(
        args.dir,
        args.nodes,
        wireguard=args.wireguard,
        dns_upstreams=tuple(args.dns_upstream),
        progress=True,
    )
    return EXIT_OK


def run_down(args: argparse.Namespace) -> int:
    try:
        lab = Lab.open(args.dir)
    except NoLab as exc:
        print(f"railnet lab down: {exc}; nothing to remove")
        return EXIT_OK
    need_root("railnet lab down", "it removes network namespaces")
    removed = lab.down()
    print(f"lab {lab.lab_id}: removed {len(removed)} objects")
    for item in removed:
        print(f"  {item}")
    return EXIT_OK
