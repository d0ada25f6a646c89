"""The resources users declare. Each is a Pulumi dynamic resource whose provider lives in
``railnet.providers`` (pickled by reference, so it carries no state of its own).

Every output is also declared as a ``None`` input, which is how a dynamic resource gets
the attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi.dynamic
from pulumi.runtime.config import get_config_secret_keys_env

from railnet.core.resources import PROPERTIES, Kind
from railnet.core.secrecy import secret_outputs
from railnet.providers import EnvironmentProvider, ProjectProvider, ServiceProvider


def _maybe_secret(value: Any) -> bool:
    """Whether an input may be secret. Whether an ``Output`` is secret is known only once it
    resolves, after the resource's options are sent, so every ``Output`` counts: a plain
    value is the way to keep a property (and what derives from it) visible."""
    if isinstance(value, pulumi.Output):
        return True
    if isinstance(value, Mapping):
        return any(_maybe_secret(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_maybe_secret(v) for v in value)
    return False


def _secret_setting(key: str) -> bool:
    """A stack setting set with ``--secret``: the language host lists them in
    PULUMI_CONFIG_SECRET_KEYS (sdk/python/cmd/pulumi-language-python/main.go)."""
    return key in get_config_secret_keys_env()


def _props(
    kind: Kind, given: Mapping[str, Any], opts: pulumi.ResourceOptions | None
) -> tuple[dict[str, Any], pulumi.ResourceOptions | None]:
    """The resource's inputs, every output declared as ``None``, and its options with the
    outputs that derive from a secret input made secret.

    The dynamic provider never sees secrets, and the engine marks an output secret again
    only when an input of the same name was. So an output derived from a secret (``plan``,
    the addresses, ``env_vars``) is asked for as secret here: ``additional_secret_outputs``
    for the outputs, and a secret ``None`` input for the properties ``check`` computes, which
    the engine's name rule (``annotateSecrets``) then keeps secret in the checked inputs and
    the preview too."""
    props: dict[str, Any] = {p.name: None for p in PROPERTIES[kind]}
    props.update({k: v for k, v in given.items() if v is not None})
    secret = {k for k, v in given.items() if _maybe_secret(v)}
    if "domain" in props and given.get("domain") is None and _secret_setting("railnet:domain"):
        # The provider fills the domain in from this setting.
        secret.add("domain")
        props["domain"] = pulumi.Output.secret(None)
    hidden = secret_outputs(kind, secret)
    if not hidden:
        return props, opts
    for name in hidden:
        props[name] = pulumi.Output.secret(None)
    return props, pulumi.ResourceOptions.merge(
        opts, pulumi.ResourceOptions(additional_secret_outputs=hidden)
    )


def _urn(kind: Kind, resource_name: str) -> str:
    """The URN Pulumi gives a top-level resource of this program: stack, project, type and
    name. It is known before the resource registers, so it can be an input: the owner the
    environment document records."""
    return (
        f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::"
        f"{kind.dynamic_token}::{resource_name}"
    )


class Project(pulumi.dynamic.Resource, module="railnet", name="Project"):
    """A project: the unit that owns environments. It holds nothing on the nodes."""

    name: pulumi.Output[str]
    """The project's name (a DNS label)."""
    plan: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        name: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        self.declared_name: pulumi.Input[str] = name or resource_name
        props, opts = _props(Kind.PROJECT, {"name": self.declared_name}, opts)
        super().__init__(ProjectProvider(), resource_name, props, opts)


