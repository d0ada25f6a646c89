"""In-memory twins of the network and WireGuard backends, for the agent's fast tests.

``FakeKernel`` is one node's kernel: its named network namespaces and its WireGuard
devices. ``FakeNetwork`` and ``FakeWireGuard`` are the two backends over one shared
kernel, because on a real node they meet there too: ``wg0`` lives in the environment
namespace, so deleting that namespace destroys the device and leaves the environment's
base unconfigured, and an instance's veth dies with either end's namespace.

The fakes keep the rules the real backends meet in the kernel, so a reconciler that
plans badly fails here as it would on Linux: a device cannot be created twice or on a
port another device holds, ``wg0`` cannot be configured before it exists, an allowed IP
belongs to one peer at a time, and an endpoint set by ``SetPeer(endpoint=None)`` is kept.

Every mutating backend call is appended to ``FakeKernel.log``; a plan that changes
nothing makes no call, so tests assert ``kernel.mutations`` did not move. The outside
world (a reboot, someone running ``ip netns del``, a peer roaming) goes through the
``FakeKernel`` methods below, which change state without logging a mutation.

The kernel also says what changed, as Linux does: every change of a namespace (by a
backend or by the outside world) is an event that ``FakeDriftWatch`` hands to the
self-healer, like a netlink message, a deleted ``/var/run/netns`` entry or the exit of a
device's process. A peer removed, roamed or re-keyed makes no event (wireguard-go makes no
netlink message for it), so only the healer's device poll finds it.

The DNS twin is ``railnet.agent.dns.FakeDnsServer``, re-exported here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from railnet.agent.backends import (
    DriftWatch,
    NetworkBackend,
    Nudge,
    WatchTarget,
    WireGuardBackend,
)
from railnet.agent.dns import FakeDnsServer
from railnet.agent.wireguard import public_key_of
from railnet.core.errors import DataPlaneError
from railnet.core.local import InstancePlacement, LocalEnvironment
from railnet.core.reconcile import (
    ObservedDevice,
    ObservedInstance,
    ObservedPeer,
    RemovePeer,
    SetPeer,
)

__all__ = [
    "FakeDevice",
    "FakeDnsServer",
    "FakeDriftWatch",
    "FakeKernel",
    "FakeNamespace",
    "FakeNetwork",
    "FakePeer",
    "FakeWireGuard",
]


@dataclass
class FakeNamespace:
    """One named network namespace."""

    name: str
    base: tuple[str, ...] | None = None
    """What ``configure_namespace`` set up (resolvers and mesh routes); ``None`` before."""
    environment: str | None = None
    """For an instance namespace: the environment namespace its veth peers into."""
    addresses: frozenset[str] = frozenset()
    """For an instance namespace: the internal addresses on ``eth0``."""
    linked: bool = False
    """For an instance namespace: its veth pair and routes are intact."""
    resolvers: tuple[str, ...] = ()
    """For an instance namespace: the nameservers of its ``resolv.conf``."""
    guard: frozenset[str] | None = None
    """For an instance namespace: the sources its anti-spoofing rules let out (``None``:
    the rules are gone)."""


@dataclass
class FakePeer:
    public_key: str
    endpoint: str | None
    allowed_ips: set[str] = field(default_factory=set)
    last_handshake: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class FakeDevice:
    """One environment's WireGuard device, ``wg0`` inside ``netns``."""

    ifname: str
    """Its host-namespace name (and UAPI socket name): unique on the node."""
    netns: str
    private_key: str
    listen_port: int
    peers: dict[str, FakePeer] = field(default_factory=dict)
    pid: int = 0
    """The process that is the device (as wireguard-go's): a new one for every create."""

    @property
    def public_key(self) -> str:
        return public_key_of(self.private_key)


def _base_of(env: LocalEnvironment) -> tuple[str, ...]:
    return (*env.resolvers, *(c for c in (env.ipv4_cidr, env.ipv6_prefix) if c))


