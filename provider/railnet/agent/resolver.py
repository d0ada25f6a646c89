"""The DNS views in a process of their own, so that names keep resolving while the agent is
down, restarting or being upgraded.

``railnet resolver --control PATH`` runs a ``DnsServer`` (every environment's view on the
node) and a control socket at ``PATH`` (mode 0600, in the agent's state directory). The
agent's ``ResolverProcess`` backend connects to it, or starts it detached (``setsid``, like
wireguard-go) when nothing answers there, and hands it views. A restarted agent finds the
running resolver on the same socket and adopts it: nothing is rebound, and the views it
applies again only swap the live view each socket consults, so no query goes unanswered
and none is answered from a half-built view (``DnsServer.apply`` builds the new answerer
completely before one assignment makes it live, with a memo of replies of its own).

The control protocol is one JSON object per line each way, request then reply::

    {"op": "hello"}                  {"ok": true, "pid": N, "protocol": 1, "views": {ENV: SERIAL}}
    {"op": "apply", "view": {...}}   {"ok": true}
    {"op": "update", "change": {...}} {"ok": true, "applied": BOOL}
    {"op": "remove", "env_id": ENV}  {"ok": true}
    {"op": "records", "env_id": ENV} {"ok": true, "records": [[NAME, TYPE, VALUE, TTL], ...]}
    {"op": "endpoints", "env_id": E} {"ok": true, "endpoints": [[ADDRESS, PORT], ...]}
    {"op": "stats"}                  {"ok": true, "stats": {ENV: {"queries": N, ...}}}

A failed request gets ``{"ok": false, "error": MESSAGE}``. Only root (the agent) can reach
the socket.

An ``update`` carries a ``ViewChange``: the changed names of a view, against the serial the
resolver serves. ``"applied": false`` (another serial is served, or none) and an ``unknown
request`` from a resolver older than ``update`` both make the agent send the whole view, so
the protocol's version stays 1 and an upgrade of the agent does not restart DNS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from railnet.agent.backends import ResolverBackend
from railnet.core.dns import DnsRecord, ResolverView, ViewChange
from railnet.core.errors import DataPlaneError, RailnetError

PROTOCOL = 1
"""The control protocol's version; a resolver speaking another one is replaced."""
START_TIMEOUT = 15.0
"""Seconds a freshly started resolver may take to answer on its control socket."""
REQUEST_TIMEOUT = 30.0

log = logging.getLogger("railnet.agent.resolver")


# -- views on the wire ---------------------------------------------------------------------


def view_to_wire(view: ResolverView) -> dict[str, Any]:
    """``view`` as JSON-ready data: every field, records as lists."""
    # Field by field: ``dataclasses.asdict`` deep-copies every record, which costs more
    # than the rest of an apply in a large environment.
    raw = {f.name: getattr(view, f.name) for f in dataclasses.fields(view)}
    raw["listen"] = list(view.listen)
    raw["reverse_zones"] = list(view.reverse_zones)
    raw["records"] = _records_to_wire(view.records)
    return raw


def _records_to_wire(records: Iterable[DnsRecord]) -> list[list[Any]]:
    return [[r.name, r.type, r.value, r.ttl] for r in records]


def _records_from_wire(raw: Any) -> tuple[DnsRecord, ...]:
    return tuple(DnsRecord(str(n), str(t), str(v), int(ttl)) for n, t, v, ttl in raw)


