"""The contract of railnet's three resources: their properties, defaults and validation.

One table drives the providers' ``check``, the SDK's documentation and ``schema.json``
(``railnet.engine.schema`` renders it), so the three never disagree. Validation returns failures
that name the property, which is how Pulumi shows them in ``preview``.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from railnet.core.addressing import DEFAULT_IPV4_CIDR, check_ipv4_cidr, ula_prefix
from railnet.core.desired import place_replicas, service_id
from railnet.core.document import (
    DEFAULT_DNS_TTL,
    DEFAULT_DOMAIN,
    MAX_DNS_TTL,
    IpMode,
    check_key_rotation,
)
from railnet.core.errors import InvalidField
from railnet.core.names import check_dns_label, check_domain, check_node_name, environment_id

MAX_REPLICAS = 64


class Kind(enum.Enum):
    PROJECT = "Project"
    ENVIRONMENT = "Environment"
    SERVICE = "Service"

    @property
    def token(self) -> str:
        """The package schema's type token."""
        return f"railnet:index:{self.value}"

    @property
    def dynamic_token(self) -> str:
        """The type token the Python dynamic provider registers in Pulumi state."""
        return f"pulumi-python:dynamic/railnet:{self.value}"


@dataclass(frozen=True)
class Prop:
    name: str
    type: str
    """A schema type: string, integer, boolean, array<string>, array<Instance>, map<string>."""
    description: str
    input: bool = True
    output: bool = True
    required: bool = False
    replace_on_change: bool = False
    secret: bool = False
    default: Any = None


NAME_DOC = "The name; a lower-case DNS label. Defaults to the resource's Pulumi name."
OWNER_DOC = (
    "This resource's URN (stack, type and name), set by the SDK: the document records it, "
    "so a retried create adopts what it made and another stack's declaration is refused."
)
KEY_ROTATION_DOC = (
    "A token the WireGuard keys are made for: change it (a date, a counter) and every node "
    "of the environment gets a new key pair, in place, without dropping connections; the old "
    "private keys leave the nodes' disks. Empty by default."
)
UNREACHABLE_DOC = "Nodes of the environment that did not answer the last read (refresh)."
DRIFT_DOC = (
    "What the nodes' kernels lacked of the environment at the last read (refresh), as "
    "'node: change' lines; empty when every node matched its document. The agents repair "
    "drift as it happens, so a line here is one not repaired yet."
)

PROPERTIES: dict[Kind, tuple[Prop, ...]] = {
    Kind.PROJECT: (
        Prop("name", "string", NAME_DOC, replace_on_change=True),
        Prop("plan", "array<string>", "The network change preview shows.", input=False),
    ),
    Kind.ENVIRONMENT: (
        Prop("name", "string", NAME_DOC, replace_on_change=True),
        Prop("project", "string", "The project's name.", required=True, replace_on_change=True),
        Prop(
            "ip_mode",
            "string",
            "'dual' (IPv4 and IPv6, the default) or 'ipv6' (IPv6 only, the legacy mode).",
            default=IpMode.DUAL.value,
        ),
        Prop(
            "ipv4_cidr",
            "string",
            "The environment's private IPv4 range.",
            default=DEFAULT_IPV4_CIDR,
        ),
        Prop(
            "domain",
            "string",
            "The private DNS domain; defaults to the railnet:domain stack setting, else "
            "railway.internal.",
            default=DEFAULT_DOMAIN,
        ),
        Prop(
            "dns_ttl",
            "integer",
            "TTL of the private DNS answers, seconds.",
            default=DEFAULT_DNS_TTL,
        ),
        Prop("key_rotation", "string", KEY_ROTATION_DOC, default=""),
        Prop("owner", "string", OWNER_DOC, default=""),
        Prop("env_id", "string", "The environment's stable id.", input=False),
        Prop("ipv6_prefix", "string", "The environment's ULA /64.", input=False),
        Prop("resolvers", "array<string>", "The resolver addresses instances use.", input=False),
        Prop("unreachable_nodes", "array<string>", UNREACHABLE_DOC, input=False),
        Prop("drift", "array<string>", DRIFT_DOC, input=False),
        Prop("plan", "array<string>", "The network change preview shows.", input=False),
    ),
    Kind.SERVICE: (
        Prop("name", "string", NAME_DOC),
        Prop("project", "string", "The project's name.", required=True, replace_on_change=True),
        Prop(
            "environment",
            "string",
            "The environment's name.",
            required=True,
            replace_on_change=True,
        ),
        Prop("ip_mode", "string", "Taken from the environment.", default=IpMode.DUAL.value),
        Prop("ipv4_cidr", "string", "Taken from the environment.", default=DEFAULT_IPV4_CIDR),
        Prop("domain", "string", "Taken from the environment.", default=DEFAULT_DOMAIN),
        Prop("dns_ttl", "integer", "Taken from the environment.", default=DEFAULT_DNS_TTL),
        Prop("key_rotation", "string", "Taken from the environment.", default=""),
        Prop(
            "replicas", "integer", "How many instances; placed over the cluster's nodes.", default=1
        ),
        Prop(
            "nodes",
            "array<string>",
            "Explicit placement, one node per instance (instead of replicas).",
        ),
        Prop("owner", "string", OWNER_DOC, default=""),
        Prop(
            "environment_owner",
            "string",
            "The URN of the Environment resource this service was declared with; empty when "
            "it joins an environment of another stack by reference (its settings then come "
            "from that environment).",
            default="",
        ),
        Prop("service_id", "string", "The service's stable id.", input=False),
        Prop("env_id", "string", "The environment's stable id.", input=False),
        Prop(
            "private_domain",
            "string",
            "<service>.<domain>: the name other services use.",
            input=False,
        ),
        Prop("placement", "array<string>", "The node of each instance, in order.", input=False),
        Prop("ipv4_addresses", "array<string>", "IPv4 addresses in instance order.", input=False),
        Prop("ipv6_addresses", "array<string>", "IPv6 addresses in instance order.", input=False),
        Prop("instances", "array<Instance>", "Each instance's node and addresses.", input=False),
        Prop(
            "env_vars", "map<string>", "RAILWAY_PRIVATE_DOMAIN and friends, for apps.", input=False
        ),
        Prop("unreachable_nodes", "array<string>", UNREACHABLE_DOC, input=False),
        Prop(
            "pending_removals",
            "array<string>",
            "Nodes that must still remove the environment (they were down when it left them); "
            "the next update finishes it.",
            input=False,
        ),
        Prop("plan", "array<string>", "The network change preview shows.", input=False),
    ),
}


