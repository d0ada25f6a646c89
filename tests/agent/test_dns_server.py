"""The real DNS server on loopback: sockets, TCP fallback, forwarding, swaps, garbage."""

from __future__ import annotations

import dataclasses
import heapq
import inspect
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.resolver
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings

from railnet.agent import linux_network
from railnet.agent.dns import (
    FORWARD_TIMEOUT,
    MAX_FORWARDS_PER_ENV,
    DnsServer,
    FakeDnsServer,
    Upstream,
)
from railnet.core.addressing import ula_prefix
from railnet.core.dns import (
    FORWARD,
    REFUSED,
    Answerer,
    ResolverView,
    Transport,
    ViewChange,
    failure_reply,
)
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import DataPlaneError, InvalidField
from railnet.core.local import local_environment
from tests.dns_queries import queries
from tests.documents import make_document

pytestmark = pytest.mark.agent

LOOPBACK = ("127.0.0.1", "::1")


def loopback_view(doc: EnvironmentDocument, listen: tuple[str, ...] = LOOPBACK) -> ResolverView:
    return dataclasses.replace(ResolverView.from_document(doc, None), listen=listen)


def udp(
    name: str, rdtype: str, port: int, host: str = "127.0.0.1", **kw: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    return dns.query.udp(query, host, port=port, timeout=2)


def tcp(name: str, rdtype: str, port: int, host: str = "127.0.0.1") -> dns.message.Message:
    return dns.query.tcp(dns.message.make_query(name, rdtype), host, port=port, timeout=2)


def addresses(message: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in message.answer for rdata in rrset]


@pytest.fixture
def server() -> Iterator[DnsServer]:
    dns_server = DnsServer(port=0)
    try:
        yield dns_server
    finally:
        dns_server.close()


def serve(server: DnsServer, doc: EnvironmentDocument, listen: tuple[str, ...] = LOOPBACK) -> int:
    server.apply(loopback_view(doc, listen))
    endpoints = server.endpoints(doc.id)
    assert [host for host, _ in endpoints] == list(listen)
    return endpoints[0][1]


def _port_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on one free loopback port. The kernel picks the UDP
    port; another test's TCP socket may hold the same number, so try a few until both
    bind."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        return udp, tcp
    raise RuntimeError("no loopback port is free for both UDP and TCP")


class FakeUpstream:
    """A resolver on loopback for the forwarder: answers every A query with 192.0.2.53,
    or stays silent; ``big.example`` gets 60 AAAA records (truncated over UDP)."""

    def __init__(self, *, silent: bool = False, lower_case: bool = False) -> None:
        self.silent = silent
        self.lower_case = lower_case
        self.queries: list[str] = []
        self.udp, self.tcp = _port_pair()
        self.port = self.udp.getsockname()[1]
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reply(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        self.queries.append(query.question[0].name.to_text())
        response = dns.message.make_response(query)
        name = query.question[0].name
        if name == dns.name.from_text("big.example"):
            rdatas = [f"2001:db8::{i:x}" for i in range(1, 61)]
            response.answer.append(dns.rrset.from_text_list(name, 30, "IN", "AAAA", rdatas))
        else:
            response.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.53"))
        wire = response.to_wire()
        if self.lower_case:  # as some resolvers do: the question comes back lower-cased
            end = 12 + len(name.to_wire() or b"") + 4
            wire = wire[:12] + wire[12:end].lower() + wire[end:]
        return wire

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.silent:
                continue
            reply = self.reply(wire)
            asked = dns.message.from_wire(wire)
            if len(reply) > (asked.payload if asked.edns >= 0 else 512):
                # TC, no records, the question as reply() wrote it.
                end = 12
                while reply[end]:
                    end += reply[end] + 1
                end += 5
                header = reply[:2] + bytes((reply[2] | 0x02, reply[3])) + b"\x00\x01" + bytes(6)
                reply = header + reply[12:end]
            self.udp.sendto(reply, client)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                length = int.from_bytes(conn.recv(2), "big")
                wire = b""
                while len(wire) < length:
                    wire += conn.recv(length - len(wire))
                reply = self.reply(wire)
                conn.sendall(len(reply).to_bytes(2, "big") + reply)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.udp.close()
        self.tcp.close()


class SlowUpstream:
    """A resolver on loopback that answers every query with 192.0.2.53, ``delay`` seconds
    late, many at once: an upstream under load, or far away."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        due: list[tuple[float, int, bytes, tuple[str, int]]] = []
        while not self._stop.is_set():
            wait = 0.05 if not due else max(0.0, min(0.05, due[0][0] - time.monotonic()))
            readable, _, _ = select.select([self.sock], [], [], wait)
            while readable:
                try:
                    wire, client = self.sock.recvfrom(65535)
                except BlockingIOError:
                    break
                self.received += 1
                query = dns.message.from_wire(wire)
                response = dns.message.make_response(query)
                name = query.question[0].name
                response.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.53"))
                item = (time.monotonic() + self.delay, self.received, response.to_wire(), client)
                heapq.heappush(due, item)
            while due and due[0][0] <= time.monotonic():
                _, _, reply, client = heapq.heappop(due)
                self.sock.sendto(reply, client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream_factory() -> Iterator[Callable[..., FakeUpstream]]:
    made: list[FakeUpstream] = []

    def make(**kwargs: bool) -> FakeUpstream:  # silent=, lower_case=
        upstream = FakeUpstream(**kwargs)
        made.append(upstream)
        return upstream

    try:
        yield make
    finally:
        for upstream in made:
            upstream.close()


# -- serving --------------------------------------------------------------------------------


def test_answers_over_udp_and_tcp_on_ipv4_and_ipv6(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 2}))
    prefix = ula_prefix("e1").network_address
    for host in LOOPBACK:
        assert addresses(udp("api.railway.internal", "A", port, host)) == [
            "10.250.0.3",
            "10.250.0.4",
        ]
        assert addresses(tcp("api.railway.internal", "AAAA", port, host)) == [
            str(prefix + 3),
            str(prefix + 4),
        ]
    nx = udp("nope.railway.internal", "A", port)
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority


def test_a_stub_resolver_pointed_at_it_resolves(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 2, "db": 1}))
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 3
    answer = resolver.resolve("DB.railway.internal", "A")
    assert [r.to_text() for r in answer] == ["10.250.0.5"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("ghost.railway.internal", "A")


def test_udp_truncates_and_tcp_carries_the_full_answer(server: DnsServer) -> None:
    port = serve(server, make_document({"big": 80}))
    truncated = udp("big.railway.internal", "AAAA", port)
    assert truncated.flags & dns.flags.TC
    assert truncated.answer == []
    edns = udp("big.railway.internal", "AAAA", port, use_edns=0, payload=4096)
    assert edns.flags & dns.flags.TC  # 80 AAAA > the server's 1232-byte cap
    full = tcp("big.railway.internal", "AAAA", port)
    assert not full.flags & dns.flags.TC
    assert len(addresses(full)) == 80
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    assert len(resolver.resolve("big.railway.internal", "AAAA")) == 80  # retried over TCP


def test_apply_swaps_records_before_it_returns(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1}))
    for generation in range(2, 22):
        # Each generation moves the service to a fresh address and adds a new service.
        doc = make_document(
            {"api": 1, f"svc{generation}": 1}, generation=generation, first=generation * 3
        )
        server.apply(loopback_view(doc))
        expected = f"10.250.0.{generation * 3}"
        assert addresses(udp("api.railway.internal", "A", port)) == [expected], generation
        assert addresses(tcp(f"svc{generation}.railway.internal", "A", port))
        old = udp(f"svc{generation - 1}.railway.internal", "A", port)
        assert generation == 2 or old.rcode() == dns.rcode.NXDOMAIN
    assert server.endpoints("e1")[0][1] == port  # same sockets all along
    soa = udp("railway.internal", "SOA", port)
    assert soa.answer[0][0].serial == 21


def loopback_change(
    previous: EnvironmentDocument, doc: EnvironmentDocument, listen: tuple[str, ...] = LOOPBACK
) -> ViewChange:
    change = ViewChange.between(previous, doc, None)
    assert change is not None
    return dataclasses.replace(change, head=dataclasses.replace(change.head, listen=listen))


def test_a_change_swaps_records_on_the_same_sockets(server: DnsServer) -> None:
    previous = make_document({"api": 1})
    port = serve(server, previous)
    for generation in range(2, 12):
        # Each generation moves the service, adds one and drops the one before.
        doc = make_document(
            {"api": 1, f"svc{generation}": 1}, generation=generation, first=generation * 3
        )
        assert server.update(loopback_change(previous, doc))
        expected = f"10.250.0.{generation * 3}"
        assert addresses(udp("api.railway.internal", "A", port)) == [expected], generation
        assert addresses(tcp(f"svc{generation}.railway.internal", "A", port))
        old = udp(f"svc{generation - 1}.railway.internal", "A", port)
        assert generation == 2 or old.rcode() == dns.rcode.NXDOMAIN
        assert server.view("e1") == loopback_view(doc)
        previous = doc
    assert server.endpoints("e1")[0][1] == port
    assert udp("railway.internal", "SOA", port).answer[0][0].serial == 11


def test_a_change_made_from_another_view_is_refused_and_changes_nothing(
    server: DnsServer,
) -> None:
    first = make_document({"api": 1})
    port = serve(server, first)
    second = make_document({"api": 1, "db": 1}, generation=2)
    third = make_document({"api": 1, "db": 1, "web": 1}, generation=3)
    assert not server.update(loopback_change(second, third))  # serves 1, not 2
    assert not server.update(loopback_change(first, second, ("127.0.0.1",)))  # other address
    other = make_document({"api": 1}, env_id="e2")
    assert not server.update(loopback_change(other, dataclasses.replace(other, generation=2)))
    assert server.view("e1") == loopback_view(first)
    assert udp("db.railway.internal", "A", port).rcode() == dns.rcode.NXDOMAIN


def test_apply_with_new_addresses_rebinds(server: DnsServer) -> None:
    doc = make_document({"api": 1})
    serve(server, doc, listen=("127.0.0.1",))
    server.apply(loopback_view(doc, listen=("127.0.0.9",)))
    ((host, port),) = server.endpoints("e1")
    assert host == "127.0.0.9"
    assert addresses(udp("api.railway.internal", "A", port, "127.0.0.9")) == ["10.250.0.3"]
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(
            dns.message.make_query("api.railway.internal", "A"), "127.0.0.1", port=port, timeout=0.3
        )


def test_views_on_different_addresses_are_separate(server: DnsServer) -> None:
    blue = make_document({"api": 1, "blue-only": 1}, env_id="blue")
    green = make_document({"api": 1}, env_id="green", first=50)
    blue_port = serve(server, blue, listen=("127.0.0.2",))
    green_port = serve(server, green, listen=("127.0.0.3",))
    assert addresses(udp("api.railway.internal", "A", blue_port, "127.0.0.2")) == ["10.250.0.3"]
    assert addresses(udp("api.railway.internal", "A", green_port, "127.0.0.3")) == ["10.250.0.50"]
    leak = udp("blue-only.railway.internal", "A", green_port, "127.0.0.3")
    assert leak.rcode() == dns.rcode.NXDOMAIN
    assert {r[0] for r in server.records("green")}.isdisjoint({"blue-only.railway.internal"})


def test_remove_stops_answering_and_forgets_records(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1}))
    assert ("api.railway.internal", "A", "10.250.0.3", 5) in server.records("e1")
    server.remove("e1")
    assert server.records("e1") == []
    assert server.view("e1") is None
    udp_query = dns.message.make_query("api.railway.internal", "A")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(udp_query, "127.0.0.1", port=port, timeout=0.3)
    server.remove("e1")  # removing twice is fine


def test_garbage_does_not_crash_and_later_queries_work(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1}))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.settimeout(0.2)
    try:
        for garbage in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 60, b"\x00" * 4097):
            sender.sendto(garbage, ("127.0.0.1", port))
            try:
                reply = sender.recv(65535)
            except TimeoutError:
                continue  # silence is allowed
            assert reply[2] & 0x80 and reply[3] & 0x0F in (dns.rcode.FORMERR, dns.rcode.NOTIMP)
        zero_questions = b"\xab\xcd\x01\x00" + b"\x00" * 8
        sender.sendto(zero_questions, ("127.0.0.1", port))
        reply = sender.recv(512)
        assert reply[:2] == b"\xab\xcd" and reply[3] & 0x0F == dns.rcode.FORMERR
    finally:
        sender.close()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as stream:
        stream.sendall(b"\x00\x05hello")
        stream.settimeout(2)
        reply = stream.recv(512)
        assert reply == b"" or reply[4] & 0x0F == dns.rcode.FORMERR
    with socket.create_connection(("127.0.0.1", port), timeout=2) as stream:
        stream.sendall(b"\xff\xff\x00")  # promises 64 KiB, sends one byte, hangs up
    assert addresses(udp("api.railway.internal", "A", port)) == ["10.250.0.3"]
    assert addresses(tcp("api.railway.internal", "A", port)) == ["10.250.0.3"]


def test_tcp_connection_carries_several_queries(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1, "db": 1}))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as stream:
        for name, expected in (("api", "10.250.0.3"), ("db", "10.250.0.4"), ("api", "10.250.0.3")):
            query = dns.message.make_query(f"{name}.railway.internal", "A")
            dns.query.send_tcp(stream, query)
            reply, _ = dns.query.receive_tcp(stream, time.time() + 2)
            assert reply.id == query.id and addresses(reply) == [expected]


# -- forwarding -----------------------------------------------------------------------------


def test_outside_names_are_forwarded_to_the_upstream(
    upstream_factory: Callable[..., FakeUpstream],
) -> None:
    upstream = upstream_factory()
    server = DnsServer([upstream.address], port=0)
    try:
        port = serve(server, make_document({"api": 1}))
        reply = udp("www.example", "A", port)
        assert addresses(reply) == ["192.0.2.53"]
        assert addresses(tcp("www.example", "A", port)) == ["192.0.2.53"]
        # In-domain names never leave the node.
        assert addresses(udp("api.railway.internal", "A", port)) == ["10.250.0.3"]
        assert udp("nope.railway.internal", "A", port).rcode() == dns.rcode.NXDOMAIN
        assert upstream.queries == ["www.example.", "www.example."]
    finally:
        server.close()


def test_forwarding_for_a_tcp_client_retries_a_truncated_upstream_over_tcp(
    upstream_factory: Callable[..., FakeUpstream],
) -> None:
    upstream = upstream_factory()
    server = DnsServer([upstream.address], port=0)
    try:
        port = serve(server, make_document({"api": 1}))
        assert udp("big.example", "AAAA", port).flags & dns.flags.TC
        full = tcp("big.example", "AAAA", port)
        assert len(addresses(full)) == 60
    finally:
        server.close()


def test_a_dead_upstream_gives_servfail_within_the_budget(
    upstream_factory: Callable[..., FakeUpstream],
) -> None:
    silent = upstream_factory(silent=True)
    server = DnsServer([silent.address], port=0, forward_timeout=0.5)
    try:
        port = serve(server, make_document({"api": 1}))
        started = time.monotonic()
        reply = udp("www.example", "A", port)
        elapsed = time.monotonic() - started
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert 0.4 < elapsed < 1.5
        assert addresses(udp("api.railway.internal", "A", port)) == ["10.250.0.3"]
    finally:
        server.close()


def test_a_silent_first_upstream_falls_back_to_the_next(
    upstream_factory: Callable[..., FakeUpstream],
) -> None:
    silent = upstream_factory(silent=True)
    alive = upstream_factory()
    server = DnsServer([silent.address, alive.address], port=0, forward_timeout=1.0)
    try:
        port = serve(server, make_document({"api": 1}))
        assert addresses(udp("www.example", "A", port)) == ["192.0.2.53"]
        assert alive.queries == ["www.example."]
    finally:
        server.close()


def test_a_closed_upstream_port_fails_fast() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    server = DnsServer([f"127.0.0.1:{closed}"], port=0, forward_timeout=6.0)
    try:
        port = serve(server, make_document({"api": 1}))
        started = time.monotonic()
        reply = udp("www.example", "A", port)
        assert reply.rcode() == dns.rcode.SERVFAIL
        # The ICMP refusal ends it, not the (long) forwarding timeout.
        assert time.monotonic() - started < 3.0
    finally:
        server.close()


def test_without_upstreams_outside_names_are_refused_at_once(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1}))
    for transport in (udp, tcp):
        started = time.monotonic()
        reply = transport("www.example", "A", port)
        assert time.monotonic() - started < 1.0
        assert reply.rcode() == dns.rcode.REFUSED
        assert not reply.flags & dns.flags.RA
        assert reply.question[0].name.to_text() == "www.example."
    assert not udp("api.railway.internal", "A", port).flags & dns.flags.RA


# -- construction and errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", Upstream("192.0.2.1", 53)),
        ("192.0.2.1:5353", Upstream("192.0.2.1", 5353)),
        ("2001:db8::1", Upstream("2001:db8::1", 53)),
        ("[2001:db8::1]:54", Upstream("2001:db8::1", 54)),
    ],
)
def test_upstreams_parse(text: str, expected: Upstream) -> None:
    assert Upstream.parse("upstreams[0]", text) == expected


@pytest.mark.parametrize("text", ["dns.example", "192.0.2.1:0", "192.0.2.1:x", "[::1]x", ""])
def test_bad_upstreams_name_the_field(text: str) -> None:
    with pytest.raises(InvalidField, match=r"upstreams\[1\]"):
        DnsServer(["127.0.0.1", text])


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(InvalidField, match="port"):
        DnsServer(port=70000)
    with pytest.raises(InvalidField, match="max_udp"):
        DnsServer(max_udp=100)
    with pytest.raises(InvalidField, match="forward_timeout"):
        DnsServer(forward_timeout=0)


def test_a_port_in_use_is_a_data_plane_error_naming_the_address() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    server = DnsServer(port=port)
    try:
        with pytest.raises(DataPlaneError, match=rf"127\.0\.0\.1 port {port}"):
            server.apply(loopback_view(make_document({"api": 1}), listen=("127.0.0.1",)))
        assert server.view("e1") is None
    finally:
        server.close()
        holder.close()


def test_a_missing_namespace_is_a_data_plane_error(server: DnsServer) -> None:
    view = ResolverView.from_document(make_document({"api": 1}), "rt-does-not-exist-0")
    with pytest.raises(DataPlaneError, match="rt-does-not-exist-0"):
        server.apply(view)


def test_close_stops_the_loop_thread() -> None:
    server = DnsServer(port=0)
    serve(server, make_document({"api": 1}))
    assert any(t.name == "railnet-dns" for t in threading.enumerate())
    server.close()
    server.close()
    assert not any(t.name == "railnet-dns" for t in threading.enumerate())


# -- the fake twin ------------------------------------------------------------------------


def test_fake_server_keeps_views_and_answers_like_the_real_one() -> None:
    fake = FakeDnsServer()
    doc = make_document({"api": 2})
    view = ResolverView.from_document(doc, "rn-e1")
    fake.apply(view)
    assert fake.view("e1") == view
    assert fake.applied == [view]
    assert ("api.railway.internal", "A", "10.250.0.4", 5) in fake.records("e1")
    reply = fake.answer("e1", dns.message.make_query("api.railway.internal", "A").to_wire())
    assert isinstance(reply, bytes)
    assert addresses(dns.message.from_wire(reply)) == ["10.250.0.3", "10.250.0.4"]
    outside = dns.message.make_query("example.com", "A").to_wire()
    assert fake.answer("e1", outside, Transport.TCP) is FORWARD
    bigger = make_document({"api": 2, "db": 1}, generation=2)
    change = ViewChange.between(doc, bigger, "rn-e1")
    assert change is not None and fake.update(change)
    assert fake.updated == [change] and fake.view("e1") == ResolverView.from_document(
        bigger, "rn-e1"
    )
    assert not fake.update(change)  # it applies to serial 1 only
    fake.remove("e1")
    assert fake.records("e1") == [] and fake.view("e1") is None
    assert fake.answer("e1", outside) is None


# -- forwarding budget, case, sizes ------------------------------------------------------------


def test_one_environment_flooding_outside_names_cannot_starve_another() -> None:
    """Blue sends far more outside names than its budget at a slow upstream; green's
    outside name is still forwarded and answered, and blue's excess is told at once."""
    upstream = SlowUpstream(delay=1.0)
    server = DnsServer([upstream.address], port=0, forward_timeout=4.0)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.settimeout(0.2)
    # Room for every reply at once (about 1 KiB each in the kernel): the default buffer
    # holds some 200, and a collector thread that the machine's load holds back for a
    # moment would lose the rest here, not in the server.
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    flooded = 400  # more than any one environment may have in flight, and then some
    rcodes: dict[int, list[float]] = {}
    started = time.monotonic()

    def collect() -> None:  # drains the replies as they come, so none is dropped here
        deadline = time.monotonic() + 5
        while sum(map(len, rcodes.values())) < flooded and time.monotonic() < deadline:
            try:
                reply = dns.message.from_wire(flood.recv(65535))
            except (TimeoutError, OSError):
                continue
            rcodes.setdefault(reply.rcode(), []).append(time.monotonic() - started)

    collector = threading.Thread(target=collect, daemon=True)
    try:
        blue_port = serve(server, make_document({"api": 1}, env_id="blue"), ("127.0.0.2",))
        green_port = serve(server, make_document({"api": 1}, env_id="green"), ("127.0.0.3",))
        flood.bind(("127.0.0.1", 0))
        collector.start()
        started = time.monotonic()
        for number in range(flooded):
            query = dns.message.make_query(f"flood{number}.example", "A")
            query.id = number
            flood.sendto(query.to_wire(), ("127.0.0.2", blue_port))
        deadline = time.monotonic() + 3
        while upstream.received < MAX_FORWARDS_PER_ENV and time.monotonic() < deadline:
            time.sleep(0.01)
        # Blue's budget is all in flight now (the upstream holds each for a second).
        green = udp("www.example", "A", green_port, "127.0.0.3")
        assert green.rcode() == dns.rcode.NOERROR
        assert addresses(green) == ["192.0.2.53"]
        over_tcp = dns.query.tcp(
            dns.message.make_query("www2.example", "A"), "127.0.0.3", port=green_port, timeout=3
        )
        assert addresses(over_tcp) == ["192.0.2.53"]
        # Green's own names never wait for anyone.
        assert addresses(udp("api.railway.internal", "A", green_port, "127.0.0.3"))
        collector.join(6)
        assert len(rcodes[dns.rcode.NOERROR]) == MAX_FORWARDS_PER_ENV
        assert len(rcodes[dns.rcode.SERVFAIL]) == flooded - MAX_FORWARDS_PER_ENV
        # Told at once: before the upstream has answered any forwarded one (it holds each
        # for a second), not after it.
        assert max(rcodes[dns.rcode.SERVFAIL]) < min(rcodes[dns.rcode.NOERROR])
    finally:
        server.close()
        upstream.close()
        if collector.is_alive():
            collector.join(6)
        flood.close()


def question_labels(message: dns.message.Message) -> tuple[bytes, ...]:
    return message.question[0].name.labels  # bytes as sent: case-sensitive, unlike ==


def test_forwarded_replies_keep_the_case_of_the_question(
    upstream_factory: Callable[..., FakeUpstream],
) -> None:
    upstream = upstream_factory(lower_case=True)
    server = DnsServer([upstream.address], port=0)
    try:
        port = serve(server, make_document({"api": 1}))
        for name, rdtype in (("WwW.ExAmPlE", "A"), ("BiG.eXaMpLe", "AAAA")):
            query = dns.message.make_query(name, rdtype)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sender.settimeout(2)
                sender.sendto(query.to_wire(), ("127.0.0.1", port))
                wire = sender.recv(65535)
            finally:
                sender.close()
            asked = query.to_wire()[12:]
            assert wire[12 : 12 + len(asked)] == asked, name  # byte for byte
            over_tcp = dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port)
            assert question_labels(over_tcp) == query.question[0].name.labels
            assert over_tcp.rcode() == dns.rcode.NOERROR and addresses(over_tcp)
        assert len(addresses(dns.query.tcp(query, "127.0.0.1", port=port))) == 60
    finally:
        server.close()


def test_replies_made_for_forwarding_keep_the_case_of_the_question(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1}))  # no upstreams: REFUSED
    query = dns.message.make_query("WwW.ExAmPlE", "A")
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    assert reply.rcode() == dns.rcode.REFUSED
    assert question_labels(reply) == query.question[0].name.labels


