"""Self-healing: drift is repaired when the kernel reports it, not when a timer fires.

Level-triggered, as Kubernetes controllers are: an event (a netlink message in an
environment or instance namespace, the exit of the device's wireguard-go, a deleted
namespace, a device whose peers differ from the document) only says "look at environment X
again". ``Debouncer`` gathers the nudges of a short window per environment; the repair is
the reconciler's one reconcile, which compares the stored document with the kernel and
changes only the difference. The periodic repair stays as the backstop for anything missed.

The agent's own changes make the same events. They are ignored: a nudge that arrives while
the agent changes that environment, or within ``GRACE`` of it finishing (the kernel's
messages are read a moment after they are sent), says nothing the apply did not already
see. A fault made in that same instant is found by the next device poll (each ``POLL``
seconds) or the periodic repair.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from railnet.agent.backends import DriftWatch, Nudge, WatchTarget
from railnet.agent.reconciler import Reconciler

log = logging.getLogger("railnet.agent.healing")

DEBOUNCE = 0.15
"""Seconds between the first nudge of an environment and its repair: a burst of events
(``ip netns del`` makes several) becomes one repair."""
POLL = 1.0
"""Seconds between looks at every device's key, port and peers (a peer removed with
``wg`` makes no netlink event with wireguard-go) and at what is watched."""
GRACE = 0.25
"""Seconds after the agent's own change of an environment during which its nudges are
taken for that change's own events."""
BACKOFF_MAX = 30.0
"""The longest wait before trying again a repair that failed (doubling from ``POLL``)."""


@dataclass
class _Window:
    due: float
    instances: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Due:
    """A repair to run now: one environment, and the instance namespaces to look inside."""

    env_id: str
    instances: frozenset[str]
    sources: frozenset[str]


class Debouncer:
    """Coalesces nudges per environment into one repair ``delay`` seconds after the first.
    Pure: time is an argument."""

    def __init__(self, delay: float = DEBOUNCE) -> None:
        self.delay = delay
        self._windows: dict[str, _Window] = {}

    def add(self, nudge: Nudge, now: float, delay: float | None = None) -> None:
        """Into the environment's open window, or one that closes ``delay`` (default: the
        debounce delay) from ``now``."""
        wait = self.delay if delay is None else delay
        window = self._windows.setdefault(nudge.env_id, _Window(now + wait))
        if nudge.netns is not None:
            window.instances.add(nudge.netns)
        window.sources.add(nudge.source)

    def next_due(self) -> float | None:
        return min((w.due for w in self._windows.values()), default=None)

    def pop_due(self, now: float) -> list[Due]:
        ready = sorted(env for env, w in self._windows.items() if w.due <= now)
        done = []
        for env_id in ready:
            window = self._windows.pop(env_id)
            done.append(Due(env_id, frozenset(window.instances), frozenset(window.sources)))
        return done

    def __len__(self) -> int:
        return len(self._windows)


RepairReport = Callable[[str, list[str], frozenset[str]], None]
"""(environment, changes made, what nudged) after each event-driven repair."""


