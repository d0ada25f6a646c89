"""``railnet plan PREVIEW.json``: the network plan of a ``pulumi preview --json`` run.

Ready for a PR comment (``--format markdown``, within ``--max-bytes``), with exit codes for
CI: 0 when nothing that ``--fail-on`` names happens, 1 when something does, 2 when the input
is bad. ``--output FILE`` also writes the full plan, in the format FILE's suffix names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from railnet.core.errors import InvalidField
from railnet.core.plan import Severity
from railnet.core.plan_render import (
    DEFAULT_MAX_BYTES,
    GITHUB_COMMENT_LIMIT,
    MIN_MAX_BYTES,
    PlanReport,
    render_json,
    render_markdown,
    render_text,
)
from railnet.engine.preview_report import build_report

FAIL_ON = {s.value: s for s in Severity}
FORMATS = ("json", "markdown", "text")
SUFFIXES = {".json": "json", ".md": "markdown", ".markdown": "markdown"}


def parse_max_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidField("--max-bytes", text, "must be a whole number of bytes") from None
    if value < MIN_MAX_BYTES:
        raise InvalidField(
            "--max-bytes", text, f"must be at least {MIN_MAX_BYTES} (the summary must fit)"
        )
    return value


def render(report: PlanReport, fmt: str, max_bytes: int | None, full: str | None) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "markdown":
        return render_markdown(report, max_bytes, full)
    return render_text(report)


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
    p.add_argument(
        "--format", choices=FORMATS, default="text", help="what stdout gets (default: text)"
    )
    p.add_argument(
        "--fail-on",
        default="",
        metavar="KINDS",
        help=f"exit 1 when the plan has any of these, comma-separated: "
        f"{', '.join(sorted(FAIL_ON))}, any (default: none, exit 0 on any plan)",
    )
    p.add_argument(
        "--against",
        type=Path,
        metavar="CLUSTER_FILE",
        help="a cluster file (as --cluster elsewhere): compare the program's desired state "
        "with what its agents hold (exact counts, the whole mesh, and drift); needs network "
        "access to the agents and an operator certificate (default: none, the preview alone)",
    )
    p.add_argument(
        "--max-bytes",
        default=str(DEFAULT_MAX_BYTES),
        metavar="N",
        help=f"bound Markdown on stdout to N bytes (default: {DEFAULT_MAX_BYTES}, under "
        f"GitHub's {GITHUB_COMMENT_LIMIT:,}-character comment limit); what is cut is counted "
        "and points at --output",
    )
    p.add_argument(
        "--output",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="also write the full plan to FILE: JSON for .json, Markdown for .md, text "
        "otherwise (may be given more than once; default: none)",
    )
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    fail_on = parse_fail_on(args.fail_on)
    max_bytes = parse_max_bytes(args.max_bytes)
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
    outputs: list[Path] = args.output
    for path in outputs:
        full = render(report, SUFFIXES.get(path.suffix.lower(), "text"), None, None)
        try:
            path.write_text(full, encoding="utf-8")
        except OSError as exc:
            raise InvalidField(
                "--output", str(path), f"cannot be written: {exc.strerror}"
            ) from None
    full_plan = str(outputs[0]) if outputs else None
    sys.stdout.write(render(report, args.format, max_bytes, full_plan))
    hit = sorted(s.value for s in report.severities & fail_on)
    if hit:
        print(f"railnet plan: failing on {', '.join(hit)}", file=sys.stderr)
        return 1
    return 0
