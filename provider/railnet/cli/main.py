"""The ``railnet`` command: every subcommand's parser, and the one place errors become a
line on stderr and an exit code (``EXIT_CODES``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import NoReturn

from railnet.cli.agent import add_agent_parser
from railnet.cli.certs import add_certs_parser
from railnet.cli.cluster import add_cluster_parser
from railnet.cli.demo import add_demo_parser
from railnet.cli.errors import (
    ENVIRONMENT_VARIABLES,
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_EXEC_FAILED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    NeedsRoot,
)
from railnet.cli.lab import add_lab_parser
from railnet.cli.node import add_node_parser
from railnet.cli.plan import add_plan_parser
from railnet.cli.resolver import add_resolver_parser
from railnet.cli.runtime import EXEC_COMMANDS, add_exec_parsers, add_status_parser
from railnet.cli.trial import add_trial_parsers
from railnet.control.client import AgentError
from railnet.core.errors import AgentUnreachable, DataPlaneError, RailnetError
from railnet.store.etcd import StoreError


class RailnetParser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with the command's bad-input code (125
    for exec and build-exec, whose other codes are the wrapped command's)."""

    usage_exit = EXIT_BAD_INPUT

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def version() -> str:
    try:
        return importlib.metadata.version("railnet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES)
    env = "\n".join(f"  {name:<22}{text}" for name, text in ENVIRONMENT_VARIABLES)
    return f"exit codes:\n{codes}\n\nenvironment variables:\n{env}"


def build_parser() -> argparse.ArgumentParser:
    parser = RailnetParser(
        prog="railnet",
        description="Private WireGuard networking with <service>.railway.internal DNS.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"railnet {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_agent_parser(sub)
    add_certs_parser(sub)
    add_lab_parser(sub)
    add_cluster_parser(sub)
    add_exec_parsers(sub)
    add_status_parser(sub)
    add_plan_parser(sub)
    add_demo_parser(sub)
    add_trial_parsers(sub)
    add_resolver_parser(sub)
    add_node_parser(sub)
    for name in EXEC_COMMANDS:
        sub.choices[name].usage_exit = EXIT_EXEC_FAILED  # type: ignore[attr-defined]
    return parser


def split_exec_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``exec``/``build-exec``: everything after the first ``--`` is the command, so a
    flag given after the target (``exec T --cluster F -- CMD``) is still a flag."""
    if argv and argv[0] in EXEC_COMMANDS and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, None


def exit_code(exc: BaseException) -> int:
    """The exit code of a failure (``EXIT_CODES``)."""
    if isinstance(
        exc, (AgentUnreachable, AgentError, DataPlaneError, NeedsRoot, StoreError, OSError)
    ):
        return EXIT_FAILED
    return EXIT_BAD_INPUT


def describe(exc: BaseException) -> str:
    if isinstance(exc, RailnetError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{':' if where else ''}{where}"
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug in railnet: please report it with "
        "the output of the same command run with RAILNET_TRACEBACK=1)"
    )


def command_name(args: argparse.Namespace) -> str:
    """``railnet lab down``: the command and subcommand that ran, for error lines."""
    words = ["railnet", args.command]
    for key in ("lab_command", "cluster_command", "certs_command", "action"):
        value = getattr(args, key, None)
        if isinstance(value, str):
            words.append(value)
            break
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    given, command = split_exec_command(given)
    parser = build_parser()
    if given and given[0] in EXEC_COMMANDS:
        parser.usage_exit = EXIT_EXEC_FAILED  # type: ignore[attr-defined]
    args = parser.parse_args(given)
    if command is not None:
        args.cmd = command
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("RAILNET_TRACEBACK") == "1":
            raise
        print(f"{command_name(args)}: {describe(exc)}", file=sys.stderr)
        if args.command in EXEC_COMMANDS:
            return EXIT_EXEC_FAILED
        return exit_code(exc) if isinstance(exc, (RailnetError, OSError)) else EXIT_FAILED
