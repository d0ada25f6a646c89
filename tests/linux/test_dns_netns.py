"""DNS views bound inside real network namespaces: the same resolver address in two
environments gives two different answers, and nothing crosses between them.

Each test makes its own uniquely named namespaces (``rt-<random>``) and removes them, and
their ``/etc/netns`` directories, whatever happens.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from railnet.agent.dns import FORWARD_TIMEOUT, STUB_ATTEMPTS, STUB_TIMEOUT, DnsServer
from railnet.agent.linux_network import LinuxNetwork
from railnet.core.addressing import ula_prefix
from railnet.core.dns import ResolverView
from railnet.core.document import EnvironmentDocument
from railnet.core.local import local_environment
from tests.documents import make_document as document

pytestmark = [
    pytest.mark.linux,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create network namespaces",
    ),
]

NETNS_ETC = Path("/etc/netns")

QUERY_SCRIPT = """
import json, socket, sys
import dns.exception, dns.message, dns.query, dns.rcode

server, names = sys.argv[1], sys.argv[2:]
out = {}
for name in names:
    for rdtype in ("A", "AAAA"):
        try:
            reply = dns.query.udp(dns.message.make_query(name, rdtype), server, timeout=1.5)
            out[f"{name} {rdtype}"] = [dns.rcode.to_text(reply.rcode())] + sorted(
                r.to_text() for rrset in reply.answer for r in rrset
            )
        except dns.exception.Timeout:
            out[f"{name} {rdtype}"] = ["TIMEOUT"]
        except OSError as exc:  # e.g. no route to the address at all
            out[f"{name} {rdtype}"] = ["UNREACHABLE", exc.errno]
print(json.dumps(out))
"""

GETADDRINFO_SCRIPT = """
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        out[name] = sorted({info[4][0] for info in infos})
    except socket.gaierror as exc:
        out[name] = ["gaierror", exc.errno]
