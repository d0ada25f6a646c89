"""``railnet cluster``: read and edit the cluster's membership (nodes, agent addresses,
cordons).

A cluster with a control store keeps its membership in etcd: every edit there is one
compared transaction (``railnet.control.membership``), so two runners never disagree. A
cluster file without a store lists its nodes itself: every edit reads the file, checks it,
changes one thing, checks the result and replaces the file atomically, so a crash or a bad
argument never leaves half a cluster file.
Exit codes: 0 done; 1 refused to keep the cluster safe (``remove-node`` of a node that
still holds environments, or whose agent cannot be asked); 2 bad input or an unreadable
file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from railnet.cli.runtime import DEFAULT_CLUSTER
from railnet.control.cluster import (
    Cluster,
    ClusterNode,
    cluster_json,
    load_cluster,
    load_cluster_object,
    new_cluster_file,
    read_members,
    store_address,
    with_cordon,
    with_membership,
    with_node,
    without_node,
)
from railnet.control.inspect import node_holdings
from railnet.control.membership import add_member, remove_member, set_cordon
from railnet.control.migrate import move_documents_in
from railnet.core.errors import AgentUnreachable, InvalidField
from railnet.linux.files import write_atomic
from railnet.store.etcd import EtcdStore

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def add_cluster_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="show and edit the cluster file: nodes, agent addresses, cordons",
        description="Show and edit the cluster file (docs/cluster.md). The file is "
        f"--cluster FILE, else $RAILNET_CLUSTER, else {DEFAULT_CLUSTER}. Exit codes: 0 done, "
        "1 refused to keep the cluster safe, 2 bad input.",
    )
    sub = p.add_subparsers(dest="cluster_command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument(
            "--cluster",
            type=Path,
            metavar="FILE",
            help=f"the cluster file (default: $RAILNET_CLUSTER, else {DEFAULT_CLUSTER})",
        )
        return c

    show = command("show", "list the nodes, their agents and cordons")
    show.add_argument("--json", action="store_true", help="print the stable JSON form")
    show.set_defaults(func=run_show)

    add = command("add-node", "add a node (creates the file when it does not exist)")
    add.add_argument("node", metavar="NAME", help="the node's name, e.g. node-4")
    add.add_argument(
        "--agent",
        required=True,
        metavar="ADDR",
        help="its agent's gRPC address: host:port or unix:/PATH (required)",
    )
    add.add_argument(
        "--underlay", default="", metavar="IP", help="its underlay IP address (default: none)"
    )
    add.add_argument(
        "--cordoned", action="store_true", help="add it cordoned: it takes no instance yet"
    )
    how = add.add_mutually_exclusive_group()
    how.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="for a new file: the directory 'railnet certs init' wrote (relative to the "
        "file's directory, or absolute); the file then names its provider and operator "
        "certificates (default: none; a new file needs this or --insecure)",
    )
    how.add_argument(
        "--insecure",
        action="store_true",
        help="for a new file: the agents serve plaintext (--insecure agents; never in production)",
    )
    add.set_defaults(func=run_add_node)

    remove = command(
        "remove-node",
        "remove a node; refused while it holds any environment (drain it first)",
    )
    remove.add_argument("node", metavar="NAME", help="the node to remove")
    remove.add_argument(
        "--force",
        action="store_true",
        help="remove it even when its agent cannot be asked (a dead node); its environments "
        "forget it at their next deploy",
    )
    remove.set_defaults(func=run_remove_node)

    move = command(
        "move-to-store",
        "move the file's nodes into the control store (etcd); the file then names only the "
        "store and the TLS material",
    )
    move.add_argument(
        "--store-endpoint",
        dest="store_endpoints",
        action="append",
        required=True,
        metavar="ADDR",
        help="an etcd member, host:port or unix:/PATH (required; repeat for each member)",
    )
    move.add_argument(
        "--store-server-name",
        default="",
        metavar="NAME",
        help="the name the members' certificates carry, when an endpoint is not that name "
        "(default: none)",
    )
    move.set_defaults(func=run_move_to_store)

    for name, cordoned, text in (
        ("cordon", True, "cordon a node: the next deploy moves its replicas and keepers away"),
        ("uncordon", False, "uncordon a node: it takes new instances again"),
    ):
        c = command(name, text)
        c.add_argument("node", metavar="NAME", help="the node's name in the cluster file")
        c.set_defaults(func=run_cordon, cordoned=cordoned)


def cluster_path(flag: Path | None) -> tuple[Path, str]:
    """The cluster file to edit, and where its name came from."""
    if flag is not None:
        return flag, "--cluster"
    from_env = os.environ.get("RAILNET_CLUSTER")
    if from_env:
        return Path(from_env), "RAILNET_CLUSTER"
    return DEFAULT_CLUSTER, "the default"


def _write(path: Path, raw: dict[str, Any]) -> Cluster:
    write_atomic(path, cluster_json(raw).encode(), 0o644)
    return load_cluster(path, "the edited file")


def _fail(command: str, message: str, code: int) -> int:
    print(f"railnet cluster {command}: {message}", file=sys.stderr)
    return code


def run_show(args: argparse.Namespace) -> int:
    path, origin = cluster_path(args.cluster)
    cluster = load_cluster(path, origin, "pass --cluster FILE, or create one with add-node")
    if args.json:
        print(json.dumps(show_json(cluster, path), indent=2))
        return EXIT_OK
    tls = "mutual TLS" if cluster.tls else "plaintext (insecure agents)"
    if cluster.operator is not None:
        tls += ", operator certificate for reads"
    where = (
        f"control store {', '.join(cluster.store.endpoints)}"
        if cluster.store is not None
        else "listed in the file"
    )
    print(f"{path}: {len(cluster.nodes)} nodes ({where}), {tls}")
    width = max((len(n.name) for n in cluster.nodes), default=0)
    for n in cluster.nodes:
        extra = [f"underlay {n.underlay}"] if n.underlay else []
        if n.cordoned:
            extra.append("cordoned")
        print(f"  {n.name:<{width}}  {n.agent}" + ("  " + ", ".join(extra) if extra else ""))
    return EXIT_OK


def show_json(cluster: Cluster, path: Path) -> dict[str, Any]:
    """``railnet cluster show --json``: a stable contract (docs/cluster.md)."""

    def tls(paths: Any) -> dict[str, str] | None:
        return None if paths is None else {"ca": paths.ca, "cert": paths.cert, "key": paths.key}

    return {
        "file": str(path.resolve()),
        "nodes": [
            {"name": n.name, "agent": n.agent, "underlay": n.underlay, "cordoned": n.cordoned}
            for n in cluster.nodes
        ],
        "tls": tls(cluster.tls),
        "operator": tls(cluster.operator),
        "store": None
        if cluster.store is None
        else {"endpoints": list(cluster.store.endpoints), "server_name": cluster.store.server_name},
    }


def run_add_node(args: argparse.Namespace) -> int:
    path, origin = cluster_path(args.cluster)
    node = ClusterNode(args.node, args.agent, args.underlay, cordoned=args.cordoned)
    if path.exists():
        if args.tls_dir is not None or args.insecure:
            return _fail(
                "add-node",
                f"{path} exists; --tls-dir and --insecure only shape a new file",
                EXIT_BAD_INPUT,
            )
        cluster = load_cluster(path, origin)
        if cluster.store is not None:
            with EtcdStore(store_address(cluster)) as store:
                add_member(store, node)
            state = " (cordoned)" if args.cordoned else ""
            count = len(cluster.nodes) + 1
            print(f"added {args.node}{state} at {args.agent} to the control store; {count} nodes")
            return EXIT_OK
        raw = load_cluster_object(path, origin)
    elif args.tls_dir is None and not args.insecure:
        return _fail(
            "add-node",
            f"{path} does not exist; to create it, say how agents are reached: --tls-dir DIR "
            "(from 'railnet certs init') or --insecure",
            EXIT_BAD_INPUT,
        )
    else:
        raw = new_cluster_file(args.tls_dir)
    node = ClusterNode(args.node, args.agent, args.underlay, cordoned=args.cordoned)
    cluster = _write(path, with_node(raw, node))
    state = " (cordoned)" if args.cordoned else ""
    print(f"added {args.node}{state} at {args.agent} to {path}; {len(cluster.nodes)} nodes")
    return EXIT_OK


def run_remove_node(args: argparse.Namespace) -> int:
    path, origin = cluster_path(args.cluster)
    cluster = load_cluster(path, origin)
    cluster.node(args.node)  # an unknown node is bad input, named with the known ones
    try:
        held = node_holdings(cluster, args.node)
    except AgentUnreachable as exc:
        if not args.force:
            return _fail(
                "remove-node",
                f"{exc}; cannot tell whether it still holds environments: start its agent, "
                "or pass --force for a dead node",
                EXIT_REFUSED,
            )
        held = []
    if held:
        listed = ", ".join(
            f"{h.name} ({'hosts it' if h.hosted else 'keeps its document'})" for h in held
        )
        hint = (
            ""
            if cluster.node(args.node).cordoned
            else f"'railnet cluster cordon {args.node}', then "
        )
        return _fail(
            "remove-node",
            f"node {args.node} still holds {listed}; drain it first: {hint}deploy each of "
            "those environments ('pulumi up'), then remove it",
            EXIT_REFUSED,
        )
    if cluster.store is not None:
        with EtcdStore(store_address(cluster)) as store:
            remove_member(store, args.node)
        left = len(cluster.nodes) - 1
        print(f"removed {args.node} from the control store; {left} nodes left")
        return EXIT_OK
    cluster = _write(path, without_node(load_cluster_object(path, origin), args.node))
    print(f"removed {args.node} from {path}; {len(cluster.nodes)} nodes left")
    return EXIT_OK


def run_move_to_store(args: argparse.Namespace) -> int:
    """Write every node of a cluster file into the store (a node already there with the
    same record is kept; a different one is refused, naming it), then rewrite the file
    without its nodes. Run again, it changes nothing."""
    path, origin = cluster_path(args.cluster)
    raw = load_cluster_object(path, origin)
    if raw.get("store") is not None:
        return _fail("move-to-store", f"{path} already names a control store", EXIT_BAD_INPUT)
    moved = dict(raw)
    entries = moved.pop("nodes")
    moved["store"] = {"endpoints": list(args.store_endpoints)}
    if args.store_server_name:
        moved["store"]["server_name"] = args.store_server_name
    try:
        target = Cluster.from_dict(moved, base=str(path.resolve().parent), source=str(path))
    except InvalidField as exc:
        if exc.field.startswith("cluster.store.endpoints"):
            raise InvalidField("--store-endpoint", exc.value, exc.reason) from None
        raise
    nodes = Cluster.from_dict(raw).nodes
    extras = [
        {k: v for k, v in e.items() if k in ("agent_tcp", "netns")}
        for e in entries
        if isinstance(e, dict)
    ]
    with EtcdStore(store_address(target)) as store:
        _, present = read_members(store)
        there = {n.name: n for n in present}
        for node, extra in zip(nodes, extras, strict=True):
            if node.name in there:
                if there[node.name] != node:
                    return _fail(
                        "move-to-store",
                        f"node {node.name} is already in the store with another record "
                        f"({there[node.name].agent}); remove it there or from the file first",
                        EXIT_REFUSED,
                    )
                continue
            add_member(store, node, extra)
    # The documents next, while the file still lists the nodes: should a node not answer,
    # the file is as it was and the command can run again.
    environments = move_documents_in(with_membership(target))
    write_atomic(path, cluster_json(moved).encode(), 0o644)
    print(
        f"moved {len(nodes)} nodes and {len(environments)} environments from {path} into the "
        f"control store at {', '.join(args.store_endpoints)}; {path} now names only the store"
    )
    for name in environments:
        print(f"  {name}")
    return EXIT_OK


def run_cordon(args: argparse.Namespace) -> int:
    path, origin = cluster_path(args.cluster)
    cluster = load_cluster(path, origin)
    was = cluster.node(args.node).cordoned
    if cluster.store is not None:
        with EtcdStore(store_address(cluster)) as store:
            was = set_cordon(store, args.node, args.cordoned)
        path = Path("the control store")
    else:
        _write(path, with_cordon(load_cluster_object(path, origin), args.node, args.cordoned))
    if args.cordoned:
        verb = "was already cordoned" if was else "cordoned"
        print(
            f"{args.node} {verb} in {path}; the next deploy of each environment moves its "
            f"replicas and document copies away, then 'railnet cluster remove-node {args.node}'"
        )
    else:
        print(f"{args.node} {'uncordoned' if was else 'was not cordoned'} in {path}")
    return EXIT_OK
