"""Network plans rendered for people and machines: text, a Markdown PR comment, JSON.

Pure functions of a ``PlanReport``; the same lines feed the ``plan`` property that preview
shows (``plan_lines``) and ``railnet plan``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from railnet.core.plan import EnvironmentPlan, Severity


@dataclass(frozen=True)
class ResourceOp:
    """One resource operation from the preview (what Pulumi itself will do)."""

    kind: str
    name: str
    op: str
    replaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanReport:
    environments: tuple[EnvironmentPlan, ...]
    resources: tuple[ResourceOp, ...] = ()
    notes: tuple[str, ...] = field(default=())
    """Things the plan could not know (e.g. unknown values in the preview)."""

    @property
    def severities(self) -> frozenset[Severity]:
        found = {s for e in self.environments for s in e.severities}
        if any(
            r.op in ("replace", "create-replacement", "delete-replaced") for r in self.resources
        ):
            found.add(Severity.REPLACE)
        if any(r.op == "delete" for r in self.resources):
            found.add(Severity.DELETE)
        return frozenset(found)


def _sign(created: bool) -> str:
    return "+" if created else "-"


def plan_lines(plan: EnvironmentPlan) -> list[str]:
    """The plan as short lines, for a resource's ``plan`` property."""
    lines = [f"{plan.project}/{plan.environment}: {plan.action}"]
    lines += [f"service {c.service}: {c.change} ({c.detail})" for c in plan.services]
    for d in plan.dns:
        if d.added:
            lines.append(f"dns + {d.name} {d.rtype} {' '.join(d.added)}")
        if d.removed:
            lines.append(f"dns - {d.name} {d.rtype} {' '.join(d.removed)}")
    for p in plan.peers:
        if p.added:
            lines.append(f"peers {p.node}: + {', '.join(p.added)}")
        if p.removed:
            lines.append(f"peers {p.node}: - {', '.join(p.removed)}")
    lines += [f"netns {n.node}: {_sign(n.created)} {n.holds}" for n in plan.namespaces]
    lines += [f"! {c.severity.value}: {c.message}" for c in plan.consequences]
    return lines


def render_text(report: PlanReport) -> str:
    out: list[str] = []
    if report.resources:
        out.append("Resources")
        width = max(len(r.op) for r in report.resources)
        for r in report.resources:
            extra = f" (replaces: {', '.join(r.replaces)})" if r.replaces else ""
            out.append(f"  {r.op:<{width}} {r.kind} {r.name}{extra}")
        out.append("")
    for plan in report.environments:
        out.append(f"Environment {plan.project}/{plan.environment} [{plan.action}]")
        body = plan_lines(plan)[1:]
        out += [f"  {line}" for line in body] or ["  no network change"]
        out.append("")
    out += [f"note: {n}" for n in report.notes]
    severities = sorted(s.value for s in report.severities)
    out.append(f"Consequences: {', '.join(severities) if severities else 'none'}")
    return "\n".join(out).rstrip() + "\n"


def _count(plan: EnvironmentPlan, key: str) -> int:
    return dict(plan.counts).get(key, 0)


def render_markdown(report: PlanReport) -> str:
    """A PR comment: a summary table per project/environment, then the details."""
    out = ["## railnet network plan", ""]
    if not report.environments:
        out += ["No railnet environment changes.", ""]
    else:
        out += [
            "| Project / environment | Action | Services | Instances | DNS changes | "
            "Peer changes | Namespaces | Consequences |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in report.environments:
            services = f"{_count(p, 'services_before')} → {_count(p, 'services_after')}"
            instances = f"{_count(p, 'instances_before')} → {_count(p, 'instances_after')}"
            warn = ", ".join(sorted(s.value for s in p.severities)) or "none"
            out.append(
                f"| `{p.project}/{p.environment}` | {p.action} | {services} | {instances} | "
                f"{len(p.dns)} | {len(p.peers)} | {len(p.namespaces)} | {warn} |"
            )
        out.append("")
    flagged = [c for p in report.environments for c in p.consequences]
    replaced = [r for r in report.resources if r.op in ("replace", "delete")]
    if flagged or replaced:
        out += ["### ⚠️ Consequences", ""]
        out += [
            f"- **{r.op}** {r.kind} `{r.name}`"
            + (f" (replaces: {', '.join(r.replaces)})" if r.replaces else "")
            for r in replaced
        ]
        out += [f"- **{c.severity.value}**: {c.message}" for c in flagged]
        out.append("")
    for p in report.environments:
        out += [
            f"<details><summary><code>{p.project}/{p.environment}</code>: {p.action}</summary>",
            "",
        ]
        if p.services:
            out += ["**Services**", ""]
            out += [f"- `{c.service}`: {c.change} ({c.detail})" for c in p.services]
            out.append("")
        if p.dns:
            out += ["**DNS**", "", "| Name | Type | Added | Removed |", "|---|---|---|---|"]
            out += [
                f"| `{d.name}` | {d.rtype} | {' '.join(d.added) or '-'} | "
                f"{' '.join(d.removed) or '-'} |"
                for d in p.dns
            ]
            out.append("")
        if p.peers:
            out += ["**WireGuard peers**", ""]
            for peer in p.peers:
                parts = [f"+{n}" for n in peer.added] + [f"-{n}" for n in peer.removed]
                out.append(f"- {peer.node}: {' '.join(parts)}")
            out.append("")
        if p.namespaces:
            out += ["**Namespaces**", ""]
            out += [
                f"- {n.node}: {'create' if n.created else 'destroy'} {n.holds}"
                for n in p.namespaces
            ]
            out.append("")
        if p.empty:
            out += ["No network change.", ""]
        out += ["</details>", ""]
    out += [f"> note: {n}" for n in report.notes]
    return "\n".join(out).rstrip() + "\n"


def render_json(report: PlanReport) -> str:
    doc: dict[str, Any] = {
        "format": 1,
        "environments": [p.to_dict() for p in report.environments],
        "resources": [
            {"kind": r.kind, "name": r.name, "op": r.op, "replaces": list(r.replaces)}
            for r in report.resources
        ],
        "consequences": sorted(s.value for s in report.severities),
        "notes": list(report.notes),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
