"""What one node must hold for one environment, derived from the environment document.

Every agent computes this from the document alone, so a node rebuilt after a reboot ends
up exactly where it was.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

from railnet.core.addressing import LINK_LOCAL_GATEWAY6
from railnet.core.document import EnvironmentDocument, InstanceEntry, ServiceEntry
from railnet.core.names import environment_netns, instance_netns, veth_ifname, wireguard_ifname


@dataclass(frozen=True)
class InstancePlacement:
    """One service instance hosted on this node."""

    service_id: str
    service: str
    """The service's current DNS name (informational: kernel names use ``service_id``)."""
    index: int
    """The replica's position in the service's instance list (0-based)."""
    netns: str
    veth: str
    """The veth end that stays in the environment namespace."""
    ipv4: str | None
    ipv6: str

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(a for a in (self.ipv4, self.ipv6) if a is not None)


@dataclass(frozen=True)
class PeerSpec:
    """The same environment on another node."""

    node: str
    public_key: str
    endpoint: str
    allowed_ips: tuple[str, ...]
    """Exactly the instance addresses hosted on that node, as /32 and /128 networks."""


@dataclass(frozen=True)
class LocalEnvironment:
    """Everything this node must hold for one environment."""

    env_id: str
    node: str
    netns: str
    wg_ifname: str
    """The WireGuard link's name in the host namespace (and its UAPI socket name)."""
    ipv4_cidr: str | None
    ipv6_prefix: str
    gateway4: str | None
    gateway6: str
    """Link-local: the same on every instance's veth, like a default gateway should be."""
    resolver4: str | None
    resolver6: str
    domain: str
    peers: tuple[PeerSpec, ...]
    instances: tuple[InstancePlacement, ...]

    @property
    def resolvers(self) -> tuple[str, ...]:
        return tuple(a for a in (self.resolver4, self.resolver6) if a is not None)


def host_route(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


def local_environment(doc: EnvironmentDocument, node: str, netns_prefix: str) -> LocalEnvironment:
    plan = doc.addresses
    instances: list[InstancePlacement] = []
    hosted: dict[str, list[str]] = {}
    # Every instance of the environment passes here, on every apply: kept lean.
    for svc in doc.services:
        for index, inst in enumerate(svc.instances):
            routes = hosted.get(inst.node)
            if routes is None:
                routes = hosted[inst.node] = []
            routes.extend(_routes_of(inst))
            if inst.node == node:
                instances.append(_placement(doc.id, svc, index, netns_prefix))
    peers = tuple(
        PeerSpec(
            node=n.name,
            public_key=n.public_key,
            endpoint=n.endpoint,
            allowed_ips=tuple(sorted(hosted.get(n.name, []))),
        )
        for n in sorted(doc.nodes, key=lambda n: n.name)
        if n.name != node
    )
    return LocalEnvironment(
        env_id=doc.id,
        node=node,
        netns=environment_netns(netns_prefix, doc.id),
        wg_ifname=wireguard_ifname(netns_prefix, doc.id),
        ipv4_cidr=None if plan.ipv4 is None else str(plan.ipv4),
        ipv6_prefix=str(plan.ipv6),
        gateway4=None if plan.gateway4 is None else str(plan.gateway4),
        gateway6=LINK_LOCAL_GATEWAY6,
        resolver4=None if plan.resolver4 is None else str(plan.resolver4),
        resolver6=str(plan.resolver6),
        domain=doc.domain,
        peers=peers,
        instances=tuple(sorted(instances, key=lambda i: i.netns)),
    )


def local_environment_after(
    previous: EnvironmentDocument,
    before: LocalEnvironment,
    doc: EnvironmentDocument,
    netns_prefix: str,
) -> LocalEnvironment:
    """``local_environment(doc, before.node, netns_prefix)``, derived from ``before`` (this
    node's part of ``previous``) by reading only the services that differ: an apply that
    adds one service costs that service, not the environment. When more than services
    differ (the address plan, the domain), it is derived whole."""
    node = before.node
    if (doc.id, doc.ipv4_cidr, doc.domain) != (previous.id, previous.ipv4_cidr, previous.domain):
        return local_environment(doc, node, netns_prefix)
    gone, came = doc.services_changed_from(previous)
    if not gone and not came and doc.nodes == previous.nodes:
        return before
    dropped = {s.id for s in gone}
    instances = [i for i in before.instances if i.service_id not in dropped]
    routes = {p.node: list(p.allowed_ips) for p in before.peers}
    try:
        for svc in gone:
            for inst in svc.instances:
                if inst.node != node:
                    for route in _routes_of(inst):
                        routes[inst.node].remove(route)
    except (KeyError, ValueError):  # ``before`` is not ``previous``'s part: derive it whole
        return local_environment(doc, node, netns_prefix)
    for svc in came:
        for index, inst in enumerate(svc.instances):
            if inst.node == node:
                instances.append(_placement(doc.id, svc, index, netns_prefix))
            else:
                kept = routes.setdefault(inst.node, [])
                for route in _routes_of(inst):
                    bisect.insort(kept, route)
    peers = tuple(
        PeerSpec(
            node=n.name,
            public_key=n.public_key,
            endpoint=n.endpoint,
            allowed_ips=tuple(routes.get(n.name, ())),
        )
        for n in sorted(doc.nodes, key=lambda n: n.name)
        if n.name != node
    )
    return replace(before, peers=peers, instances=tuple(sorted(instances, key=lambda i: i.netns)))


def _routes_of(inst: InstanceEntry) -> tuple[str, ...]:
    if inst.ipv4 is None:
        return (inst.ipv6 + "/128",)
    return (inst.ipv4 + "/32", inst.ipv6 + "/128")


def _placement(env_id: str, svc: ServiceEntry, index: int, netns_prefix: str) -> InstancePlacement:
    inst = svc.instances[index]
    return InstancePlacement(
        service_id=svc.id,
        service=svc.name,
        index=index,
        netns=instance_netns(netns_prefix, env_id, svc.id, index),
        veth=veth_ifname(env_id, svc.id, index),
        ipv4=inst.ipv4,
        ipv6=inst.ipv6,
    )
