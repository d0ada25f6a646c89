"""``LinuxDriftWatch`` alone, on namespaces of its own: what the kernel says reaches it as
nudges, and a deleted namespace is let go of at once."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from railnet.agent.backends import Nudge, WatchTarget
from railnet.agent.linux_watch import LinuxDriftWatch
from railnet.linux.netns import create_netns, delete_netns, list_netns

pytestmark = pytest.mark.linux


@pytest.fixture()
def names() -> Iterator[tuple[str, str]]:
    tag = f"rw{os.getpid() % 100000}{os.urandom(2).hex()}"
    env, inst = tag, f"{tag}-i0"
    create_netns(env)
    create_netns(inst)
    yield env, inst
    for name in (inst, env):
        delete_netns(name)


def gather(watch: LinuxDriftWatch, seconds: float = 2.0) -> list[Nudge]:
    found: list[Nudge] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not found:
        found += watch.wait(deadline - time.monotonic())
    return found


def test_netlink_process_exit_and_deletion_each_nudge_their_environment(
    names: tuple[str, str],
) -> None:
    env, inst = names
    sleeper = subprocess.Popen(["sleep", "60"])
    watch = LinuxDriftWatch()
    try:
        assert watch.track([WatchTarget("e1", env, (inst,), sleeper.pid)]) == []
        assert watch.wait(0.2) == []  # nothing happened, nothing said

        subprocess.run(["ip", "-n", inst, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", inst, "addr", "add", "192.0.2.7/32", "dev", "lo"], check=True)
        nudges = gather(watch)
        assert {(n.env_id, n.netns, n.source) for n in nudges} == {("e1", inst, "netlink")}

        subprocess.run(["ip", "-n", env, "link", "set", "lo", "up"], check=True)
        assert {(n.netns, n.source) for n in gather(watch)} == {(None, "netlink")}
        subprocess.run(["ip", "-n", env, "route", "add", "192.0.2.0/24", "dev", "lo"], check=True)
        assert {(n.netns, n.source) for n in gather(watch)} == {(None, "netlink")}

        sleeper.kill()
        sleeper.wait()
        assert [(n.netns, n.source) for n in gather(watch)] == [(None, "exit")]

        subprocess.run(["ip", "netns", "del", inst], check=True)
        nudges = gather(watch)
        assert ("e1", inst, "deleted") in {(n.env_id, n.netns, n.source) for n in nudges}
        assert inst not in list_netns()
        # Its socket was closed, so nothing keeps the namespace: a new one by that name is
        # a new namespace, and tracking says the old one's process is gone.
        missing = watch.track([WatchTarget("e1", env, (inst,), sleeper.pid)])
        assert {(n.netns, n.source) for n in missing} == {(inst, "missing"), (None, "exit")}
    finally:
        watch.close()
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_an_untracked_namespace_says_nothing(names: tuple[str, str]) -> None:
    env, inst = names
    watch = LinuxDriftWatch()
    try:
        watch.track([WatchTarget("e1", env, (), None)])
        subprocess.run(["ip", "-n", inst, "link", "set", "lo", "up"], check=True)
        assert watch.wait(0.5) == []
        watch.track([])  # and letting go of the environment closes its socket
        subprocess.run(["ip", "-n", env, "link", "set", "lo", "up"], check=True)
        assert watch.wait(0.5) == []
    finally:
        watch.close()


def test_a_retrack_changes_one_environment_and_leaves_the_others(
    names: tuple[str, str],
) -> None:
    env, inst = names
    other = f"{env}x"
    create_netns(other)
    watch = LinuxDriftWatch()
    try:
        watch.track([WatchTarget("e1", env, (), None), WatchTarget("e2", other, (), None)])
        # e1 now has an instance: it is watched; e2 stays watched without being looked at.
        assert watch.retrack(["e1"], [WatchTarget("e1", env, (inst,), None)]) == []
        subprocess.run(["ip", "-n", inst, "link", "set", "lo", "up"], check=True)
        assert {(n.env_id, n.netns) for n in gather(watch)} == {("e1", inst)}
        subprocess.run(["ip", "-n", other, "link", "set", "lo", "up"], check=True)
        assert {(n.env_id, n.netns) for n in gather(watch)} == {("e2", None)}
        # e1 gone from the node: its sockets close, nothing of it nudges, e2 still does.
        assert watch.retrack(["e1"], []) == []
        subprocess.run(["ip", "-n", inst, "addr", "add", "192.0.2.9/32", "dev", "lo"], check=True)
        subprocess.run(["ip", "-n", env, "link", "set", "lo", "up"], check=True)
        assert watch.wait(0.5) == []
        subprocess.run(["ip", "-n", other, "addr", "add", "192.0.2.8/32", "dev", "lo"], check=True)
        assert {(n.env_id, n.netns) for n in gather(watch)} == {("e2", None)}
        # A target whose namespace is not there says so.
        missing = watch.retrack(["e3"], [WatchTarget("e3", f"{env}y", (), None)])
        assert [(n.env_id, n.source) for n in missing] == [("e3", "missing")]
    finally:
        watch.close()
        delete_netns(other)
