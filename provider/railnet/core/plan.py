"""The network plan: what a change of an environment's desired state does to the network.

``plan_change(old, new)`` compares two environment documents (either may be ``None``: the
environment appears or goes away) and returns an ``EnvironmentPlan``: services added,
removed, renamed, re-placed or scaled; DNS names and addresses that appear or disappear,
per family; WireGuard peers added or removed per node; namespaces created or destroyed;
and the consequences a reviewer must see. It is deterministic and ordered.

It is built from the same pieces the rest of railnet runs: the DNS records come from
``railnet.core.dns.zone_records`` (what the resolver will serve) and the per-node peers and
namespaces from ``railnet.core.local.local_environment`` and
``railnet.core.reconcile.plan_environment`` (what each agent's reconcile will do).
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from railnet.core.desired import early_reuse
from railnet.core.dns import zone_records
from railnet.core.document import EnvironmentDocument, IpMode, NodeEntry, ServiceEntry
from railnet.core.local import LocalEnvironment, local_environment
from railnet.core.reconcile import (
    CreateInstance,
    ObservedDevice,
    ObservedEnvironment,
    ObservedInstance,
    ObservedPeer,
    RemoveInstance,
    RemovePeer,
    SetPeer,
    plan_environment,
)

PLANNING_PREFIX = "plan"
"""Namespace prefix used while planning; plans name namespaces by what they hold."""


class Severity(enum.Enum):
    """How much a reviewer should care; ``--fail-on`` names these."""

    ADDRESS_CHANGE = "address-change"
    CONNECTIONS_DROP = "connections-drop"
    DELETE = "delete"
    REPLACE = "replace"
    RECORDS_REMOVED = "records-removed"


@dataclass(frozen=True)
class ServiceChange:
    service: str
    change: str
    """added, removed, renamed, scaled, re-placed."""
    detail: str


@dataclass(frozen=True)
class DnsChange:
    name: str
    rtype: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    pending: int = 0
    """Addresses added that no agent holds yet: the agents assign them at apply, so a plan
    names how many, never a guess."""


@dataclass(frozen=True)
class PeerChanges:
    node: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class NamespaceChange:
    node: str
    holds: str
    """``environment`` or ``<service>#<i>``."""
    created: bool


@dataclass(frozen=True)
class Consequence:
    severity: Severity
    message: str
    subject: str = field(default="", compare=False)
    """What it happens to: an instance (``api#0``), a service, or ``environment``."""


@dataclass(frozen=True)
class EnvironmentPlan:
    """Everything a change does to one environment's network, ordered for reading."""

    project: str
    environment: str
    env_id: str
    action: str
    """create, update, delete or same."""
    services: tuple[ServiceChange, ...] = ()
    dns: tuple[DnsChange, ...] = ()
    peers: tuple[PeerChanges, ...] = ()
    namespaces: tuple[NamespaceChange, ...] = ()
    consequences: tuple[Consequence, ...] = field(default=())
    counts: tuple[tuple[str, int], ...] = ()
    """(services before, services after) and the like, for summary tables."""

    @property
    def empty(self) -> bool:
        return not (self.services or self.dns or self.peers or self.namespaces or self.consequences)

    @property
    def severities(self) -> frozenset[Severity]:
        return frozenset(c.severity for c in self.consequences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "environment": self.environment,
            "env_id": self.env_id,
            "action": self.action,
            "services": [
                {"service": c.service, "change": c.change, "detail": c.detail}
                for c in self.services
            ],
            "dns": [
                {
                    "name": d.name,
                    "type": d.rtype,
                    "added": list(d.added),
                    "removed": list(d.removed),
                    "pending": d.pending,
                }
                for d in self.dns
            ],
            "peers": [
                {"node": p.node, "added": list(p.added), "removed": list(p.removed)}
                for p in self.peers
            ],
            "namespaces": [
                {"node": n.node, "holds": n.holds, "created": n.created} for n in self.namespaces
            ],
            "consequences": [
                {"severity": c.severity.value, "subject": c.subject, "message": c.message}
                for c in self.consequences
            ],
            "counts": dict(self.counts),
        }


# -- planning identities ---------------------------------------------------------------------


