"""Where a Linux node says that something changed, for the self-healer.

* **netlink**: one rtnetlink socket per watched namespace (the environment's and each
  instance's), made inside it and bound to the link, address, route and rule groups. A
  message is not parsed: any message says "look again" (the repair reads the kernel
  itself), and an overrun socket (``ENOBUFS``) says the same.
* **process exits**: a pidfd (``pidfd_open(2)``) per wireguard-go; it becomes readable
  when the process exits. wireguard-go is not the agent's child (it runs in a session of
  its own), which a pidfd does not need.
* **deleted namespaces**: inotify on ``/var/run/netns`` (as ``ip netns monitor`` does).
  The socket in a deleted namespace is closed at once: it would keep the namespace (and
  the veth into it) alive.

One selector waits on all of them. Nothing here changes the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from railnet.agent.backends import DriftWatch, Nudge, WatchTarget
from railnet.core.errors import DataPlaneError
from railnet.linux.netns import NETNS_DIR, list_netns, netns_exists, run_in_netns

log = logging.getLogger("railnet.agent.watch")

NETLINK_ROUTE = 0
RTNL_GROUPS = (
    0x1  # RTMGRP_LINK
    | 0x10  # RTMGRP_IPV4_IFADDR
    | 0x40  # RTMGRP_IPV4_ROUTE
    | 0x80  # RTNLGRP_IPV4_RULE (group 8)
    | 0x100  # RTMGRP_IPV6_IFADDR
    | 0x400  # RTMGRP_IPV6_ROUTE
    | 0x40000  # RTNLGRP_IPV6_RULE (group 19)
)
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
INOTIFY_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class _Source:
    kind: str
    """``netlink``, ``exit``, ``inotify`` or ``wake``."""
    env_id: str = ""
    netns: str | None = None
    """For netlink: the namespace; ``None`` for the environment's own."""


def _rtnl_socket() -> socket.socket:
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        NETLINK_ROUTE,
    )  # fmt: skip
    try:
        sock.bind((0, RTNL_GROUPS))
    except OSError:
        sock.close()
        raise
    return sock


