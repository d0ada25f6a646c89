"""The Pulumi package schema of railnet, rendered from ``railnet.core.resources.PROPERTIES``.

``schema.json`` at the top of the repository is this module's output, checked in so that
tools (and reviewers) can read the package's contract without running Python. Regenerate
it with ``python -m railnet.engine.schema > schema.json`` (``make schema``); a unit test fails
when the two differ.

Property names are the wire names the dynamic providers receive (``ip_mode``, not
``ipMode``): they are what the Python SDK passes and what Pulumi state holds.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import railnet
from railnet.core.document import DEFAULT_DOMAIN
from railnet.core.resources import PROPERTIES, Kind, Prop

PACKAGE = "railnet"

RESOURCE_DOCS: dict[Kind, str] = {
    Kind.PROJECT: (
        "A project: the unit that owns environments. It holds nothing on the nodes; "
        "projects never reach each other."
    ),
    Kind.ENVIRONMENT: (
        "A project environment: one WireGuard mesh between the nodes that host its services, "
        "one private address domain (IPv4 from `ipv4_cidr` in dual-stack mode, IPv6 from a "
        "ULA /64 derived from its id) and one DNS view. Environments never reach each other."
    ),
    Kind.SERVICE: (
        "A service of an environment, reachable as `<name>.<domain>` (by default "
        "`<name>.railway.internal`) from that environment only, at runtime. Its instances "
        "are placed by `replicas` or pinned by `nodes`."
    ),
}

# Object types the property table refers to by name (``array<Instance>``).
OBJECT_TYPES: dict[str, dict[str, Any]] = {
    "Instance": {
        "description": "One instance of a service: where it runs and its private addresses.",
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "The 0-based replica number."},
            "node": {"type": "string", "description": "The node the instance runs on."},
            "ipv4": {
                "type": "string",
                "description": "Its private IPv4 address; empty in an IPv6-only environment.",
            },
            "ipv6": {"type": "string", "description": "Its private IPv6 address."},
        },
        "required": ["index", "ipv4", "ipv6", "node"],
    },
}

PRIMITIVES = ("string", "integer", "number", "boolean")


def type_spec(type_: str) -> dict[str, Any]:
    """A schema type for one of the table's type strings: a primitive, a named object type,
    ``array<T>`` or ``map<T>`` (string keys)."""
    if type_ in PRIMITIVES:
        return {"type": type_}
    if type_ in OBJECT_TYPES:
        return {"$ref": f"#/types/{PACKAGE}:index:{type_}"}
    for wrapper, key in (("array", "items"), ("map", "additionalProperties")):
        if type_.startswith(f"{wrapper}<") and type_.endswith(">"):
            inner = type_spec(type_[len(wrapper) + 1 : -1])
            return {"type": "array" if wrapper == "array" else "object", key: inner}
    raise ValueError(
        f"property type {type_!r} has no schema form; use one of {PRIMITIVES}, "
        f"a type of {sorted(OBJECT_TYPES)}, array<T> or map<T>"
    )


def property_spec(prop: Prop) -> dict[str, Any]:
    spec = {**type_spec(prop.type), "description": prop.description}
    if prop.default is not None:
        spec["default"] = prop.default
    if prop.replace_on_change:
        spec["replaceOnChanges"] = True
    if prop.secret:
        spec["secret"] = True
    return spec


def always_present(prop: Prop) -> bool:
    """Whether every resource's state holds this output: computed outputs, required inputs,
    and inputs that ``check`` fills in (a default, or ``name`` from the Pulumi name)."""
    return not prop.input or prop.required or prop.default is not None or prop.name == "name"


def resource_spec(kind: Kind) -> dict[str, Any]:
    props = PROPERTIES[kind]
    outputs = [p for p in props if p.output]
    inputs = [p for p in props if p.input]
    return {
        "description": RESOURCE_DOCS[kind],
        "properties": {p.name: property_spec(p) for p in outputs},
        "required": sorted(p.name for p in outputs if always_present(p)),
        "inputProperties": {p.name: property_spec(p) for p in inputs},
        "requiredInputs": sorted(p.name for p in inputs if p.required),
    }


def build_schema() -> dict[str, Any]:
    return {
        "name": PACKAGE,
        "displayName": "railnet",
        "version": railnet.__version__,
        "description": (
            "Private networking for self-hosted platforms: every service of a project "
            "environment joins an encrypted WireGuard mesh and is reachable as "
            "<service>.railway.internal, over IPv4 and IPv6."
        ),
        "keywords": [
            "pulumi",
            "railnet",
            "wireguard",
            "private-networking",
            "dns",
            "category/network",
        ],
        "license": "Apache-2.0",
        "config": {
            "variables": {
                "cluster": {
                    "type": "string",
                    "description": (
                        "The cluster: a cluster.json file's path, or the same JSON inline "
                        "(nodes, agent addresses, TLS material). `railnet lab up` writes "
                        "railnet-lab/cluster.json. Required by every create, update, read "
                        "and delete."
                    ),
                },
                "domain": {
                    "type": "string",
                    "description": "The private DNS domain of environments that set none.",
                    "default": DEFAULT_DOMAIN,
                },
            },
            "defaults": ["cluster"],
        },
        "types": {f"{PACKAGE}:index:{name}": spec for name, spec in OBJECT_TYPES.items()},
        "resources": {kind.token: resource_spec(kind) for kind in Kind},
        "language": {
            "python": {
                "packageName": "pulumi_railnet",
                "requires": {"pulumi": ">=3.200,<4"},
            },
        },
        "meta": {"moduleFormat": "(.*)"},
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