class FakeKernel:
    """One node's namespaces and WireGuard devices, shared by the two fake backends."""

    def __init__(self) -> None:
        self.namespaces: dict[str, FakeNamespace] = {}
        self.devices: dict[str, FakeDevice] = {}
        """By host-namespace interface name."""
        self.log: list[str] = []
        """Every mutating backend call, in order, e.g. ``create_namespace rn-x-e1``."""
        self.pids = 1000
        self.observed: list[tuple[str, bool | frozenset[str]]] = []
        """Every ``observe``: (environment namespace, how deep), to check what it costs."""
        self.observed_only: list[frozenset[str]] = []
        """The instance namespaces each limited ``observe`` (an apply's) looked at."""
        self.device_reads = 0
        """How many times a WireGuard device was read (every peer's allowed IPs)."""
        self.lock = threading.RLock()
        self.listeners: list[Callable[[str, str], None]] = []
        """Called with (kind, namespace) for every event: ``netlink``, ``deleted`` or
        ``exit`` (of the process of the device in that namespace)."""

    @property
    def mutations(self) -> int:
        return len(self.log)

    def record(self, entry: str, *events: tuple[str, str]) -> None:
        with self.lock:
            self.log.append(entry)
        self.emit(*events)

    def emit(self, *events: tuple[str, str]) -> None:
        for kind, netns in events:
            for listener in list(self.listeners):
                listener(kind, netns)

    # -- views for tests ------------------------------------------------------------------

    def device_in(self, netns: str) -> FakeDevice | None:
        """The device living in ``netns``, if any."""
        with self.lock:
            return next((d for d in self.devices.values() if d.netns == netns), None)

    def instances_of(self, env_netns: str) -> dict[str, FakeNamespace]:
        """The instance namespaces of one environment, by name."""
        with self.lock:
            return {
                name: ns for name, ns in self.namespaces.items() if name.startswith(env_netns + "-")
            }

    # -- the outside world: none of these counts as a mutation -----------------------------

    def reboot(self) -> None:
        """The node restarted: every namespace, device and process is gone."""
        with self.lock:
            gone = list(self.namespaces)
            self.namespaces.clear()
            self.devices.clear()
        self.emit(*(("deleted", name) for name in gone))

    def delete_namespace(self, name: str) -> None:
        """Someone ran ``ip netns del NAME``: what lived in it goes too."""
        with self.lock:
            self._drop_namespace(name)
        self.emit(("deleted", name))

    def kill_device(self, netns: str) -> None:
        """Someone killed the environment's wireguard-go: its TUN device, wg0, goes too."""
        with self.lock:
            device = self._device(netns)
            del self.devices[device.ifname]
        self.emit(("exit", netns), ("netlink", netns))

    def cut_link(self, instance_netns: str) -> None:
        """An instance's veth pair vanished (or lost its routes)."""
        with self.lock:
            ns = self._namespace(instance_netns)
            ns.linked = False
        self.emit(
            ("netlink", instance_netns), *((("netlink", ns.environment),) if ns.environment else ())
        )

    def set_addresses(self, instance_netns: str, addresses: Sequence[str]) -> None:
        """Someone re-addressed an instance's ``eth0`` by hand."""
        with self.lock:
            self._namespace(instance_netns).addresses = frozenset(addresses)
        self.emit(("netlink", instance_netns))

    def drop_guard(self, instance_netns: str) -> None:
        """Someone deleted an instance's anti-spoofing rules (``ip rule del``)."""
        with self.lock:
            ns = self._namespace(instance_netns)
            ns.guard = None
        # The rules live in the environment namespace.
        self.emit(*((("netlink", ns.environment),) if ns.environment else ()))

    def unconfigure(self, netns: str) -> None:
        """The environment namespace lost its resolver addresses or mesh routes."""
        with self.lock:
            self._namespace(netns).base = None
        self.emit(("netlink", netns))

    def remove_peer(self, netns: str, public_key: str) -> None:
        """Someone ran ``wg set wg0 peer KEY remove`` inside ``netns``."""
        with self.lock:
            self._device(netns).peers.pop(public_key)

    def set_allowed_ips(self, netns: str, public_key: str, allowed_ips: Sequence[str]) -> None:
        with self.lock:
            self._device(netns).peers[public_key].allowed_ips = set(allowed_ips)

    def roam(self, netns: str, public_key: str, endpoint: str) -> None:
        """A handshake came from a new address: WireGuard now sends there."""
        with self.lock:
            self._device(netns).peers[public_key].endpoint = endpoint

    def handshake(
        self, netns: str, public_key: str, when: int, rx_bytes: int = 0, tx_bytes: int = 0
    ) -> None:
        with self.lock:
            peer = self._device(netns).peers[public_key]
            peer.last_handshake = when
            peer.rx_bytes += rx_bytes
            peer.tx_bytes += tx_bytes

    def replace_device(
        self, netns: str, *, private_key: str | None = None, listen_port: int | None = None
    ) -> None:
        """The device was recreated by someone else with another key or port."""
        with self.lock:
            device = self._device(netns)
            if private_key is not None:
                device.private_key = private_key
            if listen_port is not None:
                device.listen_port = listen_port

    # -- internals ----------------------------------------------------------------------------

    def _namespace(self, name: str) -> FakeNamespace:
        try:
            return self.namespaces[name]
        except KeyError:
            raise DataPlaneError(f"network namespace {name} does not exist") from None

    def _device(self, netns: str) -> FakeDevice:
        device = self.device_in(netns)
        if device is None:
            raise DataPlaneError(f"no WireGuard device in namespace {netns}")
        return device

    def _drop_namespace(self, name: str) -> bool:
        if self.namespaces.pop(name, None) is None:
            return False
        # Virtual links die with their namespace: wg0, and both ends of every veth pair.
        for ifname in [i for i, d in self.devices.items() if d.netns == name]:
            del self.devices[ifname]
        for ns in self.namespaces.values():
            if ns.environment == name:
                ns.linked = False
        return True