class LinuxDriftWatch(DriftWatch):
    """netlink sockets, pidfds and inotify behind one selector."""

    def __init__(self, netns_dir: Path = NETNS_DIR) -> None:
        self.netns_dir = netns_dir
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _Source("wake"))
        self._inotify: int | None = None
        self._sockets: dict[str, tuple[socket.socket, str]] = {}
        """By namespace: the socket and its environment."""
        self._pidfds: dict[str, tuple[int, int]] = {}
        """By environment: (pid, pidfd)."""
        self._targets: dict[str, WatchTarget] = {}
        self._unwatched: set[str] = set()
        """Namespaces no descriptor was left for (warned about once)."""
        self._owner: dict[str, str] = {}
        """Namespace → environment, for every namespace of the targets."""

    # -- tracking ----------------------------------------------------------------------------

    def track(self, targets: Sequence[WatchTarget]) -> list[Nudge]:
        self._watch_directory()
        self._targets = {t.env_id: t for t in targets}
        self._owner = {netns: t.env_id for t in targets for netns in (t.netns, *t.instances)}
        existing = set(list_netns())
        for netns in [n for n in self._sockets if n not in self._owner or n not in existing]:
            self._close_socket(netns)  # a deleted one would stay alive while it is open
        for env_id in [e for e in self._pidfds if e not in self._targets]:
            self._close_pidfd(env_id)
        return self._open(targets, existing.__contains__)

    def retrack(self, env_ids: Collection[str], targets: Sequence[WatchTarget]) -> list[Nudge]:
        self._watch_directory()
        before: set[str] = set()
        for env_id in env_ids:
            old = self._targets.pop(env_id, None)
            if old is not None:
                before.update((old.netns, *old.instances))
        for netns in before:
            if self._owner.get(netns) in env_ids:
                del self._owner[netns]
        for target in targets:
            self._targets[target.env_id] = target
            for netns in (target.netns, *target.instances):
                self._owner[netns] = target.env_id
        for netns in before:
            if netns not in self._owner:
                self._close_socket(netns)
        for env_id in env_ids:
            if env_id not in self._targets:
                self._close_pidfd(env_id)
        # A namespace deleted while watched had its socket closed then (``_deleted``).
        return self._open(targets, netns_exists)

    def _open(self, targets: Sequence[WatchTarget], exists: Callable[[str], bool]) -> list[Nudge]:
        """Watch what ``targets`` name and is not watched yet; nudges for what is gone."""
        missing: list[Nudge] = []
        for target in targets:
            for netns in (target.netns, *target.instances):
                if netns in self._sockets:
                    continue
                instance = None if netns == target.netns else netns
                if not exists(netns):
                    missing.append(Nudge(target.env_id, instance, "missing", time.monotonic()))
                    continue
                try:
                    sock = run_in_netns(netns, _rtnl_socket)
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        # Out of descriptors: a repair would not help. It stays unwatched
                        # (the device poll and the periodic repair remain) and is tried
                        # again at the next look.
                        if netns not in self._unwatched:
                            self._unwatched.add(netns)
                            log.warning("cannot watch namespace %s: %s (raise LimitNOFILE)",
                                        netns, exc.strerror)  # fmt: skip
                        continue
                    log.debug("cannot watch namespace %s: %s", netns, exc)
                    missing.append(Nudge(target.env_id, instance, "missing", time.monotonic()))
                    continue
                except DataPlaneError as exc:  # it went between the listing and now
                    log.debug("cannot watch namespace %s: %s", netns, exc)
                    missing.append(Nudge(target.env_id, instance, "missing", time.monotonic()))
                    continue
                self._unwatched.discard(netns)
                self._sockets[netns] = (sock, target.env_id)
                self._selector.register(
                    sock, selectors.EVENT_READ, _Source("netlink", target.env_id, instance)
                )
        for target in targets:
            held = self._pidfds.get(target.env_id)
            if held is not None and held[0] == target.process:
                continue
            if held is not None:
                self._close_pidfd(target.env_id)
            if target.process is None:
                continue
            try:
                fd = os.pidfd_open(target.process)
            except ProcessLookupError:
                missing.append(Nudge(target.env_id, None, "exit", time.monotonic()))
                continue
            except OSError as exc:  # no pidfds (before Linux 5.3): the device poll remains
                log.debug("cannot watch pid %d: %s", target.process, exc)
                continue
            self._pidfds[target.env_id] = (target.process, fd)
            self._selector.register(fd, selectors.EVENT_READ, _Source("exit", target.env_id))
        return missing

    def _watch_directory(self) -> None:
        if self._inotify is not None or not self.netns_dir.is_dir():
            return
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.warning("no inotify (%s): deleted namespaces are found by the device poll "
                        "and the periodic repair", os.strerror(ctypes.get_errno()))  # fmt: skip
            return
        mask = IN_DELETE | IN_DELETE_SELF
        if _libc.inotify_add_watch(fd, os.fsencode(self.netns_dir), mask) < 0:
            os.close(fd)
            return
        self._inotify = fd
        self._selector.register(fd, selectors.EVENT_READ, _Source("inotify"))

    def _close_socket(self, netns: str) -> None:
        held = self._sockets.pop(netns, None)
        if held is not None:
            self._selector.unregister(held[0])
            held[0].close()

    def _close_pidfd(self, env_id: str) -> None:
        held = self._pidfds.pop(env_id, None)
        if held is not None:
            self._selector.unregister(held[1])
            os.close(held[1])

    # -- waiting -----------------------------------------------------------------------------

    def wait(self, timeout: float) -> list[Nudge]:
        nudges: list[Nudge] = []
        for key, _ in self._selector.select(timeout):
            source: _Source = key.data
            now = time.monotonic()
            if source.kind == "wake":
                _drain_fd(self._wake_r)
            elif source.kind == "netlink":
                _drain_socket(key.fileobj)  # type: ignore[arg-type]
                nudges.append(Nudge(source.env_id, source.netns, "netlink", now))
            elif source.kind == "exit":
                self._close_pidfd(source.env_id)
                nudges.append(Nudge(source.env_id, None, "exit", now))
            else:
                nudges.extend(self._deleted(now))
        return nudges

    def _deleted(self, now: float) -> list[Nudge]:
        assert self._inotify is not None
        data = _drain_fd(self._inotify)
        nudges = []
        offset = 0
        while offset + INOTIFY_EVENT.size <= len(data):
            _, mask, _, length = INOTIFY_EVENT.unpack_from(data, offset)
            start = offset + INOTIFY_EVENT.size
            name = data[start : start + length].rstrip(b"\0").decode(errors="replace")
            offset = start + length
            if mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_IGNORED):
                # Events were lost, or the directory itself went (a reboot-like cleanup):
                # every environment is looked at again, and the watch made anew.
                nudges += [Nudge(e, None, "deleted", now) for e in self._targets]
                if mask & (IN_DELETE_SELF | IN_IGNORED):
                    self._selector.unregister(self._inotify)
                    os.close(self._inotify)
                    self._inotify = None
                    break
                continue
            env_id = self._owner.get(name) or self._env_by_prefix(name)
            if env_id is None:
                continue
            self._close_socket(name)  # it would keep the deleted namespace alive
            instance = None if name == self._targets[env_id].netns else name
            nudges.append(Nudge(env_id, instance, "deleted", now))
        return nudges

    def _env_by_prefix(self, name: str) -> str | None:
        return next(
            (t.env_id for t in self._targets.values() if name.startswith(t.netns + "-")), None
        )

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already awake
            os.write(self._wake_w, b"!")

    def close(self) -> None:
        for netns in list(self._sockets):
            self._close_socket(netns)
        for env_id in list(self._pidfds):
            self._close_pidfd(env_id)
        if self._inotify is not None:
            os.close(self._inotify)
            self._inotify = None
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _drain_fd(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _drain_socket(sock: socket.socket) -> None:
    while True:
        try:
            if not sock.recv(65536):
                return
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:  # an overrun: messages were lost, so look again
                log.debug("netlink socket: %s", exc)
            return
