"""``railnet demo``: the seed topology on a local lab, checked (``railnet.demo.tour``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.cli.errors import EXIT_PROBLEM, need_root
from railnet.core.errors import InvalidField
from railnet.demo.tour import run_demo


def add_demo_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the seed topology on a local lab, checked",
        description="Bring up a 3-node lab, run examples/basic through the provider as the "
        "engine does, show what it checks as it goes, destroy it all and tear the lab down. "
        "Needs root. Exits 0 when every check passed, 1 when one failed.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="where the lab lives while the demo runs, DIR/lab (default: a temporary "
        "directory); nothing is left there afterwards",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dir is not None and args.dir.exists() and not args.dir.is_dir():
        raise InvalidField("--dir", str(args.dir), "is a file; give a directory for the lab")
    need_root("railnet demo", "its lab makes network namespaces")
    return EXIT_PROBLEM if run_demo(args.dir) else 0
