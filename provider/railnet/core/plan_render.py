"""Network plans rendered for people and machines: text, a Markdown PR comment, JSON.

Pure functions of a ``PlanReport``; the same lines feed the ``plan`` property that preview
shows (``plan_lines``) and ``railnet plan``.

The Markdown comment has a size bound (GitHub refuses a comment over 65,536 characters).
What a reviewer must see is always in it: the summary table and every consequence kind
with its count. The per-environment details come after, smallest first, as many as fit;
the rest are counted and pointed to.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from railnet.core.plan import DnsChange, EnvironmentPlan, Severity

JSON_FORMAT: Final = 2
"""The version of ``--format json``; ``railnet/core/plan-v2.schema.json`` describes it."""

GITHUB_COMMENT_LIMIT: Final = 65_536
"""Characters GitHub accepts in one comment (a UTF-8 character is at least one byte)."""
DEFAULT_MAX_BYTES: Final = 60_000
"""The default bound: under GitHub's limit with room for a CI job's own header."""
MIN_MAX_BYTES: Final = 2_000

RESOURCE_SEVERITY: Final = {
    "replace": Severity.REPLACE,
    "create-replacement": Severity.REPLACE,
    "delete-replaced": Severity.REPLACE,
    "delete": Severity.DELETE,
}
"""Pulumi operations that are consequences in themselves."""


@dataclass(frozen=True)
class ResourceOp:
    """One resource operation from the preview (what Pulumi itself will do)."""

    kind: str
    name: str
    op: str
    replaces: tuple[str, ...] = ()
    project: str = ""
    environment: str = ""
    """Where the resource is (for a delete or a replacement: where it was); empty for a
    project, or when the preview does not know."""

    @property
    def place(self) -> str:
        if self.project and self.environment:
            return f"{self.project}/{self.environment}"
        return self.project or "?"

    @property
    def severity(self) -> Severity | None:
        return RESOURCE_SEVERITY.get(self.op)


@dataclass(frozen=True)
class PlanReport:
    environments: tuple[EnvironmentPlan, ...]
    resources: tuple[ResourceOp, ...] = ()
    notes: tuple[str, ...] = field(default=())
    """Things the plan could not know (e.g. unknown values in the preview)."""
    basis: str = "preview"
    """What counts are based on: ``preview`` (only the services the file lists) or
    ``agents`` (what the agents hold, with ``--against``: exact)."""

    @property
    def severities(self) -> frozenset[Severity]:
        return frozenset(c.severity for c in self.consequences())

    def consequences(self) -> tuple[ConsequenceLine, ...]:
        """Every consequence, resource operations first, each with its place. A resource's
        delete that its environment's plan already states (with what stops) is said once."""
        cached: tuple[ConsequenceLine, ...] | None = self.__dict__.get("_consequences")
        if cached is None:
            cached = tuple(self._consequences())
            object.__setattr__(self, "_consequences", cached)
        return cached

    def _consequences(self) -> list[ConsequenceLine]:
        stated = {
            (p.project, p.environment, c.severity, c.subject)
            for p in self.environments
            for c in p.consequences
        }
        # With --show-replacement-steps a replacement has three steps; it is one consequence.
        replaced = {(r.kind, r.name) for r in self.resources if r.op == "replace"}
        halves = ("create-replacement", "delete-replaced")
        lines = [
            ConsequenceLine(
                r.severity,
                r.project,
                r.environment,
                f"{r.kind} {r.name}",
                f"{r.op} {r.kind} {r.name}"
                + (f" (replaces: {', '.join(r.replaces)})" if r.replaces else ""),
            )
            for r in self.resources
            if r.severity is not None
            and (r.project, r.environment, r.severity, _subject(r)) not in stated
            and not (r.op in halves and (r.kind, r.name) in replaced)
        ]
        lines += [
            ConsequenceLine(c.severity, p.project, p.environment, c.subject, c.message)
            for p in self.environments
            for c in p.consequences
        ]
        return lines

    def severities_of(self, plan: EnvironmentPlan) -> frozenset[Severity]:
        """One environment's consequences, its resources' operations included."""
        return self._by_place().get((plan.project, plan.environment), frozenset())

    def _by_place(self) -> dict[tuple[str, str], frozenset[Severity]]:
        # Memoized on the frozen instance: renderers ask once per environment.
        cached: dict[tuple[str, str], frozenset[Severity]] | None = self.__dict__.get("_places")
        if cached is None:
            found: dict[tuple[str, str], set[Severity]] = {}
            for c in self.consequences():
                found.setdefault((c.project, c.environment), set()).add(c.severity)
            cached = {k: frozenset(v) for k, v in found.items()}
            object.__setattr__(self, "_places", cached)
        return cached


