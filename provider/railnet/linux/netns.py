"""Run code inside a named network namespace without a subprocess.

``setns(2)`` with ``CLONE_NEWNET`` moves only the calling thread, so the work runs in a
short-lived thread that enters the namespace first. Sockets created there keep their
namespace for life, which is how the agent binds listeners inside environments.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

from railnet.core.errors import DataPlaneError

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def run_in_netns(name: str, work: Callable[[], T]) -> T:
    """Call ``work()`` in a thread that has entered namespace ``name``; return its result."""
    outcome: dict[str, object] = {}

    def enter_and_run() -> None:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            outcome["error"] = DataPlaneError(f"network namespace {name} does not exist")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                outcome["error"] = DataPlaneError(
                    f"cannot enter network namespace {name}: {os.strerror(err)}"
                )
                return
        finally:
            os.close(fd)
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=enter_and_run, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Write ``/proc/sys/<key>`` values (dotted keys) inside namespace ``name``."""

    def write() -> None:
        for key, value in values.items():
            Path("/proc/sys", *key.split(".")).write_text(value)

    run_in_netns(name, write)


def read_sysctl(name: str, key: str) -> str:
    return run_in_netns(name, lambda: Path("/proc/sys", *key.split(".")).read_text().strip())


# Named namespaces are made and removed with iproute2, which also keeps /var/run/netns a
# shared mount. pyroute2's own helpers fork a Python child, which is unsafe in a process
# that runs gRPC threads; subprocess only forks to exec.


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    """Whether ``name`` is among ``list_netns()``, without listing them all (a node's
    list holds every instance of every environment)."""
    return os.path.lexists(netns_path(name))


def create_netns(name: str) -> None:
    result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if result.returncode != 0:
        raise DataPlaneError(f"cannot create namespace {name}: {result.stderr.strip()}")


def delete_netns(name: str) -> None:
    if not netns_exists(name):
        return
    result = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
    if result.returncode != 0 and netns_exists(name):
        raise DataPlaneError(f"cannot delete namespace {name}: {result.stderr.strip()}")


def netlink(name: str | None, work: Callable[[IPRoute], T]) -> T:
    """Call ``work(ipr)`` with an rtnetlink socket of namespace ``name`` (None: our own).

    The socket asks for strict checking (``NETLINK_GET_STRICT_CHK``): a dump request's
    header fields and attributes then filter in the kernel, so a read of one link's
    addresses or routes costs what that link holds, not what the namespace holds (see
    ``_addresses`` in ``railnet.agent.linux_network``)."""

    def call() -> T:
        with IPRoute(strict_check=True) as ipr:
            return work(ipr)

    return call() if name is None else run_in_netns(name, call)


def netns_fd(name: str) -> int:
    """An open fd of the namespace, for ``net_ns_fd`` (the caller closes it)."""
    try:
        return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataPlaneError(f"network namespace {name} does not exist") from None
