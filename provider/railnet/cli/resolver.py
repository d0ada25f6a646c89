"""``railnet resolver``: the DNS views of one node, in a process of their own.

The agent starts it (detached) and adopts it; operators do not run it by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from railnet.agent.resolver import run_resolver


def add_resolver_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "resolver",
        help="serve a node's DNS views (started and adopted by the agent)",
        description="Serve every environment's DNS view on this node. The agent starts it "
        "detached, hands it views over --control, and adopts it after a restart, so names "
        "keep resolving while the agent is down.",
    )
    p.add_argument(
        "--control",
        required=True,
        type=Path,
        metavar="SOCKET",
        help="the control socket (required; the agent uses STATE_DIR/resolver.sock)",
    )
    p.add_argument(
        "--dns-upstream",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="where names outside the private domain go (repeatable; default: none, such "
        "names get REFUSED)",
    )
    p.add_argument(
        "--port", type=int, default=None, help="DNS port (default: 53; 0 picks a free one)"
    )
    p.set_defaults(func=run_resolver_from_flags)


def run_resolver_from_flags(args: argparse.Namespace) -> int:
    return run_resolver(args.control, args.dns_upstream, args.port)