def _subject(r: ResourceOp) -> str:
    """What the environment's plan calls the resource in its consequences."""
    return "environment" if r.kind == "Environment" else r.name


@dataclass(frozen=True)
class ConsequenceLine:
    severity: Severity
    project: str
    environment: str
    subject: str
    message: str

    @property
    def place(self) -> str:
        if self.project and self.environment:
            return f"{self.project}/{self.environment}"
        return self.project or "?"


def _sign(created: bool) -> str:
    return "+" if created else "-"


def _added(d: DnsChange) -> str:
    """The added addresses, and how many more the agents assign at apply."""
    known = " ".join(d.added)
    if not d.pending:
        return known
    later = f"{d.pending} address{'es' if d.pending > 1 else ''} assigned at apply"
    return f"{known} (+ {later})" if known else f"({later})"


def plan_lines(plan: EnvironmentPlan) -> list[str]:
    """The plan as short lines, for a resource's ``plan`` property."""
    lines = [f"{plan.project}/{plan.environment}: {plan.action}"]
    lines += [f"service {c.service}: {c.change} ({c.detail})" for c in plan.services]
    for d in plan.dns:
        if d.added or d.pending:
            lines.append(f"dns + {d.name} {d.rtype} {_added(d)}")
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


def _count(plan: EnvironmentPlan, key: str) -> int:
    return dict(plan.counts).get(key, 0)


def _counts_text(report: PlanReport, plan: EnvironmentPlan) -> str:
    services = f"{_count(plan, 'services_before')} → {_count(plan, 'services_after')}"
    instances = f"{_count(plan, 'instances_before')} → {_count(plan, 'instances_after')}"
    basis = "on the agents" if report.basis == "agents" else "in this preview"
    return f"services {services}, instances {instances} {basis}"


def _kinds(report: PlanReport) -> list[tuple[str, int]]:
    counted = Counter(c.severity.value for c in report.consequences())
    return sorted(counted.items())


def render_text(report: PlanReport) -> str:
    out: list[str] = []
    if report.resources:
        out.append("Resources")
        width = max(len(r.op) for r in report.resources)
        for r in report.resources:
            extra = f" (replaces: {', '.join(r.replaces)})" if r.replaces else ""
            where = f" in {r.place}" if r.environment or r.kind != "Project" else ""
            out.append(f"  {r.op:<{width}} {r.kind} {r.name}{where}{extra}")
        out.append("")
    for plan in report.environments:
        out.append(f"Environment {plan.project}/{plan.environment} [{plan.action}]")
        out.append(f"  {_counts_text(report, plan)}")
        body = plan_lines(plan)[1:]
        out += [f"  {line}" for line in body] or ["  no network change"]
        out.append("")
    out += [f"note: {n}" for n in report.notes]
    kinds = _kinds(report)
    out.append("Consequences: " + (", ".join(f"{k} ({n})" for k, n in kinds) if kinds else "none"))
    return "\n".join(out).rstrip() + "\n"


# -- markdown ---------------------------------------------------------------------------------


def _summary_markdown(report: PlanReport, rows: int | None = None) -> list[str]:
    out = ["## railnet network plan", ""]
    if not report.environments and not report.resources:
        return [*out, "No railnet environment changes.", ""]
    if report.environments:
        basis = (
            "Counts are what the agents hold now → after the change."
            if report.basis == "agents"
            else "Counts cover the services in this preview (Pulumi leaves unchanged ones "
            "out); `--against CLUSTER` gives exact ones."
        )
        out += [
            basis,
            "",
            "| Project / environment | Action | Services | Instances | DNS changes | "
            "Peer changes | Namespaces | Consequences |",
            "|---|---|---|---|---|---|---|---|",
        ]
        shown = report.environments if rows is None else report.environments[:rows]
        for p in shown:
            services = f"{_count(p, 'services_before')} → {_count(p, 'services_after')}"
            instances = f"{_count(p, 'instances_before')} → {_count(p, 'instances_after')}"
            warn = ", ".join(sorted(s.value for s in report.severities_of(p))) or "none"
            out.append(
                f"| `{p.project}/{p.environment}` | {p.action} | {services} | {instances} | "
                f"{len(p.dns)} | {len(p.peers)} | {len(p.namespaces)} | {warn} |"
            )
        if len(shown) < len(report.environments):
            left = len(report.environments) - len(shown)
            out.append(f"| … {left} more environments: see the full plan | | | | | | | |")
        out.append("")
    kinds = _kinds(report)
    if kinds:
        out += ["### ⚠️ Consequences", ""]
        out += ["| Consequence | Count |", "|---|---|"]
        out += [f"| **{k}** | {n} |" for k, n in kinds]
        out.append("")
    return out


