"""The pure DNS core: the records of a view and the answerer's replies, bytes in, bytes out."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings

from railnet.core.addressing import ula_prefix
from railnet.core.dns import (
    FORWARD,
    MAX_QUERY,
    Answerer,
    DnsRecord,
    ResolverView,
    Transport,
    ViewChange,
    failure_reply,
    header_only_reply,
    reverse_zones,
)
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import InvalidField
from tests.dns_queries import queries
from tests.documents import make_document

pytestmark = pytest.mark.unit


def answerer_for(doc: EnvironmentDocument) -> Answerer:
    return Answerer(ResolverView.from_document(doc, "ns-test"))


def ask(
    answerer: Answerer,
    name: str,
    rdtype: str = "A",
    *,
    transport: Transport = Transport.UDP,
    max_udp: int = 1232,
    **query_options: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **query_options)  # type: ignore[arg-type]
    reply = answerer.answer(query.to_wire(), transport, max_udp)
    assert isinstance(reply, bytes), f"{name} {rdtype}: expected a reply, got {reply!r}"
    message = dns.message.from_wire(reply)
    assert message.id == query.id
    return message


def values(message: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in message.answer for rdata in rrset]


def rcode(message: dns.message.Message) -> str:
    return dns.rcode.to_text(message.rcode())


@pytest.fixture
def dual() -> EnvironmentDocument:
    return make_document({"api": 2, "worker": 1, "postgres": 1})


# -- the view -----------------------------------------------------------------------------


def test_view_of_a_dual_stack_document(dual: EnvironmentDocument) -> None:
    view = ResolverView.from_document(dual, "rn-e1")
    prefix = ula_prefix("e1").network_address
    assert view.env_id == "e1"
    assert view.netns == "rn-e1"
    assert view.listen == ("10.250.0.2", str(prefix + 2))
    assert view.domain == "railway.internal"
    assert view.ttl == 5
    assert view.serial == 1
    api = [r for r in view.records if r.name == "api.railway.internal"]
    assert api == [
        DnsRecord("api.railway.internal", "A", "10.250.0.3", 5),
        DnsRecord("api.railway.internal", "A", "10.250.0.4", 5),
        DnsRecord("api.railway.internal", "AAAA", str(prefix + 3), 5),
        DnsRecord("api.railway.internal", "AAAA", str(prefix + 4), 5),
    ]
    replica = [r for r in view.records if r.name == "1.api.railway.internal"]
    assert replica == [
        DnsRecord("1.api.railway.internal", "A", "10.250.0.4", 5),
        DnsRecord("1.api.railway.internal", "AAAA", str(prefix + 4), 5),
    ]
    assert DnsRecord("4.0.250.10.in-addr.arpa", "PTR", "1.api.railway.internal", 5) in (
        view.records
    )
    soa = [r for r in view.records if r.type == "SOA"]
    assert soa == [
        DnsRecord(
            "railway.internal",
            "SOA",
            "railway.internal hostmaster.railway.internal 1 60 10 3600 5",
            5,
        )
    ]


def test_records_are_sorted_with_addresses_in_numeric_order() -> None:
    view = ResolverView.from_document(make_document({"api": 12}), None)
    names = [r.name for r in view.records]
    assert names == sorted(names)
    api_a = [r.value for r in view.records if r.name == "api.railway.internal" and r.type == "A"]
    assert api_a == [f"10.250.0.{i}" for i in range(3, 15)]


def test_view_of_an_ipv6_only_document_has_no_ipv4() -> None:
    view = ResolverView.from_document(make_document({"api": 2}, ip_mode="ipv6"), None)
    prefix = ula_prefix("e1").network_address
    assert view.listen == (str(prefix + 2),)
    assert {r.type for r in view.records} == {"AAAA", "PTR", "SOA"}
    assert not any(r.name.endswith("in-addr.arpa") for r in view.records)


def test_view_follows_domain_ttl_and_generation() -> None:
    doc = make_document({"api": 1}, domain="corp.example", ttl=2, generation=9)
    view = ResolverView.from_document(doc, None)
    assert view.domain == "corp.example"
    assert {r.ttl for r in view.records} == {2}
    assert view.serial == 9
    assert "api.corp.example" in view.names()


def test_bad_records_are_rejected_by_name() -> None:
    view = ResolverView.from_document(make_document({"api": 1}), None)
    broken = dataclasses.replace(
        view, records=(DnsRecord("api.railway.internal", "A", "not-an-ip", 5),)
    )
    with pytest.raises(InvalidField, match=r"records\.value 'not-an-ip'"):
        Answerer(broken)
    wrong_family = dataclasses.replace(
        view, records=(DnsRecord("api.railway.internal", "A", "fd00::1", 5),)
    )
    with pytest.raises(InvalidField, match="is not a A address"):
        Answerer(wrong_family)
    with pytest.raises(InvalidField, match=r"records\.type 'MX'"):
        Answerer(dataclasses.replace(view, records=(DnsRecord("x", "MX", "y", 5),)))


# -- answers ------------------------------------------------------------------------------


def test_service_name_answers_every_instance_in_both_families(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    prefix = ula_prefix("e1").network_address
    a = ask(answerer, "api.railway.internal", "A")
    assert rcode(a) == "NOERROR"
    assert a.flags & dns.flags.AA and a.flags & dns.flags.QR
    assert values(a) == ["10.250.0.3", "10.250.0.4"]
    assert a.answer[0].ttl == 5
    aaaa = ask(answerer, "api.railway.internal", "AAAA")
    assert values(aaaa) == [str(prefix + 3), str(prefix + 4)]
    assert values(ask(answerer, "worker.railway.internal")) == ["10.250.0.5"]


def test_ipv6_only_answers_aaaa_and_nodata_with_soa_for_a() -> None:
    answerer = answerer_for(make_document({"api": 2}, ip_mode="ipv6"))
    prefix = ula_prefix("e1").network_address
    assert values(ask(answerer, "api.railway.internal", "AAAA")) == [
        str(prefix + 3),
        str(prefix + 4),
    ]
    for name in ("api.railway.internal", "0.api.railway.internal"):
        a = ask(answerer, name, "A")
        assert rcode(a) == "NOERROR"
        assert a.answer == []
        assert [rrset.rdtype for rrset in a.authority] == [dns.rdatatype.SOA]
        assert a.authority[0].name == dns.name.from_text("railway.internal")


def test_unknown_name_in_the_domain_is_nxdomain_with_soa(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    for name in ("nope.railway.internal", "2.api.railway.internal", "a.b.c.railway.internal"):
        reply = ask(answerer, name)
        assert rcode(reply) == "NXDOMAIN", name
        assert reply.flags & dns.flags.AA
        soa = reply.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa.name == dns.name.from_text("railway.internal")
        assert soa.ttl == 5 and soa[0].minimum == 5  # negative answers cached as briefly
        assert soa[0].rname == dns.name.from_text("hostmaster.railway.internal")


def test_other_types_on_existing_names_are_nodata(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    for rdtype in ("MX", "TXT", "SRV", "HTTPS", "NS", "CAA"):
        reply = ask(answerer, "api.railway.internal", rdtype)
        assert rcode(reply) == "NOERROR", rdtype
        assert reply.answer == []
        assert reply.authority[0].rdtype == dns.rdatatype.SOA


def test_names_are_case_insensitive_and_the_question_case_is_echoed(
    dual: EnvironmentDocument,
) -> None:
    answerer = answerer_for(dual)
    for name in ("API.RAILWAY.INTERNAL", "aPi.RaIlWaY.iNtErNaL", "0.Api.railway.Internal"):
        query = dns.message.make_query(name, "A")
        reply = answerer.answer(query.to_wire())
        assert isinstance(reply, bytes)
        message = dns.message.from_wire(reply)
        assert message.question[0].name.to_text() == name + "."  # 0x20 clients check this
        assert "10.250.0.3" in values(message)
    assert rcode(ask(answerer, "NOPE.Railway.Internal")) == "NXDOMAIN"


def test_instance_names_reach_one_replica(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    prefix = ula_prefix("e1").network_address
    assert values(ask(answerer, "0.api.railway.internal")) == ["10.250.0.3"]
    assert values(ask(answerer, "1.api.railway.internal")) == ["10.250.0.4"]
    assert values(ask(answerer, "1.api.railway.internal", "AAAA")) == [str(prefix + 4)]
    assert values(ask(answerer, "0.postgres.railway.internal")) == ["10.250.0.6"]


def test_ptr_names_an_instance(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    prefix = ula_prefix("e1").network_address
    assert values(ask(answerer, "4.0.250.10.in-addr.arpa", "PTR")) == ["1.api.railway.internal."]
    v6 = (prefix + 5).reverse_pointer
    assert values(ask(answerer, v6, "PTR")) == ["0.worker.railway.internal."]
    # Addresses outside the environment's ranges are not its business.
    query = dns.message.make_query("99.0.251.10.in-addr.arpa", "PTR").to_wire()
    assert answerer.answer(query) is FORWARD


def test_apex_soa_and_any(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    soa = ask(answerer, "railway.internal", "SOA")
    assert rcode(soa) == "NOERROR"
    assert soa.answer[0][0].serial == 1
    assert rcode(ask(answerer, "railway.internal", "A")) == "NOERROR"
    every = ask(answerer, "api.railway.internal", "ANY")
    assert sorted(dns.rdatatype.to_text(r.rdtype) for r in every.answer) == ["A", "AAAA"]
    assert len(values(every)) == 4


def test_custom_domain_and_ttl() -> None:
    answerer = answerer_for(make_document({"api": 1}, domain="corp.example", ttl=1))
    reply = ask(answerer, "api.corp.example")
    assert values(reply) == ["10.250.0.3"]
    assert reply.answer[0].ttl == 1
    assert ask(answerer, "nope.corp.example").authority[0].ttl == 1
    query = dns.message.make_query("api.railway.internal", "A").to_wire()
    assert answerer.answer(query) is FORWARD


def test_service_without_instances_has_no_name() -> None:
    answerer = answerer_for(make_document({"api": 1, "idle": 0}))
    assert rcode(ask(answerer, "idle.railway.internal")) == "NXDOMAIN"


def test_names_outside_the_domain_are_forwarded(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    outside = [
        "example.com",
        "internal",
        "railway.internal.evil.example",
        "evilrailway.internal",
        ".",
    ]
    for name in outside:
        wire = dns.message.make_query(name, "A").to_wire()
        assert answerer.answer(wire) is FORWARD, name
    # A label whose bytes end in the apex's wire form is still outside: label boundaries.
    tricky = dns.name.Name([b"a\x07railway", b"internal", b""])
    wire = dns.message.make_query(tricky, "A").to_wire()
    assert wire.endswith(b"\x07railway\x08internal\x00\x00\x01\x00\x01")
    assert answerer.answer(wire) is FORWARD


def test_id_rd_and_cd_are_copied(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    for flags in (0, dns.flags.RD, dns.flags.CD, dns.flags.RD | dns.flags.CD):
        query = dns.message.make_query("api.railway.internal", "A")
        query.flags = flags
        query.id = 0xBEEF
        reply = answerer.answer(query.to_wire())
        assert isinstance(reply, bytes)
        message = dns.message.from_wire(reply)
        assert message.id == 0xBEEF
        assert message.flags & (dns.flags.RD | dns.flags.CD) == flags
        assert message.flags & dns.flags.RA


def test_recursion_available_follows_the_server() -> None:
    view = ResolverView.from_document(make_document({"api": 1}), None)
    answerer = Answerer(view, recursion_available=False)
    query = dns.message.make_query("api.railway.internal", "A").to_wire()
    reply = answerer.answer(query)
    assert isinstance(reply, bytes)
    assert not dns.message.from_wire(reply).flags & dns.flags.RA


def test_every_record_of_the_view_is_served(dual: EnvironmentDocument) -> None:
    view = ResolverView.from_document(dual, None)
    answerer = Answerer(view)
    for record in view.records:
        served = values(ask(answerer, record.name, record.type))
        expected = record.value if record.type in ("A", "AAAA") else None
        if expected is not None:
            assert expected in served, record


# -- sizes, truncation and EDNS ------------------------------------------------------------


def test_udp_without_edns_truncates_at_512_and_tcp_gets_everything() -> None:
    answerer = answerer_for(make_document({"big": 40}))
    udp = dns.message.make_query("big.railway.internal", "AAAA").to_wire()
    reply = answerer.answer(udp, Transport.UDP)
    assert isinstance(reply, bytes) and len(reply) <= 512
    message = dns.message.from_wire(reply)
    assert message.flags & dns.flags.TC
    assert message.answer == []  # never a partial set of instances
    assert message.question[0].name == dns.name.from_text("big.railway.internal")
    tcp = answerer.answer(udp, Transport.TCP)
    assert isinstance(tcp, bytes)
    full = dns.message.from_wire(tcp)
    assert not full.flags & dns.flags.TC
    assert len(values(full)) == 40
    # 29 A records still fit in 512 bytes: 12 + 26 (question) + 29 * 16 = 502.
    fits = answerer_for(make_document({"big": 29}))
    a = fits.answer(dns.message.make_query("big.railway.internal", "A").to_wire())
    assert isinstance(a, bytes) and len(a) == 502
    assert len(values(dns.message.from_wire(a))) == 29


def test_edns_payload_size_and_server_limit_decide_truncation() -> None:
    answerer = answerer_for(make_document({"big": 60}))  # 60 AAAA: about 1.7 kB

    def reply_for(payload: int, max_udp: int) -> dns.message.Message:
        query = dns.message.make_query("big.railway.internal", "AAAA", use_edns=0, payload=payload)
        wire = answerer.answer(query.to_wire(), Transport.UDP, max_udp)
        assert isinstance(wire, bytes)
        assert len(wire) <= max(512, min(payload, max_udp))
        return dns.message.from_wire(wire)

    assert reply_for(4096, 1232).flags & dns.flags.TC  # the server's cap wins
    roomy = reply_for(4096, 4096)
    assert not roomy.flags & dns.flags.TC and len(values(roomy)) == 60
    assert reply_for(1232, 4096).flags & dns.flags.TC  # the client's size wins
    tiny = reply_for(100, 4096)  # below 512 counts as 512
    assert tiny.flags & dns.flags.TC
    assert tiny.edns == 0 and tiny.payload == 4096  # the size this server serves


def test_edns_is_answered_with_edns_and_do_is_copied(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    plain = ask(answerer, "api.railway.internal")
    assert plain.edns == -1
    with_edns = ask(answerer, "api.railway.internal", use_edns=0, payload=4096)
    assert with_edns.edns == 0 and with_edns.payload == 1232
    assert not with_edns.ednsflags & dns.flags.DO
    with_do = ask(answerer, "api.railway.internal", want_dnssec=True)
    assert with_do.ednsflags & dns.flags.DO
    assert values(with_do) == ["10.250.0.3", "10.250.0.4"]


def test_edns_options_are_tolerated(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 40)
    reply = ask(answerer, "Api.railway.internal", use_edns=0, options=[cookie, padding])
    assert values(reply) == ["10.250.0.3", "10.250.0.4"]
    assert rcode(ask(answerer, "nope.railway.internal", use_edns=0, options=[cookie])) == (
        "NXDOMAIN"
    )


def test_unknown_edns_version_is_badvers(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    reply = ask(answerer, "api.railway.internal", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.answer == []


# -- hostile input --------------------------------------------------------------------------


def reply_rcode(reply: bytes | object | None) -> int | None:
    if not isinstance(reply, bytes):
        return None
    return (reply[3] & 0x0F) | 0


@pytest.fixture
def answerer(dual: EnvironmentDocument) -> Answerer:
    return answerer_for(dual)


def good_query() -> bytes:
    query = dns.message.make_query("api.railway.internal", "A")
    query.id = 0x1234
    return query.to_wire()


def test_too_short_or_empty_is_silence(answerer: Answerer) -> None:
    for wire in (b"", b"\x12", b"\x12\x34\x01\x00\x00\x01"):
        assert answerer.answer(wire) is None


def test_replies_are_never_answered(answerer: Answerer) -> None:
    wire = bytearray(good_query())
    wire[2] |= 0x80
    assert answerer.answer(bytes(wire)) is None


def test_zero_and_many_questions_are_formerr(answerer: Answerer) -> None:
    header = struct.pack(">HHHHHH", 0x1234, 0x0100, 0, 0, 0, 0)
    reply = answerer.answer(header)
    assert isinstance(reply, bytes) and reply[:2] == b"\x12\x34"
    assert reply_rcode(reply) == dns.rcode.FORMERR
    question = good_query()[12:]
    two = struct.pack(">HHHHHH", 0x1234, 0x0100, 2, 0, 0, 0) + question + question
    assert reply_rcode(answerer.answer(two)) == dns.rcode.FORMERR


@pytest.mark.parametrize(
    ("label", "wire"),
    [
        ("truncated question", good_query()[:-3]),
        ("trailing garbage", good_query() + b"\xde\xad"),
        ("label too long", good_query()[:12] + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01"),
        ("compression loop", good_query()[:12] + b"\xc0\x0c\x00\x01\x00\x01"),
        ("counts lie", good_query()[:6] + b"\x00\x05" + good_query()[8:]),
        (
            "bad option lengths",
            good_query()[:11] + b"\x01" + good_query()[12:] + b"\x00\x00\x29\x04\xd0"
            b"\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x09\x01",
        ),
        ("oversized", good_query() + b"\x00" * (MAX_QUERY + 1)),
    ],
)
def test_malformed_queries_get_formerr(answerer: Answerer, label: str, wire: bytes) -> None:
    reply = answerer.answer(wire)
    assert reply_rcode(reply) == dns.rcode.FORMERR, label
    assert isinstance(reply, bytes) and reply[:2] == wire[:2]


def test_zone_transfers_are_refused_and_other_opcodes_not_implemented(answerer: Answerer) -> None:
    axfr = dns.message.make_query("railway.internal", "AXFR").to_wire()
    assert reply_rcode(answerer.answer(axfr, Transport.TCP)) == dns.rcode.REFUSED
    for opcode in (dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS):
        query = dns.message.make_query("railway.internal", "SOA")
        query.set_opcode(opcode)
        reply = answerer.answer(query.to_wire())
        assert reply_rcode(reply) == dns.rcode.NOTIMP
        assert isinstance(reply, bytes) and (reply[2] >> 3) & 0x0F == opcode


def test_fuzzed_input_never_raises_and_never_changes_an_answer(answerer: Answerer) -> None:
    rng = random.Random(1234)
    before = answerer.answer(good_query())
    seeds = [
        good_query(),
        dns.message.make_query("x.railway.internal", "AAAA", want_dnssec=True).to_wire(),
        dns.message.make_query("example.com", "MX", use_edns=0).to_wire(),
    ]
    for _ in range(3000):
        choice = rng.random()
        if choice < 0.3:
            wire = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        else:
            mutated = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
            if choice > 0.8:
                del mutated[rng.randrange(len(mutated)) :]
            wire = bytes(mutated)
        for transport in Transport:
            reply = answerer.answer(wire, transport)
            assert reply is None or reply is FORWARD or isinstance(reply, bytes)
            if isinstance(reply, bytes):
                assert reply[:2] == wire[:2]
                assert reply[2] & 0x80
    assert answerer.answer(good_query()) == before


def test_failure_replies_echo_the_question() -> None:
    query = dns.message.make_query("example.com", "A")
    reply = failure_reply(query.to_wire(), dns.rcode.SERVFAIL, recursion_available=True)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == query.id and message.rcode() == dns.rcode.SERVFAIL
    assert message.question == query.question
    assert message.flags & dns.flags.RA
    refused = failure_reply(query.to_wire(), dns.rcode.REFUSED, recursion_available=False)
    assert refused is not None and not dns.message.from_wire(refused).flags & dns.flags.RA
    garbage = b"\x43\x21\x01\x00" + b"\xff" * 20
    bare = failure_reply(garbage, dns.rcode.SERVFAIL, recursion_available=True)
    assert bare is not None and bare[:2] == b"\x43\x21" and reply_rcode(bare) == 2
    assert header_only_reply(b"\x00", dns.rcode.FORMERR, True) is None


def test_hot_path_and_careful_path_agree(answerer: Answerer) -> None:
    """A query the hot path declines (an extra answer record) is answered the same."""
    query = dns.message.make_query("aPi.railway.internal", "AAAA", use_edns=0)
    plain = answerer.answer(query.to_wire())
    odd = dns.message.make_query("aPi.railway.internal", "AAAA", use_edns=0)
    odd.id = query.id
    odd.answer.append(dns.rrset.from_text("x.example.", 5, "IN", "A", "192.0.2.1"))
    careful = answerer.answer(odd.to_wire())
    assert isinstance(plain, bytes) and isinstance(careful, bytes)
    assert dns.message.from_wire(plain) == dns.message.from_wire(careful)


# -- resolver details ---------------------------------------------------------------------


def raw_header(qid: int, first: int, second: int, qdcount: int = 1, arcount: int = 0) -> bytes:
    return struct.pack(">HBBHHHH", qid, first, second, qdcount, 0, 0, arcount)


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def test_reverse_zones_of_the_environment_ranges() -> None:
    prefix = ula_prefix("e1")
    nibbles = ".".join(reversed(prefix.network_address.exploded.replace(":", "")[:16]))
    ipv6_zone = f"{nibbles}.ip6.arpa"
    assert reverse_zones(ipaddress.IPv4Network("10.250.0.0/16"), prefix) == (
        "250.10.in-addr.arpa",
        ipv6_zone,
    )
    # Not on an octet boundary: one zone per /24 (or /16, /8) that the range covers.
    twelve = reverse_zones(ipaddress.IPv4Network("10.96.0.0/12"), prefix)
    assert twelve[:-1] == tuple(f"{i}.10.in-addr.arpa" for i in range(96, 112))
    twenty = reverse_zones(ipaddress.IPv4Network("172.16.16.0/20"), prefix)
    assert twenty[:-1] == tuple(f"{i}.16.172.in-addr.arpa" for i in range(16, 32))
    # Longer than a /24: the /24 that holds it, whose names are single addresses.
    small = reverse_zones(ipaddress.IPv4Network("192.168.7.16/28"), prefix)
    assert small[:-1] == ("7.168.192.in-addr.arpa",)
    assert reverse_zones(None, prefix) == (ipv6_zone,)
    view = ResolverView.from_document(make_document({"api": 1}), None)
    assert view.reverse_zones == ("250.10.in-addr.arpa", ipv6_zone)


def test_reverse_names_in_the_own_ranges_are_answered_locally(dual: EnvironmentDocument) -> None:
    answerer = answerer_for(dual)
    prefix = ula_prefix("e1").network_address
    v4_zone = dns.name.from_text("250.10.in-addr.arpa")
    v6_zone = dns.name.from_text(ResolverView.from_document(dual, None).reverse_zones[1])
    unknown = ["99.0.250.10.in-addr.arpa", "1.2.250.10.in-addr.arpa", "x.4.0.250.10.in-addr.arpa"]
    for name in [*unknown, (prefix + 999).reverse_pointer, (prefix + 2).reverse_pointer]:
        reply = ask(answerer, name, "PTR")
        assert rcode(reply) == "NXDOMAIN", name
        assert reply.flags & dns.flags.AA
        zone = v6_zone if name.endswith("ip6.arpa") else v4_zone
        (soa,) = reply.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.name == zone, name
        assert soa[0].mname == dns.name.from_text("railway.internal")
        assert soa[0].rname == dns.name.from_text("hostmaster.railway.internal")
        assert soa[0].serial == 1 and soa.ttl == 5 and soa[0].minimum == 5
    # Instance addresses keep their PTR; other types on them are NODATA with the zone's SOA.
    assert values(ask(answerer, "4.0.250.10.in-addr.arpa", "PTR")) == ["1.api.railway.internal."]
    assert values(ask(answerer, (prefix + 5).reverse_pointer, "PTR")) == [
        "0.worker.railway.internal."
    ]
    for name, rdtype in (("4.0.250.10.in-addr.arpa", "A"), ("0.250.10.in-addr.arpa", "PTR")):
        nodata = ask(answerer, name, rdtype)
        assert rcode(nodata) == "NOERROR" and nodata.answer == [], name
        assert nodata.authority[0].name == v4_zone
    apex = ask(answerer, "250.10.in-addr.arpa", "SOA")
    assert rcode(apex) == "NOERROR" and apex.answer[0].name == v4_zone
    assert apex.answer[0][0].mname == dns.name.from_text("railway.internal")
    assert rcode(ask(answerer, v6_zone.to_text(), "SOA")) == "NOERROR"
    # Outside the own ranges: not this view's business.
    for name in (
        "1.0.251.10.in-addr.arpa",
        "10.in-addr.arpa",
        "in-addr.arpa",
        "8.8.8.8.in-addr.arpa",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
        "ip6.arpa",
    ):
        query = dns.message.make_query(name, "PTR").to_wire()
        assert answerer.answer(query) is FORWARD, name


def test_reverse_zones_follow_the_range(dual: EnvironmentDocument) -> None:
    """A /28 is answered in its /24's zone; a neighbouring /24 is not the view's."""
    view = ResolverView.from_document(dual, None)
    prefix = ula_prefix("e1")
    small = dataclasses.replace(
        view, reverse_zones=reverse_zones(ipaddress.IPv4Network("10.250.0.0/28"), prefix)
    )
    answerer = Answerer(small)
    assert values(ask(answerer, "3.0.250.10.in-addr.arpa", "PTR")) == ["0.api.railway.internal."]
    for unknown in ("9.0.250.10.in-addr.arpa", "200.0.250.10.in-addr.arpa"):
        reply = ask(answerer, unknown, "PTR")
        assert rcode(reply) == "NXDOMAIN"
        assert reply.authority[0].name == dns.name.from_text("0.250.10.in-addr.arpa")
    outside = dns.message.make_query("16.1.250.10.in-addr.arpa", "PTR").to_wire()
    assert answerer.answer(outside) is FORWARD
    ipv6_only = answerer_for(make_document({"api": 1}, ip_mode="ipv6"))
    v4 = dns.message.make_query("3.0.250.10.in-addr.arpa", "PTR").to_wire()
    assert ipv6_only.answer(v4) is FORWARD
    v6 = ask(ipv6_only, (prefix.network_address + 77).reverse_pointer, "PTR")
    assert rcode(v6) == "NXDOMAIN"


@pytest.mark.parametrize("max_udp", [512, 1232, 1500, 4096])
def test_opt_advertises_the_udp_size_served(max_udp: int) -> None:
    """The OPT's size is the server's real limit: replies up to it are sent whole, larger
    ones truncated, and it is never more than the server accepts."""
    assert max_udp <= MAX_QUERY
    for count in (1, 20, 60, 200):
        answerer = answerer_for(make_document({"big": count}))
        for payload in (512, 1232, 4096, 65535):
            query = dns.message.make_query(
                "big.railway.internal", "AAAA", use_edns=0, payload=payload
            )
            wire = answerer.answer(query.to_wire(), Transport.UDP, max_udp)
            assert isinstance(wire, bytes)
            reply = dns.message.from_wire(wire)
            assert reply.payload == max_udp, (count, payload)
            full = answerer.answer(query.to_wire(), Transport.TCP, max_udp)
            assert isinstance(full, bytes)
            assert dns.message.from_wire(full).payload == max_udp
            limit = max(512, min(payload, max_udp))
            assert len(wire) <= limit
            assert bool(reply.flags & dns.flags.TC) == (len(full) > limit), (count, payload)
    answerer = answerer_for(make_document({"api": 1}))
    badvers = dns.message.make_query("api.railway.internal", "A", use_edns=1)
    reply_wire = answerer.answer(badvers.to_wire(), Transport.UDP, max_udp)
    assert isinstance(reply_wire, bytes)
    assert dns.message.from_wire(reply_wire).payload == max_udp


@pytest.mark.parametrize("rdclass", ["CH", "HS", "ANY", "NONE", "RESERVED0", "CLASS4321"])
def test_classes_other_than_in_are_refused(answerer: Answerer, rdclass: str) -> None:
    for name, rdtype in (
        ("api.railway.internal", "A"),
        ("version.bind", "TXT"),
        ("hostname.bind", "TXT"),
        ("example.com", "A"),
        ("4.0.250.10.in-addr.arpa", "PTR"),
    ):
        for use_edns in (-1, 0):
            query = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=use_edns)
            wire = answerer.answer(query.to_wire())
            assert isinstance(wire, bytes), (name, rdclass)  # never forwarded
            reply = dns.message.from_wire(wire)
            assert reply.rcode() == dns.rcode.REFUSED, (name, rdclass)
            assert not reply.flags & dns.flags.AA
            assert reply.question == query.question
            assert reply.answer == [] and reply.authority == []
            assert reply.edns == use_edns


def test_a_name_longer_than_255_octets_is_formerr(answerer: Answerer) -> None:
    apex = (b"railway", b"internal")
    too_long = wire_name(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 63, *apex)
    assert len(too_long) == 274
    longest = wire_name(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 44, *apex)
    assert len(longest) == 255
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    for arcount, tail in ((0, b""), (1, opt)):
        for transport in Transport:
            query = raw_header(0x5151, 0x01, 0x00, arcount=arcount) + too_long + b"\x00\x01\x00\x01"
            reply = answerer.answer(query + tail, transport)
            assert isinstance(reply, bytes)
            assert reply[:2] == b"\x51\x51"
            assert reply_rcode(reply) == dns.rcode.FORMERR
            assert not reply[2] & 0x04  # not authoritative for something that is no name
            assert reply[4:12] == bytes(8)  # the over-long name is not echoed
            fine = raw_header(0x5252, 0x01, 0x00, arcount=arcount) + longest + b"\x00\x01\x00\x01"
            ok = answerer.answer(fine + tail, transport)
            assert reply_rcode(ok) == dns.rcode.NXDOMAIN
            assert isinstance(ok, bytes) and ok[12 : 12 + 255] == longest


def test_unknown_opcode_is_notimp_with_only_qr_and_the_opcode_set(answerer: Answerer) -> None:
    """ISC's compliance probes ``opcode`` and ``opcodeflg``: opcode 15, header only, first
    with no flags, then with TC, RD, RA, Z, AD, CD and AA all set. RD (like AA, RA, AD, CD
    and Z) is defined for QUERY only, so a NOTIMP reply carries none of them."""
    every_flag = (0x04 | 0x02 | 0x01, 0x80 | 0x40 | 0x20 | 0x10)
    for first, second in ((0, 0), every_flag, (0x01, 0)):
        for opcode in (15, 3, dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY):
            query = raw_header(0x0F0F, opcode << 3 | first, second, qdcount=0)
            for transport in Transport:
                reply = answerer.answer(query, transport)
                assert isinstance(reply, bytes)
                assert reply == b"\x0f\x0f" + bytes((0x80 | opcode << 3, 0x04)) + bytes(8), (
                    opcode,
                    first,
                    second,
                )
    with_question = dns.message.make_query("api.railway.internal", "A", use_edns=0)
    with_question.set_opcode(dns.opcode.STATUS)
    wire = answerer.answer(with_question.to_wire())
    assert isinstance(wire, bytes) and wire[2:] == bytes((0x80 | 2 << 3, 0x04)) + bytes(8)


def assert_same_question(query: bytes, reply: object) -> None:
    assert isinstance(reply, bytes)
    end = 12
    while query[end]:
        end += query[end] + 1
    end += 5
    assert reply[4:6] == b"\x00\x01"
    assert reply[12:end] == query[12:end], (query[12:end], reply[12:end])


def test_every_answer_keeps_the_letter_case_of_the_question() -> None:
    answerer = answerer_for(make_document({"api": 2, "big": 60}))
    prefix = ula_prefix("e1").network_address
    cases = [
        ("ApI.RaIlWaY.InTeRnAl", "A", {}),  # positive
        ("1.aPi.RAILWAY.internal", "AAAA", {"use_edns": 0}),  # one instance, EDNS
        ("NoPe.RaIlWaY.InTeRnAl", "A", {}),  # NXDOMAIN
        ("aPI.railway.INTERNAL", "MX", {}),  # NODATA
        ("RaIlWaY.InTeRnAl", "SOA", {}),  # SOA
        ("Railway.Internal", "ANY", {}),
        ("4.0.250.10.In-AdDr.ArPa", "PTR", {}),  # PTR
        ((prefix + 3).reverse_pointer.upper(), "PTR", {"use_edns": 0}),
        ("99.0.250.10.IN-ADDR.ARPA", "PTR", {}),  # reverse NXDOMAIN
        ("250.10.In-Addr.Arpa", "SOA", {}),  # reverse SOA
        ("0.250.10.In-Addr.Arpa", "A", {}),  # reverse NODATA
        ("BiG.RaIlWaY.InTeRnAl", "AAAA", {}),  # truncated
        ("bIg.RaIlWaY.InTeRnAl", "AAAA", {"use_edns": 0, "payload": 1232}),  # truncated, EDNS
        ("ApI.RaIlWaY.InTeRnAl", "A", {"use_edns": 1}),  # BADVERS
        ("VeRsIoN.BiNd", "TXT", {"rdclass": "CH"}),  # REFUSED class
        ("RaIlWaY.InTeRnAl", "AXFR", {}),  # REFUSED transfer
    ]
    for name, rdtype, options in cases:
        query = dns.message.make_query(name, rdtype, **options)  # type: ignore[arg-type]
        wire = query.to_wire()
        assert_same_question(wire, answerer.answer(wire))
        # The careful path (an extra record makes the hot path decline) keeps it too.
        query.answer.append(dns.rrset.from_text("x.example.", 5, "IN", "A", "192.0.2.1"))
        odd = query.to_wire()
        assert_same_question(odd, answerer.answer(odd))
    for rcode_value in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
        wire = dns.message.make_query("WwW.ExAmPlE.CoM", "A").to_wire()
        assert_same_question(wire, failure_reply(wire, rcode_value, recursion_available=True))


# -- a new view built from the one it replaces --------------------------------------------


def every_question(*views: ResolverView) -> list[tuple[str, str]]:
    names = sorted({r.name for v in views for r in v.records} | {"nothere.railway.internal"})
    return [(n, t) for n in names for t in ("A", "AAAA", "PTR", "SOA", "ANY", "TXT")]


def replies(
    answerer: Answerer, questions: list[tuple[str, str]], *, forwarded: bool = False
) -> list[bytes]:
    out = []
    for name, rdtype in questions:
        query = dns.message.make_query(name, rdtype, use_edns=0)
        query.id = 4242
        reply = answerer.answer(query.to_wire(), Transport.UDP, 1232)
        assert isinstance(reply, bytes) or (reply is FORWARD and forwarded), (name, rdtype)
        out.append(reply if isinstance(reply, bytes) else b"FORWARD")
    return out


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # One service added, one scaled, one removed, the generation moved on.
        (
            make_document({"api": 2, "worker": 1, "db": 1}, generation=3),
            make_document({"api": 3, "worker": 1, "cache": 1}, generation=4),
        ),
        # Same services, another TTL: nothing can be kept.
        (make_document({"api": 2}, ttl=5), make_document({"api": 2}, ttl=30, generation=2)),
        # Addresses shifted under the same names.
        (make_document({"api": 2, "db": 1}), make_document({"api": 2, "db": 1}, first=9)),
    ],
)
def test_an_answerer_built_from_the_previous_one_answers_as_a_fresh_one(
    before: EnvironmentDocument, after: EnvironmentDocument
) -> None:
    old = Answerer(ResolverView.from_document(before, None))
    view = ResolverView.from_document(after, None)
    fresh, reused = Answerer(view), Answerer(view, previous=old)
    questions = every_question(ResolverView.from_document(before, None), view)
    assert replies(reused, questions) == replies(fresh, questions)
    # ...and the one it was built from still answers for its own view (it is not changed).
    again = Answerer(ResolverView.from_document(before, None))
    assert replies(old, questions) == replies(again, questions)


def test_an_unchanged_name_reuses_its_rendered_replies() -> None:
    before = make_document({"api": 2, "worker": 1}, generation=1)
    after = make_document({"api": 2, "worker": 1, "new": 1}, generation=2)
    old = Answerer(ResolverView.from_document(before, None))
    reused = Answerer(ResolverView.from_document(after, None), previous=old)
    owner = dns.name.from_text("worker.railway.internal").to_wire()
    assert reused._rendered[owner] is old._rendered[owner]


def service_of(doc: EnvironmentDocument, name: str) -> object:
    return next(x for x in doc.services if x.name == name)


def with_parents(questions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``questions`` and the same types at every parent of their names (empty
    non-terminals such as ``0.250.10.in-addr.arpa``)."""
    names = {n for n, _ in questions}
    parents = {n.split(".", k)[-1] for n in names for k in range(1, n.count(".") + 1)}
    parents = {
        p for p in parents if p.endswith(("railway.internal", "10.in-addr.arpa", "d.f.ip6.arpa"))
    }
    types = sorted({t for _, t in questions})
    return questions + [(n, t) for n in sorted(parents - names) for t in types]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # One service added, one scaled, one removed, the generation moved on.
        (
            make_document({"api": 2, "worker": 1, "db": 1}, generation=3),
            make_document({"api": 3, "worker": 1, "cache": 1}, generation=4),
        ),
        # Addresses shifted under the same names.
        (make_document({"api": 2, "db": 1}), make_document({"api": 2, "db": 1}, first=9)),
        # Everything removed, then a service again.
        (make_document({"api": 1}), make_document({}, generation=2)),
        (make_document({}), make_document({"web": 2}, generation=2)),
    ],
)
def test_an_answerer_changed_by_a_view_change_answers_as_a_fresh_one(
    before: EnvironmentDocument, after: EnvironmentDocument
) -> None:
    old = Answerer(ResolverView.from_document(before, None))
    change = ViewChange.between(before, after, None)
    assert change is not None
    view = ResolverView.from_document(after, None)
    changed, fresh = old.changed(change), Answerer(view)
    questions = with_parents(every_question(ResolverView.from_document(before, None), view))
    assert replies(changed, questions, forwarded=True) == replies(fresh, questions, forwarded=True)
    assert changed.view == view
    # The change carries the names of the services that changed only (whole services),
    # and the old answerer is untouched.
    kept = {x.name for x in before.services} & {x.name for x in after.services}
    same = [n for n in kept if service_of(before, n) == service_of(after, n)]
    assert not any(r.name.endswith(f"{n}.railway.internal") for r in change.records for n in same)
    again = Answerer(ResolverView.from_document(before, None))
    assert replies(old, questions, forwarded=True) == replies(again, questions, forwarded=True)
    # Put in place in the answerer itself (what a one-thread server does): the same.
    old.commit(old.prepare(change))
    assert replies(old, questions, forwarded=True) == replies(fresh, questions, forwarded=True)
    assert old.view == view and old.head == view.head


