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
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from railnet.core.addressing import DEFAULT_IPV4_CIDR, AddressPlan, check_ipv4_cidr, ula_prefix
from railnet.core.errors import InvalidField
from railnet.core.names import (
    check_dns_label,
    check_domain,
    check_node_name,
    check_object_id,
)

FORMAT_VERSION = 1
DEFAULT_DOMAIN = "railway.internal"
DEFAULT_DNS_TTL = 5
MAX_DNS_TTL = 3600


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

    # -- derived views -------------------------------------------------------------------

    @property
    def addresses(self) -> AddressPlan:
        v4 = None if self.ipv4_cidr is None else ipaddress.IPv4Network(self.ipv4_cidr)
        return AddressPlan(ipv4=v4, ipv6=ula_prefix(self.id))

    def node(self, name: str) -> NodeEntry | None:
        return next((n for n in self.nodes if n.name == name), None)

    def service(self, name: str) -> ServiceEntry | None:
        return next((s for s in self.services if s.name == name), None)

    def with_generation(self, generation: int) -> EnvironmentDocument:
        return replace(self, generation=generation)

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
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
            "services": [
                {
                    "id": s.id,
                    "name": s.name,
                    "instances": [
                        {"node": i.node, "ipv4": i.ipv4, "ipv6": i.ipv6} for i in s.instances
                    ],
                }
                for s in self.services
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> EnvironmentDocument:
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidField("document", _preview(text), f"is not JSON ({exc})") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: object) -> EnvironmentDocument:
        return _DocumentReader().read(raw)


def _preview(text: str | bytes) -> str:
    shown = text if isinstance(text, str) else text[:80].decode("utf-8", "replace")
    return shown[:80]


class _DocumentReader:
    """Validates a raw mapping into an ``EnvironmentDocument``; errors name field paths."""

    def read(self, raw: object) -> EnvironmentDocument:
        doc = self._mapping("document", raw)
        fmt = doc.get("format", FORMAT_VERSION)
        if fmt != FORMAT_VERSION:
            raise InvalidField("format", fmt, f"this agent reads format {FORMAT_VERSION}")
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
        self._unique_addresses(services)
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
        )

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
        sid = check_object_id(f"{path}.id", svc.get("id"))
        name = check_dns_label(f"{path}.name", svc.get("name"))
        raw_instances = svc.get("instances", [])
        if not isinstance(raw_instances, list):
            raise InvalidField(f"{path}.instances", raw_instances, "must be a list")
        instances = []
        for j, inst_raw in enumerate(raw_instances):
            ipath = f"{path}.instances[{j}]"
            inst = self._mapping(ipath, inst_raw)
            node = inst.get("node")
            if node not in known_nodes:
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
        return ServiceEntry(id=sid, name=name, instances=tuple(instances))

    @staticmethod
    def _address(path: str, raw: object, version: int, plan: AddressPlan) -> str:
        try:
            address = ipaddress.ip_address(str(raw))
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
        return str(address)

    def _unique_addresses(self, services: Sequence[ServiceEntry]) -> None:
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


def _check_endpoint(path: str, raw: object) -> None:
    if not isinstance(raw, str) or ":" not in raw:
        raise InvalidField(path, raw, "must be host:port")
    host, _, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError:
        raise InvalidField(path, raw, "must be an IP address and a port") from None
    if not 1 <= port_number <= 65535:
        raise InvalidField(path, raw, "has a port outside 1-65535")