@pytest.mark.parametrize("max_udp", [512, 1232, 4096])
def test_the_opt_record_carries_the_servers_udp_limit(max_udp: int) -> None:
    server = DnsServer(port=0, max_udp=max_udp)
    try:
        port = serve(server, make_document({"big": 100}))
        for size in (512, 1232, 4096):
            reply = udp("big.railway.internal", "AAAA", port, use_edns=0, payload=size)
            assert reply.payload == max_udp
            assert bool(reply.flags & dns.flags.TC) == (min(size, max_udp) < 100 * 40 + 50)
        query = dns.message.make_query("big.railway.internal", "AAAA", use_edns=0)
        full = dns.query.tcp(query, "127.0.0.1", port=port, timeout=2)
        assert full.payload == max_udp and len(addresses(full)) == 100
    finally:
        server.close()
    with pytest.raises(InvalidField, match=r"max_udp 4097.*4096"):
        DnsServer(max_udp=4097)


def test_a_name_over_255_octets_gets_formerr_on_the_wire(server: DnsServer) -> None:
    port = serve(server, make_document({"api": 1}))
    name = b"".join(b"\x3f" + bytes([ord("a") + i]) * 63 for i in range(4))
    name += b"\x07railway\x08internal\x00"
    query = b"\x77\x77\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.settimeout(2)
        sender.sendto(query, ("127.0.0.1", port))
        reply = sender.recv(65535)
    finally:
        sender.close()
    assert reply[:2] == b"\x77\x77" and reply[3] & 0x0F == dns.rcode.FORMERR
    assert not reply[2] & 0x04 and reply[4:12] == bytes(8)


