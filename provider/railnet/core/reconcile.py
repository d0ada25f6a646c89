"""Observe → plan → apply: the pure middle step.

The agent reads what the kernel and WireGuard hold into an ``ObservedEnvironment``, this
module compares it with the ``LocalEnvironment`` derived from the stored document, and the
result is an ordered tuple of changes that the backends apply. An empty plan means the node
already matches: re-applying a document changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from railnet.core.local import InstancePlacement, LocalEnvironment, PeerSpec


@dataclass(frozen=True)
class ObservedPeer:
    public_key: str
    endpoint: str | None
    allowed_ips: frozenset[str]
    last_handshake: int = 0
    """Seconds since the epoch; 0 before the first handshake."""
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class ObservedDevice:
    public_key: str
    listen_port: int
    peers: tuple[ObservedPeer, ...] = ()

    def peer(self, public_key: str) -> ObservedPeer | None:
        return next((p for p in self.peers if p.public_key == public_key), None)


@dataclass(frozen=True)
class ObservedInstance:
    netns: str
    addresses: frozenset[str]
    """The internal addresses on the instance's ``eth0``."""
    linked: bool
    """Its veth pair is intact and up on both ends, with routes in place."""
    guard: frozenset[str] | None
    """The source addresses the anti-spoofing rules let in from its veth; ``None`` when a
    family's catch-all drop is missing (then any source gets through)."""


@dataclass(frozen=True)
class ObservedEnvironment:
    netns_exists: bool
    base_ready: bool
    """Forwarding, resolver addresses and mesh routes are in place in the namespace."""
    device: ObservedDevice | None
    instances: tuple[ObservedInstance, ...] = field(default=())
    only: frozenset[str] | None = None
    """The instance namespaces looked at (``instances`` holds those found); the others are
    as the node last built them, so they are left out of the plan. None: all were."""

    @classmethod
    def absent(cls) -> ObservedEnvironment:
        return cls(netns_exists=False, base_ready=False, device=None)


# -- changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateNamespace:
    netns: str

    def describe(self) -> str:
        return f"create namespace {self.netns}"


@dataclass(frozen=True)
class ConfigureNamespace:
    """Forwarding, resolver addresses and the routes into the mesh."""

    netns: str

    def describe(self) -> str:
        return f"configure namespace {self.netns} (forwarding, resolver, mesh routes)"


@dataclass(frozen=True)
class CreateDevice:
    ifname: str
    listen_port: int

    def describe(self) -> str:
        return f"create WireGuard device {self.ifname} on UDP port {self.listen_port}"


@dataclass(frozen=True)
class DeleteDevice:
    netns: str
    """The environment namespace the device lives in."""
    ifname: str
    reason: str

    def describe(self) -> str:
        return f"delete WireGuard device {self.ifname} ({self.reason})"


@dataclass(frozen=True)
class SetPrivateKey:
    """Give the device the identity's key in place (a rotation): the device, its socket and
    its peers stay, and WireGuard starts new sessions under the new key."""

    ifname: str
    public_key: str
    """The public half of the key it gets (the private one never appears in a plan)."""

    def describe(self) -> str:
        return f"set the key of WireGuard device {self.ifname} (public key {self.public_key})"


@dataclass(frozen=True)
class SetPeer:
    node: str
    public_key: str
    endpoint: str | None
    """``None`` keeps the endpoint WireGuard holds (it may have learned it by roaming)."""
    allowed_ips: tuple[str, ...]
    handshake: bool = False
    """Start a handshake at once (a keepalive): the peer replaces one of the same node
    under its old key, or comes back after drift while the other node still holds the
    session this device lost; traffic should not wait for its next packet or a retry."""
    replace: bool = True
    """``allowed_ips`` are all the peer's, in place of those it has; False: they are added
    to those it has (a change that only adds, as a new service does: what is sent grows
    with the change, not with the services on that peer)."""

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        now = " (handshake now)" if self.handshake else ""
        allowed = self.allowed_ips if self.replace else tuple(f"+{a}" for a in self.allowed_ips)
        return f"set peer {self.node}{where} allowed {', '.join(allowed) or '-'}{now}"


@dataclass(frozen=True)
class RemovePeer:
    public_key: str

    def describe(self) -> str:
        return f"remove peer {self.public_key}"


@dataclass(frozen=True)
class CreateInstance:
    instance: InstancePlacement
    again: bool = False
    """The node was told about this instance before, so its namespace existed and is gone:
    whatever ran in it went with it (a reboot, someone's ``ip netns del``)."""

    def describe(self) -> str:
        i = self.instance
        what = (
            f"create instance {i.service}#{i.index} in {i.netns} ({', '.join(sorted(i.addresses))})"
        )
        if self.again:
            what += "; its namespace was gone: the processes that ran in it are gone"
        return what


