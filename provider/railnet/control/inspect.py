"""Operator reads across the cluster: where an instance runs, and every node's status.

Both ask every agent in parallel; ``railnet exec``, ``railnet status``, the demo and the
benchmarks use them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from railnet.control.client import AgentAddress, AgentClient, agent_address
from railnet.control.cluster import Cluster, store_address
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_dns_label, environment_id
from railnet.core.store_keys import alive_key
from railnet.store.etcd import EtcdStore


def clients(cluster: Cluster, timeout: float = 30.0) -> list[AgentClient]:
    """Read-only clients of every node (with the operator certificate, when there is one)."""
    return [
        AgentClient(agent_address(cluster, n, read_only=True), timeout=timeout)
        for n in cluster.names
    ]


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


class InstanceElsewhere(RailnetError):
    """The instance runs on another node than the one asked."""

    def __init__(self, target: str, node: str, host: str) -> None:
        self.target = target
        self.node = node
        self.host = host
        super().__init__(
            f"{target} runs on node {host}, not on this node ({node}): run the command on {host}"
        )


def find_local_instance(address: AgentAddress, target: Target) -> str:
    """The namespace of ``target`` on the node whose agent is at ``address`` (its local
    socket): that agent alone is asked. An instance on another node raises
    ``InstanceElsewhere`` naming that node, read from the environment's document when this
    node holds it (hosting or keeping it)."""
    env_id = environment_id(target.project, target.environment)
    name = f"{target.project}/{target.environment}/{target.service}"
    with AgentClient(address, timeout=10.0) as client:
        reply = client.status(env_id)
        node = reply.node or address.node
        for env in reply.environments:
            for inst in env.instances:
                if inst.service == target.service and inst.index == target.index:
                    return str(inst.netns)
        text = client.document(env_id)
    if text is None:
        raise InvalidField(
            "target",
            name,
            f"node {node} holds nothing of {target.project}/{target.environment}: run the "
            "command on the node that hosts the instance ('railnet status' lists them)",
        )
    doc = EnvironmentDocument.from_json(text)
    service = doc.service(target.service)
    if service is None:
        raise InvalidField("target", name, f"no such service in {doc.project}/{doc.environment}")
    if target.index >= len(service.instances):
        raise InvalidField(
            "target",
            f"{name}#{target.index}",
            f"the service has {len(service.instances)} replicas (#0 to "
            f"#{len(service.instances) - 1})",
        )
    host = service.instances[target.index].node
    if host == node:
        raise RailnetError(
            f"{name}#{target.index} belongs on this node ({node}) but its agent does not run "
            "it yet: see 'railnet status' for drift"
        )
    raise InstanceElsewhere(f"{name}#{target.index}", node, host)


@dataclass(frozen=True)
class Holding:
    """An environment a node holds something of."""

    env_id: str
    name: str
    """``project/environment``."""
    hosted: bool
    """True: it hosts instances or peers; False: it only keeps the document."""


def node_holdings(cluster: Cluster, node: str) -> list[Holding]:
    """Every environment ``node`` holds (hosts, or keeps the document of), asked of its
    agent; ``AgentUnreachable`` when it does not answer."""
    with AgentClient(agent_address(cluster, node, read_only=True), timeout=10.0) as client:
        reply = client.status()
    found: dict[str, Holding] = {}
    for doc in reply.documents:
        found[doc.env_id] = Holding(doc.env_id, f"{doc.project}/{doc.environment}", doc.hosted)
    for env in reply.environments:  # agents before the documents field list only these
        if env.env_id not in found or not found[env.env_id].hosted:
            name = f"{env.project}/{env.environment}" if env.project else env.env_id
            found[env.env_id] = Holding(env.env_id, name, True)
    return sorted(found.values(), key=lambda h: h.name)


def status_report(cluster: Cluster) -> list[dict[str, Any]]:
    """Every node's Status reply in plain typed form (``railnet.core.status.assess`` judges
    it); a node that does not answer is ``{"node": NAME, "error": WHY}``."""
    agents = clients(cluster)

    def ask(client: AgentClient) -> dict[str, Any]:
        with client:
            try:
                reply = client.status()
            except RailnetError as exc:
                return {"node": client.target.node, "error": str(exc)}
        return {
            "node": reply.node or client.target.node,
            "environments": [_environment(e) for e in reply.environments],
        }

    with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
        found = list(pool.map(ask, agents))
    if cluster.store is not None:
        with EtcdStore(store_address(cluster, read_only=True)) as store:
            for node in found:
                _, entry = store.get(alive_key(str(node["node"])))
                node["store"] = "not alive" if entry is None else "alive"
    return found


def _environment(env: Any) -> dict[str, Any]:
    return {
        "env_id": env.env_id,
        "project": env.project,
        "environment": env.environment,
        "generation": int(env.generation),
        "netns": env.netns,
        "listen_port": int(env.listen_port),
        "public_key": env.public_key,
        "peers": [
            {
                "node": p.node,
                "public_key": p.public_key,
                "endpoint": p.endpoint,
                "last_handshake": int(p.last_handshake),
                "rx_bytes": int(p.rx_bytes),
                "tx_bytes": int(p.tx_bytes),
                "allowed_ips": list(p.allowed_ips),
            }
            for p in env.peers
        ],
        "instances": [
            {
                "service": i.service,
                "service_id": i.service_id,
                "index": int(i.index),
                "netns": i.netns,
                "ipv4": i.ipv4,
                "ipv6": i.ipv6,
            }
            for i in env.instances
        ],
        "records": [
            {"name": r.name, "type": r.type, "value": r.value, "ttl": int(r.ttl)}
            for r in env.records
        ],
        "drift": list(env.drift),
        "lost": list(env.lost),
    }
