"""``railnet lab up|down``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.lab.local_cluster import DEFAULT_DIR, Lab


def add_lab_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("lab", help="a local multi-node cluster in network namespaces")
    sub = p.add_subparsers(dest="lab_command", required=True)
    up = sub.add_parser("up", help="build the lab and start an agent per node")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    up.add_argument("--wireguard", choices=("auto", "kernel", "userspace"), default="auto")
    up.add_argument("--dns-upstream", action="append", default=[])
    up.set_defaults(func=run_up)
    down = sub.add_parser("down", help="remove the lab and everything it made")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    down.set_defaults(func=run_down)


def run_up(args: argparse.Namespace) -> int:
    Lab.up(
        args.dir,
        args.nodes,
        wireguard=args.wireguard,
        dns_upstreams=tuple(args.dns_upstream),
        progress=True,
    )
    return 0


def run_down(args: argparse.Namespace) -> int:
    lab = Lab.open(args.dir)
    removed = lab.down()
    print(f"lab {lab.lab_id}: removed {len(removed)} objects")
    for item in removed:
        print(f"  {item}")
    return 0