@dataclass(frozen=True)
class RewireInstance:
    """Put a standing instance's wiring back in place (its veth pair, addresses, routes,
    source guard and resolv.conf): the namespace and the processes in it stay."""

    instance: InstancePlacement

    def describe(self) -> str:
        i = self.instance
        return f"rewire instance {i.service}#{i.index} in {i.netns} in place"


@dataclass(frozen=True)
class ReaddressInstance:
    """Change a wired instance's addresses in place: its namespace, and the connections on
    the addresses it keeps, survive (a switch to or from IPv6 only, a new IPv4 range)."""

    instance: InstancePlacement
    removed: tuple[str, ...]
    added: tuple[str, ...]

    def describe(self) -> str:
        i = self.instance
        parts = [f"-{a}" for a in self.removed] + [f"+{a}" for a in self.added]
        return f"readdress instance {i.service}#{i.index} in {i.netns} ({', '.join(parts)})"


@dataclass(frozen=True)
class GuardInstance:
    """Write a wired instance's anti-spoofing rules again (someone deleted or changed them):
    its namespace and connections are untouched."""

    instance: InstancePlacement

    def describe(self) -> str:
        i = self.instance
        return f"restore the source guard of instance {i.service}#{i.index} in {i.netns}"


@dataclass(frozen=True)
class RemoveInstance:
    netns: str

    def describe(self) -> str:
        return f"remove instance namespace {self.netns}"


@dataclass(frozen=True)
class RemoveResolverView:
    """Stop answering for the environment; its DNS sockets hold the namespace alive."""

    env_id: str

    def describe(self) -> str:
        return f"remove the DNS view of {self.env_id}"


@dataclass(frozen=True)
class DeleteNamespace:
    """Remove the environment namespace and every instance namespace under it."""

    netns: str

    def describe(self) -> str:
        return f"delete namespace {self.netns} and its instances"


Change = (
    CreateNamespace
    | ConfigureNamespace
    | CreateDevice
    | DeleteDevice
    | SetPrivateKey
    | SetPeer
    | RemovePeer
    | CreateInstance
    | RewireInstance
    | ReaddressInstance
    | GuardInstance
    | RemoveInstance
    | RemoveResolverView
    | DeleteNamespace
)


def plan_environment(
    desired: LocalEnvironment,
    public_key: str,
    listen_port: int,
    observed: ObservedEnvironment,
    previous: LocalEnvironment | None = None,
) -> tuple[Change, ...]:
    """The ordered changes that take ``observed`` to ``desired``.

    ``previous`` is what the node was told last time; a peer's endpoint is only pushed to
    WireGuard when the peer is new or the document moved it, so an endpoint learned by
    roaming survives re-applies.
    """
    changes: list[Change] = []
    if not observed.netns_exists:
        changes.append(CreateNamespace(desired.netns))
    device = observed.device if observed.netns_exists else None
    if device is not None and device.listen_port != listen_port:
        changes.append(
            DeleteDevice(desired.netns, desired.wg_ifname, "its port differs from the state")
        )
        device = None
    if device is not None and device.public_key != public_key:
        changes.append(SetPrivateKey(desired.wg_ifname, public_key))
    if device is None:
        changes.append(CreateDevice(desired.wg_ifname, listen_port))
    if not (observed.netns_exists and observed.base_ready) or device is None:
        changes.append(ConfigureNamespace(desired.netns))

    only = observed.only
    wanted = {i.netns: i for i in desired.instances if only is None or i.netns in only}
    # Instance namespaces are named namespaces of their own: they outlive a deleted
    # environment namespace (their veth pairs do not), and are wired again, not remade.
    seen = {o.netns: o for o in observed.instances}
    known = {i.netns for i in previous.instances} if previous is not None else set()
    # An instance namespace that exists is never removed to be made again: the processes
    # in it would be left with only ``lo``. What is missing of its wiring is put back.
    changes.extend(RemoveInstance(netns) for netns in sorted(seen) if netns not in wanted)
    for netns in sorted(wanted):
        inst, obs = wanted[netns], seen.get(netns)
        if obs is None:
            changes.append(CreateInstance(inst, again=netns in known))
        elif not obs.linked:
            changes.append(RewireInstance(inst))
        elif obs.addresses != inst.addresses:
            changes.append(
                ReaddressInstance(
                    inst,
                    removed=tuple(sorted(obs.addresses - inst.addresses)),
                    added=tuple(sorted(inst.addresses - obs.addresses)),
                )
            )
        elif obs.guard != inst.addresses:
            changes.append(GuardInstance(inst))

    changes.extend(_plan_peers(desired.peers, device, previous))
    return tuple(changes)