def view_from_wire(raw: Any) -> ResolverView:
    """The ``ResolverView`` that ``view_to_wire`` wrote; lists become tuples again."""
    if not isinstance(raw, dict):
        raise RailnetError(f"a view must be an object, not {type(raw).__name__}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ResolverView):
        if f.name not in raw:
            raise RailnetError(f"view field {f.name!r} is missing")
        value = raw[f.name]
        if f.name == "records":
            value = _records_from_wire(value)
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[f.name] = value
    return ResolverView(**values)


def change_to_wire(change: ViewChange) -> dict[str, Any]:
    """``change`` as JSON-ready data: its head as a view (without records), the rest as
    lists."""
    return {
        "head": view_to_wire(change.head),
        "base_serial": change.base_serial,
        "removed": list(change.removed),
        "records": _records_to_wire(change.records),
    }


def change_from_wire(raw: Any) -> ViewChange:
    """The ``ViewChange`` that ``change_to_wire`` wrote."""
    if not isinstance(raw, dict):
        raise RailnetError(f"a view change must be an object, not {type(raw).__name__}")
    for name in ("head", "base_serial", "removed", "records"):
        if name not in raw:
            raise RailnetError(f"view change field {name!r} is missing")
    head = view_from_wire(raw["head"])
    if head.records:
        raise RailnetError("a view change's head must carry no records (they are in 'records')")
    return ViewChange(
        head=head,
        base_serial=int(raw["base_serial"]),
        removed=tuple(str(name) for name in raw["removed"]),
        records=_records_from_wire(raw["records"]),
    )


# -- the agent's side ----------------------------------------------------------------------


class ResolverGone(DataPlaneError):
    """The resolver process does not answer on its control socket."""


class _Connection:
    """One control connection: a request, then its reply line."""

    def __init__(self, path: Path, timeout: float = REQUEST_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self.reader = self.sock.makefile("rb")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the resolver closed its control connection")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ConnectionError(f"the resolver sent {line[:80]!r}")
        return reply

    def peer_pid(self) -> int:
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        self.sock.close()


class ResolverProcess(ResolverBackend):
    """The resolver process as the agent's ``ResolverBackend``: adopted when it runs,
    started detached when it does not, and started again (with every view handed over
    again through ``on_restart``) when it exits."""

    def __init__(
        self,
        control: Path,
        upstreams: Iterable[str] = (),
        *,
        log_file: Path | None = None,
        port: int | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.control = control
        self.upstreams = tuple(upstreams)
        self.log_file = log_file
        self.port = port
        self.on_restart = on_restart
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._watch: _Connection | None = None
        self._sent: dict[str, ResolverView] = {}
        """Per environment, the view this connection's resolver was last given, without
        its records: its serial names the document it was made of."""
        self._closed = False
        self.pid: int | None = None
        self.adopted = False
        """Whether the resolver was already running when this backend first reached it."""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt the resolver on ``control``, or start one; then watch it."""
        with self._lock:
            self._connect_locked()

    def _connect_locked(self) -> _Connection:
        if self._conn is not None:
            return self._conn
        conn = self._try_connect()
        started = False
        if conn is not None:
            hello = conn.ask({"op": "hello"})
            if hello.get("protocol") != PROTOCOL:
                log.warning(
                    "resolver pid %s speaks protocol %s, not %d; replacing it",
                    hello.get("pid"),
                    hello.get("protocol"),
                    PROTOCOL,
                )
                pid = conn.peer_pid()
                conn.close()
                _stop(pid)
                conn = None
        if conn is None:
            self._spawn()
            conn = self._wait_for_resolver()
            started = True
        self._conn = conn
        self.pid = conn.peer_pid()
        if self.pid is not None and not started and not self.adopted:
            self.adopted = True
            log.info("adopted the resolver (pid %d) on %s", self.pid, self.control)
        elif started:
            log.info("started the resolver (pid %d) on %s", self.pid, self.control)
        self._start_watch_locked()
        return conn

    def _try_connect(self) -> _Connection | None:
        try:
            return _Connection(self.control)
        except OSError:
            return None

    def _spawn(self) -> None:
        command = [
            "setsid",
            "--fork",
            sys.executable,
            "-m",
            "railnet",
            "resolver",
            "--control",
            str(self.control),
        ]
        for upstream in self.upstreams:
            command += ["--dns-upstream", upstream]
        if self.port is not None:
            command += ["--port", str(self.port)]
        self.control.parent.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file or self.control.with_suffix(".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                check=True,
                close_fds=True,
            )

    def _wait_for_resolver(self) -> _Connection:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            conn = self._try_connect()
            if conn is not None:
                return conn
            time.sleep(0.02)
        raise ResolverGone(
            f"the DNS resolver did not answer on {self.control} within {START_TIMEOUT:.0f} s; "
            f"see {self.log_file or self.control.with_suffix('.log')}"
        )

    def _start_watch_locked(self) -> None:
        """A second connection that only waits: end of file means the resolver exited,
        which restarts it at once instead of at the next periodic repair."""
        if self._watch is not None:
            return
        try:
            watch = _Connection(self.control, timeout=None)  # type: ignore[arg-type]
        except OSError:
            return
        self._watch = watch

        def wait() -> None:
            try:
                while watch.sock.recv(1):
                    pass
            except OSError:
                pass
            with self._lock:
                if self._watch is watch:
                    self._watch = None
                if self._closed:
                    return
                self._drop_locked()
            log.warning("the resolver exited; starting it again")
            if self.on_restart is not None:
                self.on_restart()
            else:
                self.start()

        threading.Thread(target=wait, name="railnet-resolver-watch", daemon=True).start()

    def _drop_locked(self) -> None:
        self._sent.clear()  # another resolver may answer next: it gets every view again
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Disconnect; the resolver keeps serving (it is the data plane)."""
        with self._lock:
            self._closed = True
            self._drop_locked()
            if self._watch is not None:
                with contextlib.suppress(OSError):
                    self._watch.sock.shutdown(socket.SHUT_RDWR)
                self._watch.close()
                self._watch = None

    # -- requests --------------------------------------------------------------------------

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            for attempt in (1, 2):
                conn = self._connect_locked()
                try:
                    reply = conn.ask(request)
                    break
                except (OSError, ValueError) as exc:
                    self._drop_locked()
                    if attempt == 2:
                        raise ResolverGone(
                            f"the DNS resolver on {self.control} failed: {exc}"
                        ) from None
        if not reply.get("ok"):
            raise DataPlaneError(str(reply.get("error") or "the DNS resolver refused"))
        return reply

    def apply(self, view: ResolverView) -> None:
        head = view.head
        with self._lock:
            if self._conn is not None and self._sent.get(view.env_id) == head:
                return  # a repair's view, the same the resolver serves: nothing to send
        self._ask({"op": "apply", "view": view_to_wire(view)})
        with self._lock:
            if self._conn is not None:
                self._sent[view.env_id] = head

    def update(self, change: ViewChange) -> bool:
        env_id = change.head.env_id
        with self._lock:
            sent = self._sent.get(env_id)
            if sent is not None and not change.applies_to(sent):
                return False  # known to serve another view: no round trip
        try:
            applied = bool(
                self._ask({"op": "update", "change": change_to_wire(change)}).get("applied")
            )
        except DataPlaneError as exc:  # e.g. an older resolver: "unknown request 'update'"
            log.info("the DNS resolver took no view change for %s (%s): whole view", env_id, exc)
            applied = False
        with self._lock:
            if applied and self._conn is not None:
                self._sent[env_id] = change.head
            else:
                self._sent.pop(env_id, None)
        return applied

    def remove(self, env_id: str) -> None:
        with self._lock:
            self._sent.pop(env_id, None)
        self._ask({"op": "remove", "env_id": env_id})

    def records(self, env_id: str) -> list[tuple[str, str, str, int]]:
        reply = self._ask({"op": "records", "env_id": env_id})
        return [(str(n), str(t), str(v), int(ttl)) for n, t, v, ttl in reply["records"]]

    def endpoints(self, env_id: str) -> tuple[tuple[str, int], ...]:
        reply = self._ask({"op": "endpoints", "env_id": env_id})
        return tuple((str(a), int(p)) for a, p in reply["endpoints"])

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per environment, its view's counters (see ``railnet.agent.dns.DnsStats``)."""
        return dict(self._ask({"op": "stats"})["stats"])

    def served(self) -> dict[str, int]:
        """Per environment the resolver serves, its view's serial."""
        return {str(k): int(v) for k, v in self._ask({"op": "hello"})["views"].items()}


def _stop(pid: int, timeout: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def resolver_pid(control: Path) -> int | None:
    """The pid of the resolver serving on ``control``, or None when nothing answers."""
    try:
        conn = _Connection(control, timeout=2.0)
    except OSError:
        return None
    try:
        return conn.peer_pid()
    finally:
        conn.close()


# -- the resolver's side -------------------------------------------------------------------


def run_resolver(control: Path, upstreams: Iterable[str] = (), port: int | None = None) -> int:
    """The resolver process: serve views, take requests on ``control``, until SIGTERM."""
    from railnet.agent.dns import DNS_PORT, DnsServer

    logging.basicConfig(level="INFO", format="%(asctime)s resolver %(levelname)s %(message)s")
    control.parent.mkdir(parents=True, exist_ok=True)
    # One resolver per control socket: the lock is held for the process's life.
    lock = open(control.with_name(control.name + ".lock"), "a")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"railnet resolver: another resolver serves {control}", file=sys.stderr)
        return 0
    server = DnsServer(upstreams=list(upstreams), port=DNS_PORT if port is None else port)
    server.start()
    control.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        listener.bind(str(control))
    finally:
        os.umask(old_umask)
    os.chmod(control, 0o600)
    listener.listen(16)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    requests = threading.Lock()
    log.info("serving DNS views; control on %s (pid %d)", control, os.getpid())

    def handle(peer: socket.socket) -> None:
        with peer, peer.makefile("rb") as reader:
            for line in reader:
                with requests:
                    reply = _handle(server, line)
                try:
                    peer.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(peer,), daemon=True).start()

    threading.Thread(target=accept, name="railnet-resolver-control", daemon=True).start()
    stop.wait()
    log.info("stopping")
    listener.close()
    control.unlink(missing_ok=True)
    server.close()
    return 0


def _handle(server: Any, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        op = request.get("op")
        if op == "hello":
            return {
                "ok": True,
                "pid": os.getpid(),
                "protocol": PROTOCOL,
                "views": {e: v.serial for e, v in server.heads().items()},
            }
        if op == "apply":
            server.apply(view_from_wire(request.get("view")))
            return {"ok": True}
        if op == "update":
            return {"ok": True, "applied": server.update(change_from_wire(request.get("change")))}
        if op == "remove":
            server.remove(str(request["env_id"]))
            return {"ok": True}
        if op == "records":
            return {"ok": True, "records": server.records(str(request["env_id"]))}
        if op == "stats":
            return {"ok": True, "stats": {e: s.as_dict() for e, s in server.stats().items()}}
        if op == "endpoints":
            return {"ok": True, "endpoints": server.endpoints(str(request["env_id"]))}
        return {"ok": False, "error": f"unknown request {op!r}"}
    except RailnetError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bad request must cost that request, never the resolver
        log.exception("control request failed")
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