def test_a_change_that_cannot_be_served_leaves_the_answerer_as_it_was() -> None:
    before = make_document({"api": 2, "db": 1}, generation=3)
    after = make_document({"api": 3, "db": 1}, generation=4)
    change = ViewChange.between(before, after, None)
    assert change is not None
    last = dataclasses.replace(change.records[-1], value="x")
    bad = dataclasses.replace(change, records=(*change.records[:-1], last))
    answerer = Answerer(ResolverView.from_document(before, None))
    view = ResolverView.from_document(before, None)
    questions = with_parents(every_question(view, ResolverView.from_document(after, None)))
    was = replies(answerer, questions, forwarded=True)
    with pytest.raises(InvalidField, match=r"records\.value"):
        answerer.prepare(bad)
    assert replies(answerer, questions, forwarded=True) == was
    assert answerer.view == view


def test_a_view_change_applies_only_to_the_view_it_was_made_from() -> None:
    one = make_document({"api": 1}, generation=1)
    two = make_document({"api": 1, "db": 1}, generation=2)
    three = make_document({"api": 2, "db": 1}, generation=3)
    change = ViewChange.between(two, three, None)
    assert change is not None and change.base_serial == 2
    assert change.applies_to(ResolverView.from_document(two, None))
    assert not change.applies_to(ResolverView.from_document(one, None))
    assert not change.applies_to(ResolverView.from_document(two, "another-netns"))
    with pytest.raises(InvalidField, match=r"change\.base_serial"):
        Answerer(ResolverView.from_document(one, None)).changed(change)
    # A new TTL changes every reply: no change is made, the whole view is sent.
    assert ViewChange.between(two, make_document({"api": 1}, ttl=30, generation=3), None) is None