def planning_node(name: str) -> NodeEntry:
    """A stand-in identity for a node whose key is not known (a preview).

    Key and endpoint (in the IPv6 documentation range) are derived from the name alone, so
    they are distinct per node and the same in every plan."""
    digest = hashlib.sha256(f"plan\0{name}".encode()).digest()
    key = base64.b64encode(digest).decode()
    groups = ":".join(digest[i : i + 2].hex() for i in range(0, 12, 2))
    return NodeEntry(name=name, public_key=key, endpoint=f"[2001:db8:{groups}]:51820")


def planning_identities(
    nodes: Iterable[str], held: EnvironmentDocument | None
) -> dict[str, tuple[str, str]]:
    """Node name → (public key, endpoint) for planning a document over ``nodes``: the
    identities ``held`` records, and a stand-in (``planning_node``) for every other node."""
    known = {n.name: (n.public_key, n.endpoint) for n in held.nodes} if held else {}
    for name in nodes:
        if name not in known:
            entry = planning_node(name)
            known[name] = (entry.public_key, entry.endpoint)
    return known


def _instances(doc: EnvironmentDocument | None) -> dict[tuple[str, int], tuple[str, ServiceEntry]]:
    found: dict[tuple[str, int], tuple[str, ServiceEntry]] = {}
    for svc in doc.services if doc else ():
        for i, inst in enumerate(svc.instances):
            found[(svc.id, i)] = (inst.node, svc)
    return found


# -- the plan ------------------------------------------------------------------------------------


def plan_change(
    old: EnvironmentDocument | None, new: EnvironmentDocument | None, now: int | None = None
) -> EnvironmentPlan:
    """The plan of going from ``old`` to ``new``; ``now`` (seconds) judges quarantines."""
    if old is None and new is None:
        raise ValueError("plan_change needs at least one document")
    ref = new if new is not None else old
    assert ref is not None
    action = "create" if old is None else "delete" if new is None else "update"
    services = _service_changes(old, new)
    dns = _dns_changes(old, new)
    peers, namespaces = _node_changes(old, new)
    consequences = _consequences(old, new, services, now)
    if action == "update" and not (services or dns or peers or namespaces or consequences):
        action = "same"
    counts = (
        ("services_before", len(old.services) if old else 0),
        ("services_after", len(new.services) if new else 0),
        ("instances_before", sum(len(s.instances) for s in old.services) if old else 0),
        ("instances_after", sum(len(s.instances) for s in new.services) if new else 0),
    )
    return EnvironmentPlan(
        project=ref.project,
        environment=ref.environment,
        env_id=ref.id,
        action=action,
        services=services,
        dns=dns,
        peers=peers,
        namespaces=namespaces,
        consequences=consequences,
        counts=counts,
    )


def _service_changes(
    old: EnvironmentDocument | None, new: EnvironmentDocument | None
) -> tuple[ServiceChange, ...]:
    before = {s.id: s for s in old.services} if old else {}
    after = {s.id: s for s in new.services} if new else {}
    changes: list[ServiceChange] = []
    for sid, svc in after.items():
        nodes = [i.node for i in svc.instances]
        if sid not in before:
            detail = f"{len(nodes)} instance(s) on {_nodes(nodes)}" if nodes else "no instances"
            changes.append(ServiceChange(svc.name, "added", detail))
            continue
        was = before[sid]
        was_nodes = [i.node for i in was.instances]
        if was.name != svc.name:
            changes.append(ServiceChange(svc.name, "renamed", f"from {was.name}"))
        if len(was_nodes) != len(nodes):
            changes.append(
                ServiceChange(svc.name, "scaled", f"{len(was_nodes)} → {len(nodes)} instance(s)")
            )
        moved = [
            f"#{i} {a} → {b}"
            for i, (a, b) in enumerate(zip(was_nodes, nodes, strict=False))
            if a != b
        ]
        if moved:
            changes.append(ServiceChange(svc.name, "re-placed", ", ".join(moved)))
    for sid, svc in before.items():
        if sid not in after:
            changes.append(
                ServiceChange(svc.name, "removed", f"{len(svc.instances)} instance(s) stop")
            )
    order = {"removed": 0, "added": 1, "renamed": 2, "scaled": 3, "re-placed": 4}
    return tuple(sorted(changes, key=lambda c: (c.service, order[c.change])))


def _nodes(nodes: list[str]) -> str:
    return ", ".join(nodes) if nodes else "no node"


