"""The network plan of a ``pulumi preview --json`` file: the steps read by
``preview_file``, planned by the core (``preview_plan``), optionally against what the agents
hold now. ``railnet plan`` renders it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from railnet.control.cluster import load_cluster
from railnet.control.deployer import EnvironmentDeployer
from railnet.core.document import EnvironmentDocument
from railnet.core.names import environment_id
from railnet.core.plan_render import PlanReport
from railnet.core.preview_plan import plan_report
from railnet.engine.preview_file import PreviewStep, parse_preview


@dataclass(frozen=True)
class _Step:
    kind: str
    name: str
    op: str
    old_outputs: Mapping[str, Any] | None
    new_inputs: Mapping[str, Any] | None
    replace_reasons: Sequence[str]


def _steps(steps: Sequence[PreviewStep]) -> list[_Step]:
    return [
        _Step(
            kind=s.kind.value if s.kind is not None else "",
            name=s.name,
            op=s.op.value,
            old_outputs=s.old_outputs or None,
            new_inputs=s.new_inputs or None,
            replace_reasons=s.replace_reasons,
        )
        for s in steps
    ]


def build_report(text: str, source: str, against: Path | None = None) -> PlanReport:
    preview = parse_preview(text, source)
    steps = _steps(preview.railnet_steps())
    held: dict[str, EnvironmentDocument | None] | None = None
    if against is not None:
        envs = set()
        for step in steps:
            for props in (step.old_outputs, step.new_inputs):
                if not props:
                    continue
                project = props.get("project")
                env = props.get("name") if step.kind == "Environment" else props.get("environment")
                if isinstance(project, str) and isinstance(env, str) and step.kind != "Project":
                    envs.add(environment_id(project, env))
        cluster = load_cluster(against, "--against", "give the cluster file of your nodes")
        if cluster.operator is not None:
            # Reading documents is all a plan does: the read-only certificate is enough, so
            # a PR check never needs the provider's key.
            cluster = replace(cluster, tls=cluster.operator)
        with EnvironmentDeployer(cluster) as deployer:
            held = {env_id: deployer.latest(deployer.read(env_id)) for env_id in sorted(envs)}
    report = plan_report(steps, held)
    if not preview.warnings:
        return report
    return replace(report, notes=(*(f"warning: {w}" for w in preview.warnings), *report.notes))