def _wired(env: LocalEnvironment, instance: InstancePlacement) -> tuple[tuple[str, str], ...]:
    """The events of wiring an instance: its veth and routes change on both sides."""
    return (("netlink", instance.netns), ("netlink", env.netns))


class FakeNetwork(NetworkBackend):
    """``LinuxNetwork``'s twin over a ``FakeKernel``."""

    def __init__(self, kernel: FakeKernel | None = None) -> None:
        self.kernel = kernel or FakeKernel()

    def observe(
        self,
        env: LocalEnvironment,
        deep: bool | frozenset[str] = True,
        only: frozenset[str] | None = None,
    ) -> tuple[bool, bool, tuple[ObservedInstance, ...]]:
        k = self.kernel
        with k.lock:
            k.observed.append((env.netns, deep))
            if only is not None:
                k.observed_only.append(only)
            ns = k.namespaces.get(env.netns)
            found = tuple(
                ObservedInstance(
                    netns=name, addresses=inst.addresses, linked=inst.linked, guard=inst.guard
                )
                for name, inst in sorted(k.instances_of(env.netns).items())
                if only is None or name in only
            )
            if ns is None:
                return False, False, found
            base = ns.base == _base_of(env) and k.device_in(env.netns) is not None
            return True, base, found

    def create_namespace(self, netns: str) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"create_namespace {netns}", ("netlink", netns))
            k.namespaces.setdefault(netns, FakeNamespace(netns))

    def configure_namespace(self, env: LocalEnvironment) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"configure_namespace {env.netns}", ("netlink", env.netns))
            ns = k._namespace(env.netns)
            if k.device_in(env.netns) is None:
                raise DataPlaneError(f"wg0 is missing in namespace {env.netns}")
            ns.base = _base_of(env)

    def create_instance(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"create_instance {instance.netns}", *_wired(env, instance))
            k._namespace(env.netns)  # the veth's other end goes there
            # As on Linux: an existing namespace is wired in place, never made again.
            ns = k.namespaces.setdefault(instance.netns, FakeNamespace(instance.netns))
            self._wire(env, instance, ns)

    def rewire_instance(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"rewire_instance {instance.netns}", *_wired(env, instance))
            k._namespace(env.netns)
            ns = k.namespaces.get(instance.netns)
            if ns is None:
                raise DataPlaneError(f"instance {instance.netns} is not there to rewire")
            self._wire(env, instance, ns)

    @staticmethod
    def _wire(env: LocalEnvironment, instance: InstancePlacement, ns: FakeNamespace) -> None:
        ns.environment = env.netns
        ns.addresses = instance.addresses
        ns.linked = True
        ns.resolvers = env.resolvers
        ns.guard = instance.addresses

    def readdress_instance(
        self,
        env: LocalEnvironment,
        instance: InstancePlacement,
        removed: tuple[str, ...],
        added: tuple[str, ...],
    ) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"readdress_instance {instance.netns}", *_wired(env, instance))
            ns = k.namespaces.get(instance.netns)
            if ns is None or not ns.linked:
                raise DataPlaneError(f"instance {instance.netns} is not there to readdress")
            ns.addresses = (ns.addresses - frozenset(removed)) | frozenset(added)
            ns.resolvers = env.resolvers
            ns.guard = instance.addresses

    def guard_sources(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"guard_sources {instance.netns}", ("netlink", env.netns))
            ns = k.namespaces.get(instance.netns)
            if ns is None or not ns.linked:
                raise DataPlaneError(f"instance {instance.netns} is not there to guard")
            ns.guard = instance.addresses

    def remove_instance(self, netns: str) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"remove_instance {netns}", ("deleted", netns))
            k._drop_namespace(netns)

    def delete_environment(self, netns: str) -> None:
        k = self.kernel
        with k.lock:
            names = [*k.instances_of(netns), netns]
            k.record(f"delete_environment {netns}", *(("deleted", name) for name in names))
            for name in names:
                k._drop_namespace(name)