def _address_records(doc: EnvironmentDocument | None) -> dict[tuple[str, str], set[str]]:
    if doc is None:
        return {}
    shared = {f"{s.name}.{doc.domain}" for s in doc.services}
    found: dict[tuple[str, str], set[str]] = {}
    for record in zone_records(doc):
        if record.type in ("A", "AAAA") and record.name in shared:
            found.setdefault((record.name, record.type), set()).add(record.value)
    return found


def _dns_changes(
    old: EnvironmentDocument | None, new: EnvironmentDocument | None
) -> tuple[DnsChange, ...]:
    before, after = _address_records(old), _address_records(new)
    changes = []
    for key in sorted(set(before) | set(after), key=lambda k: (k[0], k[1] != "A", k[1])):
        added = tuple(sorted(after.get(key, set()) - before.get(key, set())))
        removed = tuple(sorted(before.get(key, set()) - after.get(key, set())))
        if added or removed:
            changes.append(DnsChange(key[0], key[1], added, removed))
    return tuple(changes)


def _with_planning_nodes(doc: EnvironmentDocument) -> EnvironmentDocument:
    """The document with stand-in identities, so that old and new compare by node name."""
    return replace(doc, nodes=tuple(planning_node(n.name) for n in doc.nodes))


def _as_observed(local: LocalEnvironment | None) -> ObservedEnvironment:
    """What a node holds once it has applied ``local`` (``None``: nothing)."""
    if local is None:
        return ObservedEnvironment.absent()
    device = ObservedDevice(
        public_key="",
        listen_port=0,
        peers=tuple(
            ObservedPeer(p.public_key, p.endpoint, frozenset(p.allowed_ips)) for p in local.peers
        ),
    )
    instances = tuple(
        ObservedInstance(netns=i.netns, addresses=i.addresses, linked=True, guard=i.addresses)
        for i in local.instances
    )
    return ObservedEnvironment(
        netns_exists=True, base_ready=True, device=device, instances=instances
    )


def _node_changes(
    old: EnvironmentDocument | None, new: EnvironmentDocument | None
) -> tuple[tuple[PeerChanges, ...], tuple[NamespaceChange, ...]]:
    old_p = _with_planning_nodes(old) if old else None
    new_p = _with_planning_nodes(new) if new else None
    old_nodes = {n.name for n in old_p.nodes} if old_p else set()
    new_nodes = {n.name for n in new_p.nodes} if new_p else set()
    names = {}
    for doc in (old_p, new_p):
        for n in doc.nodes if doc else ():
            names[n.public_key] = n.name
    holders: dict[str, str] = {}
    for doc in (old_p, new_p):
        for svc in doc.services if doc else ():
            for i in range(len(svc.instances)):
                holders[f"{svc.id}-{i}"] = f"{svc.name}#{i}"
    peers: list[PeerChanges] = []
    namespaces: list[NamespaceChange] = []
    for node in sorted(old_nodes | new_nodes):
        before = (
            local_environment(old_p, node, PLANNING_PREFIX) if old_p and node in old_nodes else None
        )
        after = (
            local_environment(new_p, node, PLANNING_PREFIX) if new_p and node in new_nodes else None
        )
        if after is None:
            assert before is not None
            namespaces.append(NamespaceChange(node, "environment", created=False))
            namespaces += [
                NamespaceChange(node, _holder(i.netns, holders), created=False)
                for i in before.instances
            ]
            if before.peers:
                peers.append(PeerChanges(node, (), tuple(p.node for p in before.peers)))
            continue
        # The same reconcile planner the agent runs, against what the node holds today.
        steps = plan_environment(after, "", 0, _as_observed(before), before)
        if before is None:
            namespaces.append(NamespaceChange(node, "environment", created=True))
        added = sorted(
            names[s.public_key]
            for s in steps
            if isinstance(s, SetPeer)
            and (before is None or s.public_key not in {p.public_key for p in before.peers})
        )
        removed = sorted(names[s.public_key] for s in steps if isinstance(s, RemovePeer))
        if added or removed:
            peers.append(PeerChanges(node, tuple(added), tuple(removed)))
        for s in steps:
            if isinstance(s, RemoveInstance):
                namespaces.append(NamespaceChange(node, _holder(s.netns, holders), created=False))
            elif isinstance(s, CreateInstance):
                namespaces.append(
                    NamespaceChange(node, _holder(s.instance.netns, holders), created=True)
                )
    return tuple(peers), tuple(namespaces)


