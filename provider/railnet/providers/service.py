"""``railnet:index:Service``: one service of an environment, read-modify-write of its document."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pulumi.dynamic import CreateResult, ReadResult, UpdateResult

from railnet.core.desired import (
    EnvironmentSpec,
    ServiceSpec,
    build_document,
    fresh_service_id,
    spec_from_document,
    with_service,
    without_service,
)
from railnet.core.dns import instance_name
from railnet.core.document import EnvironmentDocument, IpMode
from railnet.core.errors import RailnetError
from railnet.core.names import environment_id
from railnet.core.plan import plan_change, planning_identities
from railnet.core.plan_render import plan_lines
from railnet.core.resources import (
    Kind,
    placement,
    private_domain,
    service_env_vars,
    service_ids,
)
from railnet.providers.base import PROVIDER_KEY, RailnetProvider


def _settings(spec: EnvironmentSpec, inputs: dict[str, Any]) -> EnvironmentSpec:
    return replace(
        spec,
        ip_mode=IpMode(inputs["ip_mode"]),
        ipv4_cidr=str(inputs["ipv4_cidr"]),
        domain=str(inputs["domain"]),
        dns_ttl=int(inputs["dns_ttl"]),
    )


def service_plan(inputs: dict[str, Any], nodes: tuple[str, ...] | None) -> list[str]:
    """What the network will do for this service, deterministic, for preview.

    ``nodes`` is None when the cluster is unknown (an unconfigured provider, as under
    mocks): the count is then the declared replicas, placed at deploy."""
    if nodes is None:
        count = int(inputs.get("replicas") or 0)
        head = f"{count} instance(s), placed at deploy"
        nodes = ()
    else:
        head = f"{len(nodes)} instance(s) on {', '.join(nodes) if nodes else 'no node'}"
    families = "AAAA" if inputs["ip_mode"] == IpMode.IPV6.value else "A, AAAA"
    lines = [
        f"service {inputs['name']} in {inputs['project']}/{inputs['environment']}: {head}",
        f"dns {private_domain(inputs)}: {families}, ttl {inputs['dns_ttl']}s",
    ]
    lines += [
        f"dns {instance_name(str(inputs['name']), i, str(inputs['domain']))}: instance on {node}"
        for i, node in enumerate(nodes)
    ]
    mesh = sorted(set(nodes))
    if mesh:
        lines.append(f"mesh: nodes {', '.join(mesh)} carry the environment")
    return lines


class ServiceProvider(RailnetProvider):
    kind: ClassVar[Kind] = Kind.SERVICE
    derived_keys: ClassVar[tuple[str, ...]] = (
        "env_id",
        "service_id",
        "private_domain",
        "placement",
        "plan",
    )

    def _placement(self, inputs: dict[str, Any], sid: str) -> tuple[str, ...]:
        nodes = self.cluster_nodes()
        if nodes is None:
            return tuple(inputs.get("nodes") or ())
        return placement(inputs, nodes, sid)

    def _planned(self, inputs: dict[str, Any], sid: str) -> tuple[str, ...] | None:
        if self.cluster_nodes() is None and not inputs.get("nodes"):
            return None
        return self._placement(inputs, sid)

    def derived(self, inputs: dict[str, Any], olds: dict[str, Any] | None = None) -> dict[str, Any]:
        env_id, sid = service_ids(inputs)
        sid = str((olds or {}).get("service_id") or sid)
        planned = self._planned(inputs, sid)
        result: dict[str, Any] = {
            "env_id": env_id,
            "service_id": sid,
            "private_domain": private_domain(inputs),
            "plan": service_plan(inputs, planned),
        }
        if planned is not None:
            result["placement"] = list(planned)
            network = self._network_plan(inputs, sid if olds else None, planned)
            if network is not None:
                result["plan"] = network
        return result

    def _network_plan(
        self, inputs: dict[str, Any], sid: str | None, nodes: tuple[str, ...]
    ) -> list[str] | None:
        """The change as the network will see it: the environment's document now (read from
        the agents) against the one this service's change makes. No side effects."""
        try:
            deployer = self.deployer()
            old = deployer.latest(
                deployer.read(environment_id(inputs["project"], inputs["environment"]))
            )
        except RailnetError:
            return None  # agents unreachable: preview still shows the declared plan
        base = (
            spec_from_document(old)
            if old is not None
            else EnvironmentSpec(str(inputs["project"]), str(inputs["environment"]))
        )
        existing = {s.id for s in base.services}
        chosen = sid or fresh_service_id(base.id, str(inputs["name"]), existing)
        try:
            spec = with_service(
                _settings(base, inputs),
                ServiceSpec(name=str(inputs["name"]), nodes=nodes, id=chosen),
                create=sid is None,
            )
            new = build_document(spec, old, planning_identities(spec.nodes, old))
        except RailnetError as exc:
            return [f"plan: {exc}"]
        return plan_lines(plan_change(old, new))

    def _outputs(
        self, inputs: dict[str, Any], doc: EnvironmentDocument, sid: str
    ) -> dict[str, Any]:
        svc = next((s for s in doc.services if s.id == sid), None)
        if svc is None:
            raise RuntimeError(f"service {sid} is missing from generation {doc.generation}")
        named = {**inputs, "name": svc.name}
        ipv4 = [i.ipv4 for i in svc.instances if i.ipv4]
        ipv6 = [i.ipv6 for i in svc.instances]
        outs = {k: v for k, v in inputs.items() if k != PROVIDER_KEY}
        outs.update(
            name=svc.name,
            env_id=doc.id,
            service_id=sid,
            private_domain=private_domain(named),
            ipv4_addresses=ipv4,
            ipv6_addresses=ipv6,
            instances=[
                {"index": i, "node": inst.node, "ipv4": inst.ipv4 or "", "ipv6": inst.ipv6}
                for i, inst in enumerate(svc.instances)
            ],
            env_vars=service_env_vars(named, ipv4, ipv6),
            placement=[i.node for i in svc.instances],
            plan=service_plan(named, tuple(i.node for i in svc.instances)),
        )
        return outs

    def _write(self, inputs: dict[str, Any], sid: str | None) -> dict[str, Any]:
        """Add (``sid`` None: a new id is chosen) or change the service in its document."""
        chosen: list[str] = []

        def edit(base: EnvironmentSpec) -> EnvironmentSpec:
            new = sid or fresh_service_id(
                base.id, str(inputs["name"]), {s.id for s in base.services}
            )
            chosen[:] = [new]
            nodes = self._placement(inputs, new)
            spec = ServiceSpec(name=str(inputs["name"]), nodes=nodes, id=new)
            return with_service(_settings(base, inputs), spec, create=sid is None)

        applied = self.deployer().update(str(inputs["project"]), str(inputs["environment"]), edit)
        return self._outputs(inputs, applied.document, chosen[0])

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._write(props, None)
        return CreateResult(f"{outs['env_id']}/{outs['service_id']}", outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        sid = str(olds.get("service_id") or id_.rsplit("/", 1)[-1])
        return UpdateResult(self._write(news, sid))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        sid = str(props.get("service_id") or id_.rsplit("/", 1)[-1])
        deployer = self.deployer()
        env_id = str(props.get("env_id") or id_.split("/", 1)[0])
        if deployer.latest(deployer.read(env_id)) is None:
            return  # already gone
        deployer.update(
            str(props["project"]),
            str(props["environment"]),
            lambda base: without_service(base, sid),
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        env_id, _, sid = id_.partition("/")
        deployer = self.deployer()
        doc = deployer.latest(deployer.read(env_id))
        svc = None if doc is None else next((s for s in doc.services if s.id == sid), None)
        if doc is None or svc is None:
            return ReadResult("", {})
        nodes = [i.node for i in svc.instances]
        inputs = {
            k: props.get(k)
            for k in ("project", "environment", "ip_mode", "ipv4_cidr", "domain", "dns_ttl")
        }
        inputs.update(name=svc.name)
        if props.get("nodes"):
            inputs["nodes"] = nodes
        else:
            inputs["replicas"] = len(nodes)
        inputs.update(
            ip_mode=doc.ip_mode.value,
            ipv4_cidr=doc.ipv4_cidr or props.get("ipv4_cidr"),
            domain=doc.domain,
            dns_ttl=doc.dns_ttl,
        )
        outs = self._outputs({**props, **inputs}, doc, sid)
        return ReadResult(id_, outs, inputs)