class Environment(pulumi.dynamic.Resource, module="railnet", name="Environment"):
    """A project environment: one WireGuard mesh, one address domain, one DNS view."""

    name: pulumi.Output[str]
    project: pulumi.Output[str]
    ip_mode: pulumi.Output[str]
    """``"dual"`` (IPv4 and IPv6, the default) or ``"ipv6"`` (the legacy IPv6-only mode)."""
    ipv4_cidr: pulumi.Output[str]
    domain: pulumi.Output[str]
    dns_ttl: pulumi.Output[int]
    key_rotation: pulumi.Output[str]
    """The token the WireGuard keys were made for; a new value rotates every node's keys."""
    env_id: pulumi.Output[str]
    ipv6_prefix: pulumi.Output[str]
    resolvers: pulumi.Output[list[str]]
    owner: pulumi.Output[str]
    """This resource's URN: the owner of the environment's settings."""
    unreachable_nodes: pulumi.Output[list[str]]
    drift: pulumi.Output[list[str]]
    """``node: change`` lines the nodes had not repaired yet at the last refresh."""
    plan: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        project: Project | pulumi.Input[str],
        name: pulumi.Input[str] | None = None,
        ip_mode: pulumi.Input[str] | None = None,
        ipv4_cidr: pulumi.Input[str] | None = None,
        domain: pulumi.Input[str] | None = None,
        dns_ttl: pulumi.Input[int] | None = None,
        key_rotation: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``key_rotation``: change it (a date, a counter) to give every node of the
        environment a new WireGuard key pair, in place, without dropping connections."""
        # The declared values, not this resource's outputs, flow into its services: they
        # are known in a preview of a new environment, so the preview can show names and
        # the network plan instead of "computed".
        self.declared: dict[str, Any] = {
            "name": name or resource_name,
            "project": project.declared_name if isinstance(project, Project) else project,
            "ip_mode": ip_mode,
            "ipv4_cidr": ipv4_cidr,
            "domain": domain,
            "dns_ttl": dns_ttl,
            "key_rotation": key_rotation,
            "owner": _urn(Kind.ENVIRONMENT, resource_name),
        }
        depends = [project] if isinstance(project, Project) else []
        props, opts = _props(
            Kind.ENVIRONMENT,
            self.declared,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends)),
        )
        super().__init__(EnvironmentProvider(), resource_name, props, opts)


class Service(pulumi.dynamic.Resource, module="railnet", name="Service"):
    """A service of an environment, reachable as ``<name>.<domain>`` inside it only."""

    name: pulumi.Output[str]
    project: pulumi.Output[str]
    environment: pulumi.Output[str]
    ip_mode: pulumi.Output[str]
    ipv4_cidr: pulumi.Output[str]
    domain: pulumi.Output[str]
    dns_ttl: pulumi.Output[int]
    key_rotation: pulumi.Output[str]
    replicas: pulumi.Output[int]
    nodes: pulumi.Output[list[str] | None]
    service_id: pulumi.Output[str]
    env_id: pulumi.Output[str]
    private_domain: pulumi.Output[str]
    """``<service>.railway.internal`` (or the environment's domain)."""
    placement: pulumi.Output[list[str]]
    """The node of each instance, in instance order."""
    ipv4_addresses: pulumi.Output[list[str]]
    ipv6_addresses: pulumi.Output[list[str]]
    instances: pulumi.Output[list[dict[str, Any]]]
    """One ``{"index", "node", "ipv4", "ipv6"}`` per instance, in instance order."""
    env_vars: pulumi.Output[dict[str, str]]
    """``RAILWAY_PRIVATE_DOMAIN`` and friends, to wire into the app."""
    owner: pulumi.Output[str]
    """This resource's URN, recorded in the environment document."""
    environment_owner: pulumi.Output[str]
    unreachable_nodes: pulumi.Output[list[str]]
    """Nodes of the environment that did not answer the last refresh."""
    pending_removals: pulumi.Output[list[str]]
    """Nodes that must still remove the environment; the next update finishes it."""
    plan: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        environment: Environment | str,
        replicas: pulumi.Input[int] | None = None,
        nodes: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None,
        name: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``environment`` is an ``Environment`` of this program, or ``"project/env"``: an
        environment another stack declares, which this service joins by reference (its
        settings stay that stack's)."""
        if replicas is not None and nodes is not None:
            raise ValueError(f"Service {resource_name}: give either replicas or nodes, not both")
        if isinstance(environment, Environment):
            declared = dict(environment.declared)
            depends: list[pulumi.Resource] = [environment]
        else:
            project, _, env = str(environment).partition("/")
            if not project or not env or "/" in env:
                raise ValueError(
                    f"Service {resource_name}: environment {environment!r} must be an "
                    "Environment or 'project/environment'"
                )
            declared = {"project": project, "name": env, "owner": ""}
            depends = []
        props, opts = _props(
            Kind.SERVICE,
            {
                "name": name or resource_name,
                "project": declared["project"],
                "environment": declared["name"],
                "ip_mode": declared.get("ip_mode"),
                "ipv4_cidr": declared.get("ipv4_cidr"),
                "domain": declared.get("domain"),
                "dns_ttl": declared.get("dns_ttl"),
                "key_rotation": declared.get("key_rotation"),
                "replicas": replicas,
                "nodes": nodes,
                "owner": _urn(Kind.SERVICE, resource_name),
                "environment_owner": declared["owner"],
            },
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends)),
        )
        super().__init__(ServiceProvider(), resource_name, props, opts)