def input_names(kind: Kind) -> list[str]:
    return [p.name for p in PROPERTIES[kind] if p.input]


def output_names(kind: Kind) -> list[str]:
    return [p.name for p in PROPERTIES[kind] if p.output]


def replace_keys(kind: Kind) -> list[str]:
    return [p.name for p in PROPERTIES[kind] if p.replace_on_change]


# -- validation ---------------------------------------------------------------------------------


class Failures:
    """Collects (property, reason) pairs; each names the value it refused."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def run(self, prop: str, check: Any, *args: Any) -> Any:
        try:
            return check(*args)
        except InvalidField as exc:
            self.items.append((prop, str(exc)))
            return None


def _defaulted(kind: Kind, news: Mapping[str, Any]) -> dict[str, Any]:
    result = {}
    for prop in PROPERTIES[kind]:
        if not prop.input:
            continue
        value = news.get(prop.name)
        result[prop.name] = prop.default if value is None else value
    return result


def _mode(value: Any) -> IpMode:
    try:
        return IpMode(value)
    except ValueError:
        raise InvalidField("ip_mode", value, "must be 'dual' or 'ipv6'") from None


def _whole(value: Any) -> bool:
    """A whole number: an int, or a finite float without a fraction (JSON has no ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or (math.isfinite(value) and value.is_integer())


def _ttl(value: Any) -> int:
    if not _whole(value):
        raise InvalidField("dns_ttl", value, "must be a whole number of seconds")
    if not 0 <= int(value) <= MAX_DNS_TTL:
        raise InvalidField("dns_ttl", value, f"must be from 0 to {MAX_DNS_TTL}")
    return int(value)


def _replicas(value: Any) -> int:
    if not _whole(value):
        raise InvalidField("replicas", value, "must be a whole number")
    if not 0 <= int(value) <= MAX_REPLICAS:
        raise InvalidField("replicas", value, f"must be from 0 to {MAX_REPLICAS}")
    return int(value)


def _nodes(value: Any, known: list[str] | None, cordoned: list[str]) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise InvalidField("nodes", value, "must be a list of node names")
    for i, node in enumerate(value):
        check_node_name(f"nodes[{i}]", node)
        if known is not None and node not in known:
            raise InvalidField(f"nodes[{i}]", node, f"is not a node of the cluster {known}")
        if node in cordoned:
            # Explicit placement is an order, not a preference: it fails rather than
            # silently go elsewhere (docs/operating.md, draining a node).
            others = [n for n in known or () if n not in cordoned]
            raise InvalidField(
                f"nodes[{i}]",
                node,
                f"is cordoned (it is being drained): name another node {others}, or "
                f"'railnet cluster uncordon {node}' first",
            )
    return list(value)


def check_environment_settings(inputs: dict[str, Any], failures: Failures) -> None:
    mode = failures.run("ip_mode", _mode, inputs["ip_mode"])
    if mode is IpMode.DUAL:
        failures.run("ipv4_cidr", check_ipv4_cidr, "ipv4_cidr", inputs["ipv4_cidr"])
    failures.run("domain", check_domain, "domain", inputs["domain"])
    ttl = failures.run("dns_ttl", _ttl, inputs["dns_ttl"])
    if ttl is not None:
        inputs["dns_ttl"] = ttl
    failures.run("key_rotation", check_key_rotation, "key_rotation", inputs["key_rotation"])


def _owner(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 1024 or not value.isprintable():
        raise InvalidField("owner", value, "must be a resource URN")
    return value


def check_inputs(
    kind: Kind,
    resource_name: str,
    news: Mapping[str, Any],
    *,
    cluster_nodes: list[str] | None = None,
    cordoned_nodes: list[str] | None = None,
    default_domain: str = DEFAULT_DOMAIN,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Defaulted inputs and failures (property, message) for one resource.

    Values that are unknown during preview must be left out of ``news`` by the caller;
    their checks are skipped and run again in the real update.
    """
    inputs = _defaulted(kind, news)
    if news.get("domain") is None and "domain" in inputs:
        inputs["domain"] = default_domain
    if news.get("name") is None:
        inputs["name"] = resource_name
    failures = Failures()
    failures.run("name", check_dns_label, "name", inputs["name"])
    for key in ("owner", "environment_owner"):
        if key in inputs:
            failures.run(key, _owner, inputs[key])
    if kind is Kind.ENVIRONMENT:
        failures.run("project", check_dns_label, "project", inputs["project"])
        check_environment_settings(inputs, failures)
    elif kind is Kind.SERVICE:
        failures.run("project", check_dns_label, "project", inputs["project"])
        failures.run("environment", check_dns_label, "environment", inputs["environment"])
        check_environment_settings(inputs, failures)
        if news.get("nodes") is not None:
            if news.get("replicas") is not None:
                failures.items.append(
                    ("replicas", "invalid replicas: give either replicas or nodes, not both")
                )
            nodes = failures.run(
                "nodes", _nodes, inputs["nodes"], cluster_nodes, cordoned_nodes or []
            )
            if nodes is not None:
                inputs["nodes"] = nodes
                inputs["replicas"] = len(nodes)
        else:
            replicas = failures.run("replicas", _replicas, inputs["replicas"])
            if replicas is not None:
                inputs["replicas"] = replicas
    return inputs, failures.items


# -- derived outputs ---------------------------------------------------------------------


def placement(
    inputs: Mapping[str, Any],
    cluster_nodes: list[str],
    service_id: str,
    current: tuple[str, ...] = (),
    cordoned: list[str] | tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Where a service's instances run: its explicit ``nodes``, or its replicas, which stay
    where they run now (``current``) unless that node is cordoned, and are spread over the
    nodes not cordoned from a start derived from the service's stable id when new (so a
    rename never moves it)."""
    if inputs.get("nodes"):
        return tuple(inputs["nodes"])
    schedulable = [n for n in cluster_nodes if n not in cordoned]
    replicas = int(inputs["replicas"])
    if cluster_nodes and not schedulable and replicas:
        raise InvalidField(
            "replicas",
            replicas,
            f"every node of the cluster is cordoned ({', '.join(cordoned)}); uncordon one "
            "('railnet cluster uncordon NAME') or add a node",
        )
    return place_replicas(replicas, schedulable, offset=service_id, current=current)


def private_domain(inputs: Mapping[str, Any]) -> str:
    return f"{inputs['name']}.{inputs['domain']}"


def environment_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    env = environment_id(inputs["project"], inputs["name"])
    prefix = ula_prefix(env)
    resolvers = [str(prefix.network_address + 2)]
    if inputs["ip_mode"] == IpMode.DUAL.value:
        resolvers.insert(0, str(ipaddress.IPv4Network(inputs["ipv4_cidr"]).network_address + 2))
    return {"env_id": env, "ipv6_prefix": str(prefix), "resolvers": resolvers}


def service_env_vars(inputs: Mapping[str, Any], ipv4: list[str], ipv6: list[str]) -> dict[str, str]:
    domain = private_domain(inputs)
    return {
        "RAILWAY_PRIVATE_DOMAIN": domain,
        "RAILWAY_SERVICE_NAME": str(inputs["name"]),
        "RAILWAY_ENVIRONMENT_NAME": str(inputs["environment"]),
        "RAILWAY_PROJECT_NAME": str(inputs["project"]),
        "RAILNET_PRIVATE_IPV4": ",".join(ipv4),
        "RAILNET_PRIVATE_IPV6": ",".join(ipv6),
    }


def service_ids(inputs: Mapping[str, Any]) -> tuple[str, str]:
    env = environment_id(inputs["project"], inputs["environment"])
    return env, service_id(env, str(inputs["name"]))