class FakeWireGuard(WireGuardBackend):
    """The WireGuard backends' twin over a ``FakeKernel``."""

    name = "fake"

    def __init__(self, kernel: FakeKernel | None = None) -> None:
        self.kernel = kernel or FakeKernel()

    def read(self, env: LocalEnvironment) -> ObservedDevice | None:
        k = self.kernel
        with k.lock:
            k.device_reads += 1
            device = k.devices.get(env.wg_ifname)
            if device is None or device.netns != env.netns:
                return None
            return ObservedDevice(
                public_key=device.public_key,
                listen_port=device.listen_port,
                peers=tuple(
                    ObservedPeer(
                        public_key=p.public_key,
                        endpoint=p.endpoint,
                        allowed_ips=frozenset(p.allowed_ips),
                        last_handshake=p.last_handshake,
                        rx_bytes=p.rx_bytes,
                        tx_bytes=p.tx_bytes,
                    )
                    for p in device.peers.values()
                ),
            )

    def create(self, env: LocalEnvironment, private_key: str, listen_port: int) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"create_device {env.wg_ifname} port {listen_port}", ("netlink", env.netns))
            if env.wg_ifname in k.devices:
                raise DataPlaneError(f"WireGuard link {env.wg_ifname} already exists")
            taken = next((d for d in k.devices.values() if d.listen_port == listen_port), None)
            if taken is not None:
                raise DataPlaneError(
                    f"UDP port {listen_port} is already bound by WireGuard link {taken.ifname}"
                )
            k._namespace(env.netns)  # the move into the environment fails without it
            if k.device_in(env.netns) is not None:
                raise DataPlaneError(f"namespace {env.netns} already holds a wg0")
            k.pids += 1
            k.devices[env.wg_ifname] = FakeDevice(
                ifname=env.wg_ifname,
                netns=env.netns,
                private_key=private_key,
                listen_port=listen_port,
                pid=k.pids,
            )

    def set_private_key(self, env: LocalEnvironment, private_key: str) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"set_private_key {env.wg_ifname}")  # never the key itself
            device = k.devices.get(env.wg_ifname)
            if device is None or device.netns != env.netns:
                raise DataPlaneError(f"WireGuard device {env.wg_ifname} does not exist")
            device.private_key = private_key
            # WireGuard drops a peer that has the device's own new public key.
            device.peers.pop(device.public_key, None)

    def configure(self, env: LocalEnvironment, changes: Sequence[SetPeer | RemovePeer]) -> None:
        if not changes:
            return  # as the real backends: nothing is sent to the device
        k = self.kernel
        with k.lock:
            k.record(f"configure_device {env.wg_ifname} {len(changes)} changes")
            device = k.devices.get(env.wg_ifname)
            if device is None or device.netns != env.netns:
                raise DataPlaneError(f"WireGuard device {env.wg_ifname} does not exist")
            for change in changes:
                if isinstance(change, RemovePeer):
                    device.peers.pop(change.public_key, None)
                    continue
                peer = device.peers.setdefault(
                    change.public_key, FakePeer(change.public_key, change.endpoint)
                )
                if change.endpoint is not None:
                    peer.endpoint = change.endpoint
                # WireGuard routes an address to one peer only: the last to claim it wins.
                for other in device.peers.values():
                    if other is not peer:
                        other.allowed_ips -= set(change.allowed_ips)
                if change.replace:
                    peer.allowed_ips = set(change.allowed_ips)
                else:
                    peer.allowed_ips |= set(change.allowed_ips)

    def delete(self, netns: str, ifname: str) -> None:
        k = self.kernel
        with k.lock:
            k.record(f"delete_device {ifname}", ("exit", netns), ("netlink", netns))
            k.devices.pop(ifname, None)

    def process(self, env: LocalEnvironment) -> int | None:
        with self.kernel.lock:
            device = self.kernel.devices.get(env.wg_ifname)
            return device.pid if device is not None else None


