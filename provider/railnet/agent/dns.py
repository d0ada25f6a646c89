"""The agent's DNS server: one asyncio loop in a background thread serving every view.

Each environment's view listens inside its environment namespace on the resolver
addresses (UDP and TCP, IPv4 and IPv6). The sockets are created by a short-lived thread
that has entered the namespace (``railnet.linux.netns.run_in_netns``) and then handed to
the loop: a socket keeps the namespace it was created in. The loop thread itself never
leaves the agent's namespace, so the sockets that forward names outside a view reach the
node's upstream resolvers, which the environment namespaces cannot.

The answering is pure and lives in ``railnet.core.dns.Answerer``; this module is the pump
around it. UDP is read and answered in batches (``railnet.agent.datagrams``), repeated
queries from a memo of replies that belongs to the view (``LiveView``): see docs/dns.md,
"The hot path". ``FakeDnsServer`` is its in-memory twin for the agent's fast tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from railnet.agent.backends import ResolverBackend
from railnet.agent.datagrams import DatagramBatch
from railnet.core.dns import (
    DEFAULT_MAX_UDP,
    MAX_QUERY,
    MIN_UDP,
    REFUSED,
    SERVFAIL,
    TYPE_OPT,
    Answerer,
    Forward,
    ResolverView,
    Transport,
    ViewChange,
    failure_reply,
)
from railnet.core.errors import DataPlaneError, InvalidField, RailnetError
from railnet.linux.netns import netns_path, run_in_netns

DNS_PORT = 53
STUB_TIMEOUT = 2
"""Seconds an instance's libc waits for one try (``options timeout:`` in resolv.conf)."""
STUB_ATTEMPTS = 2
"""Rounds of tries over the nameservers (``options attempts:`` in resolv.conf)."""
FORWARD_SLACK = 0.5
"""Seconds left between the end of the forwarding budget and the end of a stub's try, for
the SERVFAIL to travel back and the loop to be busy: see docs/dns.md, "Timeouts"."""
FORWARD_TIMEOUT = STUB_TIMEOUT - FORWARD_SLACK
"""Seconds a forwarded query may take over all upstreams before the client gets SERVFAIL.
Shorter than one try of the stub resolver, so the stub always hears the outcome of the
forward it asked for, and never sends the same question again while it is in flight."""
MAX_FORWARDS_PER_ENV = 128
"""Forwarded queries in flight at once, per environment; beyond that the environment's
clients get SERVFAIL at once instead of a queue. Each environment has its own, so one that
floods the upstreams with outside names cannot starve the others."""
TCP_IDLE_TIMEOUT = 10.0
MAX_TCP_CONNECTIONS = 128
"""TCP connections per environment; further ones are closed at once."""
UDP_BATCH = 64
"""Datagrams read (and replies sent) per system call: see ``railnet.agent.datagrams``."""
UDP_ROUNDS = 4
"""Full batches drained per wake-up of a UDP socket before the loop serves others."""
RECV_SIZE = MAX_QUERY + 1
"""One byte more than the largest query answered, so oversized ones are seen as such."""
UDP_RCVBUF = 4 << 20
"""Bytes of receive buffer per UDP socket, so that a burst waits instead of dropping."""
MEMO_ENTRIES = 1024
"""Replies a view keeps ready per exact query (see ``LiveView``); then it starts afresh."""
MEMO_KEY_MAX = 512
"""Longer queries are answered but not remembered: no real stub query comes near this."""
CALL_TIMEOUT = 30.0
# Not in Python's socket module on every version; values from <linux/in.h> and <linux/in6.h>.
IP_FREEBIND = 15
IPV6_FREEBIND = 78
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>

