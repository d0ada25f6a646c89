"""Running a command in a namespace: an instance's runtime network, or none at all.

``ip netns exec`` also binds ``/etc/netns/<ns>/resolv.conf`` over ``/etc/resolv.conf``, so
plain libc in the command sees the namespace's resolver.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from railnet.linux.netns import create_netns, delete_netns, netlink

ETC_NETNS = Path("/etc/netns")


def exec_in_netns(namespace: str, cmd: list[str]) -> None:
    """Replace this process with ``cmd`` inside ``namespace``; never returns."""
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", namespace, *cmd])


def run_without_network(cmd: list[str]) -> int:
    """Run ``cmd`` in a fresh namespace with only ``lo`` and no resolver (the build phase);
    return its exit code. The namespace is removed afterwards."""
    name = f"rb-{secrets.token_hex(4)}"
    create_netns(name)
    etc = ETC_NETNS / name
    try:
        netlink(name, lambda ns: ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up"))
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("# build phase: no private network, no resolver\n")
        return subprocess.call(["ip", "netns", "exec", name, *cmd])
    finally:
        delete_netns(name)
        shutil.rmtree(etc, ignore_errors=True)
