"""What a node says of itself in the control store: that it is alive, and what it applied.

``NodeReporter`` runs beside the agent in a thread of its own:

* **Liveness.** ``reports/<node>/alive`` exists under a lease of ``ttl`` seconds that the
  reporter renews every third of it. A node whose agent (or machine, or link to etcd) is
  gone loses the key when the lease runs out: that is how a deploy tells a dead node from a
  slow one, without asking it.
* **Applied.** ``reports/<node>/applied/<env_id>`` holds the generation and digest of the
  document the node has taken (stored, and converges its kernel to), written when it
  changes and removed with the environment. Readiness by this report must also wait for
  the apply to have settled; the deploy still learns that from the apply's own reply.

Only this node may write under ``reports/<node>/`` (etcd's roles: see docs/security.md).
The store being away changes nothing on the node: the reporter logs it once, keeps the data
plane as it is, and writes again when the store answers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable

from railnet.core.store_keys import alive_key, applied_key, report_prefix
from railnet.store.etcd import Delete, EtcdStore, StoreAddress, StoreError

log = logging.getLogger("railnet.agent.store")
DEFAULT_TTL = 10
"""Seconds a node stays alive in the store after its last renewal."""


class NodeReporter:
    def __init__(
        self,
        node: str,
        address: StoreAddress,
        applied: Callable[[], dict[str, tuple[int, str]]],
        *,
        ttl: int = DEFAULT_TTL,
        interval: float = 1.0,
    ) -> None:
        """``applied``: per environment this node holds, the generation and digest of its
        document."""
        self.node = node
        self.store = EtcdStore(address, timeout=max(2.0, ttl / 3))
        self.applied = applied
        self.ttl = ttl
        self.interval = interval
        self._lease = 0
        self._renewed = 0.0
        self._written: dict[str, tuple[int, str]] | None = None
        """What the store holds of this node's applied reports (None: not read yet)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reachable: bool | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="railnet-store-report", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting. The lease is left to run out: a restarting agent is not a node
        that left, and its successor takes over the reports."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    def report_once(self) -> None:
        """One round: liveness renewed when due, applied reports brought up to date."""
        now = time.monotonic()
        if not self._lease or now - self._renewed >= self.ttl / 3:
            self._keep_alive()
            self._renewed = now
        self._publish()

    def _keep_alive(self) -> None:
        if self._lease and self.store.keep_alive(self._lease) > 0:
            return
        self._lease = self.store.grant(self.ttl)
        record = {"pid": os.getpid(), "ttl": self.ttl}
        self.store.put(alive_key(self.node), json.dumps(record).encode(), lease=self._lease)

    def _publish(self) -> None:
        if self._written is None:
            _, entries = self.store.list(report_prefix(self.node) + "applied/")
            self._written = {}
            for entry in entries:
                try:
                    raw = json.loads(entry.value)
                    self._written[entry.key.rsplit("/", 1)[1]] = (
                        int(raw["generation"]),
                        str(raw["digest"]),
                    )
                except (ValueError, KeyError, TypeError):
                    self._written[entry.key.rsplit("/", 1)[1]] = (-1, "")
        now = self.applied()
        for env_id, (generation, digest) in sorted(now.items()):
            if self._written.get(env_id) == (generation, digest):
                continue
            value = json.dumps({"generation": generation, "digest": digest}).encode()
            self.store.put(applied_key(self.node, env_id), value)
            self._written[env_id] = (generation, digest)
        for env_id in sorted(set(self._written) - set(now)):
            self.store.commit([], [Delete(applied_key(self.node, env_id))])
            del self._written[env_id]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.report_once()
            except StoreError as exc:
                if self._reachable is not False:
                    log.warning(
                        "control store: cannot report (%s); the data plane is unchanged", exc
                    )
                self._reachable = False
                self._lease = 0
                self._written = None
                self._stop.wait(1.0)
                continue
            if self._reachable is False:
                log.info("control store: reporting again")
            self._reachable = True
            self._stop.wait(self.interval)