def _holder(netns: str, holders: dict[str, str]) -> str:
    # instance namespaces are <prefix>-<env_id>-<service_id>-<i>
    key = "-".join(netns.rsplit("-", 2)[-2:])
    return holders.get(key, netns)


def _consequences(
    old: EnvironmentDocument | None,
    new: EnvironmentDocument | None,
    services: tuple[ServiceChange, ...],
    now: int | None = None,
) -> tuple[Consequence, ...]:
    found: list[Consequence] = []
    if old is not None and new is not None:
        for address, freed_in in early_reuse(old, new, now):
            found.append(
                Consequence(
                    Severity.ADDRESS_CHANGE,
                    f"{address} was freed in generation {freed_in} and is handed out before "
                    "its quarantine ends (the range has nothing else left): clients still "
                    "holding it reach the new instance; use a larger ipv4_cidr",
                    address,
                )
            )
    if old is not None and new is None:
        n = len(old.services)
        found.append(
            Consequence(
                Severity.DELETE,
                f"deleting {old.project}/{old.environment} takes {n} service(s) with it",
                "environment",
            )
        )
    if old is not None and new is not None:
        if old.ip_mode is IpMode.DUAL and new.ip_mode is IpMode.IPV6:
            found.append(
                Consequence(
                    Severity.RECORDS_REMOVED,
                    "dual stack → IPv6 only: every A record goes away; IPv4 clients of "
                    f"*.{old.domain} stop resolving",
                    "environment",
                )
            )
        if old.domain != new.domain:
            found.append(
                Consequence(
                    Severity.RECORDS_REMOVED,
                    f"domain {old.domain} → {new.domain}: every old name stops resolving",
                    "environment",
                )
            )
        before = _instances(old)
        after = _instances(new)
        for key, (node, svc) in sorted(before.items(), key=lambda kv: (kv[1][1].name, kv[0][1])):
            label = f"{svc.name}#{key[1]}"
            if key not in after:
                found.append(
                    Consequence(
                        Severity.CONNECTIONS_DROP,
                        f"{label} on {node} stops: its open connections drop",
                        label,
                    )
                )
                continue
            new_node, new_svc = after[key]
            label = f"{new_svc.name}#{key[1]}"  # the name it will answer to
            a, b = svc.instances[key[1]], new_svc.instances[key[1]]
            if new_node != node:
                found.append(
                    Consequence(
                        Severity.CONNECTIONS_DROP,
                        f"{label} moves {node} → {new_node}: its open connections drop "
                        "(it keeps its addresses)",
                        label,
                    )
                )

            for family, x, y in (("IPv4", a.ipv4, b.ipv4), ("IPv6", a.ipv6, b.ipv6)):
                if x and x != y:
                    found.append(
                        Consequence(
                            Severity.ADDRESS_CHANGE,
                            f"{label} {family} {x} → {y or 'none'}: clients holding the old "
                            "address lose it",
                            label,
                        )
                    )
    if old is not None and new is not None:
        before_names = {s.name: s.id for s in old.services}
        for svc in new.services:
            if svc.name in before_names and before_names[svc.name] != svc.id:
                found.append(
                    Consequence(
                        Severity.ADDRESS_CHANGE,
                        f"{svc.name}.{new.domain} now names a different service than before: "
                        "clients of the old one reach the new one",
                        svc.name,
                    )
                )
    for change in services:
        if change.change == "removed":
            found.append(
                Consequence(
                    Severity.DELETE,
                    f"service {change.service} is deleted ({change.detail})",
                    change.service,
                )
            )
    return tuple(found)


def with_pending_addresses(
    plan: EnvironmentPlan, held: EnvironmentDocument | None
) -> EnvironmentPlan:
    """The plan with every added address that ``held`` (what the agents hold now) does not
    hold counted as assigned at apply instead of named. The agents hand addresses out as
    each deploy runs, so a planned one is a guess: services created in the same run would
    all get the first free one."""
    known = {
        a
        for s in (held.services if held else ())
        for i in s.instances
        for a in (i.ipv4, i.ipv6)
        if a
    }
    dns = tuple(
        replace(
            d,
            added=tuple(a for a in d.added if a in known),
            pending=d.pending + sum(1 for a in d.added if a not in known),
        )
        for d in plan.dns
    )
    return replace(plan, dns=dns)