def test_resolv_conf_waits_longer_than_the_forwarding_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numbers an instance's libc uses, read from the file the agent writes, against
    the server's forwarding budget (docs/dns.md, "Timeouts"): one try of the stub must
    outlast the whole budget, so the stub hears the forward's outcome, SERVFAIL included,
    and never asks again while its question is still being forwarded."""
    monkeypatch.setattr(linux_network, "ETC_NETNS", tmp_path)
    env = local_environment(make_document({"api": 1}), "node-1", "rt")
    linux_network.LinuxNetwork._write_resolv_conf(env, "rt-instance")
    lines = (tmp_path / "rt-instance" / "resolv.conf").read_text().splitlines()
    nameservers = [line.split()[1] for line in lines if line.startswith("nameserver ")]
    assert nameservers == list(env.resolvers)
    (options,) = [line.split()[1:] for line in lines if line.startswith("options ")]
    settings = dict(option.split(":") for option in options)
    timeout, attempts = int(settings["timeout"]), int(settings["attempts"])
    default_budget = inspect.signature(DnsServer).parameters["forward_timeout"].default
    assert default_budget == FORWARD_TIMEOUT
    # glibc waits timeout seconds per nameserver and try (exactly so for one or two).
    assert timeout >= FORWARD_TIMEOUT + 0.5
    # A dead upstream: every try ends with our SERVFAIL; a dead resolver: with a timeout.
    dead_upstream = attempts * len(nameservers) * FORWARD_TIMEOUT
    dead_resolver = attempts * len(nameservers) * timeout
    assert (dead_upstream, dead_resolver) == (6.0, 8)  # the figures docs/dns.md gives


def test_forwarded_replies_are_sized_by_this_servers_limit(
    upstream_factory: Callable[..., FakeUpstream],
) -> None:
    """The upstream answers up to the client's 4096 bytes and advertises its own size;
    the client still sees this server's limit, in the OPT and in where it truncates."""
    upstream = upstream_factory()
    server = DnsServer([upstream.address], port=0, max_udp=1232)
    try:
        port = serve(server, make_document({"api": 1}))
        small = udp("www.example", "A", port, use_edns=0, payload=4096)
        assert small.payload == 1232 and addresses(small) == ["192.0.2.53"]
        big = udp("bIg.ExAmPlE", "AAAA", port, use_edns=0, payload=4096)  # 60 AAAA, ~1.7 kB
        assert big.flags & dns.flags.TC and big.answer == []
        assert big.payload == 1232
        assert question_labels(big) == (b"bIg", b"ExAmPlE", b"")
        plain = udp("big.example", "AAAA", port)  # no EDNS: 512
        assert plain.flags & dns.flags.TC and plain.edns == -1
        query = dns.message.make_query("big.example", "AAAA", use_edns=0, payload=4096)
        full = dns.query.tcp(query, "127.0.0.1", port=port, timeout=3)
        assert len(addresses(full)) == 60 and full.payload == 1232
    finally:
        server.close()