PROPERTY_ANSWERER = answerer_for(make_document({"api": 2, "db": 1, "big": 60}))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(queries())
def test_a_reply_depends_on_the_query_id_only_by_copying_it(wire: bytes) -> None:
    """What lets the server remember replies by the query bytes after the ID."""
    other = bytes((wire[0] ^ 0xFF, wire[1] ^ 0x0F)) + wire[2:]
    for transport in Transport:
        first = PROPERTY_ANSWERER.answer(wire, transport)
        second = PROPERTY_ANSWERER.answer(other, transport)
        if isinstance(first, bytes):
            assert first[:2] == wire[:2]
            assert isinstance(second, bytes) and second == other[:2] + first[2:]
        else:
            assert second is first


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(queries())
def test_hot_path_and_careful_path_agree_on_random_queries(wire: bytes) -> None:
    """The same query with an extra answer record (which the hot path declines) gets the
    same reply from dnspython's careful path, for random names, case, types and EDNS."""
    try:
        message = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return  # e.g. a name over 255 octets: no careful twin to build
    message.answer.append(dns.rrset.from_text("x.example.", 5, "IN", "A", "192.0.2.1"))
    odd = message.to_wire()
    for transport in Transport:
        hot = PROPERTY_ANSWERER.answer(wire, transport)
        careful = PROPERTY_ANSWERER.answer(odd, transport)
        if isinstance(hot, bytes):
            assert isinstance(careful, bytes)
            assert careful == hot, (wire, hot, careful)
        else:
            assert careful is hot
