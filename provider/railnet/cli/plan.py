"""``railnet plan PREVIEW.json``: the network plan of a ``pulumi preview --json`` run.

Ready for a PR comment (``--format markdown``), with exit codes for CI: 0 when nothing
that ``--fail-on`` names happens, 1 when something does, 2 when the input is bad.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from railnet.core.document import EnvironmentDocument
from railnet.core.errors import InvalidField
from railnet.core.names import environment_id
from railnet.core.plan import Severity
from railnet.core.plan_render import RENDERERS, PlanReport
from railnet.core.preview_plan import plan_report
from railnet.preview_file import PreviewStep, parse_preview

FAIL_ON = {s.value: s for s in Severity}


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


def parse_fail_on(text: str) -> frozenset[Severity]:
    if not text:
        return frozenset()
    chosen: set[Severity] = set()
    for part in (p.strip() for p in text.split(",")):
        if part == "any":
            chosen.update(Severity)
        elif part in FAIL_ON:
            chosen.add(FAIL_ON[part])
        else:
            raise InvalidField(
                "--fail-on", part, f"choose from {', '.join(sorted(FAIL_ON))} or any"
            )
    return frozenset(chosen)


def build_report(text: str, source: str, against: Path | None = None) -> PlanReport:
    preview = parse_preview(text, source)
    steps = _steps(preview.railnet_steps())
    held: dict[str, EnvironmentDocument | None] | None = None
    if against is not None:
        from railnet.cli.runtime import load_cluster
        from railnet.deploy import EnvironmentDeployer

        envs = set()
        for step in steps:
            for props in (step.old_outputs, step.new_inputs):
                if not props:
                    continue
                project = props.get("project")
                env = props.get("name") if step.kind == "Environment" else props.get("environment")
                if isinstance(project, str) and isinstance(env, str) and step.kind != "Project":
                    envs.add(environment_id(project, env))
        with EnvironmentDeployer(load_cluster(against)) as deployer:
            held = {env_id: deployer.latest(deployer.read(env_id)) for env_id in sorted(envs)}
    return plan_report(steps, held)


def add_plan_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("plan", help="the network plan of a `pulumi preview --json` run")
    p.add_argument("preview", type=Path, help="the JSON `pulumi preview --json` wrote ('-': stdin)")
    p.add_argument("--format", choices=sorted(RENDERERS), default="text")
    p.add_argument(
        "--fail-on",
        default="",
        help=f"exit 1 when the plan has any of: {', '.join(sorted(FAIL_ON))}, any",
    )
    p.add_argument(
        "--against",
        type=Path,
        metavar="CLUSTER",
        help="compare the program's desired state with what the agents hold (shows drift)",
    )
    p.add_argument("--output", type=Path, help="write the plan here instead of stdout")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    fail_on = parse_fail_on(args.fail_on)
    if str(args.preview) == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, source = args.preview.read_text(encoding="utf-8"), str(args.preview)
        except OSError as exc:
            raise InvalidField(
                "preview", str(args.preview), f"cannot be read: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise InvalidField(
                "preview", str(args.preview), "is not UTF-8 text; is it `pulumi preview --json`?"
            ) from None
    report = build_report(text, source, args.against)
    rendered = RENDERERS[args.format](report)
    if args.output:
        try:
            args.output.write_text(rendered, encoding="utf-8")
        except OSError as exc:
            raise InvalidField(
                "--output", str(args.output), f"cannot be written: {exc.strerror}"
            ) from None
    else:
        sys.stdout.write(rendered)
    hit = sorted(s.value for s in report.severities & fail_on)
    if hit:
        print(f"railnet plan: failing on {', '.join(hit)}", file=sys.stderr)
        return 1
    return 0