_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Upstream:
    """A resolver the agent forwards names outside every view to."""

    host: str
    port: int = DNS_PORT

    @classmethod
    def parse(cls, field_name: str, text: str) -> Upstream:
        """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
        host, port = text, str(DNS_PORT)
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise InvalidField(field_name, text, "must be host:port or [v6]:port")
                port = rest[1:]
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        try:
            address = ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            raise InvalidField(
                field_name, text, "must be an IP address with an optional port, e.g. 10.0.0.1:53"
            ) from None
        if not 1 <= number <= 65535:
            raise InvalidField(field_name, text, "has a port outside 1-65535")
        return cls(str(address), number)

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
"""Upper bounds (seconds) of the answer-time histogram: from a cached answer to a slow
forward."""


@dataclass
class DnsStats:
    """What one environment's view has answered since the resolver started: the counters
    behind the agent's ``railnet_dns_*`` metrics."""

    queries: int = 0
    """Queries read (UDP datagrams and TCP messages), answered or not."""
    rcodes: list[int] = field(default_factory=lambda: [0] * 16)
    """Replies sent, by their RCODE (the header's low four bits)."""
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Replies by answer time: ``buckets[i]`` counts those in ``(bound[i-1], bound[i]]``,
    the last one those above every bound."""
    seconds: float = 0.0
    """The answer times added up."""

    def answered(self, reply: bytes, seconds: float) -> None:
        if len(reply) > 3:
            self.rcodes[reply[3] & 15] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def as_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "rcodes": {str(rc): n for rc, n in enumerate(self.rcodes) if n},
            "buckets": list(self.buckets),
            "seconds": self.seconds,
        }


class LiveView:
    """What an environment's sockets consult on every query: the view's ``Answerer`` and the
    replies it already gave over UDP, by the exact query bytes after the ID.

    The answerer's reply depends on the query's ID only by copying it, so a query that
    repeats every byte after the ID gets the remembered reply after its own ID, letter
    case included (the case is part of the key). One object holds both, so that one
    assignment swaps a view's records and the replies made from them together."""

    __slots__ = ("answerer", "memo")

    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer
        self.memo: dict[bytes, bytes] = {}
        """Query bytes after the ID -> reply bytes after the ID (UDP, this server's limit)."""


@dataclass(eq=False)
class _Binding:
    """One environment's sockets and the live view they consult on every query."""

    head: ResolverView
    """The view served, without its records (those are the live answerer's)."""
    live: LiveView | None
    udp: list[socket.socket]
    tcp: list[socket.socket]
    port: int
    netns_identity: tuple[int, int] | None
    """(device, inode) of the namespace the sockets were bound in."""
    servers: list[asyncio.Server] = field(default_factory=list)
    connections: set[asyncio.StreamWriter] = field(default_factory=set)
    forwards: int = 0
    """This environment's forwarded queries in flight (at most ``MAX_FORWARDS_PER_ENV``)."""
    stats: DnsStats = field(default_factory=DnsStats)
    """Kept across rebinds of the environment (the server holds it by environment)."""

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return tuple((address, self.port) for address in self.head.listen)


