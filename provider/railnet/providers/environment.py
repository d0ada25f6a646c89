"""``railnet:index:Environment``: settings of one project environment and its teardown."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, ClassVar

from pulumi.dynamic import CreateResult, ReadResult, UpdateResult

from railnet.core.desired import EnvironmentSpec
from railnet.core.document import IpMode
from railnet.core.names import environment_id
from railnet.core.resources import Kind, environment_outputs
from railnet.providers.base import PROVIDER_KEY, ProviderConfigError, RailnetProvider


def environment_plan(inputs: dict[str, Any]) -> list[str]:
    outs = environment_outputs(inputs)
    mode = "dual stack (IPv4 and IPv6)" if inputs["ip_mode"] == IpMode.DUAL.value else "IPv6 only"
    lines = [
        f"environment {inputs['project']}/{inputs['name']} ({outs['env_id']}): {mode}",
        f"addresses: {inputs['ipv4_cidr'] + ', ' if inputs['ip_mode'] == 'dual' else ''}"
        f"{outs['ipv6_prefix']}",
        f"dns: *.{inputs['domain']} at {', '.join(outs['resolvers'])}, ttl {inputs['dns_ttl']}s",
    ]
    if inputs.get("key_rotation"):
        lines.append(f"wireguard keys: made for rotation {inputs['key_rotation']!r}")
    return lines


class EnvironmentProvider(RailnetProvider):
    kind: ClassVar[Kind] = Kind.ENVIRONMENT
    derived_keys: ClassVar[tuple[str, ...]] = ("env_id", "ipv6_prefix", "resolvers", "plan")

    def derived(self, inputs: dict[str, Any], olds: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**environment_outputs(inputs), "plan": environment_plan(inputs)}

    def _outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        outs = {k: v for k, v in inputs.items() if k != PROVIDER_KEY}
        outs.update(self.derived(inputs))
        outs.setdefault("drift", [])  # an apply repairs what it finds; read asks again
        if outs["drift"] is None:
            outs["drift"] = []
        return outs

    def _apply_settings(self, inputs: dict[str, Any]) -> None:
        """Rewrite the document with new settings, if any node holds one yet, and claim the
        environment for this resource. Another owner's environment is refused by name."""
        deployer = self.deployer()
        env_id = environment_id(str(inputs["project"]), str(inputs["name"]))
        owner = str(inputs.get("owner") or "")
        held = deployer.current(env_id)
        if held is None:
            return  # no service yet: nothing on any node
        _check_owner(held.owner, owner, f"{held.project}/{held.environment}")

        def edit(base: EnvironmentSpec) -> EnvironmentSpec:
            _check_owner(base.owner, owner, f"{base.project}/{base.environment}")
            return replace(
                base,
                ip_mode=IpMode(inputs["ip_mode"]),
                ipv4_cidr=str(inputs["ipv4_cidr"]),
                domain=str(inputs["domain"]),
                dns_ttl=int(inputs["dns_ttl"]),
                key_rotation=str(inputs.get("key_rotation") or ""),
                owner=owner or base.owner,
            )

        deployer.update(str(inputs["project"]), str(inputs["name"]), edit)

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._apply_settings(props)
        outs = self._outputs(props)
        return CreateResult(str(outs["env_id"]), outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._apply_settings(news)
        return UpdateResult(self._outputs(news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        """Remove the environment. Refused while it still holds services (another stack's
        that joined it, most likely): deleting it would take them down too."""
        deployer = self.deployer()
        held = deployer.current(id_)
        if held is not None and held.services:
            listed = ", ".join(f"{s.name} ({s.owner or 'owner unknown'})" for s in held.services)
            raise ProviderConfigError(
                f"environment {held.project}/{held.environment} still holds services of "
                f"other stacks: {listed}; destroy those first"
            )
        deployer.destroy(id_, expected=held)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        survey = self.deployer().survey(id_)
        doc = self.deployer().current(id_)
        inputs = {
            k: props.get(k)
            for k in (
                "name",
                "project",
                "ip_mode",
                "ipv4_cidr",
                "domain",
                "dns_ttl",
                "key_rotation",
                "owner",
            )
        }
        if doc is not None:
            inputs.update(
                ip_mode=doc.ip_mode.value,
                ipv4_cidr=doc.ipv4_cidr or props.get("ipv4_cidr"),
                domain=doc.domain,
                dns_ttl=doc.dns_ttl,
                key_rotation=doc.key_rotation,
            )
        outs = self._outputs({**props, **inputs})
        outs["unreachable_nodes"] = survey.silent_nodes()
        # What the agents have not repaired yet: refresh shows it until they have.
        hosts = {n.name for n in doc.nodes} if doc is not None else set()
        # Endpoints are node addresses, which the (maybe secret) cluster file holds too:
        # outputs name nodes only.
        outs["drift"] = [
            re.sub(r" at \S+:\d+", "", line) for line in self.deployer().drift(id_, hosts)
        ]
        return ReadResult(id_, outs, inputs)


def _check_owner(held: str, mine: str, name: str) -> None:
    if held and mine and held != mine:
        raise ProviderConfigError(
            f"environment {name} belongs to {held}; declare it in one stack only, and join "
            f'it from the others by reference (Service(..., environment="{name}"))'
        )


def _stack(urn: str) -> str:
    """``urn:pulumi:STACK::PROJECT::...`` → ``STACK::PROJECT`` ("" when not a URN)."""
    parts = urn.removeprefix("urn:pulumi:").split("::")
    return "::".join(parts[:2]) if urn.startswith("urn:pulumi:") and len(parts) > 2 else ""
