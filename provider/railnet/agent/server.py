"""``railnet agent``: one node's agent process.

It serves the NodeAgent API with mutual TLS (plaintext only with ``--insecure``), repairs
every stored environment at start (adopting what still runs, rebuilding what is gone),
repairs drift as the kernel reports it (``railnet.agent.healing``; off with
``--no-self-heal``), and repeats the full repair periodically as the backstop. Stopping the
agent leaves the data plane running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer

from railnet.agent.authz import RoleInterceptor
from railnet.agent.backends import ResolverBackend
from railnet.agent.config import AgentConfig
from railnet.agent.credentials import ServingCredentials
from railnet.agent.healing import SelfHealer
from railnet.agent.linux_network import LinuxNetwork
from railnet.agent.linux_watch import LinuxDriftWatch
from railnet.agent.metrics import AgentMetrics
from railnet.agent.reconciler import Reconciler
from railnet.agent.resolver import ResolverProcess
from railnet.agent.servicer import NodeAgentServicer
from railnet.agent.state import StateDir
from railnet.agent.store_report import NodeReporter
from railnet.agent.v1 import agent_pb2 as pb
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.agent.wireguard import select_backend
from railnet.core.document import READABLE_FORMATS, check_formats
from railnet.core.errors import RailnetError
from railnet.core.names import check_netns_prefix, check_node_name

log = logging.getLogger("railnet.agent")
HANDOVER_TIMEOUT = 30.0
"""Seconds a new agent waits for the one it replaces to stop."""
TLS_POLL_SECONDS = 2.0
"""How often the agent looks whether its TLS files (or the revocation list) changed."""
FORMATS_VARIABLE = "RAILNET_DOCUMENT_FORMATS"
"""Limits the document formats the agent reads (``1``): an agent of this release then
behaves as one of the previous, which is how mixed-version clusters are tested."""


def udp_port_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def serve(
    reconciler: Reconciler,
    credentials: ServingCredentials | None,
    listen: Sequence[str],
    workers: int = 16,
    metrics: AgentMetrics | None = None,
    formats: tuple[int, ...] = READABLE_FORMATS,
) -> tuple[grpc.Server, list[int]]:
    """The NodeAgent API and the standard health service (``grpc.health.v1``) on every
    ``listen`` address, behind the role check (which a plaintext server, having no
    certificates to read, cannot make); started. Returns the server and the port bound for
    each address (0 for ``unix:`` ones)."""
    identity = credentials
    if identity is not None:
        check = RoleInterceptor(revoked=lambda: identity.revoked)
    else:
        check = RoleInterceptor(enforce=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=[check])
    on_apply = metrics.applied if metrics is not None else None
    pb_grpc.add_NodeAgentServicer_to_server(
        NodeAgentServicer(reconciler, formats, on_apply), server
    )
    health = HealthServicer()
    for name in ("", pb.DESCRIPTOR.services_by_name["NodeAgent"].full_name):
        health.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    ports = []
    for address in listen:
        if address.startswith("unix:"):
            Path(address[5:]).parent.mkdir(parents=True, exist_ok=True)
            Path(address[5:]).unlink(missing_ok=True)
        if identity is None:
            ports.append(server.add_insecure_port(address))
        else:
            ports.append(server.add_secure_port(address, identity.credentials()))
    server.start()
    return server, ports


def build_resolver(config: AgentConfig) -> ResolverBackend | None:
    """The node's resolver process (adopted when it runs, started detached when not), or
    None without DNS."""
    if not config.dns:
        return None
    from railnet.agent.resolver import ResolverProcess

    resolver = ResolverProcess(
        config.state_dir / "resolver.sock",
        config.dns_upstreams,
        log_file=config.state_dir / "logs" / "resolver.log",
    )
    resolver.start()
    return resolver


class StateLock:
    """One agent per state directory. A second agent started on it (an upgrade) asks the
    one holding it to hand over (SIGTERM: it stops serving and exits, leaving the data
    plane running) and takes over when it has gone."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agent.lock"
        self._file: IO[str] | None = None

    def acquire(self, timeout: float = HANDOVER_TIMEOUT) -> int | None:
        """Hold the lock; returns the pid of the agent that handed over, if one did."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the agent's life
        previous: int | None = None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            previous = int(text) if text.isdigit() else None
            if previous is not None:
                log.info("agent pid %d holds %s; asking it to hand over", previous, self.path)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(previous, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        handle.close()
                        raise RailnetError(
                            f"another agent (pid {previous}) holds {self.path} and did not "
                            f"hand over within {timeout:.0f} s; stop it first"
                        ) from None
                    time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return previous

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, node, message (and the traceback)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True)


def configure_logging(config: AgentConfig) -> None:
    handler = logging.StreamHandler()
    if config.log_format == "json":
        handler.setFormatter(JsonLogFormatter(config.node))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {config.node} %(levelname)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


LOG_MAX_BYTES = 4 * 1024 * 1024
"""A process log (wireguard-go's, the resolver's) is rotated past this size."""


def rotate_logs(directory: Path, max_bytes: int = LOG_MAX_BYTES) -> list[Path]:
    """Rotate every ``*.log`` in ``directory`` larger than ``max_bytes`` to ``*.log.1``.

    The writers (wireguard-go, the resolver) hold their logs open in append mode, so the
    file is copied and then truncated in place: they carry on writing at its new end."""
    rotated = []
    for path in sorted(directory.glob("*.log")) if directory.is_dir() else []:
        try:
            if path.stat().st_size <= max_bytes:
                continue
            shutil.copyfile(path, path.with_name(path.name + ".1"))
            with open(path, "r+b") as log_file:
                log_file.truncate(0)
            rotated.append(path)
        except OSError as exc:
            log.warning("cannot rotate %s: %s", path, exc)
    return rotated


def run_agent(config: AgentConfig) -> int:
    configure_logging(config)
    try:
        node = check_node_name("--node", config.node)
        prefix = check_netns_prefix("--netns-prefix", config.netns_prefix or f"rn-{node}")
        credentials = None
        if config.tls is None:
            log.warning(
                "INSECURE: serving plaintext gRPC with no client authentication; "
                "anyone who reaches %s controls this node's networks",
                ", ".join(config.listen),
            )
        else:
            credentials = ServingCredentials(config.tls, config.tls_revoked)
        formats = READABLE_FORMATS
        if os.environ.get(FORMATS_VARIABLE):
            formats = check_formats(FORMATS_VARIABLE, os.environ[FORMATS_VARIABLE])
        state = StateDir(config.state_dir)
        lock = StateLock(config.state_dir)  # held until this function returns
        previous = lock.acquire()
        if previous is not None:
            log.info("took over from agent pid %d", previous)
        wireguard = select_backend(config.wireguard, config.state_dir / "logs")
        resolver = build_resolver(config)
        reconciler = Reconciler(
            node=node,
            netns_prefix=prefix,
            endpoint_host=config.endpoint_host,
            state=state,
            network=LinuxNetwork(),
            wireguard=wireguard,
            resolver=resolver,
            port_free=udp_port_free,
        )
    except RailnetError as exc:
        print(f"railnet agent: {exc}", file=sys.stderr)
        return 2
    log.info("node %s: WireGuard backend %s, namespaces %s-*", node, wireguard.name, prefix)
    for env_id, changes in reconciler.reconcile_all().items():
        log.info("environment %s: start-up repair: %s", env_id, "; ".join(changes) or "adopted")

    if isinstance(resolver, ResolverProcess):

        def resolver_restarted() -> None:
            # A resolver that exited is started again and handed every view at once.
            for env_id, changes in reconciler.reconcile_all().items():
                log.warning(
                    "environment %s: DNS view handed over again (%d changes)", env_id, len(changes)
                )

        resolver.on_restart = resolver_restarted
    metrics = AgentMetrics(
        reconciler.status, resolver.stats if isinstance(resolver, ResolverProcess) else None
    )
    try:
        server, _ = serve(reconciler, credentials, config.listen, formats=formats, metrics=metrics)
        if config.metrics_listen is not None:
            host, port = config.metrics_listen
            bound = metrics.serve(host, port)
            log.info("metrics on http://%s:%d/metrics", host, bound)
    except (RuntimeError, OSError) as exc:
        print(f"railnet agent: cannot listen: {exc}", file=sys.stderr)
        return 2
    log.info("listening on %s; document formats %s", ", ".join(config.listen), formats)

    reporter = None
    if config.store is not None:
        reporter = NodeReporter(node, config.store, state.held_versions)
        reporter.start()
        log.info("reporting to the control store at %s", ", ".join(config.store.endpoints))

    healer = None
    if config.self_heal:

        def healed(env_id: str, changes: list[str], sources: frozenset[str]) -> None:
            metrics.repaired(env_id, len(changes))

        healer = SelfHealer(reconciler, LinuxDriftWatch(), on_repair=healed)
        healer.start()
        log.info("self-healing: watching netlink, wireguard-go and /var/run/netns")
    else:
        log.info("self-healing off: drift waits for the repair every %g s",
                 config.reconcile_interval)  # fmt: skip

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if credentials is not None:
        tls = credentials
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=tls.reload).start())
    next_repair = time.monotonic() + config.reconcile_interval
    while not stop.wait(min(TLS_POLL_SECONDS, config.reconcile_interval)):
        if credentials is not None:
            credentials.reload_if_changed()
        rotate_logs(config.state_dir / "logs")
        if time.monotonic() < next_repair:
            continue
        next_repair = time.monotonic() + config.reconcile_interval
        for env_id, changes in reconciler.reconcile_all(stop).items():
            if changes:
                metrics.repaired(env_id, len(changes))
                log.warning("environment %s: repaired drift: %s", env_id, "; ".join(changes))
    if healer is not None:
        healer.stop()
    if reporter is not None:
        reporter.stop()
    server.stop(grace=2).wait()
    if isinstance(resolver, ResolverProcess):
        resolver.close()  # it keeps serving: it is the data plane
    log.info("stopped; the data plane keeps running")
    lock.release()
    return 0