print(json.dumps(out))
"""


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


def make_document(env_id: str, services: dict[str, int], first: int) -> EnvironmentDocument:
    return document(services, env_id=env_id, environment=env_id, first=first)


@pytest.fixture
def namespaces() -> Iterator[Callable[[], str]]:
    """Makes namespaces with ``lo`` up; removes them and their /etc/netns files after."""
    made: list[str] = []

    def make() -> str:
        name = f"rt-{secrets.token_hex(5)}"
        run("ip", "netns", "add", name)
        made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def give_resolver_addresses(netns: str, view: ResolverView) -> None:
    for address in view.listen:
        prefix = 128 if ":" in address else 32
        run("ip", "-n", netns, "addr", "add", f"{address}/{prefix}", "dev", "lo", "nodad")
    directory = NETNS_ETC / netns
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"nameserver {address}" for address in view.listen]
    options = f"options timeout:{STUB_TIMEOUT} attempts:{STUB_ATTEMPTS}"
    (directory / "resolv.conf").write_text("\n".join(lines) + "\n" + options + "\n")


def inside(netns: str, script: str, *args: str) -> dict[str, list[object]]:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    parsed: dict[str, list[object]] = json.loads(result.stdout)
    return parsed


class LoopbackUpstream:
    """An upstream resolver on the test's own loopback: every A query gets 192.0.2.53."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.queries: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            name = query.question[0].name
            self.queries.append(name.to_text())
            reply = dns.message.make_response(query)
            if query.question[0].rdtype == 1:
                reply.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.53"))
            self.sock.sendto(reply.to_wire(), client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[LoopbackUpstream]:
    server = LoopbackUpstream()
    try:
        yield server
    finally:
        server.close()


def test_two_environments_on_one_resolver_address_stay_apart(
    namespaces: Callable[[], str], upstream: LoopbackUpstream
) -> None:
    blue_ns, green_ns = namespaces(), namespaces()
    blue_doc = make_document("blue", {"api": 2, "blue-only": 1}, first=3)
    green_doc = make_document("green", {"api": 1, "green-only": 1}, first=50)
    blue = ResolverView.from_document(blue_doc, blue_ns)
    green = ResolverView.from_document(green_doc, green_ns)
    assert blue.listen[0] == green.listen[0] == "10.250.0.2"  # the same IPv4 resolver
    give_resolver_addresses(blue_ns, blue)
    give_resolver_addresses(green_ns, green)
    blue_v6 = str(ula_prefix("blue").network_address)
    green_v6 = str(ula_prefix("green").network_address)

    server = DnsServer([upstream.address])  # port 53, inside each namespace
    try:
        server.apply(blue)
        server.apply(green)
        names = (
            "api.railway.internal",
            "blue-only.railway.internal",
            "green-only.railway.internal",
        )

        seen_blue = inside(blue_ns, QUERY_SCRIPT, "10.250.0.2", *names)
        assert seen_blue["api.railway.internal A"] == ["NOERROR", "10.250.0.3", "10.250.0.4"]
        assert seen_blue["api.railway.internal AAAA"] == [
            "NOERROR",
            blue_v6 + "3",
            blue_v6 + "4",
        ]
        assert seen_blue["blue-only.railway.internal A"] == ["NOERROR", "10.250.0.5"]
        assert seen_blue["green-only.railway.internal A"] == ["NXDOMAIN"]

        seen_green = inside(green_ns, QUERY_SCRIPT, "10.250.0.2", *names)
        assert seen_green["api.railway.internal A"] == ["NOERROR", "10.250.0.50"]
        assert seen_green["api.railway.internal AAAA"] == ["NOERROR", green_v6 + "32"]
        assert seen_green["blue-only.railway.internal A"] == ["NXDOMAIN"]
        assert seen_green["green-only.railway.internal A"] == ["NOERROR", "10.250.0.51"]

        # Each environment's IPv6 resolver answers inside it and does not exist elsewhere.
        own = inside(blue_ns, QUERY_SCRIPT, blue.listen[1], "api.railway.internal")
        assert own["api.railway.internal A"] == ["NOERROR", "10.250.0.3", "10.250.0.4"]
        across = inside(green_ns, QUERY_SCRIPT, blue.listen[1], "api.railway.internal")
        assert across["api.railway.internal A"][0] in ("TIMEOUT", "UNREACHABLE")

        # Plain libc through /etc/netns/<ns>/resolv.conf, as instances resolve.
        libc_blue = inside(
            blue_ns, GETADDRINFO_SCRIPT, "api.railway.internal", "green-only.railway.internal"
        )
        assert libc_blue["api.railway.internal"] == sorted(
            ["10.250.0.3", "10.250.0.4", blue_v6 + "3", blue_v6 + "4"]
        )
        assert libc_blue["green-only.railway.internal"][0] == "gaierror"
        libc_green = inside(
            green_ns, GETADDRINFO_SCRIPT, "API.Railway.Internal", "blue-only.railway.internal"
        )
        assert libc_green["API.Railway.Internal"] == sorted(["10.250.0.50", green_v6 + "32"])
        assert libc_green["blue-only.railway.internal"][0] == "gaierror"

        # Outside names leave through the agent's namespace, where the upstream is.
        forwarded = inside(green_ns, QUERY_SCRIPT, "10.250.0.2", "www.example")
        assert forwarded["www.example A"] == ["NOERROR", "192.0.2.53"]
        assert "www.example." in upstream.queries
        assert not any("railway.internal" in q for q in upstream.queries)

        # A new document is served in its namespace by the time apply returns.
        moved = make_document("blue", {"api": 1}, first=90)
        server.apply(ResolverView.from_document(moved.with_generation(2), blue_ns))
        after = inside(
            blue_ns,
            QUERY_SCRIPT,
            "10.250.0.2",
            "api.railway.internal",
            "blue-only.railway.internal",
        )
        assert after["api.railway.internal A"] == ["NOERROR", "10.250.0.90"]
        assert after["blue-only.railway.internal A"] == ["NXDOMAIN"]
        still_green = inside(green_ns, QUERY_SCRIPT, "10.250.0.2", "api.railway.internal")
        assert still_green["api.railway.internal A"] == ["NOERROR", "10.250.0.50"]

        server.remove("blue")
        gone = inside(blue_ns, QUERY_SCRIPT, "10.250.0.2", "api.railway.internal")
        assert gone["api.railway.internal A"] == ["TIMEOUT"]
    finally:
        server.close()


def test_binding_before_the_resolver_address_exists(namespaces: Callable[[], str]) -> None:
    """The agent may apply the view before it puts the addresses on ``lo``."""
    netns = namespaces()
    view = ResolverView.from_document(make_document("late", {"api": 1}, first=3), netns)
    server = DnsServer()
    try:
        server.apply(view)
        give_resolver_addresses(netns, view)
        for resolver in view.listen:
            seen = inside(netns, QUERY_SCRIPT, resolver, "api.railway.internal")
            assert seen["api.railway.internal A"] == ["NOERROR", "10.250.0.3"]
    finally:
        server.close()


def test_a_namespace_made_again_under_the_same_name_is_bound_again(
    namespaces: Callable[[], str],
) -> None:
    """The agent repairs a deleted environment namespace by making it again and
    re-applying the same view: the server must not keep its sockets in the old one."""
    netns = namespaces()
    view = ResolverView.from_document(make_document("again", {"api": 1}, first=3), netns)
    give_resolver_addresses(netns, view)
    server = DnsServer()
    try:
        server.apply(view)
        seen = inside(netns, QUERY_SCRIPT, "10.250.0.2", "api.railway.internal")
        assert seen["api.railway.internal A"] == ["NOERROR", "10.250.0.3"]
        run("ip", "netns", "del", netns)
        run("ip", "netns", "add", netns)
        run("ip", "-n", netns, "link", "set", "lo", "up")
        give_resolver_addresses(netns, view)
        server.apply(view)
        seen = inside(netns, QUERY_SCRIPT, "10.250.0.2", "api.railway.internal")
        assert seen["api.railway.internal A"] == ["NOERROR", "10.250.0.3"]
    finally:
        server.close()


REVERSE_SCRIPT = """
import json, socket, sys
out = {}
for address in sys.argv[1:]:
    try:
        out[address] = [socket.gethostbyaddr(address)[0]]
    except socket.herror as exc:
        out[address] = ["herror", exc.errno]
    except socket.gaierror as exc:
        out[address] = ["gaierror", exc.errno]
print(json.dumps(out))
"""

RAW_SCRIPT = """
import json, socket, sys
import dns.message, dns.query
server, rdtype, names = sys.argv[1], sys.argv[2], sys.argv[3:]
out = {}
for name in names:
    query = dns.message.make_query(name, rdtype)
    reply = dns.query.udp(query, server, timeout=3)
    out[name] = [
        reply.rcode(),
        [label.decode() for label in reply.question[0].name.labels],
        [rrset.name.to_text() for rrset in reply.authority],
        sorted(r.to_text() for rrset in reply.answer for r in rrset),
    ]
print(json.dumps(out))
"""


def test_reverse_lookups_of_the_own_ranges_never_leave_the_node(
    namespaces: Callable[[], str], upstream: LoopbackUpstream
) -> None:
    """libc's gethostbyaddr and dnspython, inside the environment: instance addresses
    have names, any other address of the own ranges is NXDOMAIN at once, and only
    reverse names outside them reach the upstream."""
    netns = namespaces()
    doc = make_document("rev", {"api": 2}, first=3)
    view = ResolverView.from_document(doc, netns)
    give_resolver_addresses(netns, view)
    prefix = ula_prefix("rev").network_address
    server = DnsServer([upstream.address])
    try:
        server.apply(view)
        seen = inside(
            netns,
            REVERSE_SCRIPT,
            "10.250.0.3",
            str(prefix + 4),
            "10.250.7.77",
            "10.250.0.2",
            str(prefix + 999),
        )
        assert seen["10.250.0.3"] == ["0.api.railway.internal"]
        assert seen[str(prefix + 4)] == ["1.api.railway.internal"]
        for unknown in ("10.250.7.77", "10.250.0.2", str(prefix + 999)):
            assert seen[unknown][0] == "herror", unknown  # host not found
        assert not any("arpa" in q for q in upstream.queries), upstream.queries
        v6_zone = view.reverse_zones[1] + "."
        raw = inside(
            netns,
            RAW_SCRIPT,
            "10.250.0.2",
            "PTR",
            "77.7.250.10.IN-ADDR.arpa",
            (prefix + 999).reverse_pointer,
            "4.0.250.10.In-Addr.Arpa",
        )
        assert raw["77.7.250.10.IN-ADDR.arpa"][:3] == [
            3,  # NXDOMAIN
            ["77", "7", "250", "10", "IN-ADDR", "arpa", ""],  # the client's own case
            ["250.10.IN-ADDR.arpa."],  # the SOA's owner points into that question
        ]
        assert raw[(prefix + 999).reverse_pointer][0] == 3
        assert raw[(prefix + 999).reverse_pointer][2] == [v6_zone]
        assert raw["4.0.250.10.In-Addr.Arpa"][3] == ["1.api.railway.internal."]
        assert not any("arpa" in q for q in upstream.queries), upstream.queries
        outside = inside(netns, RAW_SCRIPT, "10.250.0.2", "PTR", "1.2.0.192.in-addr.arpa")
        assert outside["1.2.0.192.in-addr.arpa"][0] == 0
        assert upstream.queries == ["1.2.0.192.in-addr.arpa."]
    finally:
        server.close()


class SilentUpstream:
    """An upstream resolver on loopback that never answers, and notes when each question
    reached it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.arrivals: dict[tuple[str, int], list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            question = dns.message.from_wire(wire).question[0]
            key = (question.name.to_text().lower(), question.rdtype)
            self.arrivals.setdefault(key, []).append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_libc_hears_every_servfail_and_never_repeats_a_question_in_flight(
    namespaces: Callable[[], str],
) -> None:
    """The resolv.conf the agent writes against a dead upstream, with real libc: each try
    of the stub lasts longer than the forwarding budget, so every copy of a question
    reaches the upstream only after the previous one was answered SERVFAIL, and the
    lookup fails after attempts x nameservers x budget (docs/dns.md, "Timeouts")."""
    netns = namespaces()
    doc = make_document("slow", {"api": 1}, first=3)
    view = ResolverView.from_document(doc, netns)
    give_resolver_addresses(netns, view)
    env = local_environment(doc, "node-1", "rt")
    LinuxNetwork._write_resolv_conf(env, netns)  # the agent's own file, replacing the above
    written = (NETNS_ETC / netns / "resolv.conf").read_text()
    assert f"options timeout:{STUB_TIMEOUT} attempts:{STUB_ATTEMPTS}" in written
    silent = SilentUpstream()
    server = DnsServer([silent.address])
    try:
        server.apply(view)
        started = time.monotonic()
        seen = inside(netns, GETADDRINFO_SCRIPT, "www.example")
        elapsed = time.monotonic() - started
        assert seen["www.example"][0] == "gaierror"
        tries = STUB_ATTEMPTS * len(view.listen)
        assert elapsed < tries * FORWARD_TIMEOUT + 1.5, elapsed
        for key in (("www.example.", 1), ("www.example.", 28)):
            arrivals = silent.arrivals.get(key, [])
            assert 1 <= len(arrivals) <= tries, (key, arrivals)
            gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
            # Never a second copy while the first is still being forwarded.
            assert all(gap >= FORWARD_TIMEOUT - 0.1 for gap in gaps), (key, gaps)
        assert len(silent.arrivals.get(("www.example.", 1), [])) == tries
    finally:
        server.close()
        silent.close()
