"""From the resource states of a preview to environment documents, and on to plans.

A preview lists every resource of the stack with its old state (outputs: the instances
and addresses the agents hold) and its new state (inputs after ``check``: names,
placement, settings). Grouped per environment, the old side is rebuilt as the document the
nodes hold, and the new side is built the way the provider will build it
(``railnet.core.desired.build_document``, so addresses come out as the agents will assign
them). ``plan_change`` then says what the network will do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from railnet.core.desired import (
    EnvironmentSpec,
    ServiceSpec,
    build_document,
    fresh_service_id,
    spec_from_document,
    with_service,
)
from railnet.core.document import (
    DEFAULT_DNS_TTL,
    DEFAULT_DOMAIN,
    EnvironmentDocument,
    IpMode,
)
from railnet.core.errors import RailnetError
from railnet.core.names import environment_id
from railnet.core.plan import (
    EnvironmentPlan,
    plan_change,
    planning_identities,
    planning_node,
    with_pending_addresses,
)
from railnet.core.plan_render import PlanReport, ResourceOp

OLD_SIDE_OPS = {"same", "update", "replace", "delete", "delete-replaced", "read"}
NEW_SIDE_OPS = {"same", "update", "replace", "create", "create-replacement", "read", "import"}
SETTINGS = ("ip_mode", "ipv4_cidr", "domain", "dns_ttl")


class StepLike(Protocol):
    """What the planner needs of one preview step."""

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def op(self) -> str: ...

    @property
    def old_outputs(self) -> Mapping[str, Any] | None: ...

    @property
    def new_inputs(self) -> Mapping[str, Any] | None: ...

    @property
    def replace_reasons(self) -> Sequence[str]: ...


@dataclass
class _Side:
    settings: dict[str, Any] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    present: bool = False


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def plan_report(
    steps: Sequence[StepLike],
    held: Mapping[str, EnvironmentDocument | None] | None = None,
) -> PlanReport:
    """The network plan of a preview. With ``held`` (env id → what the agents hold), the
    old side is the agents' documents instead of the preview's old state: drift shows."""
    steps = _without_refreshes(steps)
    notes: list[str] = []
    old: dict[tuple[str, str], _Side] = {}
    new: dict[tuple[str, str], _Side] = {}
    resources: list[ResourceOp] = []
    created: set[tuple[str, str]] = set()
    for step in steps:
        if step.kind == "Environment" and step.op in ("create", "create-replacement"):
            env_key = _env_key(step.kind, step.new_inputs or {})
            if env_key is not None:
                created.add(env_key)
        if step.kind == "Project":
            if step.op != "same":
                named = step.new_inputs or step.old_outputs or {}
                resources.append(
                    ResourceOp(
                        step.kind, step.name, step.op, project=_text(named.get("name")) or ""
                    )
                )
            continue
        if step.op != "same":
            # A delete or replacement is about the resource that goes: name its old place.
            first = (
                (step.old_outputs, step.new_inputs)
                if step.op in OLD_SIDE_OPS - {"same", "update", "read"}
                else (step.new_inputs, step.old_outputs)
            )
            where = next((k for k in (_env_key(step.kind, p or {}) for p in first) if k), None)
            resources.append(
                ResourceOp(
                    step.kind,
                    step.name,
                    step.op,
                    tuple(step.replace_reasons),
                    project=where[0] if where else "",
                    environment=where[1] if where else "",
                )
            )
        for ops, props, sides in (
            (OLD_SIDE_OPS, step.old_outputs, old),
            (NEW_SIDE_OPS, step.new_inputs, new),
        ):
            if step.op not in ops or not props:
                continue
            key = _env_key(step.kind, props)
            if key is None:
                notes.append(
                    f"{step.kind} {step.name}: its project or environment is not known in "
                    "this preview; its network change is left out"
                )
                continue
            side = sides.setdefault(key, _Side())
            if step.kind == "Environment":
                side.present = True
                side.settings.update({k: props.get(k) for k in SETTINGS})
            elif step.kind == "Service":
                side.services[str(props.get("service_id") or props.get("name"))] = dict(props)
                for k in SETTINGS:
                    side.settings.setdefault(k, props.get(k))
    plans: list[EnvironmentPlan] = []
    partial: list[str] = []
    for key in sorted(set(old) | set(new)):
        project, environment = key
        env_id = environment_id(project, environment)
        new_side = new.get(key)
        old_side = old.get(key)
        leaving = {
            sid
            for sid in (old_side.services if old_side else {})
            if not new_side or sid not in new_side.services
        }
        try:
            if held is not None:
                before = held.get(env_id)
            else:
                before = _old_document(project, environment, old_side)
            environment_deleted = (
                bool(old_side and old_side.present)
                and not (new_side and new_side.present)
                and not (new_side and new_side.services)
            )
            after = (
                None
                if environment_deleted
                else _new_document(project, environment, new_side, leaving, before, notes)
            )
        except RailnetError as exc:
            notes.append(f"{project}/{environment}: cannot plan: {exc}")
            continue
        if before is None and after is None:
            continue
        plan = plan_change(before, after)
        if held is None and plan.action == "create" and key not in created:
            # No step of this stack creates the environment: whether it exists already
            # (declared elsewhere, with services this file cannot show) is unknown.
            plan = replace(plan, action="update")
            notes.append(
                f"{project}/{environment} is not declared in this stack: whether it exists "
                "already is not in the file"
            )
        if held is None and plan.action == "update":
            plan = _partial(plan)
            partial.append(f"{project}/{environment}")
        plans.append(with_pending_addresses(plan, before))
    if partial:
        # One note for every environment it concerns, not one per environment.
        which = "every environment" if len(partial) == len(plans) else ", ".join(partial)
        notes.append(
            f"{which}: a preview file lists only the resources that change, so mesh "
            "membership (environment namespaces, peers) is left out and counts cover only "
            "the services in this preview; run with --against CLUSTER for exact ones"
        )
    return PlanReport(
        tuple(plans),
        tuple(resources),
        tuple(dict.fromkeys(notes)),
        basis="preview" if held is None else "agents",
    )


@dataclass(frozen=True)
class _Unchanged:
    """A refreshed resource the preview writes no other step for: it stays as it is."""

    step: StepLike

    @property
    def kind(self) -> str:
        return self.step.kind

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def op(self) -> str:
        return "same"

    @property
    def old_outputs(self) -> Mapping[str, Any] | None:
        return self.step.old_outputs

    @property
    def new_inputs(self) -> Mapping[str, Any] | None:
        # The refresh changes no input of the program: the resource keeps its own.
        return self.step.old_outputs

    @property
    def replace_reasons(self) -> Sequence[str]:
        return ()


def _without_refreshes(steps: Sequence[StepLike]) -> list[StepLike]:
    """``pulumi preview --refresh`` writes a ``refresh`` step for every resource, and then
    the step the program causes, except ``same``, which is hidden. A refresh therefore
    changes nothing: it is dropped where another step follows, and reads as ``same``
    where none does."""
    followed = {(s.kind, s.name) for s in steps if s.op != "refresh"}
    result: list[StepLike] = []
    for step in steps:
        if step.op != "refresh":
            result.append(step)
        elif (step.kind, step.name) not in followed:
            result.append(_Unchanged(step))
    return result


def _partial(plan: EnvironmentPlan) -> EnvironmentPlan:
    """Without the services a preview does not list, which nodes stay in the mesh is
    unknown: keep what the listed services say for themselves, drop mesh membership."""
    return replace(
        plan,
        peers=(),
        namespaces=tuple(n for n in plan.namespaces if n.holds != "environment"),
    )


def _env_key(kind: str, props: Mapping[str, Any]) -> tuple[str, str] | None:
    project = _text(props.get("project"))
    env = _text(props.get("name") if kind == "Environment" else props.get("environment"))
    if kind == "Project":
        return None
    if project is None or env is None:
        return None
    return project, env


def _names(value: Any) -> bool:
    """A known list of node names (JSON arrays may arrive as lists or tuples)."""
    return isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value)


def _ip_mode(value: Any) -> IpMode:
    try:
        return IpMode(value)
    except ValueError:
        return IpMode.DUAL


def _old_document(project: str, environment: str, side: _Side | None) -> EnvironmentDocument | None:
    if side is None or not side.services:
        return None
    mode = _ip_mode(side.settings.get("ip_mode"))
    nodes: list[str] = []
    services = []
    for sid, props in side.services.items():
        raw_instances = props.get("instances")
        instances = [
            i
            for i in (raw_instances if isinstance(raw_instances, (list, tuple)) else ())
            if isinstance(i, Mapping)
        ]
        for inst in instances:
            if isinstance(inst.get("node"), str) and inst["node"] not in nodes:
                nodes.append(inst["node"])
        services.append(
            {
                "id": str(props.get("service_id") or sid),
                "name": props.get("name"),
                "instances": [
                    {
                        "node": inst.get("node"),
                        "ipv4": (inst.get("ipv4") or None) if mode is IpMode.DUAL else None,
                        "ipv6": inst.get("ipv6"),
                    }
                    for inst in instances
                ],
            }
        )
    raw = {
        "id": environment_id(project, environment),
        "project": project,
        "environment": environment,
        "generation": 1,
        "ip_mode": mode.value,
        "ipv4_cidr": side.settings.get("ipv4_cidr") if mode is IpMode.DUAL else None,
        "domain": _text(side.settings.get("domain")) or DEFAULT_DOMAIN,
        "dns_ttl": int(side.settings.get("dns_ttl") or DEFAULT_DNS_TTL),
        "nodes": [
            {"name": n.name, "public_key": n.public_key, "endpoint": n.endpoint}
            for n in (planning_node(name) for name in sorted(nodes))
        ],
        "services": services,
    }
    return EnvironmentDocument.from_dict(raw)


def _new_document(
    project: str,
    environment: str,
    side: _Side | None,
    removed: set[str],
    before: EnvironmentDocument | None,
    notes: list[str],
) -> EnvironmentDocument | None:
    """The document after the preview's changes: what the nodes hold (``before``), with the
    services the preview creates or changes put in and the ones it removes taken out.
    Services the preview does not mention stay as they are."""
    if side is None and before is None:
        return None
    settings = side.settings if side else {}
    base = (
        spec_from_document(before)
        if before is not None
        else EnvironmentSpec(project=project, environment=environment)
    )
    kept = tuple(s for s in base.services if s.id not in removed and s.name not in removed)
    base = replace(base, services=kept)
    for props in side.services.values() if side else ():
        nodes = props.get("placement")
        if not _names(nodes):
            nodes = props.get("nodes")
        if not _names(nodes):
            notes.append(
                f"service {props.get('name')} in {project}/{environment}: its placement is not "
                "known in this preview; planned with no instances"
            )
            nodes = ()
        name = _text(props.get("name"))
        if name is None:
            notes.append(f"a service of {project}/{environment} has no known name; left out")
            continue
        sid = _text(props.get("service_id"))
        if sid is None:
            same_name = next((s for s in base.services if s.name == name), None)
            sid = (
                same_name.id
                if same_name
                else fresh_service_id(base.id, name, {s.id for s in base.services})
            )
        base = with_service(
            base, ServiceSpec(name=name, nodes=tuple(str(n) for n in nodes or ()), id=sid)
        )
    mode = _ip_mode(settings.get("ip_mode")) if settings.get("ip_mode") else base.ip_mode
    ttl = settings.get("dns_ttl")
    spec = replace(
        base,
        ip_mode=mode,
        ipv4_cidr=_text(settings.get("ipv4_cidr")) or base.ipv4_cidr,
        domain=_text(settings.get("domain")) or base.domain,
        dns_ttl=int(ttl)
        if isinstance(ttl, (int, float)) and not isinstance(ttl, bool)
        else base.dns_ttl,
    )
    return build_document(spec, before, planning_identities(spec.nodes, before))
