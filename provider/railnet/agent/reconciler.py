"""The agent's one way to change the node: stored document → core plan → backends.

Every mutation (an apply, a restart, a periodic repair) goes through ``reconcile``: observe
the kernel, plan with ``railnet.core.reconcile``, apply the plan. Re-applying is a no-op
because the plan of a node that matches its document is empty.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from railnet.agent.backends import NetworkBackend, ResolverBackend, WireGuardBackend
from railnet.agent.state import Identity, StagedKey, StateDir
from railnet.agent.wireguard import generate_private_key, public_key_of
from railnet.core.delta import DocumentDelta
from railnet.core.dns import ResolverView, ViewChange
from railnet.core.document import READABLE_FORMATS, EnvironmentDocument, check_key_rotation
from railnet.core.errors import (
    DamagedState,
    DataPlaneError,
    EnvironmentNotFound,
    InvalidField,
    StaleBase,
    StaleGeneration,
    StaleIdentity,
)
from railnet.core.local import LocalEnvironment, local_environment, local_environment_after
from railnet.core.names import check_object_id, environment_netns, wireguard_ifname
from railnet.core.reconcile import (
    Change,
    ConfigureNamespace,
    CreateDevice,
    CreateInstance,
    CreateNamespace,
    DeleteDevice,
    DeleteNamespace,
    GuardInstance,
    ObservedDevice,
    ObservedEnvironment,
    RemoveInstance,
    RemovePeer,
    RemoveResolverView,
    RewireInstance,
    SetPeer,
    SetPrivateKey,
    any_peer_rekeyed,
    device_as_built,
    plan_device,
    plan_environment,
    plan_removal,
    touched_instances,
)

log = logging.getLogger("railnet.agent")

DEFAULT_PORT_RANGE = (51820, 52819)
LOST_KEPT = 10
LOOKS_AHEAD = 3
"""How many times a deep repair looks before the lock (see ``Reconciler.reconcile``)."""
"""How many of an environment's losses (see ``EnvironmentReport.lost``) status shows."""


@dataclass(frozen=True)
class PeerReport:
    node: str
    public_key: str
    endpoint: str
    last_handshake: int
    rx_bytes: int
    tx_bytes: int
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True)
class EnvironmentReport:
    """What ``Status`` tells about one environment on this node."""

    env_id: str
    project: str
    environment: str
    generation: int
    netns: str
    listen_port: int
    public_key: str
    peers: tuple[PeerReport, ...]
    local: LocalEnvironment | None
    drift: tuple[str, ...]
    records: tuple[tuple[str, str, str, int], ...]
    lost: tuple[str, ...] = ()
    """What repairs since the agent started could not keep, oldest first: e.g. an instance
    namespace that was gone and is made again, without the processes that ran in it."""


@dataclass(frozen=True)
class Hosted:
    """An environment this node builds, as the last reconcile left it: what the watcher
    looks at between events without reading the state directory."""

    local: LocalEnvironment
    public_key: str
    listen_port: int