# -- the counters ---------------------------------------------------------------------------


def test_stats_count_every_query_by_rcode_with_its_answer_time(server: DnsServer) -> None:
    """The counters behind the metrics, over UDP (each query asked twice, so replies served
    again are counted too) and TCP."""
    port = serve(server, make_document({"api": 2}))
    asked = [
        ("api.railway.internal", "A", "IN", dns.rcode.NOERROR),
        ("ApI.rAiLwAy.InTeRnAl", "AAAA", "IN", dns.rcode.NOERROR),
        ("ghost.railway.internal", "A", "IN", dns.rcode.NXDOMAIN),
        ("version.bind", "TXT", "CH", dns.rcode.REFUSED),
    ]
    expected = [0] * 16
    for _ in range(2):
        for name, rdtype, rdclass, code in asked:
            assert udp(name, rdtype, port, rdclass=rdclass).rcode() == code
            expected[code] += 1
    assert tcp("api.railway.internal", "A", port).rcode() == dns.rcode.NOERROR
    expected[dns.rcode.NOERROR] += 1
    stats = server.stats()["e1"]
    assert stats.queries == 2 * len(asked) + 1
    assert stats.rcodes == expected
    assert sum(stats.buckets) == stats.queries
    assert 0 < stats.seconds < 1.0


