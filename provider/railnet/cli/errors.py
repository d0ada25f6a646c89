"""What every command shares: its exit codes, the environment variables it reads, and the
root check. The README and ``railnet --help`` list both tables from here."""

from __future__ import annotations

import os

from railnet.core.errors import RailnetError

EXIT_OK = 0
EXIT_PROBLEM = 1
"""The command ran and found a problem: status saw drift or a silent node, plan --fail-on
matched, cluster refused an edit that would lose something."""
EXIT_BAD_INPUT = 2
"""Bad arguments, a bad or missing file, a bad setting: the message names it."""
EXIT_FAILED = 3
"""railnet could not do it: an agent did not answer or refused, root is needed, the system
said no."""
EXIT_EXEC_FAILED = 125
"""exec and build-exec: railnet's own failure, whatever it was (as ``timeout`` and ``env``
do), so it never looks like the command's status."""
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "done; status: every node healthy"),
    (EXIT_PROBLEM, "the command found a problem: status (drift, a node not answering), plan "
     "--fail-on, a cluster edit refused"),
    (EXIT_BAD_INPUT, "bad input: an argument, a file or a setting (the message names it)"),
    (EXIT_FAILED, "railnet could not do it: an agent unreachable or refusing, not root, a "
     "system error"),
    (EXIT_EXEC_FAILED, "exec, build-exec: railnet's own failure (any of 2 and 3); otherwise "
     "they exit with the command's status"),
    (EXIT_CANNOT_RUN, "exec, build-exec: the command is not executable (as a shell says)"),
    (EXIT_NOT_FOUND, "exec, build-exec: the command was not found (as a shell says)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)  # fmt: skip

ENVIRONMENT_VARIABLES: tuple[tuple[str, str], ...] = (
    ("RAILNET_CLUSTER", "the cluster file when --cluster is not given "
     "(default railnet-lab/cluster.json)"),
    ("RAILNET_AGENT_CONFIG", "exec, build-exec: the local agent's config "
     "(default /etc/railnet/agent.toml)"),
    ("RAILNET_AGENT_SOCKET", "exec, build-exec: the local agent's unix socket"),
    ("RAILNET_TRACEBACK", "1: show the traceback of an unexpected error"),
)  # fmt: skip


class NeedsRoot(RailnetError):
    """The command needs root."""


def need_root(command: str, why: str) -> None:
    """Refuse to start ``command`` without root, saying ``why`` it needs it."""
    if os.geteuid() != 0:
        raise NeedsRoot(f"{command} needs root ({why}): run it as root, e.g. with sudo")