def touched_instances(before: LocalEnvironment, after: LocalEnvironment) -> frozenset[str]:
    """The instance namespaces a change from ``before`` to ``after`` touches: made, removed,
    or placed differently (addresses, veth). An apply looks at these only."""
    old = {i.netns: i for i in before.instances}
    new = {i.netns: i for i in after.instances}
    # An instance the change leaves alone is the same object in both (see
    # ``local_environment_after``): passed over without comparing its fields.
    return frozenset(
        n for n in old.keys() | new.keys() if (o := old.get(n)) is not (w := new.get(n)) and o != w
    )


def device_as_built(built: LocalEnvironment, public_key: str, listen_port: int) -> ObservedDevice:
    """The WireGuard device as the node's last finished reconcile of ``built`` left it:
    what an apply trusts instead of reading every peer's allowed IPs again (start-up,
    repairs and the watcher's device checks read the device itself)."""
    return ObservedDevice(
        public_key=public_key,
        listen_port=listen_port,
        peers=tuple(
            ObservedPeer(p.public_key, p.endpoint, frozenset(p.allowed_ips)) for p in built.peers
        ),
    )


def any_peer_rekeyed(before: LocalEnvironment, after: LocalEnvironment) -> bool:
    """Whether a node that is a peer in both has another key in ``after``: its endpoint
    may have been learned by roaming, which only the device knows."""
    keys = {p.node: p.public_key for p in before.peers}
    return any(keys.get(p.node, p.public_key) != p.public_key for p in after.peers)


def plan_device(
    desired: LocalEnvironment, public_key: str, listen_port: int, device: ObservedDevice | None
) -> tuple[Change, ...]:
    """What the WireGuard device alone lacks (the watcher's cheap look between events:
    a peer removed with ``wg`` makes no netlink event). Empty when it matches."""
    if device is None or device.listen_port != listen_port:
        return (CreateDevice(desired.wg_ifname, listen_port),)
    changes: list[Change] = []
    if device.public_key != public_key:
        changes.append(SetPrivateKey(desired.wg_ifname, public_key))
    changes.extend(_plan_peers(desired.peers, device, desired))
    return tuple(changes)


def plan_removal(env_id: str, netns: str, wg_ifname: str) -> tuple[Change, ...]:
    """The ordered changes that remove an environment from a node.

    The DNS view goes first (its sockets keep the namespace alive), then the device (a
    userspace WireGuard process outlives its namespace), then the namespaces. Every step is
    a no-op when its object is already gone, so a removal that was cut short can run again.
    """
    return (
        RemoveResolverView(env_id),
        DeleteDevice(netns, wg_ifname, "the environment is removed from this node"),
        DeleteNamespace(netns),
    )


def _plan_peers(
    peers: tuple[PeerSpec, ...], device: ObservedDevice | None, previous: LocalEnvironment | None
) -> list[Change]:
    changes: list[Change] = []
    before = {p.public_key: p for p in previous.peers} if previous else {}
    before_by_node = {p.node: p for p in previous.peers} if previous else {}
    for peer in peers:
        have = device.peer(peer.public_key) if device else None
        if have is None:
            old = before_by_node.get(peer.node)
            rekeyed = old is not None and old.public_key != peer.public_key
            endpoint = peer.endpoint
            was = device.peer(old.public_key) if rekeyed and device and old else None
            if was is not None and was.endpoint and old and old.endpoint == peer.endpoint:
                endpoint = was.endpoint  # learned by roaming: the new key is the same node
            # A peer told of before and missing now was lost to drift (a device made
            # again, a peer removed with ``wg``): the other node still sends under the
            # session this device forgot, and would until its rekey timeout.
            restored = peer.public_key in before
            changes.append(
                SetPeer(
                    peer.node,
                    peer.public_key,
                    endpoint,
                    peer.allowed_ips,
                    handshake=rekeyed or restored,
                )
            )
            continue
        moved = peer.public_key in before and before[peer.public_key].endpoint != peer.endpoint
        lost = have.endpoint is None
        wanted = frozenset(peer.allowed_ips)
        if not (moved or lost) and have.allowed_ips < wanted:
            added = tuple(a for a in peer.allowed_ips if a not in have.allowed_ips)
            changes.append(SetPeer(peer.node, peer.public_key, None, added, replace=False))
        elif moved or lost or have.allowed_ips != wanted:
            changes.append(
                SetPeer(
                    peer.node,
                    peer.public_key,
                    peer.endpoint if (moved or lost) else None,
                    peer.allowed_ips,
                )
            )
    wanted_keys = {p.public_key for p in peers}
    if device is not None:
        changes.extend(
            RemovePeer(p.public_key) for p in device.peers if p.public_key not in wanted_keys
        )
    return changes
