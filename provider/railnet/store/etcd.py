"""A synchronous etcd v3 client over gRPC with mutual TLS, for the provider and the agents.

The protocol messages and stubs are aetcd's (``aetcd.rpc``), generated from etcd's own
``rpc.proto`` and kept up to date there. aetcd's client itself is asyncio-only and dials
without TLS, and etcd's HTTP gateway cannot carry the certificate's common name as the user
(etcd's roles need it), so railnet drives those stubs from plain gRPC channels:
docs/architecture.md says more.

Fail closed: a call that no endpoint answers raises ``StoreUnavailable``, which names every
endpoint. Nothing here ever turns "could not ask" into "nothing there".
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd.rpc import kv_pb2, rpc_pb2, rpc_pb2_grpc

from railnet.core.errors import RailnetError
from railnet.core.store_keys import prefix_end
from railnet.pki.certs import TlsFiles

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
"""Seconds a call may take over all endpoints together: long enough for a leader election
after a member is lost, short enough to fail a hook plainly when quorum is gone."""
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_UNAVAILABLE_DETAILS = (
    "no leader",
    "timed out",
    "deadline exceeded",
    "leader changed",
    "too many requests",
    "not capable",
)
"""What etcd says, under other status codes, when the member asked has no quorum behind it:
another member may have one, and "could not ask" is never an answer."""


class StoreError(RailnetError):
    """The control store (etcd) refused or failed a request."""


class StoreUnavailable(StoreError):
    """No endpoint of the control store answered."""

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        self.endpoints = tuple(endpoints)
        self.detail = detail
        super().__init__(
            f"the control store (etcd) did not answer at {', '.join(endpoints)} ({detail}); "
            "check that a quorum of its members runs and that this machine reaches them"
        )


class StoreDenied(StoreError):
    """etcd's roles refused the request to the certificate that made it."""

    def __init__(self, operation: str, key: str, detail: str) -> None:
        self.operation = operation
        self.key = key
        super().__init__(
            f"etcd refused {operation} of {key} ({detail}): this certificate's role does not "
            "allow it"
        )


class Compacted(StoreError):
    """The revision asked for has been compacted away: list again, then watch from there."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        since = f" (etcd keeps history from {compact_revision})" if compact_revision else ""
        super().__init__(f"revision compacted{since}; list again")


@dataclass(frozen=True)
class Entry:
    """One key as etcd holds it."""

    key: str
    value: bytes
    mod_revision: int
    """The revision of the last write to the key: what a compared write checks."""
    create_revision: int


@dataclass(frozen=True)
class Compare:
    """A condition of a transaction: ``key``'s last write was at ``mod_revision`` (0: the
    key does not exist)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Unchanged:
    """A condition of a transaction: no key under ``prefix`` was written after
    ``revision`` (a read of the whole prefix at that revision is still current, but for
    deletions, which leave no key to compare)."""

    prefix: str
    revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False
    """Delete every key under ``key``."""


@dataclass(frozen=True)
class Committed:
    """The outcome of a transaction."""

    succeeded: bool
    """Every comparison held and the writes were made."""
    revision: int
    """The store's revision after the transaction (unchanged when it did not succeed)."""


@dataclass(frozen=True)
class Event:
    """One change seen by a watch."""

    key: str
    value: bytes
    """Empty for a delete."""
    deleted: bool
    mod_revision: int


@dataclass(frozen=True)
class WatchBatch:
    """The events of one watch response, and the revision the store was at."""

    events: tuple[Event, ...]
    revision: int


@dataclass(frozen=True)
class StoreAddress:
    """How to reach the store: its endpoints and the client's TLS material."""

    endpoints: tuple[str, ...]
    """``host:port`` or ``unix:PATH``; tried in order, the last one that answered first."""
    tls: TlsFiles | None
    """None only for a store without TLS (never in a cluster railnet sets up)."""
    server_name: str = ""
    """The name the members' certificates carry, when the endpoints are not that name (an
    IP address without it as a SAN, or a unix socket)."""


