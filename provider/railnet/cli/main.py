"""The ``railnet`` command."""

from __future__ import annotations

import argparse
import sys

from railnet.cli.agent import add_agent_parser
from railnet.cli.certs import add_certs_parser
from railnet.cli.cluster import add_cluster_parser
from railnet.cli.demo import add_demo_parser
from railnet.cli.lab import add_lab_parser
from railnet.cli.node import add_node_parser
from railnet.cli.plan import add_plan_parser
from railnet.cli.resolver import add_resolver_parser
from railnet.cli.runtime import add_exec_parsers, add_status_parser
from railnet.core.errors import RailnetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="railnet",
        description="Private WireGuard networking with <service>.railway.internal DNS.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_agent_parser(sub)
    add_certs_parser(sub)
    add_lab_parser(sub)
    add_cluster_parser(sub)
    add_exec_parsers(sub)
    add_status_parser(sub)
    add_plan_parser(sub)
    add_demo_parser(sub)
    add_resolver_parser(sub)
    add_node_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RailnetError as exc:
        print(f"railnet {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
