"""``railnet exec``, ``railnet build-exec`` and ``railnet status``."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from railnet.agent.client import AgentClient, agent_address
from railnet.agent.netns import create_netns, delete_netns, netlink
from railnet.core.cluster import Cluster
from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_dns_label, environment_id

DEFAULT_CLUSTER = Path("railnet-lab/cluster.json")


def load_cluster(path: Path | None) -> Cluster:
    path = path or Path(os.environ.get("RAILNET_CLUSTER", DEFAULT_CLUSTER))
    try:
        text = path.read_text()
    except OSError as exc:
        raise RailnetError(
            f"cannot read cluster file {path}: {exc.strerror}; start a lab with "
            "'railnet lab up' or pass --cluster"
        ) from None
    return Cluster.from_json(text, base=str(path.resolve().parent), source=str(path))


def clients(cluster: Cluster, timeout: float = 30.0) -> list[AgentClient]:
    return [AgentClient(agent_address(cluster, n), timeout=timeout) for n in cluster.names]


@dataclass(frozen=True)
class Target:
    project: str
    environment: str
    service: str
    index: int

    @classmethod
    def parse(cls, text: str) -> Target:
        path, _, index_text = text.partition("#")
        parts = path.split("/")
        if len(parts) != 3:
            raise InvalidField("target", text, "must be PROJECT/ENV/SERVICE[#i]")
        project, environment, service = parts
        check_dns_label("project", project)
        check_dns_label("environment", environment)
        check_dns_label("service", service)
        try:
            index = int(index_text) if index_text else 0
        except ValueError:
            raise InvalidField("target", text, "the replica after '#' must be a number") from None
        if index < 0:
            raise InvalidField("target", text, "the replica after '#' must be >= 0")
        return cls(project, environment, service, index)


def find_instance(cluster: Cluster, target: Target) -> tuple[str, str]:
    """(node, namespace) of the target instance, asked of every agent in parallel."""
    env_id = environment_id(target.project, target.environment)
    agents = clients(cluster)

    def ask(client: AgentClient) -> Any:
        with client:
            return client.status(env_id)

    with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
        replies = list(pool.map(ask, agents))
    replicas = 0
    for reply in replies:
        for env in reply.environments:
            for inst in env.instances:
                if inst.service == target.service:
                    replicas += 1
                    if inst.index == target.index:
                        return reply.node, inst.netns
    name = f"{target.project}/{target.environment}/{target.service}"
    if replicas:
        raise InvalidField(
            "target", f"{name}#{target.index}", f"the service has {replicas} replicas"
        )
    raise InvalidField("target", name, "no such service runs in the cluster")


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
    _, namespace = find_instance(load_cluster(args.cluster), Target.parse(args.target))
    sys.stdout.flush()
    # ip netns exec also binds /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
    os.execvp("ip", ["ip", "netns", "exec", namespace, *cmd])
    return 127  # not reached


def run_build_exec(args: argparse.Namespace) -> int:
    cmd = _command(args)
    find_instance(load_cluster(args.cluster), Target.parse(args.target))
    name = f"rb-{secrets.token_hex(4)}"
    create_netns(name)
    etc = Path("/etc/netns") / name
    try:
        netlink(name, lambda ns: ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up"))
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("# build phase: no private network, no resolver\n")
        return subprocess.call(["ip", "netns", "exec", name, *cmd])
    finally:
        delete_netns(name)
        shutil.rmtree(etc, ignore_errors=True)


def add_status_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="peers, handshakes, bytes, records and drift")
    p.add_argument("--cluster", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_status)


def status_tree(cluster: Cluster) -> list[dict[str, Any]]:
    from google.protobuf.json_format import MessageToDict

    agents = clients(cluster)

    def ask(client: AgentClient) -> dict[str, Any]:
        with client:
            try:
                return dict(MessageToDict(client.status(), preserving_proto_field_name=True))
            except RailnetError as exc:
                return {"node": client.target.node, "error": str(exc)}

    with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
        return list(pool.map(ask, agents))


def run_status(args: argparse.Namespace) -> int:
    tree = status_tree(load_cluster(args.cluster))
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
    return 1 if unhealthy else 0