class Reconciler:
    def __init__(
        self,
        *,
        node: str,
        netns_prefix: str,
        endpoint_host: str,
        state: StateDir,
        network: NetworkBackend,
        wireguard: WireGuardBackend,
        resolver: ResolverBackend | None,
        port_free: Callable[[int], bool],
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    ) -> None:
        self.node = node
        self.netns_prefix = netns_prefix
        self.endpoint_host = endpoint_host
        self.state = state
        self.network = network
        self.wireguard = wireguard
        self.resolver = resolver
        self.port_free = port_free
        self.port_range = port_range
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._hosted: dict[str, Hosted] = {}
        self._derived: dict[str, tuple[EnvironmentDocument, LocalEnvironment]] = {}
        """Per environment, the last document derived to this node's part, and that part:
        an apply needs the held document's part again, and it costs the whole document."""
        self._lost: dict[str, list[str]] = {}
        self._changing: dict[str, int] = {}
        self._settled: dict[str, float] = {}
        self.on_settled: Callable[[str], None] | None = None
        """Called (outside every lock) each time the agent has finished changing an
        environment: an apply, a delete or a repair. The self-healer looks again at what
        it watches then."""

    @contextmanager
    def _locked(self, env_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(env_id, threading.Lock())
        with lock:
            yield

    @contextmanager
    def _changing_env(self, env_id: str) -> Iterator[None]:
        """The environment's lock, held while the agent itself may change its kernel
        objects: the kernel's events of that time are the agent's own (``quiet_since``)."""
        with self._locked(env_id):
            with self._guard:
                self._changing[env_id] = self._changing.get(env_id, 0) + 1
            try:
                yield
            finally:
                with self._guard:
                    self._changing[env_id] -= 1
                    if not self._changing[env_id]:
                        del self._changing[env_id]
                    self._settled[env_id] = time.monotonic()
        if self.on_settled is not None:
            self.on_settled(env_id)

    def quiet_since(self, env_id: str) -> float | None:
        """``None`` while the agent itself is changing the environment; else the
        monotonic time it last finished doing so (0.0: never since it started)."""
        with self._guard:
            if env_id in self._changing:
                return None
            return self._settled.get(env_id, 0.0)

    def endpoint(self, identity: Identity) -> str:
        host = self.endpoint_host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{identity.listen_port}"

    # -- API -------------------------------------------------------------------------

    def ensure(self, env_id: str, key_rotation: str | None = None) -> tuple[str, str]:
        """The environment's (public key, endpoint) on this node, created on first call.

        With ``key_rotation``, the key is one made for that token: the key in service when
        it was, else a staged one (the same on every call for the token) that the first
        document naming it puts in service. ``None`` is the key in service, whatever its
        token."""
        check_object_id("env_id", env_id)
        if key_rotation is not None:
            check_key_rotation("key_rotation", key_rotation)
        with self._locked(env_id):
            identity = self.state.identity(env_id)
            if identity is None:
                with self._guard:
                    identity = Identity(
                        generate_private_key(), self._free_port(), key_rotation or ""
                    )
                    self.state.save_identity(env_id, identity)
                log.info("environment %s: new identity on port %d", env_id, identity.listen_port)
            elif key_rotation is not None and key_rotation != identity.rotation:
                staged = self.state.staged(env_id)
                if staged is None or staged.rotation != key_rotation:
                    staged = StagedKey(generate_private_key(), key_rotation)
                    self.state.stage_key(env_id, staged)
                    log.info(
                        "environment %s: staged key %s for rotation %r",
                        env_id,
                        public_key_of(staged.private_key),
                        key_rotation,
                    )
                return public_key_of(staged.private_key), self.endpoint(identity)
            elif key_rotation is not None and self.state.staged(env_id) is not None:
                self.state.discard_staged(env_id)  # a rotation given up before its document
                log.info("environment %s: discarded the staged key", env_id)
            return public_key_of(identity.private_key), self.endpoint(identity)

    def _free_port(self) -> int:
        used = self.state.used_ports()
        low, high = self.port_range
        for port in range(low, high + 1):
            if port not in used and self.port_free(port):
                return port
        raise DataPlaneError(f"no free WireGuard port left in {low}-{high} on node {self.node}")

    def apply(self, document_json: str | bytes, expected_generation: int) -> tuple[int, list[str]]:
        """Compare-and-set: store ``document_json`` if the node holds ``expected_generation``.

        The document already stored is accepted again (whatever ``expected_generation``
        says) and only repairs drift, so a retried call is harmless.
        """
        return self.apply_document(
            EnvironmentDocument.from_json(document_json), expected_generation
        )

    def resolve_delta(
        self, delta: DocumentDelta, formats: Sequence[int] = READABLE_FORMATS
    ) -> EnvironmentDocument:
        """The document ``delta`` makes of the one stored here (checked as a whole one
        would be); ``StaleBase`` when the node holds another. ``apply_document`` then
        applies it with the usual compare-and-set, so a write in between is caught."""
        env_id = check_object_id("delta.header.id", delta.header.get("id"))
        with self._locked(env_id):
            base = self._stored(env_id)
            if base is None:
                raise StaleBase(env_id, 0, delta.base_generation)
            if base.digest == delta.digest:
                return base  # a retry of a delta applied already
            return delta.apply_to(base, formats)

    def apply_document(
        self, doc: EnvironmentDocument, expected_generation: int
    ) -> tuple[int, list[str]]:
        """``apply`` for a document already parsed (and so validated).

        A node the document lists among its ``nodes`` hosts the environment: the document
        is built here. A node listed only among its ``keepers`` stores the document and
        hosts nothing: whatever it built for the environment before is removed."""
        with self._changing_env(doc.id):
            hosting = self.node in {n.name for n in doc.nodes}
            identity = self.state.identity(doc.id)
            promote = False
            if hosting:
                if identity is None:
                    raise EnvironmentNotFound(doc.id, self.node)
                promote = self._check_self(doc, identity)
            elif self.node not in doc.keepers:
                names = [n.name for n in doc.nodes]
                raise InvalidField(
                    "nodes", names, f"does not include this node ({self.node}), nor do keepers"
                )
            stored = self._stored(doc.id)
            if stored == doc:
                if promote:
                    identity = self._promote(doc)
                return doc.generation, self._settle(doc, identity, stored)
            stored_generation = stored.generation if stored else 0
            if stored_generation != expected_generation:
                raise StaleGeneration(doc.id, stored_generation, expected_generation)
            if doc.generation <= stored_generation:
                raise InvalidField(
                    "generation",
                    doc.generation,
                    f"must be higher than the stored generation {stored_generation}",
                )
            if promote:
                # Before the document: a crash in between leaves the new key in service
                # and the old document, which a retry of this apply replaces.
                identity = self._promote(doc)
            self.state.save_document(doc)
            changes = self._settle(doc, identity, stored)
            log.info(
                "environment %s: generation %d, %d changes%s",
                doc.id,
                doc.generation,
                len(changes),
                "" if hosting else " (kept, not hosted)",
            )
            return doc.generation, changes

    def _settle(
        self,
        doc: EnvironmentDocument,
        identity: Identity | None,
        previous: EnvironmentDocument | None,
    ) -> list[str]:
        """Make the node what a stored ``doc`` says: built when it hosts the environment,
        empty when it only keeps the document (the key pair goes last, so a removal cut
        short runs again on the next apply)."""
        if self.node in {n.name for n in doc.nodes}:
            assert identity is not None
            return self._reconcile(doc, identity, previous)
        if identity is None:
            return []
        removal = plan_removal(
            doc.id,
            environment_netns(self.netns_prefix, doc.id),
            wireguard_ifname(self.netns_prefix, doc.id),
        )
        self._execute(removal, None, None)
        self._forget(doc.id)
        self.state.forget_identity(doc.id)
        log.info("environment %s: no longer hosted here; its document is kept", doc.id)
        return [change.describe() for change in removal]

    def _promote(self, doc: EnvironmentDocument) -> Identity:
        identity = self.state.promote_staged(doc.id)
        log.info(
            "environment %s: key %s in service for rotation %r (generation %d)",
            doc.id,
            public_key_of(identity.private_key),
            identity.rotation,
            doc.generation,
        )
        return identity

    def _check_self(self, doc: EnvironmentDocument, identity: Identity) -> bool:
        """That the document names this node with its identity; True when it names the
        staged key of a rotation (which the apply then puts in service)."""
        names = [n.name for n in doc.nodes]
        if self.node not in names:
            raise InvalidField("nodes", names, f"does not include this node ({self.node})")
        i = names.index(self.node)
        me = doc.nodes[i]
        staged = self.state.staged(doc.id)
        promote = staged is not None and me.public_key == public_key_of(staged.private_key)
        if not promote and me.public_key != public_key_of(identity.private_key):
            raise StaleIdentity(
                f"nodes[{i}].public_key",
                me.public_key,
                f"is not node {self.node}'s key for environment {doc.id}; "
                "take it from EnsureEnvironment",
            )
        if me.endpoint != self.endpoint(identity):
            raise StaleIdentity(
                f"nodes[{i}].endpoint",
                me.endpoint,
                f"node {self.node} serves environment {doc.id} at {self.endpoint(identity)}",
            )
        return promote

    def document(self, env_id: str) -> EnvironmentDocument | None:
        check_object_id("env_id", env_id)
        return self.state.document(env_id)

    def _stored(self, env_id: str) -> EnvironmentDocument | None:
        """The stored document; None when there is none, or when its file is damaged (the
        file is kept, and the document being applied replaces it)."""
        try:
            return self.state.document(env_id)
        except DamagedState as exc:
            log.error("environment %s: %s", env_id, exc)
            return None

    def delete(self, env_id: str, expected_generation: int = 0) -> bool:
        """Remove everything of the environment on this node; with ``expected_generation``
        (not 0), only if the node still holds that generation (compare-and-set)."""
        check_object_id("env_id", env_id)
        with self._changing_env(env_id):
            existed = self.state.identity(env_id) is not None or self._stored(env_id) is not None
            if expected_generation:
                stored = self._stored(env_id)
                held = stored.generation if stored else 0
                if held != expected_generation:
                    raise StaleGeneration(env_id, held, expected_generation)
            removal = plan_removal(
                env_id,
                environment_netns(self.netns_prefix, env_id),
                wireguard_ifname(self.netns_prefix, env_id),
            )
            self._execute(removal, None, None)
            self._forget(env_id)
            self.state.forget(env_id)
            if existed:
                log.info("environment %s: deleted", env_id)
            return existed

    def reconcile(self, env_id: str, deep: bool | frozenset[str] = True) -> list[str]:
        """Repair one environment from the stored document: at start-up and periodically
        looking inside every instance namespace (``deep``), after events (the watcher)
        inside only the instance namespaces the events came from."""
        check_object_id("env_id", env_id)
        # A look inside every instance namespace takes long in a large environment: it is
        # taken before the lock, so applies do not wait for it, and used under the lock
        # only if the agent changed nothing of the environment meanwhile. A look that
        # applies keep overtaking is taken again; after LOOKS_AHEAD tries, under the lock.
        for _ in range(LOOKS_AHEAD if deep is True else 0):
            ahead = self._look_ahead(env_id)
            if ahead is None:
                break
            with self._changing_env(env_id):
                with self._guard:
                    overtaken = self._settled.get(env_id) != ahead[0]
                if not overtaken:
                    return self._repair_locked(env_id, deep, ahead)
        with self._changing_env(env_id):
            return self._repair_locked(env_id, deep, None)

    def _repair_locked(
        self,
        env_id: str,
        deep: bool | frozenset[str],
        ahead: tuple[float | None, EnvironmentDocument, ObservedEnvironment] | None,
    ) -> list[str]:
        """The repair, with the environment's lock held; ``ahead``: a look still valid."""
        try:
            identity = self.state.identity(env_id)
            doc = self.state.document(env_id)
        except DamagedState as exc:
            # Nothing is touched: what runs keeps running, DNS keeps its last view.
            log.error("environment %s: %s", env_id, exc)
            return [f"not repaired: {exc}"]
        if identity is None or doc is None:
            return []
        observed = None
        if ahead is not None and ahead[1] is doc:
            observed = ahead[2]
        return self._reconcile(doc, identity, doc, deep=deep, observed=observed)

    def _look_ahead(
        self, env_id: str
    ) -> tuple[float | None, EnvironmentDocument, ObservedEnvironment] | None:
        """A deep look at the environment without its lock, with what it was taken
        against: when the agent last finished changing the environment, and the document.
        None when there is nothing to look at."""
        with self._locked(env_id), self._guard:  # a change under way finishes first
            marker = self._settled.get(env_id)
        try:
            doc = self.state.document(env_id)
        except DamagedState:
            return None
        if doc is None or self.node not in {n.name for n in doc.nodes}:
            return None
        return marker, doc, self._observe(self._local(doc), True)

    def reconcile_all(self, stop: threading.Event | None = None) -> dict[str, list[str]]:
        """Repair every stored environment, one after another; with ``stop``, the ones
        left once it is set are left for the next start (a node with hundreds of
        environments takes a while, and a stop or a hand-over must not wait for all)."""
        done: dict[str, list[str]] = {}
        for env_id in self.state.environment_ids():
            if stop is not None and stop.is_set():
                break
            try:
                done[env_id] = self.reconcile(env_id)
            except Exception as exc:  # one broken environment must not stop the others
                log.error("environment %s: repair failed: %s", env_id, exc)
                done[env_id] = [f"error: {exc}"]
        return done

    def hosted(self, only: Collection[str] | None = None) -> dict[str, Hosted]:
        """The environments this node builds (as their last reconcile left them); with
        ``only``, those of them."""
        with self._guard:
            if only is None:
                return dict(self._hosted)
            return {e: self._hosted[e] for e in only if e in self._hosted}

    def device_drift(self, env_id: str) -> tuple[Change, ...]:
        """What the environment's WireGuard device lacks, read without the environment's
        lock (one UAPI or netlink read): the watcher's look between events. An apply in
        progress may show as drift; the repair that follows takes the lock and sees."""
        hosted = self.hosted().get(env_id)
        if hosted is None:
            return ()
        device = self.wireguard.read(hosted.local)
        return plan_device(hosted.local, hosted.public_key, hosted.listen_port, device)

    def wireguard_process(self, env_id: str) -> int | None:
        """The pid of the process serving the environment's device (wireguard-go), if any."""
        hosted = self.hosted().get(env_id)
        return self.wireguard.process(hosted.local) if hosted is not None else None

    def status(self, env_id: str = "") -> list[EnvironmentReport]:
        if env_id:
            check_object_id("env_id", env_id)
        ids = [env_id] if env_id else self.state.environment_ids()
        return [r for r in (self._report(i) for i in ids) if r is not None]

    # -- internals ---------------------------------------------------------------------

    def _local(self, doc: EnvironmentDocument) -> LocalEnvironment:
        """This node's part of ``doc``: kept from the last call, or derived from the last
        call's by the services that differ."""
        with self._guard:
            derived = self._derived.get(doc.id)
        if derived is not None and derived[0] is doc:
            return derived[1]
        if derived is not None:
            local = local_environment_after(derived[0], derived[1], doc, self.netns_prefix)
        else:
            local = local_environment(doc, self.node, self.netns_prefix)
        with self._guard:
            self._derived[doc.id] = (doc, local)
        return local

    def _observe(
        self,
        local: LocalEnvironment,
        deep: bool | frozenset[str] = True,
        before: LocalEnvironment | None = None,
    ) -> ObservedEnvironment:
        """What the node has of ``local``. With ``before`` (an apply of a change from it),
        only the instances the change touches are read; the others, and the WireGuard
        device, are taken as the last finished reconcile built them. That holds only when
        that reconcile was of ``before``: after one that failed part-way (or none since
        start-up), everything is read."""
        built: Hosted | None = None
        only: frozenset[str] | None = None
        if before is not None:
            with self._guard:
                built = self._hosted.get(local.env_id)
            if built is None or built.local is not before:
                before = None
        if before is None or built is None:
            exists, base, instances = self.network.observe(local, deep)
            device = self.wireguard.read(local) if exists else None
        else:
            # The instances it does not touch are taken as built (the plan leaves them be).
            only = touched_instances(before, local)
            exists, base, instances = self.network.observe(local, deep, only=only)
            if not exists:  # the environment is gone under the agent: read everything
                only = None
                exists, base, instances = self.network.observe(local, deep)
            if exists and base and not any_peer_rekeyed(before, local):
                # ``base`` includes the device's link, up: the device is there.
                device = device_as_built(before, built.public_key, built.listen_port)
            else:
                device = self.wireguard.read(local) if exists else None
        return ObservedEnvironment(
            netns_exists=exists, base_ready=base, device=device, instances=instances, only=only
        )

    def _reconcile(
        self,
        doc: EnvironmentDocument,
        identity: Identity,
        previous: EnvironmentDocument | None,
        deep: bool | frozenset[str] = False,
        observed: ObservedEnvironment | None = None,
    ) -> list[str]:
        """Make the node what ``doc`` says; ``observed``: a look at it already taken (and
        still valid), instead of a new one."""
        # The held document's part first: it was derived last time (and is kept), and the
        # new one is then kept for the next apply.
        before = self._local(previous) if previous is not None else None
        local = self._local(doc)
        # An apply of a new document reads what its change touches; a re-apply of the
        # stored one, start-up and repairs read everything.
        changing = before is not None and previous is not doc and previous != doc
        if observed is None:
            observed = self._observe(local, deep, before if changing and deep is False else None)
        public_key = public_key_of(identity.private_key)
        plan = plan_environment(local, public_key, identity.listen_port, observed, before)
        self._execute(plan, local, identity)
        with self._guard:
            self._hosted[doc.id] = Hosted(local, public_key, identity.listen_port)
        self._remember_losses(doc.id, plan)
        if self.resolver is not None:
            serve_view(self.resolver, doc, previous if changing else None, local.netns)
        return [change.describe() for change in plan]

    def _remember_losses(self, env_id: str, plan: Sequence[Change]) -> None:
        lost = [c for c in plan if isinstance(c, CreateInstance) and c.again]
        if not lost:
            return
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with self._guard:
            kept = self._lost.setdefault(env_id, [])
            for change in lost:
                i = change.instance
                kept.append(
                    f"{when} UTC: instance {i.service}#{i.index}: namespace {i.netns} was gone "
                    "and is made again; the processes that ran in it are gone (start them again)"
                )
                log.warning("environment %s: %s", env_id, kept[-1])
            del kept[:-LOST_KEPT]

    def _forget(self, env_id: str) -> None:
        with self._guard:
            self._hosted.pop(env_id, None)
            self._derived.pop(env_id, None)
            self._lost.pop(env_id, None)

    def _execute(
        self,
        plan: Sequence[Change],
        local: LocalEnvironment | None,
        identity: Identity | None,
    ) -> None:
        """Carry out a plan from the core, in its order, on the backends. ``local`` and
        ``identity`` are needed only by changes that build (not by a removal)."""
        peer_changes: list[SetPeer | RemovePeer] = []
        for change in plan:
            if isinstance(change, (SetPeer, RemovePeer)):
                peer_changes.append(change)
            elif isinstance(change, CreateNamespace):
                self.network.create_namespace(change.netns)
            elif isinstance(change, DeleteDevice):
                self.wireguard.delete(change.netns, change.ifname)
            elif isinstance(change, SetPrivateKey):
                assert local is not None and identity is not None, change
                self.wireguard.set_private_key(local, identity.private_key)
            elif isinstance(change, RemoveInstance):
                self.network.remove_instance(change.netns)
            elif isinstance(change, RemoveResolverView):
                if self.resolver is not None:
                    self.resolver.remove(change.env_id)
            elif isinstance(change, DeleteNamespace):
                self.network.delete_environment(change.netns)
            else:
                assert local is not None and identity is not None, change
                if isinstance(change, CreateDevice):
                    self.wireguard.create(local, identity.private_key, identity.listen_port)
                elif isinstance(change, ConfigureNamespace):
                    self.network.configure_namespace(local)
                elif isinstance(change, CreateInstance):
                    self.network.create_instance(local, change.instance)
                elif isinstance(change, RewireInstance):
                    self.network.rewire_instance(local, change.instance)
                elif isinstance(change, GuardInstance):
                    self.network.guard_sources(local, change.instance)
                else:
                    self.network.readdress_instance(
                        local, change.instance, change.removed, change.added
                    )
        if local is not None:
            self.wireguard.configure(local, peer_changes)

    def _report(self, env_id: str) -> EnvironmentReport | None:
        try:
            return self._report_locked(env_id)
        except DamagedState as exc:
            records = tuple(self.resolver.records(env_id)) if self.resolver else ()
            return EnvironmentReport(
                env_id,
                "",
                "",
                0,
                environment_netns(self.netns_prefix, env_id),
                0,
                "",
                (),
                None,
                (str(exc),),
                records,
            )

    def _report_locked(self, env_id: str) -> EnvironmentReport | None:
        with self._locked(env_id):
            identity = self.state.identity(env_id)
            if identity is None:
                return None
            doc = self.state.document(env_id)
            public_key = public_key_of(identity.private_key)
            if doc is None:
                return EnvironmentReport(
                    env_id,
                    "",
                    "",
                    0,
                    environment_netns(self.netns_prefix, env_id),
                    identity.listen_port,
                    public_key,
                    (),
                    None,
                    ("no document applied yet",),
                    (),
                )
            local = self._local(doc)
            observed = self._observe(local)
            drift = plan_environment(local, public_key, identity.listen_port, observed, local)
            records = tuple(self.resolver.records(env_id)) if self.resolver else ()
            with self._guard:
                lost = tuple(self._lost.get(env_id, ()))
            return EnvironmentReport(
                env_id=env_id,
                project=doc.project,
                environment=doc.environment,
                generation=doc.generation,
                netns=local.netns,
                listen_port=identity.listen_port,
                public_key=public_key,
                peers=_peer_reports(doc, observed.device),
                local=local,
                drift=tuple(c.describe() for c in drift),
                records=records,
                lost=lost,
            )


def _peer_reports(
    doc: EnvironmentDocument, device: ObservedDevice | None
) -> tuple[PeerReport, ...]:
    if device is None:
        return ()
    names = {n.public_key: n.name for n in doc.nodes}
    return tuple(
        PeerReport(
            node=names.get(p.public_key, "?"),
            public_key=p.public_key,
            endpoint=p.endpoint or "",
            last_handshake=p.last_handshake,
            rx_bytes=p.rx_bytes,
            tx_bytes=p.tx_bytes,
            allowed_ips=tuple(sorted(p.allowed_ips)),
        )
        for p in device.peers
    )


def serve_view(
    resolver: ResolverBackend,
    doc: EnvironmentDocument,
    previous: EnvironmentDocument | None,
    netns: str | None,
) -> None:
    """Give ``resolver`` ``doc``'s view: as the change from ``previous``'s view when there
    is a previous document and the resolver serves its view, else whole."""
    if previous is not None:
        change = ViewChange.between(previous, doc, netns)
        if change is not None and resolver.update(change):
            return
    resolver.apply(ResolverView.from_document(doc, netns))
