"""The small interfaces between the reconciler and the machine.

Each has a Linux implementation (``linux_network``, ``wireguard``, ``linux_watch``) and a
fake twin (``fakes``) so that the servicer and reconciler are tested in milliseconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from railnet.core.dns import ResolverView, ViewChange
from railnet.core.local import InstancePlacement, LocalEnvironment
from railnet.core.reconcile import ObservedDevice, ObservedInstance, RemovePeer, SetPeer


class NetworkBackend(ABC):
    """Namespaces, veth pairs, addresses and routes."""

    @abstractmethod
    def observe(
        self,
        env: LocalEnvironment,
        deep: bool | frozenset[str] = True,
        only: frozenset[str] | None = None,
    ) -> tuple[bool, bool, tuple[ObservedInstance, ...]]:
        """(namespace exists, base configured, instances found) for one environment.

        ``deep`` also looks inside every instance namespace (start-up, periodic repair);
        without it only the environment namespace's side of each instance is read (applies);
        a set of instance namespaces looks inside those only (a repair after events there).
        ``only`` limits the look to those instance namespaces (an apply: the ones its change
        touches); the others are not reported. Instance namespaces are listed even when the
        environment namespace is gone.
        """

    @abstractmethod
    def create_namespace(self, netns: str) -> None: ...

    @abstractmethod
    def configure_namespace(self, env: LocalEnvironment) -> None:
        """Forwarding, resolver addresses on ``lo``, ``wg0`` up, and the mesh routes."""

    @abstractmethod
    def create_instance(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        """Make the instance's namespace and wire it (an existing one is wired in place)."""

    @abstractmethod
    def rewire_instance(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        """Put back what an existing instance namespace lacks of its wiring (veth pair,
        addresses, routes, source guard, resolv.conf), in place: never remove it."""

    @abstractmethod
    def readdress_instance(
        self,
        env: LocalEnvironment,
        instance: InstancePlacement,
        removed: tuple[str, ...],
        added: tuple[str, ...],
    ) -> None:
        """Swap a wired instance's addresses (and the routes and resolv.conf that follow)
        without rebuilding its namespace."""

    @abstractmethod
    def guard_sources(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        """Write a wired instance's anti-spoofing rules again, exactly: only its own
        addresses may enter the environment namespace from its veth."""

    @abstractmethod
    def remove_instance(self, netns: str) -> None: ...

    @abstractmethod
    def delete_environment(self, netns: str) -> None:
        """Remove the environment namespace and every instance namespace under it."""


class WireGuardBackend(ABC):
    """One WireGuard device per environment, created in the host namespace then moved."""

    name: str

    @abstractmethod
    def read(self, env: LocalEnvironment) -> ObservedDevice | None:
        """The device's key, port and peers, or ``None`` when it does not exist."""

    @abstractmethod
    def create(self, env: LocalEnvironment, private_key: str, listen_port: int) -> None:
        """Create the device bound to ``listen_port`` and move it into ``env.netns``."""

    @abstractmethod
    def set_private_key(self, env: LocalEnvironment, private_key: str) -> None:
        """Give the running device another key, in place (a rotation): its socket and peers
        stay."""

    @abstractmethod
    def configure(self, env: LocalEnvironment, changes: Sequence[SetPeer | RemovePeer]) -> None:
        """Peers, in order; a ``SetPeer`` with ``handshake`` sends a keepalive at once."""

    @abstractmethod
    def delete(self, netns: str, ifname: str) -> None:
        """Remove the device wherever it is (and its process, for wireguard-go)."""

    def process(self, env: LocalEnvironment) -> int | None:
        """The pid of the process that is the device (wireguard-go), whose exit the agent
        watches; ``None`` when the device is no process (the kernel's) or is not there."""
        return None


class ResolverBackend(ABC):
    """The DNS views the agent serves, one per environment."""

    @abstractmethod
    def apply(self, view: ResolverView) -> None:
        """Serve ``view``; when this returns, queries see its records."""

    @abstractmethod
    def update(self, change: ViewChange) -> bool:
        """Serve the view ``change`` makes of the one served, if it is the view the change
        was made from (same serial, namespace and addresses); when this returns True,
        queries see the new records. False: nothing changed, apply the whole view."""

    @abstractmethod
    def remove(self, env_id: str) -> None: ...

    @abstractmethod
    def records(self, env_id: str) -> list[tuple[str, str, str, int]]:
        """(name, type, value, ttl) served for the environment."""


@dataclass(frozen=True)
class WatchTarget:
    """What to watch of one environment this node builds."""

    env_id: str
    netns: str
    """The environment namespace (``wg0``, the veths' outer ends, the routes)."""
    instances: tuple[str, ...]
    """The instance namespaces."""
    process: int | None
    """The pid of the process that is the device (wireguard-go), if there is one."""


@dataclass(frozen=True)
class Nudge:
    """Something changed that may be drift: look at one environment again. It says
    where, never what: the repair compares the whole desired state with the kernel."""

    env_id: str
    """The environment to look at again."""
    netns: str | None
    """The instance namespace it came from, whose inside the repair then reads (``None``:
    the environment namespace, its device or its process)."""
    source: str
    """``netlink``, ``exit`` (the device's process), ``deleted`` (a namespace),
    ``missing`` (a namespace to watch is not there) or ``device`` (its peers, read)."""
    at: float
    """When it was seen (``time.monotonic()``)."""


class DriftWatch(ABC):
    """Where the node says that something changed: netlink, process exits, namespaces.

    One thread calls ``track`` and ``wait``; any thread may call ``wake``."""

    @abstractmethod
    def track(self, targets: Sequence[WatchTarget]) -> list[Nudge]:
        """Watch exactly ``targets`` from now on; returns nudges for what is already
        missing (a namespace or process that cannot be watched because it is gone)."""

    @abstractmethod
    def retrack(self, env_ids: Collection[str], targets: Sequence[WatchTarget]) -> list[Nudge]:
        """Watch ``targets`` in place of what was watched of ``env_ids`` (the targets of
        those that are still hosted), the others as they are: what an apply changed costs
        what it changed. Nudges as ``track``'s."""

    @abstractmethod
    def wait(self, timeout: float) -> list[Nudge]:
        """What changed since the last call, waiting up to ``timeout`` seconds for it."""

    @abstractmethod
    def wake(self) -> None:
        """Make a ``wait`` in progress return now."""

    @abstractmethod
    def close(self) -> None: ...