def _consequence_item(c: ConsequenceLine) -> str:
    return f"- **{c.severity.value}** `{c.place}`: {c.message}"


def _details_markdown(p: EnvironmentPlan) -> list[str]:
    out = [
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
            f"| `{d.name}` | {d.rtype} | {_added(d) or '-'} | {' '.join(d.removed) or '-'} |"
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
            f"- {n.node}: {'create' if n.created else 'destroy'} {n.holds}" for n in p.namespaces
        ]
        out.append("")
    if p.empty:
        out += ["No network change.", ""]
    out += ["</details>", ""]
    return out


def _changes(p: EnvironmentPlan) -> int:
    return len(p.services) + len(p.dns) + len(p.peers) + len(p.namespaces)


def _size(lines: list[str]) -> int:
    return sum(len(line.encode("utf-8")) + 1 for line in lines)


def render_markdown(
    report: PlanReport, max_bytes: int | None = None, full_plan: str | None = None
) -> str:
    """A PR comment: the summary table, the consequences, then the details per environment,
    largest last. With ``max_bytes`` it stays within that many bytes of UTF-8: the summary
    and every consequence kind with its count always; the consequence list and the details
    as far as they fit, and then how many were left out and where the full plan is
    (``full_plan``: a file the same command wrote)."""
    head = _summary_markdown(report)
    items = [_consequence_item(c) for c in report.consequences()]
    notes = [f"> note: {n}" for n in report.notes]
    rendered = [(_details_markdown(p), i, p) for i, p in enumerate(report.environments)]
    blocks = [(p, block) for block, _, p in sorted(rendered, key=lambda r: (_size(r[0]), r[1]))]
    body = ([*items, ""] if items else []) + [line for _, block in blocks for line in block]
    if max_bytes is None or _size([*head, *body, *notes]) <= max_bytes:
        return "\n".join([*head, *body, *notes]).rstrip() + "\n"

    where = (
        f"the full plan is in `{full_plan}`"
        if full_plan
        else "run `railnet plan` again with `--output plan.txt` for the full plan"
    )
    # Reserve room for the cut notice (its numbers have at most this many digits).
    reserve = 400 + len(where.encode("utf-8"))
    rows = len(report.environments)
    while rows and _size(head) > max_bytes - reserve:
        # Only a plan of very many environments: the table itself has to be cut.
        rows = rows * 9 // 10
        head = _summary_markdown(report, rows)
    budget = max_bytes - _size(head) - reserve
    out = list(head)
    shown_items = 0
    for item in items:
        if _size([item]) > budget - _size(notes[:3]):
            break
        out.append(item)
        budget -= _size([item])
        shown_items += 1
    if shown_items:
        out.append("")
        budget -= 1
    shown_envs = 0
    changes_left = 0
    for p, block in blocks:
        if shown_envs == len(blocks) or _size(block) > budget - _size(notes[:3]):
            changes_left += _changes(p)
            continue
        out += block
        budget -= _size(block)
        shown_envs += 1
    left_envs = len(blocks) - shown_envs
    cut = []
    if shown_items < len(items):
        cut.append(f"{len(items) - shown_items} of {len(items)} consequences")
    if left_envs:
        cut.append(
            f"the details of {left_envs} of {len(blocks)} environments ({changes_left} changes)"
        )
    out += [f"**Cut to fit a comment:** {' and '.join(cut)} left out; {where}.", ""]
    for note in notes:
        if _size([note]) > budget:
            out.append(f"> {len(notes) - notes.index(note)} more note(s) in the full plan.")
            break
        out.append(note)
        budget -= _size([note])
    return "\n".join(out).rstrip() + "\n"


# -- json -------------------------------------------------------------------------------------


def render_json(report: PlanReport) -> str:
    doc: dict[str, Any] = {
        "format": JSON_FORMAT,
        "counts_basis": report.basis,
        "environments": [
            {**p.to_dict(), "severities": sorted(s.value for s in report.severities_of(p))}
            for p in report.environments
        ],
        "resources": [
            {
                "kind": r.kind,
                "name": r.name,
                "op": r.op,
                "replaces": list(r.replaces),
                "project": r.project,
                "environment": r.environment,
            }
            for r in report.resources
        ],
        "consequences": [
            {
                "severity": c.severity.value,
                "project": c.project,
                "environment": c.environment,
                "subject": c.subject,
                "message": c.message,
            }
            for c in report.consequences()
        ],
        "severities": sorted(s.value for s in report.severities),
        "notes": list(report.notes),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