class DnsServer(ResolverBackend):
    """Serves every environment's ``ResolverView`` from one event loop thread.

    ``upstreams`` are the node's resolvers (``host[:port]``) for names outside the views;
    with none, such queries get REFUSED at once. ``port`` is 53 in production; tests on
    loopback pass 0 to get a free port (the same one for UDP and TCP), see ``endpoints``.
    """

    def __init__(
        self,
        upstreams: Iterable[str] = (),
        *,
        port: int = DNS_PORT,
        max_udp: int = DEFAULT_MAX_UDP,
        forward_timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        self._upstreams = tuple(
            Upstream.parse(f"upstreams[{i}]", text) for i, text in enumerate(upstreams)
        )
        if not 0 <= port <= 65535:
            raise InvalidField("port", port, "must be 0-65535 (0 picks a free port)")
        if not MIN_UDP <= max_udp <= MAX_QUERY:
            raise InvalidField(
                "max_udp",
                max_udp,
                f"must be {MIN_UDP}-{MAX_QUERY} bytes: replies advertise it as the size the "
                f"server accepts, and it reads no query over {MAX_QUERY}",
            )
        if forward_timeout <= 0:
            raise InvalidField("forward_timeout", forward_timeout, "must be positive seconds")
        self._port = port
        self._max_udp = max_udp
        self._forward_timeout = forward_timeout
        self._lock = threading.Lock()
        self._bindings: dict[str, _Binding] = {}
        self._stats: dict[str, DnsStats] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        return self._upstreams

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread; ``apply`` does this itself when needed."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        thread = threading.Thread(target=run, name="railnet-dns", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def close(self) -> None:
        """Stop serving every view and stop the loop thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            bindings = list(self._bindings.values())
            self._bindings.clear()
            self._call(self._shutdown(bindings))
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT)
            self._loop = self._thread = None

    async def _shutdown(self, bindings: list[_Binding]) -> None:
        for binding in bindings:
            self._detach(binding)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the backend interface -----------------------------------------------------------

    def apply(self, view: ResolverView) -> None:
        """Serve ``view``; queries see its records once this returns.

        Unchanged addresses and namespace keep their sockets and only swap the live view
        (the answerer and its memo of replies together), which is one attribute
        assignment the loop reads per query. Otherwise the old
        sockets close and new ones bind in ``view.netns``. A namespace that was deleted
        and made again under the same name counts as changed: the old sockets live on in
        the old namespace, where nobody can reach them.
        """
        with self._lock:
            held = self._bindings.get(view.env_id)
        # Built from the answerer it replaces (outside the lock: queries go on meanwhile).
        answerer = Answerer(
            view,
            recursion_available=bool(self._upstreams),
            previous=held.live.answerer if held is not None and held.live is not None else None,
        )
        with self._lock:
            self._start_locked()
            current = self._bindings.get(view.env_id)
            identity = _netns_identity(view.netns)
            if (
                current is not None
                and current.head.netns == view.netns
                and current.netns_identity == identity
                and current.head.listen == view.listen
            ):
                current.head = view.head
                current.live = LiveView(answerer)
                return
            if current is not None:
                del self._bindings[view.env_id]
                self._call(self._detach_async(current))
            udp, tcp, port = self._open(view)
            binding = _Binding(
                head=view.head,
                live=LiveView(answerer),
                udp=udp,
                tcp=tcp,
                port=port,
                netns_identity=identity,
                stats=self._stats.setdefault(view.env_id, DnsStats()),
            )
            try:
                self._call(self._attach(binding))
            except BaseException:
                self._call(self._detach_async(binding))
                raise
            self._bindings[view.env_id] = binding

    def update(self, change: ViewChange) -> bool:
        """Serve the view ``change`` makes of the one served: the same sockets, a new live
        view whose answerer is the served one's tables with the changed names rendered
        again (``Answerer.changed``), built outside the lock while queries go on. False,
        and nothing changes, when the view served is not the one the change was made
        from, or its namespace was made again since its sockets were bound."""
        env_id = change.head.env_id
        with self._lock:
            held = self._bindings.get(env_id)
            live = held.live if held is not None else None
        if held is None or live is None or not change.applies_to(held.head):
            return False
        if held.netns_identity != _netns_identity(change.head.netns):
            return False
        # Checked and rendered here; put in place on the loop, which answers every query:
        # the live answerer changes between two queries, in what the change costs, and
        # nothing of its tables is copied.
        staged = live.answerer.prepare(change)

        async def commit() -> bool:
            if self._bindings.get(env_id) is not held or held.live is not live:
                return False  # applied or removed meanwhile: the caller sends the whole view
            live.answerer.commit(staged)
            held.head = change.head
            held.live = LiveView(live.answerer)  # a new memo: the old replies may be stale
            return True

        return self._call(commit())

    def remove(self, env_id: str) -> None:
        """Stop serving ``env_id``: its sockets close, its TCP clients are disconnected."""
        with self._lock:
            binding = self._bindings.pop(env_id, None)
            self._stats.pop(env_id, None)
            if binding is not None:
                self._call(self._detach_async(binding))

    def records(self, env_id: str) -> list[tuple[str, str, str, int]]:
        view = self.view(env_id)
        return [] if view is None else [record.as_tuple() for record in view.records]

    def view(self, env_id: str) -> ResolverView | None:
        async def read() -> ResolverView | None:
            # On the loop: a change is put in place there (``update``), never mid-read.
            binding = self._bindings.get(env_id)
            live = binding.live if binding is not None else None
            return None if live is None else live.answerer.view

        return self._call(read()) if self._loop is not None else None

    def stats(self) -> dict[str, DnsStats]:
        """Per environment served, what its view has answered (read without a lock: the
        counters are only ever added to, and a scrape may be a query behind)."""
        return dict(self._stats)

    def heads(self) -> dict[str, ResolverView]:
        """Every view served, without its records, by environment."""
        with self._lock:
            return {env_id: b.head for env_id, b in self._bindings.items()}

    def endpoints(self, env_id: str) -> tuple[tuple[str, int], ...]:
        """(address, port) pairs ``env_id`` listens on, for UDP and TCP alike."""
        binding = self._bindings.get(env_id)
        return () if binding is None else binding.endpoints

    # -- sockets -------------------------------------------------------------------------

    def _open(self, view: ResolverView) -> tuple[list[socket.socket], list[socket.socket], int]:
        if not view.listen:
            raise InvalidField("listen", view.listen, "a view needs at least one address")
        attempts = 5 if self._port == 0 else 1
        for attempt in range(attempts):
            try:
                if view.netns is None:
                    return _bind_all(view.listen, self._port)
                return run_in_netns(view.netns, lambda: _bind_all(view.listen, self._port))
            except OSError as exc:
                # With port 0 the free UDP port may be taken for TCP: pick another.
                if attempt + 1 < attempts:
                    continue
                where = f"namespace {view.netns}" if view.netns else "the agent's namespace"
                raise DataPlaneError(
                    f"cannot listen for DNS of environment {view.env_id} on "
                    f"{', '.join(view.listen)} port {self._port} in {where}: "
                    f"{exc.strerror or exc}"
                ) from None
        raise AssertionError("unreachable")

    async def _attach(self, binding: _Binding) -> None:
        loop = asyncio.get_running_loop()
        for sock in binding.udp:
            batch = DatagramBatch(sock, UDP_BATCH, RECV_SIZE)
            loop.add_reader(sock.fileno(), self._on_datagrams, binding, sock, batch)
        for sock in binding.tcp:

            async def serve(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, b: _Binding = binding
            ) -> None:
                await self._serve_tcp(b, reader, writer)

            binding.servers.append(await asyncio.start_server(serve, sock=sock))

    async def _detach_async(self, binding: _Binding) -> None:
        self._detach(binding)

    def _detach(self, binding: _Binding) -> None:
        binding.live = None
        loop = asyncio.get_running_loop()
        for sock in binding.udp:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        for server in binding.servers:
            server.close()
        for sock in binding.tcp:
            sock.close()
        for writer in list(binding.connections):
            writer.close()

    def _call(self, coroutine: Awaitable[T]) -> T:
        loop = self._loop
        if loop is None:
            raise RailnetError("the DNS server is not running; call start() first")
        if threading.current_thread() is self._thread:
            raise RailnetError("DnsServer methods must not be called from its own loop")

        async def run() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT)

    # -- the pump ------------------------------------------------------------------------

    def _on_datagrams(self, binding: _Binding, sock: socket.socket, batch: DatagramBatch) -> None:
        """Answer the datagrams waiting on ``sock``: the hot path.

        One ``recvmmsg`` reads up to ``UDP_BATCH`` queries into ``batch``'s slots; each
        reply is written over its query in the same slot (the ID is already in place),
        and one ``sendmmsg`` sends them all. A query asked before (the same bytes after
        the ID) costs one dict lookup; any other goes to the answerer and is remembered.

        Written for speed: locals instead of attributes, no per-datagram objects beyond
        the query's key. The live view is read afresh for every datagram: a view applied
        while a batch is being answered must be seen by the very next query. The answer
        time counted is the batch's, from reading it to sending it, which is each of its
        replies' own."""
        stats = binding.stats
        rcodes, buckets, clock = stats.rcodes, stats.buckets, time.perf_counter
        raw, data, size = batch.raw, batch.data, batch.size
        receive, send, set_reply = batch.receive, batch.send, batch.set_reply
        lengths = batch.lengths
        for _ in range(UDP_ROUNDS):
            try:
                count = receive()
            except OSError:  # e.g. ECONNREFUSED reported late: try again at the next wake-up
                return
            if not count:
                return
            started = clock()
            stats.queries += count
            first = 0  # the first slot whose reply is not sent yet
            answered = 0
            for index, length in enumerate(lengths(count)):
                live = binding.live
                if live is None:  # the view is being removed: no more answers from it
                    return
                start = index * size
                key = raw[start + 2 : start + length]
                tail = live.memo.get(key)
                if tail is None:
                    tail = self._answer_slot(binding, live, batch, sock, index, key, started)
                    if tail is None:  # silence, a forward, or sent apart: a gap in the run
                        if index > first:
                            send(first, index - first)
                        first = index + 1
                        continue
                data[start + 2 : start + 2 + len(tail)] = tail
                set_reply(index, len(tail) + 2)
                rcodes[tail[1] & 15] += 1
                answered += 1
            if count > first:
                send(first, count - first)
            if answered:
                elapsed = clock() - started
                buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += answered
                stats.seconds += elapsed * answered
            if count < UDP_BATCH:
                return

    def _answer_slot(
        self,
        binding: _Binding,
        live: LiveView,
        batch: DatagramBatch,
        sock: socket.socket,
        index: int,
        key: bytes,
        started: float,
    ) -> bytes | None:
        """The reply (after its ID) to the query in ``index`` that ``live`` has not seen, to
        be sent with the batch; ``None`` when there is none to send with it (silence, a
        forward, or a reply too large for the slot, sent here)."""
        start = index * batch.size
        query = batch.raw[start : start + 2] + key
        try:
            reply = live.answerer.answer(query, Transport.UDP, self._max_udp)
        except Exception:  # a bug must cost one query, never the server
            _log.exception("DNS view %s failed to answer a query", binding.head.env_id)
            return None
        if type(reply) is bytes:
            if len(key) <= MEMO_KEY_MAX:
                memo = live.memo
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()  # e.g. a client randomising letter case: start afresh
                memo[key] = reply[2:]
            if len(reply) <= batch.size:
                return reply[2:]
            self._send_apart(binding, sock, reply, batch.sender(index), started)
            return None
        if reply is None:
            return None
        if not self._upstreams or binding.forwards >= MAX_FORWARDS_PER_ENV:
            # Answered here and now: no task, no socket, nothing queued; not remembered,
            # since the same query may be forwarded once the budget allows.
            refusal = self._refusal(query)
            if refusal is None:
                return None
            if len(refusal) <= batch.size:
                return refusal[2:]
            self._send_apart(binding, sock, refusal, batch.sender(index), started)
            return None
        binding.forwards += 1  # taken now, so one batch cannot overshoot the bound
        self._spawn(self._forward_udp(binding, sock, query, batch.sender(index), started))
        return None

    def _send_apart(
        self,
        binding: _Binding,
        sock: socket.socket,
        reply: bytes,
        client: tuple[str, int] | tuple[str, int, int, int],
        started: float,
    ) -> None:
        with contextlib.suppress(OSError):  # a full socket buffer drops it, as UDP may
            sock.sendto(reply, client)
        binding.stats.answered(reply, time.perf_counter() - started)

    async def _forward_udp(
        self,
        binding: _Binding,
        sock: socket.socket,
        query: bytes,
        client: tuple[str, int] | tuple[str, int, int, int],
        started: float,
    ) -> None:
        try:
            reply = await self._forward(query, Transport.UDP)
        finally:
            binding.forwards -= 1
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendto(reply, client)
            binding.stats.answered(reply, time.perf_counter() - started)

    async def _serve_tcp(
        self, binding: _Binding, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(binding.connections) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        binding.connections.add(writer)
        try:
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                query = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(prefix, "big")), TCP_IDLE_TIMEOUT
                )
                started = time.perf_counter()
                binding.stats.queries += 1
                live = binding.live
                if live is None:
                    return
                try:
                    reply = live.answerer.answer(query, Transport.TCP, self._max_udp)
                except Exception:  # a bug must cost one query, never the server
                    _log.exception("DNS view %s failed to answer a query", binding.head.env_id)
                    return
                if isinstance(reply, Forward):
                    if not self._upstreams or binding.forwards >= MAX_FORWARDS_PER_ENV:
                        reply = self._refusal(query)
                    else:
                        binding.forwards += 1
                        try:
                            reply = await self._forward(query, Transport.TCP)
                        finally:
                            binding.forwards -= 1
                if reply is None:
                    return  # silence over TCP: drop the connection rather than stall it
                binding.stats.answered(reply, time.perf_counter() - started)
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        finally:
            binding.connections.discard(writer)
            writer.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        async def run() -> None:
            await coroutine

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- forwarding ----------------------------------------------------------------------

    def _refusal(self, query: bytes) -> bytes | None:
        """What a query that cannot be forwarded gets at once: REFUSED without upstreams,
        SERVFAIL when its environment's forwarding budget is spent."""
        if not self._upstreams:
            return failure_reply(query, REFUSED, recursion_available=False)
        return failure_reply(query, SERVFAIL, recursion_available=True)

    async def _forward(self, query: bytes, transport: Transport) -> bytes | None:
        """The upstream's reply to ``query`` sized by this server's limit, or SERVFAIL made
        here. The caller holds one of its environment's forwarding slots."""
        reply = await self._ask_upstreams(query, transport)
        if reply is None:
            return failure_reply(query, SERVFAIL, recursion_available=True)
        return _fit_forwarded(query, reply, transport, self._max_udp)

    async def _ask_upstreams(self, query: bytes, transport: Transport) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._forward_timeout
        for position, upstream in enumerate(self._upstreams):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # Later upstreams get their share of what is left, so one dead server
            # cannot use up the whole budget.
            budget = remaining / (len(self._upstreams) - position)
            try:
                reply = await asyncio.wait_for(_exchange_udp(upstream, query), budget)
                if transport is Transport.TCP and len(reply) > 2 and reply[2] & 0x02:
                    remaining = deadline - loop.time()
                    reply = await asyncio.wait_for(_exchange_tcp(upstream, query), remaining)
                    restored = _with_query_case(query, reply)
                    if restored is None:
                        raise OSError("the TCP reply does not answer the question")
                    reply = restored
                return reply
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                _log.debug("upstream %s:%d failed: %r", upstream.host, upstream.port, exc)
        return None


