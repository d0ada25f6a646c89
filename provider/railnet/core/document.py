"""The environment document: the complete desired state of one environment.

The provider writes it to every node of the environment; each agent derives everything
local from it (peers, routes, instances, DNS records). It is exchanged as canonical JSON,
and ``EnvironmentDocument.from_dict`` is the one place that validates it: every error
names the field by its path, e.g. ``services[1].instances[0].ipv4``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import ipaddress
import json
import re
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from railnet.core.addressing import (
    DEFAULT_IPV4_CIDR,
    AddressPlan,
    canonical_address,
    check_ipv4_cidr,
    parse_address,
    ula_prefix,
)
from railnet.core.errors import InvalidField
from railnet.core.names import (
    check_dns_label,
    check_domain,
    check_node_name,
    check_object_id,
)

FORMAT_VERSION = 2
"""The newest document format: what this release writes when every reader reads it."""
READABLE_FORMATS: tuple[int, ...] = (1, 2)
"""The formats this release reads: its own and the previous one, so a document written for
(or stored by) the previous release still applies after an upgrade. The formats:

1. The first. A reader ignores keys it does not know.
2. The same fields, read strictly: a key the format does not define is refused, naming it.
   So a field added later comes with format 3, and a writer sends it only to nodes that
   read it; no agent applies half of a document it does not understand.

The deployer writes the highest format every node holding the document reads
(``common_format``); agents say which they read in their replies (``document_formats``).
"""
DEFAULT_DOMAIN = "railway.internal"
DEFAULT_DNS_TTL = 5
MAX_DNS_TTL = 3600
QUARANTINE_TTLS = 10
"""A freed address rests for at least this many DNS TTLs (and two generations)."""
MAX_OWNER = 1024
MAX_KEY_ROTATION = 128


class IpMode(enum.Enum):
    """How instances of an environment are addressed."""

    DUAL = "dual"
    """IPv4 and IPv6: the default for new environments."""
    IPV6 = "ipv6"
    """IPv6 only: the legacy mode."""


@dataclass(frozen=True)
class NodeEntry:
    """One node that hosts the environment."""

    name: str
    """The node's name in the cluster, e.g. ``node-1``."""
    public_key: str
    """The environment's WireGuard public key on this node (base64)."""
    endpoint: str
    """``host:port`` of the node's WireGuard socket for this environment."""


@dataclass(frozen=True)
class InstanceEntry:
    """One running copy of a service."""

    node: str
    """The node it runs on."""
    ipv4: str | None
    """Its internal IPv4 address; ``None`` in IPv6-only environments."""
    ipv6: str
    """Its internal IPv6 address."""


@dataclass(frozen=True)
class ServiceEntry:
    """A service and its instances, in instance order."""

    id: str
    """Stable id: kernel objects are named after it, so a rename changes only DNS."""
    name: str
    """The DNS label the service answers to."""
    instances: tuple[InstanceEntry, ...]
    owner: str = ""
    """The URN of the resource that declared it (its stack included); empty when unknown."""

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "instances": [{"node": i.node, "ipv4": i.ipv4, "ipv6": i.ipv6} for i in self.instances],
        }
        if self.owner:  # left out when empty, so older documents stay canonical
            raw["owner"] = self.owner
        return raw

    @cached_property
    def canonical(self) -> str:
        """The service's part of its document's canonical JSON. Kept with the entry: a
        document made from another (a delta, the next generation) shares the entries of
        the services that did not change, so its JSON costs only the ones that did."""
        return _canonical_json(self.to_dict())


def _canonical_json(raw: object) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


_SERVICES_MARK = 0
_SERVICES_SLOT = f'"services":{_SERVICES_MARK}'
"""Where a document's header, written with ``_SERVICES_MARK`` for its services, takes them:
only a key can be followed by a colon, and quotes inside strings are escaped."""


