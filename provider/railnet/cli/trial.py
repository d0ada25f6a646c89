"""``railnet up PROGRAM_DIR`` / ``railnet destroy PROGRAM_DIR``: a local trial of your own
Pulumi program without the Pulumi CLI.

It runs the program through the engine emulation the demo uses (``railnet.engine.emulator``:
the real ``python -m pulumi.dynamic`` provider driven as the engine drives it) and keeps the
stack's state in a JSON file. It is a way to try a program on a lab, not a replacement for
Pulumi: no backend, no locking, no history, no secrets encryption, no other providers.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from railnet.cli.errors import EXIT_OK
from railnet.cli.runtime import DEFAULT_CLUSTER, cluster_from_flag
from railnet.core.errors import InvalidField, RailnetError
from railnet.linux.files import write_atomic

TRIAL_LABEL = "local trial (railnet's engine emulation, not Pulumi)"
STATE_DIR = ".railnet-trial"


def add_trial_parsers(subparsers: Any) -> None:
    for name, func, text in (
        ("up", run_up, "local trial: preview and deploy your own Pulumi program"),
        ("destroy", run_destroy, "local trial: delete what railnet up made"),
    ):
        p = subparsers.add_parser(
            name,
            help=text,
            description=f"{text.split(': ', 1)[1].capitalize()}, without the Pulumi CLI: a "
            f"{TRIAL_LABEL}. PROGRAM_DIR/__main__.py runs through the real provider process "
            "as the engine "
            f"drives it; the stack's state is kept in PROGRAM_DIR/{STATE_DIR}/STACK.json "
            "(mode 0600, secrets in clear). No backend, locking or history: use the Pulumi "
            "CLI for real stacks.",
        )
        p.add_argument("program", type=Path, metavar="PROGRAM_DIR", help="the program's directory")
        p.add_argument(
            "--cluster",
            type=Path,
            metavar="FILE",
            help="the cluster file, given to the program as railnet:cluster (default: "
            f"$RAILNET_CLUSTER, else {DEFAULT_CLUSTER})",
        )
        p.add_argument("--stack", default="dev", help="the stack's name (default: %(default)s)")
        p.add_argument(
            "--config",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a stack setting, e.g. railnet:domain=corp.internal (repeatable; default: "
            "only railnet:cluster, from --cluster)",
        )
        if name == "up":
            p.add_argument(
                "--preview-only",
                action="store_true",
                help="stop after the preview (no side effects)",
            )
        p.set_defaults(func=func)


def _program(directory: Path) -> tuple[Path, str]:
    if not directory.is_dir():
        raise InvalidField("PROGRAM_DIR", str(directory), "is not a directory")
    main = directory / "__main__.py"
    if not main.is_file():
        raise InvalidField(
            "PROGRAM_DIR", str(directory), "has no __main__.py (a Pulumi Python program)"
        )
    project = directory.resolve().name
    manifest = directory / "Pulumi.yaml"
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.startswith("name:"):
                project = line.partition(":")[2].strip().strip("'\"") or project
                break
    return main, project


def _config(args: argparse.Namespace, cluster: Path) -> dict[str, str]:
    config = {"railnet:cluster": str(cluster.resolve())}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or ":" not in key:
            raise InvalidField("--config", item, "must be NAMESPACE:KEY=VALUE")
        config[key] = value
    return config


def _cluster_path(args: argparse.Namespace) -> Path:
    cluster_from_flag(args.cluster)  # checked before anything runs
    if args.cluster is not None:
        return Path(args.cluster)
    return Path(os.environ.get("RAILNET_CLUSTER") or DEFAULT_CLUSTER)


def _state_file(directory: Path, stack: str) -> Path:
    if not stack or not all(c.isalnum() or c in "-_." for c in stack):
        raise InvalidField("--stack", stack, "use letters, digits, '-', '_' and '.'")
    return directory / STATE_DIR / f"{stack}.json"


def _load(path: Path) -> dict[str, Any]:
    from railnet.engine.emulator import ResourceState

    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {
            name: ResourceState(
                id=r["id"],
                kind=r["kind"],
                inputs=r["inputs"],
                outputs=r["outputs"],
                dependencies=tuple(r.get("dependencies", ())),
            )
            for name, r in raw["resources"].items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidField(
            "state file", str(path), f"is not a trial state ({exc}); move it away to start over"
        ) from None


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    resources = {
        name: {
            "id": st.id,
            "kind": st.kind,
            "inputs": st.inputs,
            "outputs": st.outputs,
            "dependencies": list(st.dependencies),
        }
        for name, st in state.items()
    }
    text = json.dumps({"trial": TRIAL_LABEL, "resources": resources}, indent=2) + "\n"
    write_atomic(path, text.encode(), 0o600)


def _show(steps: list[Any]) -> None:
    for s in steps:
        marker = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}.get(s.op, " ")
        extra = f" (replaces: {', '.join(s.replaces)})" if s.replaces else ""
        print(f"  {marker:2} {s.kind} {s.name}: {s.op}{extra}")
        if s.op not in ("same", "delete"):
            for line in s.plan:
                print(f"       {line}")


def run_up(args: argparse.Namespace) -> int:
    from railnet.engine.emulator import DynamicProvider, ProgramFailed, ProviderError, run_program

    main, project = _program(args.program)
    cluster = _cluster_path(args)
    config = _config(args, cluster)
    path = _state_file(args.program, args.stack)
    state = _load(path)
    print(f"{TRIAL_LABEL}: {project}/{args.stack}, state in {path}")
    provider = DynamicProvider(config)
    try:
        for preview in (True, False):
            if not preview and args.preview_only:
                break
            print("preview:" if preview else "up:")
            try:
                result = run_program(
                    main,
                    provider,
                    state,
                    preview=preview,
                    config=config,
                    project=project,
                    stack=args.stack,
                )
            except (ProgramFailed, ProviderError) as exc:
                raise RailnetError(f"the program failed: {_one_line(exc)}") from None
            except (Exception, SystemExit) as exc:  # the program's own error, not railnet's
                raise ProgramError(main, exc) from None
            finally:
                if not preview:
                    _save(path, state)
            _show(result.steps)
        if not args.preview_only:
            for key, value in sorted(result.exports.items()):
                print(f"  export {key}: {json.dumps(value)}")
    finally:
        provider.close()
    return EXIT_OK


def run_destroy(args: argparse.Namespace) -> int:
    from railnet.engine.emulator import DynamicProvider, ProviderError, destroy

    _, project = _program(args.program)
    cluster = _cluster_path(args)
    path = _state_file(args.program, args.stack)
    state = _load(path)
    if not state:
        print(f"{TRIAL_LABEL}: {project}/{args.stack} has nothing to destroy ({path})")
        return EXIT_OK
    count = len(state)
    provider = DynamicProvider(_config(args, cluster))
    try:
        destroy(provider, state, project, args.stack)
    except ProviderError as exc:
        raise RailnetError(f"destroy failed: {_one_line(exc)}") from None
    finally:
        provider.close()
        _save(path, state)
    path.unlink(missing_ok=True)
    print(f"{TRIAL_LABEL}: {project}/{args.stack}: deleted {count} resources")
    return EXIT_OK


class ProgramError(RailnetError):
    """The program raised an error of its own."""

    def __init__(self, program: Path, exc: BaseException) -> None:
        super().__init__(
            f"{program} raised {type(exc).__name__}: {_one_line(exc)} (fix the program, then "
            "run again; what was deployed before it failed is in the state)"
        )


def _one_line(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = str(details if details else exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