def _netns_identity(netns: str | None) -> tuple[int, int] | None:
    """The namespace file's (device, inode): a namespace made again gets a new one."""
    if netns is None:
        return None
    try:
        found = os.stat(netns_path(netns))
    except OSError:
        return None  # binding will fail and say the namespace does not exist
    return (found.st_dev, found.st_ino)


def _bind_all(
    addresses: Sequence[str], port: int
) -> tuple[list[socket.socket], list[socket.socket], int]:
    """UDP and TCP sockets on every address, all on one port (a free one for port 0)."""
    udp: list[socket.socket] = []
    tcp: list[socket.socket] = []
    try:
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            datagram = _socket(family, socket.SOCK_DGRAM, udp)
            datagram.bind((address, port))
            port = datagram.getsockname()[1]
            stream = _socket(family, socket.SOCK_STREAM, tcp)
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            stream.bind((address, port))
            stream.listen(128)
    except BaseException:
        for sock in udp + tcp:
            sock.close()
        raise
    return udp, tcp, port


def _socket(
    family: socket.AddressFamily, kind: socket.SocketKind, into: list[socket.socket]
) -> socket.socket:
    sock = socket.socket(family, kind)
    into.append(sock)
    sock.setblocking(False)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Free bind: the resolver address may be added to lo after the view is applied,
        # and a fresh IPv6 address may still be tentative.
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    if kind == socket.SOCK_DGRAM:
        try:  # root may exceed net.core.rmem_max, which is often far smaller
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RCVBUF)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
    return sock