class SelfHealer:
    """Runs in a thread of its own: waits on the ``DriftWatch``, polls devices, and
    repairs the environments it was nudged about."""

    def __init__(
        self,
        reconciler: Reconciler,
        watch: DriftWatch,
        *,
        debounce: float = DEBOUNCE,
        poll: float = POLL,
        grace: float = GRACE,
        on_repair: RepairReport | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.watch = watch
        self.poll = poll
        self.grace = grace
        self.on_repair = on_repair
        self.debouncer = Debouncer(debounce)
        self.ignored = 0
        """Nudges taken for the agent's own changes."""
        self.repairs = 0
        """Event-driven repairs run (with or without changes)."""
        self._stop = threading.Event()
        self._retrack = threading.Event()
        self._changed: set[str] = set()
        """Environments settled since the watch last looked at them (``retrack``)."""
        self._changed_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}

    def start(self) -> None:
        self.reconciler.on_settled = self._settled
        self._retrack.set()
        self._thread = threading.Thread(target=self._run, name="railnet-self-heal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.reconciler.on_settled = None
        self._stop.set()
        self.watch.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.watch.close()

    def _settled(self, env_id: str) -> None:
        # Called in the apply's thread: only ask the healer's thread to look again, at
        # that environment.
        with self._changed_lock:
            self._changed.add(env_id)
        self._retrack.set()
        self.watch.wake()

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if self._retrack.is_set() or now >= next_poll:
                    self._retrack.clear()
                    with self._changed_lock:
                        changed, self._changed = self._changed, set()
                    if now >= next_poll:  # the first pass too
                        # Everything, now and then: what was missed shows here.
                        self._consider(self.watch.track(self._targets()))
                    elif changed:
                        self._consider(self.watch.retrack(changed, self._targets(changed)))
                if now >= next_poll:
                    self._consider(self._poll_devices())
                    next_poll = now + self.poll
                for due in self.debouncer.pop_due(time.monotonic()):
                    self._repair(due)
                wake_at = min(next_poll, self.debouncer.next_due() or next_poll)
                self._consider(self.watch.wait(max(0.0, wake_at - time.monotonic())))
            except Exception:  # the healer must outlive any one bad look
                log.exception("self-healing: unexpected error; going on")
                self._stop.wait(self.poll)

    def _targets(self, only: Collection[str] | None = None) -> list[WatchTarget]:
        targets = []
        for env_id, hosted in sorted(self.reconciler.hosted(only).items()):
            targets.append(
                WatchTarget(
                    env_id=env_id,
                    netns=hosted.local.netns,
                    instances=tuple(i.netns for i in hosted.local.instances),
                    process=self.reconciler.wireguard_process(env_id),
                )
            )
        return targets

    def _poll_devices(self) -> list[Nudge]:
        nudges = []
        for env_id in sorted(self.reconciler.hosted()):
            if not self._quiet(env_id, time.monotonic()):
                continue
            try:
                drift = self.reconciler.device_drift(env_id)
            except Exception as exc:
                log.debug("environment %s: cannot read its device: %s", env_id, exc)
                continue
            if drift:
                nudges.append(Nudge(env_id, None, "device", time.monotonic()))
        return nudges

    def _quiet(self, env_id: str, at: float) -> bool:
        """Whether a nudge seen ``at`` can be drift, not the agent's own change."""
        settled = self.reconciler.quiet_since(env_id)
        return settled is not None and at >= settled + self.grace

    def _consider(self, nudges: list[Nudge]) -> None:
        for nudge in nudges:
            if not self._quiet(nudge.env_id, nudge.at):
                self.ignored += 1
                continue
            self.debouncer.add(nudge, time.monotonic())

    def _repair(self, due: Due) -> None:
        if not self._quiet(due.env_id, time.monotonic()):
            self.ignored += 1  # the agent changed it meanwhile, and so looked itself
            return
        started = time.monotonic()
        self.repairs += 1
        try:
            changes = self.reconciler.reconcile(due.env_id, deep=due.instances)
        except Exception as exc:
            failures = self._failures.get(due.env_id, 0) + 1
            self._failures[due.env_id] = failures
            wait = max(2 * self.grace, min(BACKOFF_MAX, self.poll * 2 ** (failures - 1)))
            # Tried again after the wait; nudges meanwhile join that try.
            now = time.monotonic()
            for netns in due.instances or {None}:
                self.debouncer.add(Nudge(due.env_id, netns, "retry", now), now, wait)
            log.error(
                "environment %s: repair after %s failed (%s); trying again in %.0f s",
                due.env_id,
                ", ".join(sorted(due.sources)),
                exc,
                wait,
            )
            return
        self._failures.pop(due.env_id, None)
        if changes and changes[0].startswith("not repaired"):
            # Its state file is damaged: nothing was touched (the reconciler logged why).
            log.error("environment %s: drift seen, %s", due.env_id, changes[0])
        elif changes:
            log.warning(
                "environment %s: healed in %.0f ms after %s: %s",
                due.env_id,
                (time.monotonic() - started) * 1000,
                ", ".join(sorted(due.sources)),
                "; ".join(changes),
            )
        if self.on_repair is not None:
            self.on_repair(due.env_id, changes, due.sources)
