"""Write an environment's desired state to every node involved, with compare-and-set.

``EnvironmentDeployer.apply(spec)`` reads what the nodes hold, builds the next document in
the pure core, ensures the environment on every hosting node, applies the document to all
of them in parallel, and removes the environment from nodes that no longer host it. A
conflict (another writer got there first) restarts the round from the read. When it
returns, every node has applied the document: names resolve and instances connect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import grpc

from railnet.control.client import AgentClient, AgentError, agent_address
from railnet.control.cluster import Cluster
from railnet.core.desired import EnvironmentSpec, build_document, spec_from_document
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import RailnetError
from railnet.core.names import check_object_id, environment_id

log = logging.getLogger("railnet.control.deployer")
T = TypeVar("T")
MAX_ROUNDS = 8

_env_locks: dict[str, threading.Lock] = {}
_env_locks_guard = threading.Lock()


@contextmanager
def environment_lock(env_id: str) -> Iterator[None]:
    """One writer per environment in this process; other processes meet the agents' CAS."""
    with _env_locks_guard:
        lock = _env_locks.setdefault(env_id, threading.Lock())
    with lock:
        yield


@dataclass(frozen=True)
class Applied:
    document: EnvironmentDocument
    changes: dict[str, list[str]]
    """Per node, what the apply changed there."""
    removed_from: tuple[str, ...]


class EnvironmentDeployer:
    def __init__(self, cluster: Cluster, timeout: float = 60.0) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._clients: dict[str, AgentClient] = {}
        self._clients_lock = threading.Lock()

    def __enter__(self) -> EnvironmentDeployer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _client(self, node: str) -> AgentClient:
        """One client (one mutual-TLS channel) per node for the deployer's life: a fresh
        handshake per call costs more than the call."""
        with self._clients_lock:
            client = self._clients.get(node)
            if client is None:
                client = AgentClient(agent_address(self.cluster, node), timeout=self.timeout)
                self._clients[node] = client
            return client

    def _each(self, nodes: list[str], call: Callable[[AgentClient], T]) -> dict[str, T]:
        def run(node: str) -> T:
            return call(self._client(node))

        if not nodes:
            return {}
        with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
            return dict(zip(nodes, pool.map(run, nodes), strict=True))

    def read(self, env_id: str) -> dict[str, EnvironmentDocument | None]:
        """What every cluster node holds for the environment."""
        check_object_id("env_id", env_id)
        raw = self._each(self.cluster.names, lambda c: c.document(env_id))
        parsed: dict[str, EnvironmentDocument] = {}  # nodes in sync hold the same text
        for text in raw.values():
            if text is not None and text not in parsed:
                parsed[text] = EnvironmentDocument.from_json(text)
        return {n: None if t is None else parsed[t] for n, t in raw.items()}

    @staticmethod
    def latest(held: dict[str, EnvironmentDocument | None]) -> EnvironmentDocument | None:
        docs = [d for d in held.values() if d is not None]
        return max(docs, key=lambda d: d.generation) if docs else None

    def apply(self, spec: EnvironmentSpec) -> Applied:
        """Make the environment exactly ``spec``."""
        return self.update(spec.project, spec.environment, lambda _: spec)

    def update(
        self, project: str, environment: str, edit: Callable[[EnvironmentSpec], EnvironmentSpec]
    ) -> Applied:
        """Read-modify-write: ``edit`` gets what the nodes hold (as a spec) and returns the
        new declaration. On a conflict the whole round runs again from a fresh read."""
        env_id = environment_id(project, environment)
        with environment_lock(env_id):
            trust_held = True
            for _ in range(MAX_ROUNDS):
                try:
                    return self._round(project, environment, edit, trust_held)
                except AgentError as exc:
                    stale_identity = exc.code == grpc.StatusCode.INVALID_ARGUMENT and (
                        ".public_key" in exc.detail or ".endpoint" in exc.detail
                    )
                    if stale_identity and trust_held:
                        # A node lost its state and got a new key: ask every node again.
                        trust_held = False
                        continue
                    if exc.code != grpc.StatusCode.ABORTED:
                        raise
                    log.info("environment %s: conflict (%s); retrying", env_id, exc.detail)
        raise RailnetError(
            f"environment {env_id}: {MAX_ROUNDS} conflicting writers in a row; try again"
        )

    def _round(
        self,
        project: str,
        environment: str,
        edit: Callable[[EnvironmentSpec], EnvironmentSpec],
        trust_held: bool = True,
    ) -> Applied:
        held = self.read(environment_id(project, environment))
        previous = self.latest(held)
        base = (
            spec_from_document(previous)
            if previous is not None
            else EnvironmentSpec(project, environment)
        )
        spec = edit(base)
        for node in spec.nodes:
            self.cluster.node(node)  # names the unknown node before anything changes
        hosting = spec.nodes
        # Nodes already in the held document have their identity there; only new ones are
        # asked (EnsureEnvironment creates it on first call).
        known = {n.name: (n.public_key, n.endpoint) for n in previous.nodes} if previous else {}
        if not trust_held:
            known = {}
        asked = self._each([n for n in hosting if n not in known], lambda c: c.ensure(spec.id))
        identities = {n: known.get(n) or asked[n] for n in hosting}
        doc = build_document(spec, previous, identities)
        if (
            previous is not None
            and doc.with_generation(previous.generation) == previous
            and all(
                held[n] is None or held[n] == previous or held[n].generation < previous.generation  # type: ignore[union-attr]
                for n in hosting
            )
        ):
            # Nothing changed: re-apply the held document, which only repairs drift. (Not
            # when racing writers left another document at the same generation somewhere:
            # then the next generation settles it.)
            doc = previous
        text = doc.to_json()
        changes = self._each(
            hosting,
            lambda c: c.apply(
                text,
                0 if held[c.target.node] is None else held[c.target.node].generation,  # type: ignore[union-attr]
            )[1],
        )
        leaving = [n for n, d in held.items() if d is not None and n not in hosting]
        self._each(
            leaving,
            lambda c: c.delete(spec.id, held[c.target.node].generation),  # type: ignore[union-attr]
        )
        return Applied(document=doc, changes=changes, removed_from=tuple(leaving))

    def destroy(self, env_id: str) -> list[str]:
        """Remove the environment from every node that has it; return those nodes."""
        check_object_id("env_id", env_id)
        with environment_lock(env_id):
            removed = self._each(self.cluster.names, lambda c: c.delete(env_id))
        return [n for n, existed in removed.items() if existed]
