"""``railnet exec``, ``railnet build-exec`` and ``railnet status``."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from railnet.control.cluster import Cluster, load_cluster
from railnet.control.inspect import Target, find_instance, status_tree
from railnet.core.errors import InvalidField
from railnet.linux.sandbox import exec_in_netns, run_without_network

DEFAULT_CLUSTER = Path("railnet-lab/cluster.json")


def cluster_from_flag(path: Path | None) -> Cluster:
    """``--cluster``, else ``$RAILNET_CLUSTER``, else the lab's default file."""
    if path is not None:
        return load_cluster(path, "--cluster", "check the path given to --cluster")
    from_env = os.environ.get("RAILNET_CLUSTER")
    if from_env:
        return load_cluster(Path(from_env), "RAILNET_CLUSTER", "check that variable's path")
    return load_cluster(
        DEFAULT_CLUSTER, "the default", "start a lab with 'railnet lab up' or pass --cluster"
    )


def add_exec_parsers(subparsers: Any) -> None:
    for name, func, text in (
        ("exec", run_exec, "run a command in a service instance's runtime network"),
        ("build-exec", run_build_exec, "run a command with no private network (build phase)"),
    ):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("--cluster", type=Path)
        p.add_argument("target", help="PROJECT/ENV/SERVICE[#i]")
        p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
        p.set_defaults(func=func)


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise InvalidField("cmd", "", "give the command after '--'")
    return cmd


def run_exec(args: argparse.Namespace) -> int:
    cmd = _command(args)
    _, namespace = find_instance(cluster_from_flag(args.cluster), Target.parse(args.target))
    exec_in_netns(namespace, cmd)
    return 127  # not reached


def run_build_exec(args: argparse.Namespace) -> int:
    cmd = _command(args)
    find_instance(cluster_from_flag(args.cluster), Target.parse(args.target))
    return run_without_network(cmd)


def add_status_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="peers, handshakes, bytes, records and drift")
    p.add_argument("--cluster", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    tree = status_tree(cluster_from_flag(args.cluster))
    if args.json:
        print(json.dumps(tree, indent=2))
        return 0
    now = time.time()
    unhealthy = False
    for node in tree:
        print(f"{node['node']}")
        if "error" in node:
            print(f"  unreachable: {node['error']}")
            unhealthy = True
            continue
        for env in node.get("environments", []):
            print(
                f"  {env.get('project', '?')}/{env.get('environment', '?')} ({env['env_id']}) "
                f"generation {env.get('generation', 0)}, port {env.get('listen_port')}"
            )
            for peer in env.get("peers", []):
                hs = int(peer.get("last_handshake", 0))
                age = f"{now - hs:.0f}s ago" if hs else "never"
                print(
                    f"    peer {peer.get('node')}: {peer.get('endpoint', '-')}, handshake {age}, "
                    f"rx {peer.get('rx_bytes', 0)} B, tx {peer.get('tx_bytes', 0)} B"
                )
            for inst in env.get("instances", []):
                addrs = ", ".join(a for a in (inst.get("ipv4"), inst.get("ipv6")) if a)
                print(f"    instance {inst['service']}#{inst.get('index', 0)}: {addrs}")
            for rec in env.get("records", []):
                print(f"    dns {rec['name']} {rec['type']} {rec['value']} ttl {rec.get('ttl', 0)}")
            drift = env.get("drift", [])
            if drift:
                unhealthy = True
            print(f"    drift: {'; '.join(drift) if drift else 'none'}")
            for line in env.get("lost", []):
                print(f"    lost: {line}")
    return 1 if unhealthy else 0