def _entry(kv: Any) -> Entry:
    return Entry(
        key=bytes(kv.key).decode(),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
    )


class EtcdStore:
    """A client of one etcd cluster. Thread-safe; channels open on first use."""

    def __init__(self, address: StoreAddress, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not address.endpoints:
            raise StoreError("the control store has no endpoints; the cluster file names them")
        self.address = address
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._preferred = 0

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    # -- channels --------------------------------------------------------------------------

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                options: list[tuple[str, Any]] = [
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    # Fail a dead endpoint fast and try it again soon after.
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                    # A half-open connection (a member cut off) is noticed, not waited on;
                    # etcd accepts pings every 5 s and more.
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                ]
                if self.address.tls is None:
                    channel = grpc.insecure_channel(endpoint, options=options)
                else:
                    ca, cert, key = self.address.tls.load()
                    if self.address.server_name:
                        options.append(("grpc.ssl_target_name_override", self.address.server_name))
                    credentials = grpc.ssl_channel_credentials(ca, key, cert)
                    channel = grpc.secure_channel(endpoint, credentials, options=options)
                self._channels[endpoint] = channel
            return channel

    def _order(self) -> list[int]:
        count = len(self.address.endpoints)
        with self._lock:
            first = self._preferred
        return [(first + i) % count for i in range(count)]

    def _call(self, operation: str, key: str, call: Any) -> Any:
        """``call(channel, timeout)`` on the endpoints in turn, round and round, until one
        answers or ``timeout`` seconds have passed. Each attempt gets a share of the time
        (at least a second), so a member that hangs (no quorum behind it, or mid-election)
        does not use it all up while another member would answer."""
        endpoints = self.address.endpoints
        share = max(1.0, self.timeout / len(endpoints))
        deadline = time.monotonic() + self.timeout
        last = "no endpoint was tried"
        order = self._order()
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if attempt and attempt % len(order) == 0:
                # Every member failed once: an election takes a moment; look again soon.
                time.sleep(min(0.2, remaining))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
            index = order[attempt % len(order)]
            attempt += 1
            endpoint = endpoints[index]
            try:
                result = call(self._channel(endpoint), min(share, max(remaining, 0.2)))
            except grpc.RpcError as exc:
                code, detail = exc.code(), exc.details() or ""
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise StoreDenied(operation, key, detail) from None
                if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in detail:
                    raise Compacted(0) from None
                if code in _RETRYABLE or any(d in detail for d in _UNAVAILABLE_DETAILS):
                    last = f"{endpoint}: {detail or code.name}"
                    continue
                raise StoreError(f"etcd refused {operation} of {key}: {detail}") from None
            with self._lock:
                self._preferred = index
            return result
        raise StoreUnavailable(endpoints, last)

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> tuple[int, Entry | None]:
        """The key's entry (None: absent) and the store's revision at the read."""
        reply = self._call(
            "read",
            key,
            lambda ch, t: rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=key.encode()), timeout=t
            ),
        )
        entry = _entry(reply.kvs[0]) if reply.kvs else None
        return int(reply.header.revision), entry

    def list(self, prefix: str, revision: int = 0) -> tuple[int, list[Entry]]:
        """Every key under ``prefix`` (at ``revision``; 0: now) and the revision read."""
        request = rpc_pb2.RangeRequest(
            key=prefix.encode(), range_end=prefix_end(prefix).encode(), revision=revision
        )
        reply = self._call(
            "read", prefix, lambda ch, t: rpc_pb2_grpc.KVStub(ch).Range(request, timeout=t)
        )
        return int(reply.header.revision), [_entry(kv) for kv in reply.kvs]

    # -- writes ----------------------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write without a comparison (a node's own reports); returns the revision."""
        reply = self._call(
            "write",
            key,
            lambda ch, t: rpc_pb2_grpc.KVStub(ch).Put(
                rpc_pb2.PutRequest(key=key.encode(), value=value, lease=lease), timeout=t
            ),
        )
        return int(reply.header.revision)

    def commit(
        self, compares: Sequence[Compare | Unchanged], writes: Sequence[Put | Delete]
    ) -> Committed:
        """One transaction: the writes happen only if every comparison holds."""
        request = rpc_pb2.TxnRequest(
            compare=[_compare(c) for c in compares],
            success=[_request_op(w) for w in writes],
        )
        first = writes[0].key if writes else ""
        reply = self._call(
            "write", first, lambda ch, t: rpc_pb2_grpc.KVStub(ch).Txn(request, timeout=t)
        )
        return Committed(bool(reply.succeeded), int(reply.header.revision))

    # -- leases ----------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        reply = self._call(
            "grant a lease",
            "",
            lambda ch, t: rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(
                rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=t
            ),
        )
        return int(reply.ID)

    def keep_alive(self, lease: int) -> int:
        """Renew ``lease`` once; its remaining seconds (0: it had expired)."""

        def renew(ch: grpc.Channel, t: float) -> Any:
            replies = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(
                iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]), timeout=t
            )
            for reply in replies:
                return reply
            return None

        reply = self._call("renew a lease", "", renew)
        return 0 if reply is None else int(reply.TTL)

    # -- watches ---------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Changes under ``prefix`` from ``start_revision`` on. The first endpoint that
        accepts the watch serves it; when that stream breaks, iterating raises
        ``StoreUnavailable`` and the caller watches again from the revision it reached."""
        last = "no endpoint was tried"
        for index in self._order():
            endpoint = self.address.endpoints[index]
            watch = Watch(self._channel(endpoint), prefix, start_revision, self.address.endpoints)
            try:
                watch.start(timeout=max(1.0, self.timeout / len(self.address.endpoints)))
            except StoreUnavailable as exc:
                last = f"{endpoint}: {exc.detail}"
                continue
            with self._lock:
                self._preferred = index
            return watch
        raise StoreUnavailable(self.address.endpoints, last)

    # -- the cluster -----------------------------------------------------------------------

    def member_status(self) -> dict[str, str]:
        """Per endpoint, ``"ok"`` (with the database size and leader) or why it failed."""
        found: dict[str, str] = {}
        for endpoint in self.address.endpoints:
            try:
                reply = rpc_pb2_grpc.MaintenanceStub(self._channel(endpoint)).Status(
                    rpc_pb2.StatusRequest(), timeout=2.0
                )
            except grpc.RpcError as exc:
                found[endpoint] = f"down: {exc.details() or exc.code().name}"
                continue
            if not reply.leader:
                found[endpoint] = "no leader"
            elif reply.errors:
                found[endpoint] = f"unhealthy: {'; '.join(reply.errors)}"
            else:
                found[endpoint] = f"ok: db {reply.dbSize} bytes, leader {reply.leader:x}"
        return found

    def compact(self, revision: int) -> None:
        self._call(
            "compact",
            "",
            lambda ch, t: rpc_pb2_grpc.KVStub(ch).Compact(
                rpc_pb2.CompactionRequest(revision=revision, physical=True), timeout=t
            ),
        )

    def auth(self) -> rpc_pb2_grpc.AuthStub:
        """etcd's user and role administration, on the endpoint that last answered (for
        ``railnet.store.roles``)."""
        return rpc_pb2_grpc.AuthStub(self._channel(self.address.endpoints[self._order()[0]]))


def _compare(condition: Compare | Unchanged) -> Any:
    if isinstance(condition, Unchanged):
        return rpc_pb2.Compare(
            key=condition.prefix.encode(),
            range_end=prefix_end(condition.prefix).encode(),
            result=rpc_pb2.Compare.LESS,
            target=rpc_pb2.Compare.MOD,
            mod_revision=condition.revision + 1,
        )
    return rpc_pb2.Compare(
        key=condition.key.encode(),
        result=rpc_pb2.Compare.EQUAL,
        target=rpc_pb2.Compare.MOD,
        mod_revision=condition.mod_revision,
    )


def _request_op(write: Put | Delete) -> Any:
    if isinstance(write, Put):
        return rpc_pb2.RequestOp(
            request_put=rpc_pb2.PutRequest(
                key=write.key.encode(), value=write.value, lease=write.lease
            )
        )
    end = prefix_end(write.key).encode() if write.prefix else b""
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(key=write.key.encode(), range_end=end)
    )


class Watch:
    """One open watch stream: iterate for batches of events; ``close`` ends it."""

    def __init__(
        self, channel: grpc.Channel, prefix: str, start_revision: int, endpoints: Sequence[str]
    ) -> None:
        self.prefix = prefix
        self.start_revision = start_revision
        self._endpoints = tuple(endpoints)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=prefix.encode(),
                    range_end=prefix_end(prefix).encode(),
                    start_revision=start_revision,
                    progress_notify=True,
                )
            )
        )
        self._stub = rpc_pb2_grpc.WatchStub(channel)
        self._call: Any = None
        self._replies: Iterator[Any] | None = None
        self._closed = False

    def _outgoing(self) -> Iterator[Any]:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def start(self, timeout: float) -> None:
        """Open the stream and wait until etcd says the watch exists."""
        # The stream itself has no deadline; only its creation is timed, by a reader thread.
        # "hasleader": a member that loses its leader ends the stream rather than leaving
        # the watch silent (what etcd's own client asks with WithRequireLeader).
        self._call = self._stub.Watch(self._outgoing(), metadata=(("hasleader", "true"),))
        self._replies = iter(self._call)
        created: queue.Queue[Any] = queue.Queue()

        def first() -> None:
            try:
                created.put(next(self._replies))  # type: ignore[arg-type]
            except BaseException as exc:
                created.put(exc)

        threading.Thread(target=first, daemon=True, name="railnet-etcd-watch").start()
        try:
            reply = created.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise StoreUnavailable(self._endpoints, "the watch was not created in time") from None
        if isinstance(reply, grpc.RpcError):
            self.close()
            if reply.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise StoreDenied("watch", self.prefix, reply.details() or "") from None
            raise StoreUnavailable(self._endpoints, reply.details() or reply.code().name)
        if isinstance(reply, BaseException):
            self.close()
            raise StoreUnavailable(self._endpoints, str(reply))
        if reply.compact_revision:
            self.close()
            raise Compacted(int(reply.compact_revision))
        if reply.canceled:
            self.close()
            if "permission denied" in reply.cancel_reason:
                raise StoreDenied("watch", self.prefix, reply.cancel_reason)
            raise StoreError(f"etcd refused the watch of {self.prefix}: {reply.cancel_reason}")

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchBatch]:
        assert self._replies is not None, "start the watch first"
        try:
            for reply in self._replies:
                if reply.compact_revision:
                    raise Compacted(int(reply.compact_revision))
                if reply.canceled:
                    raise StoreUnavailable(self._endpoints, reply.cancel_reason or "canceled")
                yield WatchBatch(
                    events=tuple(
                        Event(
                            key=bytes(e.kv.key).decode(),
                            value=bytes(e.kv.value),
                            deleted=e.type == kv_pb2.Event.DELETE,
                            mod_revision=int(e.kv.mod_revision),
                        )
                        for e in reply.events
                    ),
                    revision=int(reply.header.revision),
                )
            if not self._closed:
                # The stream ended without a word from etcd: never "no more changes".
                raise StoreUnavailable(self._endpoints, "the watch stream ended")
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                return  # closed by its owner
            raise StoreUnavailable(self._endpoints, exc.details() or exc.code().name) from None
        finally:
            self.close()  # the request thread ends with the stream

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(None)
        if self._call is not None:
            self._call.cancel()


__all__ = [
    "Committed",
    "Compacted",
    "Compare",
    "Delete",
    "Entry",
    "EtcdStore",
    "Event",
    "Put",
    "StoreAddress",
    "StoreDenied",
    "StoreError",
    "StoreUnavailable",
    "Unchanged",
    "Watch",
    "WatchBatch",
]
