"""``railnet:index:Service``: one service of an environment, read-modify-write of its document."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, ClassVar

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, UpdateResult

from railnet.core.desired import (
    EnvironmentSpec,
    ServiceSpec,
    adoptable,
    build_document,
    fresh_service_id,
    spec_from_document,
    with_service,
    without_service,
)
from railnet.core.dns import instance_name
from railnet.core.document import EnvironmentDocument, IpMode
from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import environment_id
from railnet.core.plan import plan_change, planning_identities, with_pending_addresses
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
    """``spec`` with the environment settings this service carries, when it was declared
    with its Environment (``environment_owner``). A service that joins an environment by
    reference leaves the settings to their owner. Declaring an environment another stack
    owns is refused, naming that owner."""
    declared_by = str(inputs.get("environment_owner") or "")
    if not declared_by:
        return spec
    if spec.owner and spec.owner != declared_by:
        raise InvalidField(
            "environment",
            f"{spec.project}/{spec.environment}",
            f"belongs to {spec.owner}; join it by reference instead "
            f'(Service(..., environment="{spec.project}/{spec.environment}"))',
        )
    return replace(
        spec,
        ip_mode=IpMode(inputs["ip_mode"]),
        ipv4_cidr=str(inputs["ipv4_cidr"]),
        domain=str(inputs["domain"]),
        dns_ttl=int(inputs["dns_ttl"]),
        key_rotation=str(inputs.get("key_rotation") or ""),
        owner=declared_by,
    )


def _hints(*placements: Any) -> list[str]:
    """Nodes that likely hold the environment: where the service's instances were or go."""
    return [str(n) for p in placements if isinstance(p, (list, tuple)) for n in p]


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

    def _placement(
        self, inputs: dict[str, Any], sid: str, current: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        nodes = self.cluster_nodes()
        if nodes is None:
            return tuple(inputs.get("nodes") or ())
        return placement(inputs, nodes, sid, current, self.cordoned_nodes())

    def _planned(
        self, inputs: dict[str, Any], sid: str, current: tuple[str, ...]
    ) -> tuple[str, ...] | None:
        if self.cluster_nodes() is None and not inputs.get("nodes"):
            return None
        return self._placement(inputs, sid, current)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = super().diff(_id, olds, news)
        before, after = olds.get("placement"), news.get("placement")
        if (
            not result.changes
            and isinstance(before, list)
            and isinstance(after, list)
            and [str(n) for n in before] != [str(n) for n in after]
        ):
            # Check placed an instance elsewhere with no input changed: its node was
            # cordoned or left the cluster. Only an update moves it.
            return DiffResult(changes=True, replaces=[], stables=[], delete_before_replace=False)
        return result

    def derived(self, inputs: dict[str, Any], olds: dict[str, Any] | None = None) -> dict[str, Any]:
        env_id, sid = service_ids(inputs)
        sid = str((olds or {}).get("service_id") or sid)
        current = (olds or {}).get("placement")
        planned = self._planned(
            inputs, sid, tuple(str(n) for n in current) if isinstance(current, list) else ()
        )
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
                result["plan"], pending = network
                if pending:
                    result["pending_removals"] = pending
        return result

    def _network_plan(
        self, inputs: dict[str, Any], sid: str | None, nodes: tuple[str, ...]
    ) -> tuple[list[str], list[str]] | None:
        """The change as the network will see it: the environment's document now (read from
        the agents) against the one this service's change makes. No side effects."""
        try:
            deployer = self.deployer()
            env_id = environment_id(inputs["project"], inputs["environment"])
            old = deployer.current(env_id, _hints(nodes))
        except RailnetError:
            return None  # agents unreachable: preview still shows the declared plan
        base = (
            spec_from_document(old)
            if old is not None
            else EnvironmentSpec(str(inputs["project"]), str(inputs["environment"]))
        )
        existing = {s.id for s in base.services}
        now = int(time.time())
        try:
            owner = str(inputs.get("owner") or "")
            adopted = adoptable(base, str(inputs["name"]), owner) if sid is None else None
            chosen = sid or (adopted.id if adopted else None)
            chosen = chosen or fresh_service_id(base.id, str(inputs["name"]), existing)
            spec = with_service(
                _settings(base, inputs),
                ServiceSpec(name=str(inputs["name"]), nodes=nodes, id=chosen, owner=owner),
                create=sid is None and adopted is None,
            )
            new = build_document(spec, old, planning_identities(spec.nodes, old), now=now)
        except RailnetError as exc:
            return [f"plan: {exc}"], []
        # Addresses no agent holds yet are handed out when the deploy runs: another service
        # created in the same run may take the one this plan would guess.
        lines = plan_lines(with_pending_addresses(plan_change(old, new, now), old))
        pending = sorted(old.leaving) if old else []
        lines += [f"mesh: {n} still holds the environment; this update removes it" for n in pending]
        return lines, pending

    def _outputs(
        self,
        inputs: dict[str, Any],
        doc: EnvironmentDocument,
        sid: str,
        unreachable: list[str] | tuple[str, ...] = (),
    ) -> dict[str, Any]:
        svc = next((s for s in doc.services if s.id == sid), None)
        if svc is None:
            raise RuntimeError(f"service {sid} is missing from generation {doc.generation}")
        named = {
            **inputs,
            "name": svc.name,
            "ip_mode": doc.ip_mode.value,
            "ipv4_cidr": doc.ipv4_cidr or inputs.get("ipv4_cidr"),
            "domain": doc.domain,
            "dns_ttl": doc.dns_ttl,
            "key_rotation": doc.key_rotation,
        }
        ipv4 = [i.ipv4 for i in svc.instances if i.ipv4]
        ipv6 = [i.ipv6 for i in svc.instances]
        outs = {k: v for k, v in named.items() if k != PROVIDER_KEY}
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
            unreachable_nodes=list(unreachable),
            pending_removals=list(doc.leaving),
        )
        return outs

    def _write(self, inputs: dict[str, Any], sid: str | None, hints: list[str]) -> dict[str, Any]:
        """Add (``sid`` None: a new id is chosen) or change the service in its document. A
        create finds the service its owner made before (a reply that was lost) and adopts
        it: same id, same addresses."""
        chosen: list[str] = []
        owner = str(inputs.get("owner") or "")

        def edit(base: EnvironmentSpec) -> EnvironmentSpec:
            adopted = adoptable(base, str(inputs["name"]), owner) if sid is None else None
            new = sid or (adopted.id if adopted else "")
            new = new or fresh_service_id(
                base.id, str(inputs["name"]), {s.id for s in base.services}
            )
            chosen[:] = [new]
            now = next((s.nodes for s in base.services if s.id == new), ())
            nodes = self._placement(inputs, new, now)
            spec = ServiceSpec(name=str(inputs["name"]), nodes=nodes, id=new, owner=owner)
            create = sid is None and adopted is None
            return with_service(_settings(base, inputs), spec, create=create)

        applied = self.deployer().update(
            str(inputs["project"]), str(inputs["environment"]), edit, hints
        )
        return self._outputs(inputs, applied.document, chosen[0])

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._write(props, None, _hints(props.get("placement")))
        return CreateResult(f"{outs['env_id']}/{outs['service_id']}", outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        sid = str(olds.get("service_id") or id_.rsplit("/", 1)[-1])
        hints = _hints(olds.get("placement"), news.get("placement"))
        return UpdateResult(self._write(news, sid, hints))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        sid = str(props.get("service_id") or id_.rsplit("/", 1)[-1])
        deployer = self.deployer()
        env_id = str(props.get("env_id") or id_.split("/", 1)[0])
        hints = _hints(props.get("placement"))
        held = deployer.current(env_id, hints)
        if held is None or all(s.id != sid for s in held.services):
            return  # already gone: a retried delete succeeds
        deployer.update(
            str(props["project"]),
            str(props["environment"]),
            lambda base: without_service(base, sid),
            hints,
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        env_id, _, sid = id_.partition("/")
        survey = self.deployer().survey(env_id, _hints(props.get("placement")))
        doc = self.deployer().current(env_id, _hints(props.get("placement")))
        svc = None if doc is None else next((s for s in doc.services if s.id == sid), None)
        if doc is None or svc is None:
            if survey.unreachable and doc is None:
                # Nothing answered with the environment, and some nodes did not answer at
                # all: keep the resource and say which nodes, rather than call it gone.
                return ReadResult(id_, {**props, "unreachable_nodes": survey.silent_nodes()})
            return ReadResult("", {})
        nodes = [i.node for i in svc.instances]
        inputs = {
            k: props.get(k)
            for k in (
                "project",
                "environment",
                "ip_mode",
                "ipv4_cidr",
                "domain",
                "dns_ttl",
                "key_rotation",
                "owner",
                "environment_owner",
            )
        }
        # What check carries over from its old inputs (``derived``): after a refresh the next
        # check gets these inputs as its olds, so without them a rename would get a new
        # service id and every replica a fresh placement.
        inputs.update(name=svc.name, service_id=sid, placement=nodes)
        if props.get("nodes"):
            inputs["nodes"] = nodes
        else:
            inputs["replicas"] = len(nodes)
        # What check derived: the next check places from here, so a refresh never makes
        # the next deploy look like a move (diff compares placements).
        inputs["placement"] = nodes
        inputs.update(
            ip_mode=doc.ip_mode.value,
            ipv4_cidr=doc.ipv4_cidr or props.get("ipv4_cidr"),
            domain=doc.domain,
            dns_ttl=doc.dns_ttl,
            key_rotation=doc.key_rotation,
        )
        outs = self._outputs({**props, **inputs}, doc, sid, survey.silent_nodes(involved_only=True))
        return ReadResult(id_, outs, inputs)
