"""Which outputs carry which inputs, so that a secret input stays secret in what derives from it.

Dynamic providers never see secrets: the engine sends them the plain values and marks an
output secret again only when an input of the *same name* was secret. Everything a
provider derives (``plan``, the addresses, ``env_vars``) would be stored in clear text. The
SDK therefore asks for those outputs to be secret itself (``additional_secret_outputs``,
and a secret placeholder for the ones ``check`` computes, which the engine's name rule then
covers). This table says what derives from what; a test keeps it complete.

The ids (``env_id``, ``service_id``, ``ipv6_prefix``) are one-way hashes of the names, never
their text, and a resource id cannot be secret in Pulumi, so they are not listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from railnet.core.resources import Kind, input_names, output_names

_SETTINGS: Final = frozenset({"ip_mode", "ipv4_cidr", "domain", "dns_ttl"})
_INSTANCES: Final = frozenset({"replicas", "nodes"})
_NAMES: Final = frozenset({"name", "project", "environment"})

DERIVED_FROM: Final[Mapping[Kind, Mapping[str, frozenset[str]]]] = MappingProxyType(
    {
        Kind.PROJECT: MappingProxyType({"plan": frozenset({"name"})}),
        Kind.ENVIRONMENT: MappingProxyType(
            {
                "env_id": frozenset(),
                "ipv6_prefix": frozenset(),
                "resolvers": frozenset({"ip_mode", "ipv4_cidr"}),
                "unreachable_nodes": frozenset(),
                "drift": frozenset(),
                "plan": frozenset({"name", "project"}) | _SETTINGS,
            }
        ),
        Kind.SERVICE: MappingProxyType(
            {
                "service_id": frozenset(),
                "env_id": frozenset(),
                "private_domain": frozenset({"name", "domain"}),
                "placement": _INSTANCES,
                "ipv4_addresses": _INSTANCES | {"ip_mode", "ipv4_cidr"},
                "ipv6_addresses": _INSTANCES,
                "instances": _INSTANCES | {"ip_mode", "ipv4_cidr"},
                "env_vars": _NAMES | _INSTANCES | {"domain", "ip_mode", "ipv4_cidr"},
                "unreachable_nodes": frozenset({"nodes"}),
                "pending_removals": frozenset({"nodes"}),
                "plan": _NAMES | _INSTANCES | _SETTINGS,
            }
        ),
    }
)
"""Per kind: every output that is not an input, and the inputs whose values it shows."""


def derived_outputs(kind: Kind) -> list[str]:
    """The outputs of ``kind`` that are not inputs (what the table must cover)."""
    inputs = set(input_names(kind))
    return [name for name in output_names(kind) if name not in inputs]


def secret_outputs(kind: Kind, secret_inputs: Iterable[str]) -> list[str]:
    """The derived outputs that must be secret when ``secret_inputs`` are, in table order."""
    secrets = set(secret_inputs)
    return [name for name, sources in DERIVED_FROM[kind].items() if sources & secrets]