def test_a_burst_is_answered_whole_and_counted(server: DnsServer) -> None:
    """Many queries waiting at once (read and answered in batches): every one gets its own
    reply, with its ID and the letter case it asked in, and the counters see them all."""
    port = serve(server, make_document({"api": 2, "db": 1}))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sender.settimeout(2)
    names = ["api", "API", "db", "Db", "ghost"]
    sent: dict[int, dns.message.Message] = {}
    try:
        for qid in range(500):
            query = dns.message.make_query(f"{names[qid % len(names)]}.railway.internal", "A")
            query.id = qid
            sent[qid] = query
            sender.sendto(query.to_wire(), ("127.0.0.1", port))
        while sent:
            reply = dns.message.from_wire(sender.recv(65535))
            query = sent.pop(reply.id)
            assert reply.question[0].name.to_text() == query.question[0].name.to_text()
            assert reply.rcode() == (dns.rcode.NXDOMAIN if reply.id % 5 == 4 else 0)
    finally:
        sender.close()
    # A batch's answer time is counted once it is sent, so the last replies can arrive
    # before their times are added: wait (briefly) for the counters to settle.
    deadline = time.monotonic() + 2.0
    stats = server.stats()["e1"]
    while sum(stats.buckets) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = server.stats()["e1"]
    assert stats.queries == 500
    assert stats.rcodes[dns.rcode.NOERROR] == 400 and stats.rcodes[dns.rcode.NXDOMAIN] == 100
    assert sum(stats.buckets) == 500