class ServiceIndex:
    """A document's services by key: what a check or a merge that spans services looks up,
    so that it costs the services it is about, not all of them. Built once per document
    read whole; a document made from another by a change (``EnvironmentDocument.changed``)
    gets its index from the other's, by that change."""

    __slots__ = ("by_address", "by_id", "by_name", "on_node")

    def __init__(self, services: Sequence[ServiceEntry] = ()) -> None:
        self.by_id: dict[str, ServiceEntry] = {}
        self.by_name: dict[str, str] = {}
        """Name -> id."""
        self.by_address: dict[str, str] = {}
        """Instance address -> the id of the service it is in."""
        self.on_node: dict[str, int] = {}
        """Node -> how many instances run on it."""
        self._count(services, 1)

    def after(self, gone: Sequence[ServiceEntry], came: Sequence[ServiceEntry]) -> ServiceIndex:
        """This index with the entries ``gone`` out and ``came`` in (in that order, so a
        service that changed is its old entry out and its new one in)."""
        new = object.__new__(ServiceIndex)
        new.by_id, new.by_name = self.by_id.copy(), self.by_name.copy()
        new.by_address, new.on_node = self.by_address.copy(), self.on_node.copy()
        new._count(gone, -1)
        new._count(came, 1)
        return new

    def _count(self, services: Sequence[ServiceEntry], sign: int) -> None:
        by_id, by_name, by_address, on_node = (
            self.by_id,
            self.by_name,
            self.by_address,
            self.on_node,
        )
        for svc in services:
            if sign > 0:
                by_id[svc.id] = svc
                by_name[svc.name] = svc.id
            else:
                by_id.pop(svc.id, None)
                if by_name.get(svc.name) == svc.id:
                    del by_name[svc.name]
            for inst in svc.instances:
                left = on_node.get(inst.node, 0) + sign
                if left > 0:
                    on_node[inst.node] = left
                else:
                    on_node.pop(inst.node, None)
                for address in (inst.ipv4, inst.ipv6):
                    if address is None:
                        continue
                    if sign > 0:
                        by_address[address] = svc.id
                    elif by_address.get(address) == svc.id:
                        del by_address[address]


@dataclass(frozen=True)
class FreedAddress:
    """An address that an instance gave up, resting before anyone gets it again."""

    address: str
    generation: int
    """The generation that freed it."""
    at: int
    """When, in seconds since the epoch."""

    def resting(self, generation: int, now: int | None, ttl: int) -> bool:
        """Whether it is still out of use in ``generation``: never in the one that freed
        it or the next, and not before ``QUARANTINE_TTLS`` TTLs have passed (``now`` None:
        the time is unknown, so it rests)."""
        if generation <= self.generation + 1:
            return True
        return now is None or now < self.at + QUARANTINE_TTLS * max(ttl, 1)


