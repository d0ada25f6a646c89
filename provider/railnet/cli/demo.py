"""``railnet demo``: the seed topology on a local lab, checked (``railnet.demo.tour``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from railnet.demo.tour import run_demo


def add_demo_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the seed topology on a local lab, checked")
    p.add_argument("--dir", type=Path, help="where to keep the lab while it runs")
    p.set_defaults(func=lambda args: run_demo(args.dir))