def test_replies_served_again_are_the_answerers_own_byte_for_byte() -> None:
    """The UDP fast path (a remembered reply under the new query's ID, in batches) against
    the slow one (``Answerer.answer`` on that very query): random names around the view,
    random letter case, types, classes, flags and EDNS; each query asked twice with
    different IDs, so the second reply is always a remembered one."""
    doc = make_document({"api": 2, "db": 1, "big": 60})
    view = loopback_view(doc, ("127.0.0.1",))
    slow = Answerer(view, recursion_available=False)  # the server below has no upstreams
    dns_server = DnsServer(port=0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dns_server.apply(view)
        address = dns_server.endpoints(doc.id)[0]

        def ask(wire: bytes) -> bytes | None:
            expected = slow.answer(wire, Transport.UDP)
            if expected is FORWARD:
                expected = failure_reply(wire, REFUSED, recursion_available=False)
            assert not isinstance(expected, type(FORWARD))
            sender.settimeout(2 if expected is not None else 0.2)
            sender.sendto(wire, address)
            try:
                got: bytes | None = sender.recv(65535)
            except TimeoutError:
                got = None
            assert got == expected, (wire, got, expected)
            return got

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(queries())
        def check(wire: bytes) -> None:
            ask(wire)
            ask(bytes((wire[0] ^ 0x5A, wire[1] ^ 0xA5)) + wire[2:])

        check()
    finally:
        sender.close()
        dns_server.close()


def test_a_burst_after_apply_gets_only_the_new_views_answers(server: DnsServer) -> None:
    """Replies remembered from one view never answer for the next: every query of a burst
    sent after ``apply`` returns, whole batches included, gets the new records, none is
    lost."""
    port = serve(server, make_document({"api": 1}))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.settimeout(2)
    wire = dns.message.make_query("aPi.railway.internal", "A").to_wire()
    try:
        for generation in range(2, 7):
            doc = make_document({"api": 1}, generation=generation, first=generation * 3)
            server.apply(loopback_view(doc))
            for qid in range(100):
                sender.sendto(qid.to_bytes(2, "big") + wire[2:], ("127.0.0.1", port))
            seen = set()
            for _ in range(100):
                reply = dns.message.from_wire(sender.recv(65535))
                seen.add(reply.id)
                assert addresses(reply) == [f"10.250.0.{generation * 3}"], generation
            assert seen == set(range(100))
    finally:
        sender.close()