@dataclass(frozen=True)
class EnvironmentDocument:
    """Desired state of one project environment, versioned by ``generation``."""

    id: str
    project: str
    environment: str
    generation: int
    ip_mode: IpMode = IpMode.DUAL
    ipv4_cidr: str | None = DEFAULT_IPV4_CIDR
    domain: str = DEFAULT_DOMAIN
    dns_ttl: int = DEFAULT_DNS_TTL
    nodes: tuple[NodeEntry, ...] = ()
    services: tuple[ServiceEntry, ...] = field(default=())
    owner: str = ""
    """The URN of the Environment resource that owns the settings; empty when unknown."""
    leaving: tuple[str, ...] = ()
    """Nodes that held the environment and have not yet removed it (they were unreachable
    when it left them); the next deploy finishes the removal."""
    freed: tuple[FreedAddress, ...] = ()
    """Addresses in quarantine."""
    keepers: tuple[str, ...] = ()
    """Nodes that keep a copy of the document whether or not they host the environment
    (see ``railnet.core.desired.keepers_of``): where a deploy starts looking for it."""
    key_rotation: str = ""
    """The token the nodes' WireGuard keys were made for: a new token makes every node of
    the environment a new key pair (see docs/security.md, rotation procedures)."""
    format: int = FORMAT_VERSION
    """The format version the document is written in (see ``READABLE_FORMATS``)."""

    # -- derived views -------------------------------------------------------------------

    @property
    def addresses(self) -> AddressPlan:
        v4 = None if self.ipv4_cidr is None else ipaddress.IPv4Network(self.ipv4_cidr)
        return AddressPlan(ipv4=v4, ipv6=ula_prefix(self.id))

    def node(self, name: str) -> NodeEntry | None:
        return next((n for n in self.nodes if n.name == name), None)

    def service(self, name: str) -> ServiceEntry | None:
        return next((s for s in self.services if s.name == name), None)

    @cached_property
    def services_index(self) -> ServiceIndex:
        return ServiceIndex(self.services)

    def changed(
        self,
        header: EnvironmentDocument,
        removed: Collection[str],
        upserts: Sequence[ServiceEntry],
    ) -> EnvironmentDocument:
        """``header``'s fields with these services, changed: the ones ``removed`` (ids)
        dropped, each of ``upserts`` in its place (a new one last, in the order given).
        Costs the change: the result keeps the change and derives its index from this
        document's, so ``services_changed_from(self)`` and the next change cost it too."""
        index = self.services_index
        dropped = set(removed)
        replaced = {s.id: s for s in upserts if s.id in index.by_id}
        services = [replaced.get(s.id, s) for s in self.services if s.id not in dropped]
        services.extend(s for s in upserts if s.id not in index.by_id)
        doc = replace(header, services=tuple(services))
        came = [s for s in upserts if index.by_id.get(s.id) != s]
        out = dropped | {s.id for s in came}
        gone = [index.by_id[sid] for sid in sorted(out) if sid in index.by_id]
        # cached_property fields live in the instance's __dict__: set them as made.
        doc.__dict__["services_index"] = index.after(gone, came)
        doc.__dict__["_made_from"] = (weakref.ref(self), gone, came)
        return doc

    def services_changed_from(
        self, previous: EnvironmentDocument
    ) -> tuple[list[ServiceEntry], list[ServiceEntry]]:
        """What differs in services from ``previous``: (their entries there: changed and
        removed ones; their entries here: changed and new ones). Kept as made when this
        document was made from ``previous`` (``changed``); otherwise an unchanged service
        is passed over by identity first (a document made from another shares its
        entries), so this costs a look-up per service and a read of each one that
        changed."""
        made = self.__dict__.get("_made_from")
        if made is not None and made[0]() is previous:
            return list(made[1]), list(made[2])
        old = {s.id: s for s in previous.services}
        gone: list[ServiceEntry] = []
        came: list[ServiceEntry] = []
        for svc in self.services:
            was = old.pop(svc.id, None)
            if was is svc or was == svc:
                continue
            if was is not None:
                gone.append(was)
            came.append(svc)
        gone.extend(old.values())
        return gone, came

    def with_generation(self, generation: int) -> EnvironmentDocument:
        return replace(self, generation=generation)

    def with_format(self, version: int) -> EnvironmentDocument:
        """The same document written in format ``version`` (every readable format carries
        every field there is today, so nothing is lost)."""
        if version not in READABLE_FORMATS:
            raise InvalidField("format", version, f"this release writes formats {READABLE_FORMATS}")
        return replace(self, format=version)

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self._to_dict([s.to_dict() for s in self.services])

    def header_dict(self) -> dict[str, Any]:
        """``to_dict`` without ``services``: what a delta carries whole."""
        raw = self._to_dict(None)
        del raw["services"]
        return raw

    def _to_dict(self, services: object) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "format": self.format,
            "id": self.id,
            "project": self.project,
            "environment": self.environment,
            "generation": self.generation,
            "ip_mode": self.ip_mode.value,
            "ipv4_cidr": self.ipv4_cidr,
            "domain": self.domain,
            "dns_ttl": self.dns_ttl,
            "nodes": [
                {"name": n.name, "public_key": n.public_key, "endpoint": n.endpoint}
                for n in self.nodes
            ],
            "services": services,
        }
        # Optional fields are left out when empty, so older documents stay canonical.
        if self.owner:
            raw["owner"] = self.owner
        if self.key_rotation:
            raw["key_rotation"] = self.key_rotation
        if self.leaving:
            raw["leaving"] = list(self.leaving)
        if self.keepers:
            raw["keepers"] = list(self.keepers)
        if self.freed:
            raw["freed"] = [
                {"address": f.address, "generation": f.generation, "at": f.at} for f in self.freed
            ]
        return raw

    def to_json(self) -> str:
        return self._canonical

    @cached_property
    def _canonical(self) -> str:
        # Written once per document: the digest, the state file and GetDocument share it.
        # The services' parts are their entries' own (see ``ServiceEntry.canonical``), put
        # where the sorted keys place them: the header is written with a marker there.
        header = _canonical_json(self._to_dict(_SERVICES_MARK))
        services = "[" + ",".join(s.canonical for s in self.services) + "]"
        return header.replace(_SERVICES_SLOT, f'"services":{services}', 1)

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON, in hex: what a delta names its base by."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(
        cls, text: str | bytes, formats: Sequence[int] = READABLE_FORMATS
    ) -> EnvironmentDocument:
        """The document ``text`` holds; ``formats`` are the format versions accepted."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidField("document", _preview(text), f"is not JSON ({exc})") from None
        return cls.from_dict(raw, formats)

    @classmethod
    def from_dict(
        cls, raw: object, formats: Sequence[int] = READABLE_FORMATS
    ) -> EnvironmentDocument:
        return _DocumentReader(tuple(formats)).read(raw)


def check_formats(field: str, raw: str) -> tuple[int, ...]:
    """A list of document formats (``"1"``, ``"1,2"``), each one this release reads: the
    formats an agent is told to accept (standing in for an older release's agent)."""
    try:
        formats = tuple(sorted({int(part) for part in raw.split(",") if part.strip()}))
    except ValueError:
        raise InvalidField(field, raw, "must be format numbers separated by commas") from None
    if not formats or not set(formats) <= set(READABLE_FORMATS):
        raise InvalidField(field, raw, f"must name formats among {list(READABLE_FORMATS)}")
    return formats


def advertised_formats(reply: Sequence[int]) -> tuple[int, ...]:
    """The formats an agent's reply says it reads: none said means format 1, which every
    agent before versioning read."""
    return tuple(sorted(set(reply))) if reply else (1,)


def common_format(readers: Mapping[str, Sequence[int]]) -> int:
    """The highest format every reader (node → the formats it reads) and this release
    read; an error names the nodes when there is none."""
    shared = set(READABLE_FORMATS)
    for formats in readers.values():
        shared &= set(formats)
    if shared:
        return max(shared)
    said = ", ".join(f"{node} reads {list(f)}" for node, f in sorted(readers.items()))
    raise InvalidField(
        "document_formats",
        said,
        f"no format is read by every node and by this release ({list(READABLE_FORMATS)}); "
        "upgrade the nodes that read only older formats",
    )


def _preview(text: str | bytes) -> str:
    shown = text if isinstance(text, str) else text[:80].decode("utf-8", "replace")
    return shown[:80]


DOCUMENT_KEYS = frozenset(
    {
        "format", "id", "project", "environment", "generation", "ip_mode", "ipv4_cidr",
        "domain", "dns_ttl", "nodes", "services", "owner", "key_rotation", "leaving",
        "keepers", "freed",
    }
)  # fmt: skip
NODE_KEYS = frozenset({"name", "public_key", "endpoint"})
SERVICE_KEYS = frozenset({"id", "name", "instances", "owner"})
INSTANCE_KEYS = frozenset({"node", "ipv4", "ipv6"})
FREED_KEYS = frozenset({"address", "generation", "at"})


class _DocumentReader:
    """Validates a raw mapping into an ``EnvironmentDocument``; errors name field paths."""

    def __init__(self, formats: tuple[int, ...] = READABLE_FORMATS) -> None:
        self.formats = formats
        self.format = 1
        self.strict = False

    def _keys(self, path: str, raw: Mapping[str, Any], known: frozenset[str]) -> None:
        """From format 2 on, a key the format does not define is refused."""
        if not self.strict:
            return
        for key in sorted(raw):
            if key not in known:
                where = f"{path}.{key}" if path else key
                raise InvalidField(
                    where,
                    raw[key],
                    f"is not a field of document format {self.format}; a newer release "
                    "wrote it for a node that reads it",
                )

    def read(self, raw: object) -> EnvironmentDocument:
        doc = self._mapping("document", raw)
        fmt = doc.get("format", 1)
        if isinstance(fmt, bool) or fmt not in self.formats:
            raise InvalidField(
                "format",
                fmt,
                f"this agent reads document formats {list(self.formats)}; upgrade it, or let "
                "the deployer write a format it reads",
            )
        self.format = int(fmt)
        self.strict = self.format >= 2
        self._keys("", doc, DOCUMENT_KEYS)
        env_id = check_object_id("id", doc.get("id"))
        project = check_dns_label("project", doc.get("project"))
        environment = check_dns_label("environment", doc.get("environment"))
        generation = doc.get("generation")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
            raise InvalidField("generation", generation, "must be an integer >= 1")
        mode_raw = doc.get("ip_mode", IpMode.DUAL.value)
        try:
            ip_mode = IpMode(mode_raw)
        except ValueError:
            raise InvalidField("ip_mode", mode_raw, "must be 'dual' or 'ipv6'") from None
        cidr_raw = doc.get("ipv4_cidr", DEFAULT_IPV4_CIDR if ip_mode is IpMode.DUAL else None)
        if ip_mode is IpMode.DUAL:
            ipv4_cidr: str | None = str(check_ipv4_cidr("ipv4_cidr", cidr_raw))
        elif cidr_raw is not None:
            raise InvalidField("ipv4_cidr", cidr_raw, "must be null when ip_mode is 'ipv6'")
        else:
            ipv4_cidr = None
        domain = check_domain("domain", doc.get("domain", DEFAULT_DOMAIN))
        ttl = doc.get("dns_ttl", DEFAULT_DNS_TTL)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= MAX_DNS_TTL:
            raise InvalidField("dns_ttl", ttl, f"must be an integer from 0 to {MAX_DNS_TTL}")
        nodes = tuple(self._node(f"nodes[{i}]", n) for i, n in enumerate(self._list("nodes", doc)))
        self._unique("nodes", [n.name for n in nodes], "name")
        self._unique("nodes", [n.endpoint for n in nodes], "endpoint")
        self._unique("nodes", [n.public_key for n in nodes], "public_key")
        plan = AddressPlan(
            ipv4=None if ipv4_cidr is None else ipaddress.IPv4Network(ipv4_cidr),
            ipv6=ula_prefix(env_id),
        )
        known_nodes = {n.name for n in nodes}
        services = tuple(
            self._service(f"services[{i}]", s, ip_mode, plan, known_nodes)
            for i, s in enumerate(self._list("services", doc))
        )
        self._unique("services", [s.name for s in services], "name")
        self._unique("services", [s.id for s in services], "id")
        in_use = self._unique_addresses(services)
        owner = _owner("owner", doc.get("owner", ""))
        key_rotation = check_key_rotation("key_rotation", doc.get("key_rotation", ""))
        leaving = tuple(
            check_node_name(f"leaving[{i}]", n) for i, n in enumerate(self._list("leaving", doc))
        )
        self._unique("leaving", list(leaving), "node")
        for i, name in enumerate(leaving):
            if name in known_nodes:
                raise InvalidField(f"leaving[{i}]", name, "still hosts the environment")
        keepers = tuple(
            check_node_name(f"keepers[{i}]", n) for i, n in enumerate(self._list("keepers", doc))
        )
        self._unique("keepers", list(keepers), "node")
        freed = tuple(
            self._freed(f"freed[{i}]", f, generation, plan, in_use)
            for i, f in enumerate(self._list("freed", doc))
        )
        self._unique("freed", [f.address for f in freed], "address")
        return EnvironmentDocument(
            id=env_id,
            project=project,
            environment=environment,
            generation=generation,
            ip_mode=ip_mode,
            ipv4_cidr=ipv4_cidr,
            domain=domain,
            dns_ttl=ttl,
            nodes=nodes,
            services=services,
            owner=owner,
            leaving=leaving,
            freed=freed,
            keepers=keepers,
            key_rotation=key_rotation,
            format=self.format,
        )

    def _freed(
        self, path: str, raw: object, generation: int, plan: AddressPlan, in_use: set[str]
    ) -> FreedAddress:
        entry = self._mapping(path, raw)
        self._keys(path, entry, FREED_KEYS)
        value = entry.get("address")
        try:
            version = parse_address(str(value)).version
        except ValueError:
            raise InvalidField(f"{path}.address", value, "is not an IP address") from None
        address = self._address(f"{path}.address", value, version, plan)
        if address in in_use:
            raise InvalidField(f"{path}.address", address, "is in use by an instance")
        freed_in = entry.get("generation")
        if (
            not isinstance(freed_in, int)
            or isinstance(freed_in, bool)
            or not 1 <= freed_in <= generation
        ):
            raise InvalidField(
                f"{path}.generation", freed_in, f"must be an integer from 1 to {generation}"
            )
        at = entry.get("at")
        if not isinstance(at, int) or isinstance(at, bool) or at < 0:
            raise InvalidField(f"{path}.at", at, "must be seconds since the epoch")
        return FreedAddress(address=address, generation=freed_in, at=at)

    @staticmethod
    def _mapping(path: str, raw: object) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise InvalidField(path, raw, "must be an object")
        return raw

    @staticmethod
    def _list(path: str, parent: Mapping[str, Any]) -> Sequence[Any]:
        raw = parent.get(path.rsplit(".", 1)[-1], [])
        if not isinstance(raw, list):
            raise InvalidField(path, raw, "must be a list")
        return raw

    @staticmethod
    def _unique(path: str, values: Sequence[str | None], key: str) -> None:
        seen: set[str] = set()
        for i, value in enumerate(values):
            if value is None:
                continue
            if value in seen:
                raise InvalidField(f"{path}[{i}].{key}", value, "is used twice")
            seen.add(value)

    def _node(self, path: str, raw: object) -> NodeEntry:
        node = self._mapping(path, raw)
        self._keys(path, node, NODE_KEYS)
        name = check_node_name(f"{path}.name", node.get("name"))
        key = node.get("public_key")
        try:
            ok = isinstance(key, str) and len(base64.b64decode(key, validate=True)) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise InvalidField(f"{path}.public_key", key, "must be a base64 WireGuard key")
        endpoint = node.get("endpoint")
        _check_endpoint(f"{path}.endpoint", endpoint)
        assert isinstance(key, str) and isinstance(endpoint, str)
        return NodeEntry(name=name, public_key=key, endpoint=endpoint)

    def _service(
        self,
        path: str,
        raw: object,
        ip_mode: IpMode,
        plan: AddressPlan,
        known_nodes: set[str],
    ) -> ServiceEntry:
        svc = self._mapping(path, raw)
        self._keys(path, svc, SERVICE_KEYS)
        sid = check_object_id(f"{path}.id", svc.get("id"))
        name = check_dns_label(f"{path}.name", svc.get("name"))
        raw_instances = svc.get("instances", [])
        if not isinstance(raw_instances, list):
            raise InvalidField(f"{path}.instances", raw_instances, "must be a list")
        instances = []
        for j, inst_raw in enumerate(raw_instances):
            ipath = f"{path}.instances[{j}]"
            inst = self._mapping(ipath, inst_raw)
            self._keys(ipath, inst, INSTANCE_KEYS)
            node = inst.get("node")
            if not isinstance(node, str) or node not in known_nodes:
                raise InvalidField(
                    f"{ipath}.node",
                    node,
                    f"is not one of the document's nodes {sorted(known_nodes)}",
                )
            ipv6 = self._address(f"{ipath}.ipv6", inst.get("ipv6"), 6, plan)
            if ip_mode is IpMode.DUAL:
                ipv4: str | None = self._address(f"{ipath}.ipv4", inst.get("ipv4"), 4, plan)
            elif inst.get("ipv4") is not None:
                raise InvalidField(
                    f"{ipath}.ipv4", inst.get("ipv4"), "must be null when ip_mode is 'ipv6'"
                )
            else:
                ipv4 = None
            instances.append(InstanceEntry(node=str(node), ipv4=ipv4, ipv6=ipv6))
        owner = _owner(f"{path}.owner", svc.get("owner", ""))
        return ServiceEntry(id=sid, name=name, instances=tuple(instances), owner=owner)

    @staticmethod
    def _address(path: str, raw: object, version: int, plan: AddressPlan) -> str:
        try:
            address = parse_address(str(raw))
        except ValueError:
            raise InvalidField(path, raw, f"is not an IPv{version} address") from None
        if not isinstance(raw, str) or address.version != version:
            raise InvalidField(path, raw, f"is not an IPv{version} address")
        if not plan.is_assignable(address):
            network = plan.ipv4 if version == 4 else plan.ipv6
            raise InvalidField(
                path,
                raw,
                f"is not an assignable address of {network} (the first "
                "addresses are reserved for the gateway and the resolver)",
            )
        return canonical_address(raw)

    def _unique_addresses(self, services: Sequence[ServiceEntry]) -> set[str]:
        seen: set[str] = set()
        for i, svc in enumerate(services):
            for j, inst in enumerate(svc.instances):
                for family, value in (("ipv4", inst.ipv4), ("ipv6", inst.ipv6)):
                    if value is None:
                        continue
                    if value in seen:
                        raise InvalidField(
                            f"services[{i}].instances[{j}].{family}", value, "is used twice"
                        )
                    seen.add(value)
        return seen


def _owner(path: str, raw: object) -> str:
    """A resource URN: printable text, bounded (it lands in logs and error messages)."""
    if not isinstance(raw, str) or len(raw) > MAX_OWNER or not raw.isprintable():
        raise InvalidField(path, raw, f"must be a printable URN of at most {MAX_OWNER} characters")
    return raw


def check_key_rotation(path: str, raw: object) -> str:
    """A rotation token: printable text without whitespace at the ends, bounded (it lands
    in documents, logs and the agents' state)."""
    if (
        not isinstance(raw, str)
        or len(raw) > MAX_KEY_ROTATION
        or not raw.isprintable()
        or raw != raw.strip()
    ):
        raise InvalidField(
            path,
            raw,
            f"must be printable text of at most {MAX_KEY_ROTATION} characters, without "
            "surrounding spaces (any new value rotates the WireGuard keys)",
        )
    return raw


ENDPOINT = re.compile(
    r"(?:(?P<v4>[0-9.]{7,15})|\[(?P<v6>[0-9a-fA-F:.]{2,45})\]):(?P<port>[0-9]{1,5})"
)


def _check_endpoint(path: str, raw: object) -> None:
    """``host:port`` exactly: an IPv4 address, or an IPv6 one in brackets (no zone), a
    colon, and the port in ASCII digits, 1 to 65535. Nothing else: these strings reach
    WireGuard's configuration lines."""
    match = ENDPOINT.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise InvalidField(path, raw, "must be IPv4:PORT or [IPv6]:PORT")
    host = match.group("v4") or match.group("v6")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidField(path, raw, "must be an IP address and a port") from None
    if address.version != (4 if match.group("v4") else 6):
        raise InvalidField(path, raw, "must be IPv4:PORT or [IPv6]:PORT")
    if not 1 <= int(match.group("port")) <= 65535:
        raise InvalidField(path, raw, "has a port outside 1-65535")