class FakeDriftWatch(DriftWatch):
    """``LinuxDriftWatch``'s twin: the ``FakeKernel``'s events, for what is tracked."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self._targets: dict[str, WatchTarget] = {}
        self.retracked: list[frozenset[str]] = []
        """The environments of each ``retrack``: what an apply made the watch look at."""
        self._pending: list[Nudge] = []
        self._cond = threading.Condition()
        self._woken = False
        kernel.listeners.append(self._event)

    def _event(self, kind: str, netns: str) -> None:
        with self._cond:
            for target in self._targets.values():
                if netns == target.netns:
                    self._pending.append(Nudge(target.env_id, None, kind, time.monotonic()))
                elif netns in target.instances:
                    self._pending.append(Nudge(target.env_id, netns, kind, time.monotonic()))
            self._cond.notify_all()

    def track(self, targets: Sequence[WatchTarget]) -> list[Nudge]:
        with self._cond:
            self._targets = {t.env_id: t for t in targets}
        return self._missing(targets)

    def retrack(self, env_ids: Collection[str], targets: Sequence[WatchTarget]) -> list[Nudge]:
        with self._cond:
            for env_id in env_ids:
                self._targets.pop(env_id, None)
            self._targets.update({t.env_id: t for t in targets})
            self.retracked.append(frozenset(env_ids))
        return self._missing(targets)

    def _missing(self, targets: Sequence[WatchTarget]) -> list[Nudge]:
        missing = []
        with self.kernel.lock:
            for target in targets:
                for netns in (target.netns, *target.instances):
                    if netns not in self.kernel.namespaces:
                        instance = None if netns == target.netns else netns
                        missing.append(Nudge(target.env_id, instance, "missing", time.monotonic()))
        return missing

    def wait(self, timeout: float) -> list[Nudge]:
        with self._cond:
            if not self._pending and not self._woken:
                self._cond.wait(timeout)
            found, self._pending, self._woken = self._pending, [], False
            return found

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        if self._event in self.kernel.listeners:
            self.kernel.listeners.remove(self._event)
