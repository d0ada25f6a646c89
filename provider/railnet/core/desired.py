"""From what a user declares to the environment document the agents apply.

``build_document`` is pure: given the declared ``EnvironmentSpec``, the document the nodes
hold now, and each node's WireGuard identity, it returns the next generation. Addresses are
stable: a service keeps its id and an instance keeps its addresses across updates, renames
and moves to another node; only new instances get new addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import TypeVar

from railnet.core.addressing import (
    DEFAULT_IPV4_CIDR,
    AddressPlan,
    check_ipv4_cidr,
    parse_address,
    ula_prefix,
)
from railnet.core.delta import DocumentDelta
from railnet.core.document import (
    DEFAULT_DNS_TTL,
    DEFAULT_DOMAIN,
    FORMAT_VERSION,
    EnvironmentDocument,
    FreedAddress,
    InstanceEntry,
    IpMode,
    NodeEntry,
    ServiceEntry,
)
from railnet.core.errors import InvalidField
from railnet.core.names import check_dns_label, environment_id, short_hash

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    nodes: tuple[str, ...]
    """One entry per instance, in instance order; a node may appear more than once."""
    id: str = ""
    """Stable id; empty means "the id this name had before, or a new one"."""
    owner: str = ""
    """The URN of the resource that declares it; empty when unknown."""


@dataclass(frozen=True)
class EnvironmentSpec:
    project: str
    environment: str
    ip_mode: IpMode = IpMode.DUAL
    ipv4_cidr: str = DEFAULT_IPV4_CIDR
    domain: str = DEFAULT_DOMAIN
    dns_ttl: int = DEFAULT_DNS_TTL
    services: tuple[ServiceSpec, ...] = field(default=())
    owner: str = ""
    """The URN of the Environment resource that owns the settings; empty when unknown."""
    key_rotation: str = ""
    """The token the WireGuard keys are made for; a new one rotates them."""

    @property
    def id(self) -> str:
        return environment_id(self.project, self.environment)

    @property
    def nodes(self) -> list[str]:
        """The nodes that host at least one instance, sorted."""
        return sorted({n for s in self.services for n in s.nodes})


def spec_from_document(doc: EnvironmentDocument) -> EnvironmentSpec:
    """The declaration a document implements (the starting point of a one-service edit)."""
    return EnvironmentSpec(
        project=doc.project,
        environment=doc.environment,
        ip_mode=doc.ip_mode,
        ipv4_cidr=doc.ipv4_cidr or DEFAULT_IPV4_CIDR,
        domain=doc.domain,
        dns_ttl=doc.dns_ttl,
        services=tuple(
            ServiceSpec(
                name=s.name, nodes=tuple(i.node for i in s.instances), id=s.id, owner=s.owner
            )
            for s in doc.services
        ),
        owner=doc.owner,
        key_rotation=doc.key_rotation,
    )


def with_service(
    spec: EnvironmentSpec, service: ServiceSpec, *, create: bool = False
) -> EnvironmentSpec:
    """``spec`` with ``service`` added, or replacing the service of the same id.

    With ``create``, the id must be new: a new service never takes over another's id.
    """
    if not service.id:
        raise InvalidField("service_id", service.id, f"service {service.name} needs an id")
    if create:
        owner = next((s for s in spec.services if s.id == service.id), None)
        if owner is not None:
            raise InvalidField("service_id", service.id, f"already belongs to service {owner.name}")
    kept = tuple(s for s in spec.services if s.id != service.id)
    clash = next((s for s in kept if s.name == service.name), None)
    if clash is not None:
        declared = f", declared by {clash.owner}" if clash.owner else ""
        raise InvalidField(
            "name",
            service.name,
            f"is already a service of {spec.project}/{spec.environment}{declared}; names are "
            "unique within an environment",
        )
    position = next((i for i, s in enumerate(spec.services) if s.id == service.id), len(kept))
    services = (*kept[:position], service, *kept[position:])
    return replace(spec, services=services)


def adoptable(spec: EnvironmentSpec, name: str, owner: str) -> ServiceSpec | None:
    """The service a create by ``owner`` takes over: the one of that name it declared
    before (its reply was lost, or its state was). ``None`` when there is none; an error
    naming the owner when another resource declared that name."""
    found = next((s for s in spec.services if s.name == name), None)
    if found is None:
        return None
    if owner and found.owner == owner:
        return found
    declared = f"declared by {found.owner}" if found.owner else "declared elsewhere"
    raise InvalidField(
        "name",
        name,
        f"is already a service of {spec.project}/{spec.environment} ({declared}); pick "
        "another name, or import that service into this stack",
    )


def without_service(spec: EnvironmentSpec, sid: str) -> EnvironmentSpec:
    return replace(spec, services=tuple(s for s in spec.services if s.id != sid))


def service_id(env_id: str, name: str) -> str:
    return "s" + short_hash("service", env_id, name, length=9)


def fresh_service_id(env_id: str, name: str, taken: set[str]) -> str:
    """The name-derived id, or a salted one when a renamed service already holds it."""
    sid = service_id(env_id, name)
    salt = 1
    while sid in taken:
        sid = "s" + short_hash("service", env_id, name, str(salt), length=9)
        salt += 1
    return sid


def place_replicas(
    replicas: int, nodes: list[str], offset: str = "", current: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """Where ``replicas`` instances run, given where they run now (``current``).

    Placement is sticky: instance *i* stays on ``current[i]`` while that node is still in
    ``nodes``, so scaling up places only the new replicas, scaling down drops the highest
    indices, and a node joining the cluster moves nothing. A replica without a node takes
    the least-loaded node, ties broken round-robin from a start derived from ``offset``
    (the service's stable id), which spreads a fresh service evenly. ``nodes`` are the
    nodes that take instances: a cordoned node is left out by the caller, so its replicas
    are placed again."""
    if replicas < 0:
        raise InvalidField("replicas", replicas, "must be 0 or more")
    live = set(nodes)
    chosen: list[str | None] = [
        current[i] if i < len(current) and current[i] in live else None for i in range(replicas)
    ]
    return _fill(chosen, nodes, offset)


def _fill(chosen: list[str | None], nodes: list[str], offset: str) -> tuple[str, ...]:
    """``chosen`` with every ``None`` given the least-loaded of ``nodes`` (see
    ``place_replicas``)."""
    if None not in chosen:
        return tuple(n for n in chosen if n is not None)
    if not nodes:
        raise InvalidField("nodes", nodes, "the cluster has no nodes to place replicas on")
    ordered = sorted(nodes)
    count = len(ordered)
    start = int(short_hash("place", offset, length=8), 16) % count if offset else 0
    for i, node in enumerate(chosen):
        if node is not None:
            continue
        load = {n: 0 for n in ordered}
        for taken in chosen:
            if taken is not None and taken in load:
                load[taken] += 1
        preferred = (start + i) % count
        chosen[i] = min(ordered, key=lambda n: (load[n], (ordered.index(n) - preferred) % count))
    return tuple(n for n in chosen if n is not None)


def drain(
    spec: EnvironmentSpec, cordoned: Collection[str], schedulable: list[str]
) -> EnvironmentSpec:
    """``spec`` with every instance on a ``cordoned`` node placed again on the
    ``schedulable`` ones, the way ``place_replicas`` places a new replica (least loaded,
    from the service's id). Nothing else moves, and ids and order are kept, so every
    instance keeps its addresses (``build_document``)."""
    services = []
    for svc in spec.services:
        if not any(n in cordoned for n in svc.nodes):
            services.append(svc)
            continue
        if not schedulable:
            raise InvalidField(
                "nodes",
                sorted(cordoned),
                f"every node is cordoned: service {svc.name} has nowhere to go; uncordon a "
                "node ('railnet cluster uncordon NAME') or add one",
            )
        kept: list[str | None] = [None if n in cordoned else n for n in svc.nodes]
        services.append(replace(svc, nodes=_fill(kept, schedulable, svc.id)))
    return replace(spec, services=tuple(services))


KEEPERS = 3
"""How many nodes keep a copy of every environment's document, hosting or not."""


def keepers_of(env_id: str, nodes: list[str], count: int = KEEPERS) -> tuple[str, ...]:
    """The nodes that keep the environment's document whatever it hosts: the first
    ``count`` of the cluster ranked by rendezvous hash of (environment, node).

    They are where a deploy starts looking for an environment, so it never has to ask the
    rest of the cluster (a new service may be placed on nodes the environment never had).
    Rendezvous ranking keeps them stable: a node joining or leaving the cluster changes at
    most one keeper, so the others still hold the document the next deploy reads. Deploys
    pass the schedulable nodes: cordoning a keeper hands its copy to the next in rank."""
    ranked = sorted(nodes, key=lambda n: (short_hash("keeper", env_id, n, length=16), n))
    return tuple(ranked[:count])


def build_document(
    spec: EnvironmentSpec,
    previous: EnvironmentDocument | None,
    identities: dict[str, tuple[str, str]],
    *,
    now: int | None = None,
    leaving: tuple[str, ...] = (),
    keepers: tuple[str, ...] = (),
    format: int = FORMAT_VERSION,
    made: dict[str, DocumentDelta] | None = None,
) -> EnvironmentDocument:
    """The next document: ``previous.generation + 1`` (or 1), with stable addresses,
    checked the way the agents check it.

    ``identities`` maps each hosting node to its (public key, endpoint). Addresses that
    instances give up rest in quarantine (see ``FreedAddress.resting``; ``now`` is the time
    in seconds, None when unknown) before they are handed out again; when the range has
    nothing else left, the longest-resting go first. ``leaving`` lists the nodes that must
    still remove the environment, ``keepers`` those that keep a copy of the document;
    ``format`` is the document format version to write (one every holder reads). ``made``,
    when given, receives the delta from ``previous`` the document was checked through (by
    ``previous``'s digest): what a node holding ``previous`` is sent.
    """
    check_dns_label("project", spec.project)
    check_dns_label("environment", spec.environment)
    env_id = spec.id
    ipv4 = check_ipv4_cidr("ipv4_cidr", spec.ipv4_cidr) if spec.ip_mode is IpMode.DUAL else None
    plan = AddressPlan(ipv4=ipv4, ipv6=ula_prefix(env_id))
    previous_services = {s.name: s for s in previous.services} if previous else {}
    by_id = {s.id: s for s in previous.services} if previous else {}
    # IPv6 addresses always carry over (the ULA prefix is the environment's for life);
    # IPv4 ones only while the environment stays dual stack on the same CIDR.
    keep_v4 = (
        previous is not None
        and ipv4 is not None
        and previous.ip_mode is IpMode.DUAL
        and previous.ipv4_cidr == str(ipv4)
    )
    # A name the previous document has was checked when it was read.
    index = previous.services_index if previous is not None else None
    known_names = index.by_name if index is not None else {}
    names = [
        s.name if s.name in known_names else check_dns_label(f"services[{i}].name", s.name)
        for i, s in enumerate(spec.services)
    ]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise InvalidField(f"services[{i}].name", name, "is used twice")
            seen.add(name)

    generation = (previous.generation + 1) if previous else 1
    # Addresses the previous generation used are not handed out again in this one, and
    # freed ones rest, so a client still holding a removed instance's address (a cached
    # answer, a pooled connection) never reaches a new instance by it.
    used: set[str] = set(index.by_address) if index is not None else set()
    if not keep_v4:
        used = {a for a in used if ":" in a}
    resting = sorted(
        (
            f
            for f in (previous.freed if previous else ())
            if f.resting(generation, now, spec.dns_ttl)
            and plan.is_assignable(parse_address(f.address))
        ),
        key=lambda f: (f.generation, f.at, f.address),
    )

    ids: dict[str, str] = {}
    # Ids claimed explicitly win; a service without one inherits the id its name had only
    # if nobody claims it (a rename and a reuse of the old name in one update).
    claimed = {s.id for s in spec.services if s.id}
    for svc in spec.services:
        sid = svc.id
        inherited = previous_services.get(svc.name)
        if not sid and inherited is not None and inherited.id not in claimed:
            sid = inherited.id
        sid = sid or fresh_service_id(env_id, svc.name, claimed)
        claimed.add(sid)
        ids[svc.name] = sid

    # A service placed as before keeps its entry whole (its addresses carry over): only
    # the others go through the allocation below, so a deploy that adds one service to a
    # thousand costs little more than the thousand look-ups.
    carried = keep_v4 or (ipv4 is None and previous is not None and previous.ipv4_cidr is None)
    same: dict[str, ServiceEntry] = {}
    for svc in spec.services if carried else ():
        before = by_id.get(ids[svc.name])
        if (
            before is not None
            and before.name == svc.name
            and before.owner == svc.owner
            and tuple(i.node for i in before.instances) == svc.nodes
        ):
            same[svc.name] = before
    changing = [svc for svc in spec.services if svc.name not in same]
    kept: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for svc in changing:
        before = by_id.get(ids[svc.name])
        old = before.instances if before else ()
        kept[svc.name] = [
            (node, inst.ipv4 if keep_v4 else None, inst.ipv6)
            for node, inst in zip(svc.nodes, old, strict=False)
        ]
        kept[svc.name] += [(node, None, None) for node in svc.nodes[len(old) :]]

    wanted = sum(1 for k in kept.values() for _, _, v6 in k if v6 is None)
    fresh = iter(
        _with_quarantine(lambda q: plan.allocate(used | q, wanted), resting) if wanted else ()
    )
    pending: list[tuple[str, int, str | None, str]] = []
    for declared in changing:
        for i, (_, v4, v6) in enumerate(kept[declared.name]):
            if v6 is None:
                v4, v6 = next(fresh)
                used.update(a for a in (v4, v6) if a)
            pending.append((declared.name, i, v4, v6))
    need_v4 = [p for p in pending if p[2] is None] if ipv4 is not None else []
    taken_v4 = used | {p[2] for p in pending if p[2]}
    extra = iter(
        _with_quarantine(lambda q: plan.allocate_ipv4(taken_v4 | q, len(need_v4)), resting)
        if need_v4
        else []
    )
    final: dict[tuple[str, int], tuple[str | None, str]] = {}
    for name, i, v4, v6 in pending:
        if ipv4 is not None and v4 is None:
            v4 = next(extra)
        final[(name, i)] = (v4 if ipv4 is not None else None, v6)

    services = []
    for svc in spec.services:
        if svc.name in same:
            services.append(same[svc.name])
            continue
        instances = tuple(
            InstanceEntry(node=node, ipv4=final[(svc.name, i)][0], ipv6=final[(svc.name, i)][1])
            for i, (node, _, _) in enumerate(kept[svc.name])
        )
        services.append(
            _kept(
                ServiceEntry(id=ids[svc.name], name=svc.name, instances=instances, owner=svc.owner),
                by_id,
            )
        )
    # What changed hands is among the services not carried whole: a carried entry keeps
    # its addresses, and no address is in two services.
    carried_ids = {entry.id for entry in same.values()}
    in_use = {
        a
        for svc in services
        if svc.id not in carried_ids
        for i in svc.instances
        for a in (i.ipv4, i.ipv6)
        if a
    }
    given_up = {
        a
        for sid in (index.by_id.keys() - carried_ids if index is not None else ())
        for inst in index.by_id[sid].instances  # type: ignore[union-attr]
        for a in (inst.ipv4, inst.ipv6)
        if a and a not in in_use and plan.is_assignable(parse_address(a))
    }
    freed = [f for f in resting if f.address not in in_use and f.address not in given_up]
    freed += [FreedAddress(a, generation, now or 0) for a in sorted(given_up)]

    nodes = []
    for name in spec.nodes:
        if name not in identities:
            raise InvalidField("nodes", name, "has no WireGuard identity for this environment")
        key, endpoint = identities[name]
        nodes.append(NodeEntry(name=name, public_key=key, endpoint=endpoint))
    doc = EnvironmentDocument(
        id=env_id,
        project=spec.project,
        environment=spec.environment,
        generation=generation,
        ip_mode=spec.ip_mode,
        ipv4_cidr=None if ipv4 is None else str(ipv4),
        domain=spec.domain,
        dns_ttl=spec.dns_ttl,
        nodes=tuple(nodes),
        services=tuple(services),
        owner=spec.owner,
        leaving=tuple(sorted(set(leaving) - set(spec.nodes))),
        freed=tuple(sorted(freed, key=lambda f: (f.generation, f.address))),
        keepers=tuple(keepers),
        key_rotation=spec.key_rotation,
    ).with_format(format)
    # Through the validator: what we send is exactly what agents accept. Against the
    # previous document, as the agents check it (its delta: the header and the changed
    # services read again, the kept ones checked against them); else whole.
    delta = DocumentDelta.between(previous, doc) if previous is not None else None
    if previous is not None and delta is not None:
        if made is not None:
            made[previous.digest] = delta
        return delta.apply_to(previous)
    checked = EnvironmentDocument.from_dict(doc.to_dict())
    return replace(checked, services=tuple(_kept(s, by_id) for s in checked.services))


def _kept(entry: ServiceEntry, previous: dict[str, ServiceEntry]) -> ServiceEntry:
    """``entry``, or the previous document's entry of the same service when they are
    equal: a service that did not change keeps its entry (checked when it was read, its
    JSON already written), so the next document costs only what changed."""
    before = previous.get(entry.id)
    return before if before == entry else entry


def _with_quarantine(
    allocate: Callable[[set[str]], list[T]], resting: list[FreedAddress]
) -> list[T]:
    """``allocate`` avoiding every resting address; when the range runs out, release the
    longest-resting ones, one at a time, until it fits (``early_reuse`` tells the plan)."""
    held = list(resting)
    while True:
        try:
            return allocate({f.address for f in held})
        except InvalidField:
            if not held:
                raise
            held.pop(0)


def early_reuse(
    old: EnvironmentDocument, new: EnvironmentDocument, now: int | None
) -> list[tuple[str, int]]:
    """Addresses ``new`` hands out while they should still rest: (address, freed in)."""
    in_use = {a for s in new.services for i in s.instances for a in (i.ipv4, i.ipv6) if a}
    return [
        (f.address, f.generation)
        for f in old.freed
        if f.address in in_use and f.resting(new.generation, now, new.dns_ttl)
    ]
