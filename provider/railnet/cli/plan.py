"""``railnet plan PREVIEW.json``: the network plan of a ``pulumi preview --json`` run.

Ready for a PR comment (``--format markdown``), with exit codes for CI: 0 when nothing
that ``--fail-on`` names happens, 1 when something does, 2 when the input is bad.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from railnet.core.errors import InvalidField
from railnet.core.plan import Severity
from railnet.core.plan_render import RENDERERS
from railnet.engine.preview_report import build_report

FAIL_ON = {s.value: s for s in Severity}


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
    for note in report.notes:
        if note.startswith("warning: "):
            print(f"railnet plan: {note}", file=sys.stderr)
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