def _with_query_case(query: bytes, reply: bytes) -> bytes | None:
    """``reply`` with the question exactly as ``query`` asked it, letter case included;
    ``None`` unless it answers ``query`` (same ID, a response, the same question).

    An upstream may answer in another case than it was asked (some lower-case every name),
    and a client that randomises the case (0x20) would then drop the reply. The question
    differs only in case, so the bytes swap one for one, and any name in the reply that
    points at the question follows it."""
    if len(reply) < 12 or reply[:2] != query[:2] or not reply[2] & 0x80:
        return None
    if reply[4:6] == b"\x00\x00":
        return reply  # e.g. FORMERR without a question
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    end += 5
    asked = query[12:end]
    if reply[12:end].lower() != asked.lower():
        return None
    return reply[:12] + asked + reply[end:]


def _skip_name(wire: bytes, position: int) -> int:
    """The offset just past the (possibly compressed) name at ``position``."""
    while True:
        length = wire[position]
        if length >= 0xC0:
            return position + 2
        if length == 0:
            return position + 1
        position += length + 1


def _opt_size_offset(wire: bytes) -> int:
    """Where the OPT record's UDP size (its CLASS) sits in a message; -1 when it has none
    or the message does not parse."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", wire, 4)
        position = 12
        for _ in range(qdcount):
            position = _skip_name(wire, position) + 4
        for index in range(ancount + nscount + arcount):
            position = _skip_name(wire, position)
            rtype, _, _, rdlength = struct.unpack_from(">HHIH", wire, position)
            if rtype == TYPE_OPT and index >= ancount + nscount:
                return position + 2
            position += 10 + rdlength
    except (IndexError, struct.error):
        return -1
    return -1


def _fit_forwarded(query: bytes, reply: bytes, transport: Transport, max_udp: int) -> bytes:
    """An upstream's reply sized by this server's rules, as if it had answered itself: the
    OPT advertises this server's UDP limit, and a UDP reply larger than the client may
    take (its EDNS size, at most ``max_udp``; 512 without EDNS) becomes a truncated one,
    which the client retries over TCP, where the reply is fetched whole."""
    opt_at = _opt_size_offset(reply)
    if opt_at >= 0:
        reply = reply[:opt_at] + max_udp.to_bytes(2, "big") + reply[opt_at + 2 :]
    if transport is Transport.TCP:
        return reply
    asked = _opt_size_offset(query)
    if asked < 0:
        limit = MIN_UDP
    else:
        limit = max(MIN_UDP, min(int.from_bytes(query[asked : asked + 2], "big"), max_udp))
    if len(reply) <= limit:
        return reply
    end = _skip_name(query, 12) + 4
    opt = b""
    if opt_at >= 0:  # our OPT without options: root, OPT, our size, the reply's flags
        opt = b"\x00" + struct.pack(">HH", TYPE_OPT, max_udp) + reply[opt_at + 2 : opt_at + 6]
        opt += b"\x00\x00"
    counts = struct.pack(">HHHH", 1, 0, 0, 1 if opt else 0)
    return reply[:2] + bytes((reply[2] | 0x02, reply[3])) + counts + query[12:end] + opt


async def _exchange_udp(upstream: Upstream, query: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (upstream.host, upstream.port))
        await loop.sock_sendall(sock, query)
        while True:
            reply = await loop.sock_recv(sock, 65535)
            restored = _with_query_case(query, reply)
            if restored is not None:
                return restored
    finally:
        sock.close()


async def _exchange_tcp(upstream: Upstream, query: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        writer.write(len(query).to_bytes(2, "big") + query)
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(length)
    finally:
        writer.close()


class FakeDnsServer(ResolverBackend):
    """``DnsServer``'s in-memory twin: keeps the views, answers through the same
    ``Answerer``, binds nothing."""

    def __init__(self, upstreams: Iterable[str] = ()) -> None:
        self.upstreams = tuple(
            Upstream.parse(f"upstreams[{i}]", text) for i, text in enumerate(upstreams)
        )
        self.started = False
        self.applied: list[ResolverView] = []
        """Every view applied, in order: tests assert on what the agent sent."""
        self.updated: list[ViewChange] = []
        """Every change served (``update`` returned True), in order."""
        self._answerers: dict[str, Answerer] = {}

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self._answerers.clear()
        self.started = False

    def apply(self, view: ResolverView) -> None:
        self.started = True
        self._answerers[view.env_id] = Answerer(view, recursion_available=bool(self.upstreams))
        self.applied.append(view)

    def update(self, change: ViewChange) -> bool:
        answerer = self._answerers.get(change.head.env_id)
        if answerer is None or not change.applies_to(answerer.head):
            return False
        self._answerers[change.head.env_id] = answerer.changed(change)
        self.updated.append(change)
        return True

    def remove(self, env_id: str) -> None:
        self._answerers.pop(env_id, None)

    def records(self, env_id: str) -> list[tuple[str, str, str, int]]:
        answerer = self._answerers.get(env_id)
        return [] if answerer is None else [r.as_tuple() for r in answerer.view.records]

    def view(self, env_id: str) -> ResolverView | None:
        answerer = self._answerers.get(env_id)
        return None if answerer is None else answerer.view

    def answer(
        self, env_id: str, query: bytes, transport: Transport = Transport.UDP
    ) -> bytes | Forward | None:
        """What the real server's view would reply to ``query`` (``None`` if not served)."""
        answerer = self._answerers.get(env_id)
        return None if answerer is None else answerer.answer(query, transport)
