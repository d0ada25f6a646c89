"""``railnet exec``, ``railnet build-exec`` and ``railnet status``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from railnet.agent.config import DEFAULT_CONFIG, DEFAULT_SOCKET, read_config_file
from railnet.cli.errors import (
    EXIT_CANNOT_RUN,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROBLEM,
    need_root,
)
from railnet.control.client import AgentAddress, agent_address
from railnet.control.cluster import Cluster, load_cluster
from railnet.control.inspect import (
    Target,
    find_instance,
    find_local_instance,
    status_report,
)
from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_node_name
from railnet.core.status import assess, status_lines, unhealthy
from railnet.linux.sandbox import exec_in_netns, run_without_network
from railnet.pki.certs import TlsFiles

DEFAULT_CLUSTER = Path("railnet-lab/cluster.json")
EXEC_COMMANDS = ("exec", "build-exec")


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
        p = subparsers.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. It runs on the node that hosts the "
            "instance: the local agent (its unix socket) says where the instance is, and "
            "an instance on another node fails naming that node. No cluster file is needed.",
            epilog="exit status: the command's own; 125 when railnet itself fails (bad "
            "arguments, no agent, the instance elsewhere), 126 when the command is not "
            "executable, 127 when it is not found.",
        )
        p.add_argument("target", help="PROJECT/ENV/SERVICE[#i]; #i is the replica, default #0")
        p.add_argument(
            "cmd",
            nargs="*",
            metavar="-- CMD",
            help="the command and its arguments, after '--' (flags go before it)",
        )
        where = p.add_argument_group("which agent is asked (default: this node's)")
        where.add_argument(
            "--agent-config",
            type=Path,
            metavar="FILE",
            help="the local agent's config file, for its node name, socket and CA "
            f"(default: $RAILNET_AGENT_CONFIG, else {DEFAULT_CONFIG})",
        )
        where.add_argument(
            "--socket",
            type=Path,
            metavar="PATH",
            help="the local agent's unix socket (default: $RAILNET_AGENT_SOCKET, else the "
            f"config's unix: listen address, else {DEFAULT_SOCKET})",
        )
        where.add_argument(
            "--node",
            metavar="NAME",
            help="a lab node: ask the agent the cluster file names for NAME (its unix "
            "socket, the file's operator certificate) instead of the agent config (default: "
            "none, this node's agent)",
        )
        where.add_argument(
            "--cluster",
            type=Path,
            metavar="FILE",
            help="with --node: the cluster file (default: $RAILNET_CLUSTER, else "
            f"{DEFAULT_CLUSTER}); alone: find the hosting node in FILE, which must be on "
            "this machine (as a lab's nodes are)",
        )
        where.add_argument(
            "--tls-ca",
            type=Path,
            metavar="FILE",
            help="the CA certificate the agent's must chain to (default: the config's tls_ca)",
        )
        where.add_argument(
            "--tls-cert",
            type=Path,
            metavar="FILE",
            help="the operator certificate to present (default: operator.pem beside the CA)",
        )
        where.add_argument(
            "--tls-key",
            type=Path,
            metavar="FILE",
            help="its private key (default: operator-key.pem beside the CA)",
        )
        p.set_defaults(func=func)


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise InvalidField("cmd", "", "give the command after '--'")
    return cmd


def local_agent(args: argparse.Namespace) -> AgentAddress:
    """The agent of this node, from the agent config (or a lab node's, with ``--node``)."""
    socket = args.socket or _env_path("RAILNET_AGENT_SOCKET")
    if args.node is not None:
        cluster = cluster_from_flag(args.cluster)
        entry = cluster.node(args.node)
        if not entry.agent.startswith("unix:"):
            raise RailnetError(
                f"node {entry.name}'s agent is at {entry.agent}, not on this machine: run "
                f"the command on {entry.name}"
            )
        found = agent_address(cluster, entry.name, read_only=True)
        return AgentAddress(found.node, f"unix:{socket}" if socket else found.address, found.tls)
    path = args.agent_config or _env_path("RAILNET_AGENT_CONFIG") or DEFAULT_CONFIG
    if not path.exists():
        raise RailnetError(
            f"no agent config at {path}: run this on a node (its agent.toml names the node, "
            "its socket and CA), or pass --agent-config FILE, or --node NAME for a lab node"
        )
    config = read_config_file(path)
    node = check_node_name(f"node (in {path})", config.get("node"))
    if socket is None:
        unix = [a for a in config.get("listen", []) if a.startswith("unix:")]
        socket = Path(unix[0][5:]) if unix else DEFAULT_SOCKET
    if config.get("insecure"):
        return AgentAddress(node, f"unix:{socket}", None)
    ca = args.tls_ca or (Path(config["tls_ca"]) if config.get("tls_ca") else None)
    if ca is None:
        raise RailnetError(f"{path} names no tls_ca; pass --tls-ca FILE (the cluster CA)")
    cert = args.tls_cert or ca.parent / "operator.pem"
    key = args.tls_key or ca.parent / "operator-key.pem"
    for flag, file in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if not file.is_file():
            raise RailnetError(
                f"{flag} {file} does not exist: an operator certificate is needed to ask the "
                "agent (copy operator.pem and operator-key.pem from 'railnet certs init' "
                f"beside {ca.name}, or pass {flag})"
            )
    return AgentAddress(node, f"unix:{socket}", TlsFiles(ca, cert, key))


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def instance_netns(args: argparse.Namespace) -> str:
    """The namespace of the target instance on this machine; an error naming the node
    that hosts it when that is another."""
    target = Target.parse(args.target)
    if args.cluster is not None and args.node is None:
        cluster = cluster_from_flag(args.cluster)
        node, namespace = find_instance(cluster, target)
        agent = cluster.node(node).agent
        if not agent.startswith("unix:"):
            raise RailnetError(
                f"{args.target} runs on node {node}, whose agent is at {agent}, not on this "
                f"machine: run the command on {node}"
            )
        return namespace
    return find_local_instance(local_agent(args), target)


def runnable(command: str, cmd: list[str]) -> int:
    """0 when ``cmd[0]`` can be run; else what a shell exits with (127 not found, 126 not
    executable), after saying so in one line."""
    program = cmd[0]
    if shutil.which(program) is not None:
        return EXIT_OK
    if "/" in program and os.path.exists(program):
        reason = "is a directory" if os.path.isdir(program) else "permission denied"
        print(f"railnet {command}: {program}: {reason}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(f"railnet {command}: {program}: command not found", file=sys.stderr)
    return EXIT_NOT_FOUND


def run_exec(args: argparse.Namespace) -> int:
    cmd = _command(args)
    need_root("railnet exec", "it enters the instance's network namespace")
    namespace = instance_netns(args)
    status = runnable("exec", cmd)
    if status:
        return status
    exec_in_netns(namespace, cmd)
    return EXIT_NOT_FOUND  # not reached


def run_build_exec(args: argparse.Namespace) -> int:
    cmd = _command(args)
    need_root("railnet build-exec", "it makes a network namespace with no network")
    instance_netns(args)
    status = runnable("build-exec", cmd)
    if status:
        return status
    return run_without_network(cmd)


def add_status_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status",
        help="per node and environment: peers, instances, DNS and drift",
        description="Ask every node of the cluster file for its status: per environment, the "
        "peers with their last handshake (stale past 180 s: no WireGuard session), bytes, "
        "the instances with their health, the DNS records as counts, and drift with the "
        "repair the agent makes next. Exits 0 when every node answered without drift, 1 "
        "otherwise, with --json too.",
    )
    p.add_argument(
        "--cluster",
        type=Path,
        metavar="FILE",
        help=f"the cluster file (default: $RAILNET_CLUSTER, else {DEFAULT_CLUSTER})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the stable JSON form instead: typed values, every field always present",
    )
    p.add_argument(
        "--verbose", "-v", action="store_true", help="also list every DNS record (text form)"
    )
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    report = assess(status_report(cluster_from_flag(args.cluster)), time.time())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(status_lines(report, verbose=args.verbose)))
    return EXIT_PROBLEM if unhealthy(report) else EXIT_OK
