"""The DNS view of an environment, and the answerer that serves it without I/O.

``ResolverView.from_document`` turns an environment document into the records one
environment's resolver serves. ``Answerer`` takes a query's wire bytes and returns the wire
bytes of the reply, ``None`` for silence, or ``FORWARD`` when the name lies outside the
view and belongs to the node's upstream resolvers. The server in ``railnet.agent.dns``
is a short pump around it.

Names (see docs/dns.md):

* ``<service>.<domain>``: every instance's address, A and AAAA (AAAA only in IPv6-only
  environments, where an A query gets NODATA with the zone's SOA);
* ``<i>.<service>.<domain>``: the instance at 0-based position ``i``, the same ``#i`` that
  ``railnet exec`` takes;
* PTR records for every instance address, naming ``<i>.<service>.<domain>``;
* the SOA at ``<domain>``, returned in the authority section of NXDOMAIN and NODATA.

The hot path: every answer the view can give is rendered once, when the view is built,
into the bytes that follow the question section. A query is matched by its question's
wire bytes (the name lower-cased), so most queries never reach dnspython's parser: the
reply is the query's ID, a pre-rendered header, the query's own question (its 0x20 case
kept) and the pre-rendered body. Every owner name in a body is a compression pointer into
that question, which is why the body does not depend on the question's letter case.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from collections import defaultdict
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode

from railnet.core.document import EnvironmentDocument, IpMode
from railnet.core.errors import InvalidField

DEFAULT_MAX_UDP = 1232
"""Largest UDP reply the server sends to an EDNS client (the 2020 DNS flag day value)."""
MIN_UDP = 512
"""The classic limit: replies to clients without EDNS, and the floor of any EDNS size."""
MAX_TCP = 65535
MAX_QUERY = 4096
"""Larger queries are answered FORMERR unread: no real query comes near this size."""

SOA_REFRESH = 60
SOA_RETRY = 10
SOA_EXPIRE = 3600
HOSTMASTER = "hostmaster"

# rcodes, RR types and classes by number: the hot path compares integers.
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
TYPE_A, TYPE_SOA, TYPE_PTR, TYPE_AAAA, TYPE_OPT = 1, 6, 12, 28, 41
TYPE_IXFR, TYPE_AXFR, TYPE_ANY = 251, 252, 255
CLASS_IN = 1
RECORD_TYPES = {"A": TYPE_A, "AAAA": TYPE_AAAA, "PTR": TYPE_PTR, "SOA": TYPE_SOA}

_QR, _AA, _TC = 0x80, 0x04, 0x02
_RA = 0x80
_EDNS_DO = 0x8000
# qdcount 1, ancount 0, nscount 0 and the high byte of arcount: a plain query's counts.
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00"


class Transport(enum.Enum):
    """How a query arrived; it decides the size limit of the reply."""

    UDP = "udp"
    TCP = "tcp"


class Forward:
    """The query names something outside the view: send it to the upstream resolvers."""

    _instance: Forward | None = None

    def __new__(cls) -> Forward:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FORWARD"


FORWARD = Forward()
"""The one ``Forward`` value ``Answerer.answer`` returns."""


@dataclass(frozen=True, order=True)
class DnsRecord:
    """One resource record a view serves."""

    name: str
    """Absolute owner name, lower case, without the trailing dot."""
    type: str
    """``A``, ``AAAA``, ``PTR`` or ``SOA``."""
    value: str
    """Presentation form: an address, a target name (no trailing dot), or the SOA fields."""
    ttl: int

    def as_tuple(self) -> tuple[str, str, str, int]:
        return (self.name, self.type, self.value, self.ttl)


@dataclass(frozen=True)
class ResolverView:
    """What one environment's resolver serves on one node, and where it listens."""

    env_id: str
    netns: str | None
    """The environment namespace to bind in; ``None`` binds in the caller's namespace."""
    listen: tuple[str, ...]
    """Addresses to listen on: the resolver's IPv4 (dual stack only), then its IPv6."""
    domain: str
    ttl: int
    serial: int
    """The SOA serial: the document's generation."""
    records: tuple[DnsRecord, ...]
    """Every record served, sorted by name, type, then value (addresses numerically)."""

    @classmethod
    def from_document(cls, doc: EnvironmentDocument, netns: str | None) -> ResolverView:
        plan = doc.addresses
        listen = tuple(str(a) for a in (plan.resolver4, plan.resolver6) if a is not None)
        return cls(
            env_id=doc.id,
            netns=netns,
            listen=listen,
            domain=doc.domain,
            ttl=doc.dns_ttl,
            serial=doc.generation % 2**32,  # the same serial as the SOA record's
            records=zone_records(doc),
        )

    def names(self) -> frozenset[str]:
        """Owner names of the view's records."""
        return frozenset(r.name for r in self.records)


def service_name(service: str, domain: str) -> str:
    return f"{service}.{domain}"


def instance_name(service: str, index: int, domain: str) -> str:
    return f"{index}.{service}.{domain}"


def soa_value(domain: str, serial: int, ttl: int) -> str:
    return f"{domain} {HOSTMASTER}.{domain} {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {ttl}"


def zone_records(doc: EnvironmentDocument) -> tuple[DnsRecord, ...]:
    """The records of ``doc``'s DNS view, sorted."""
    ttl = doc.dns_ttl
    records = [
        DnsRecord(doc.domain, "SOA", soa_value(doc.domain, doc.generation % 2**32, ttl), ttl)
    ]
    for svc in doc.services:
        shared = service_name(svc.name, doc.domain)
        for index, inst in enumerate(svc.instances):
            own = instance_name(svc.name, index, doc.domain)
            addresses: list[str] = [inst.ipv6]
            if doc.ip_mode is IpMode.DUAL and inst.ipv4 is not None:
                addresses.insert(0, inst.ipv4)
            for address in addresses:
                ip = ipaddress.ip_address(address)
                rtype = "A" if ip.version == 4 else "AAAA"
                records.append(DnsRecord(shared, rtype, str(ip), ttl))
                records.append(DnsRecord(own, rtype, str(ip), ttl))
                records.append(DnsRecord(ip.reverse_pointer, "PTR", own, ttl))
    return tuple(sorted(records, key=_record_order))


def _record_order(record: DnsRecord) -> tuple[str, str, int, str]:
    if record.type in ("A", "AAAA"):
        return (record.name, record.type, _address_number(record.value), "")
    return (record.name, record.type, 0, record.value)


@functools.lru_cache(maxsize=65536)
def _address_number(value: str) -> int:
    return int(ipaddress.ip_address(value))


# -- rendering helpers --------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _name_wire(name: str) -> bytes:
    """Wire form of a name; cached, since names repeat from one generation to the next."""
    try:
        return dns.name.from_text(name).to_wire() or b""
    except dns.exception.DNSException as exc:
        raise InvalidField("records.name", name, f"is not a DNS name ({exc})") from None


def _pointer(offset: int) -> bytes:
    return struct.pack(">H", 0xC000 | offset)


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + struct.pack(">HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def _opt(do: bool, ext_rcode: int = 0) -> bytes:
    """Our OPT record: root owner, our UDP size, the client's DO bit copied (RFC 3225)."""
    flags = _EDNS_DO if do else 0
    return b"\x00" + struct.pack(">HHBBHH", TYPE_OPT, DEFAULT_MAX_UDP, ext_rcode, 0, flags, 0)


_OPT_PLAIN = _opt(False)
_OPT_DO = _opt(True)


class _Prepared:
    """One pre-rendered reply: its headers (by RD, CD and EDNS) and the body after the
    question. ``headers[i]`` is flags + counts, where ``i = RD | CD << 1 | EDNS << 2``."""

    __slots__ = ("body", "headers", "truncated")

    def __init__(
        self, rcode: int, authoritative: bool, ra: bool, ancount: int, nscount: int, body: bytes
    ) -> None:
        self.headers = _header_variants(rcode, authoritative, ra, False, ancount, nscount)
        self.truncated = _header_variants(rcode, authoritative, ra, True, 0, 0)
        self.body = body


_HEADER_CACHE: dict[tuple[int, bool, bool, bool, int, int], tuple[bytes, ...]] = {}


def _header_variants(
    rcode: int, aa: bool, ra: bool, tc: bool, ancount: int, nscount: int
) -> tuple[bytes, ...]:
    key = (rcode, aa, ra, tc, ancount, nscount)
    cached = _HEADER_CACHE.get(key)
    if cached is not None:
        return cached
    variants = []
    for index in range(8):
        rd, cd, edns = index & 1, (index >> 1) & 1, (index >> 2) & 1
        first = _QR | (_AA if aa else 0) | (_TC if tc else 0) | rd
        second = (_RA if ra else 0) | (0x10 if cd else 0) | rcode
        counts = struct.pack(">HHHH", 1, ancount, nscount, edns)
        variants.append(bytes((first, second)) + counts)
    result = tuple(variants)
    if len(_HEADER_CACHE) < 4096:
        _HEADER_CACHE[key] = result
    return result


class Answerer:
    """Answers queries for one ``ResolverView`` from replies rendered in advance."""

    def __init__(self, view: ResolverView, *, recursion_available: bool = True) -> None:
        self.view = view
        self._ra = recursion_available
        self._apex = _name_wire(view.domain)
        self._ttl = view.ttl
        self._serial = view.serial
        self._table: dict[bytes, _Prepared] = {}
        self._nodata: dict[bytes, _Prepared] = {}
        self._negative: dict[tuple[int, int], _Prepared] = {}
        self._errors = {
            rcode: _Prepared(rcode, False, recursion_available, 0, 0, b"")
            for rcode in (FORMERR, SERVFAIL, NOTIMP, REFUSED)
        }
        self._build(view.records)

    # -- building ------------------------------------------------------------------------

    def _build(self, records: tuple[DnsRecord, ...]) -> None:
        by_name: dict[bytes, dict[int, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        for record in records:
            rtype = RECORD_TYPES.get(record.type)
            if rtype is None:
                raise InvalidField("records.type", record.type, "must be A, AAAA, PTR or SOA")
            owner = _name_wire(record.name).lower()
            if rtype == TYPE_SOA:
                continue  # rendered from the view's domain, ttl and serial below
            by_name[owner][rtype].append(self._rdata(record, rtype))
        by_name.setdefault(self._apex, defaultdict(list))  # exists even in an empty view
        existing: set[bytes] = set()
        for owner in by_name:
            if self._in_domain(owner):
                existing.update(self._ancestors(owner))
        for owner, rrsets in by_name.items():
            answers: dict[int, list[bytes]] = {
                rtype: [_rr(b"\xc0\x0c", rtype, self._ttl, rdata) for rdata in rdatas]
                for rtype, rdatas in rrsets.items()
            }
            if owner == self._apex:
                answers[TYPE_SOA] = [self._soa_rr(0)]
            for rtype, rrs in answers.items():
                self._table[owner + struct.pack(">HH", rtype, CLASS_IN)] = self._positive(rrs)
            every = [rr for rtype in sorted(answers) for rr in answers[rtype]]
            if every:
                self._table[owner + struct.pack(">HH", TYPE_ANY, CLASS_IN)] = self._positive(every)
        for owner in existing:
            nodata = self._negative_reply(NOERROR, len(owner) - len(self._apex))
            self._nodata[owner] = nodata
            for rtype in (TYPE_A, TYPE_AAAA):
                self._table.setdefault(owner + struct.pack(">HH", rtype, CLASS_IN), nodata)

    def _positive(self, rrs: list[bytes]) -> _Prepared:
        return _Prepared(NOERROR, True, self._ra, len(rrs), 0, b"".join(rrs))

    def _negative_reply(self, rcode: int, apex_offset: int) -> _Prepared:
        """NXDOMAIN or NODATA with the SOA; shared by every name of the same length, as
        the SOA's owner is a pointer to where the apex starts in the question."""
        key = (rcode, apex_offset)
        prepared = self._negative.get(key)
        if prepared is None:
            prepared = _Prepared(rcode, True, self._ra, 0, 1, self._soa_rr(apex_offset))
            self._negative[key] = prepared
        return prepared

    def _rdata(self, record: DnsRecord, rtype: int) -> bytes:
        if rtype == TYPE_PTR:
            return _name_wire(record.value)
        try:
            ip = ipaddress.ip_address(record.value)
        except ValueError:
            raise InvalidField("records.value", record.value, "is not an IP address") from None
        if ip.version != (4 if rtype == TYPE_A else 6):
            raise InvalidField("records.value", record.value, f"is not a {record.type} address")
        return ip.packed

    def _soa_rr(self, apex_offset: int) -> bytes:
        """The SOA record, with the apex a pointer into a question whose apex starts
        ``apex_offset`` bytes into its name."""
        apex = _pointer(12 + apex_offset)
        rdata = (
            apex
            + bytes((len(HOSTMASTER),))
            + HOSTMASTER.encode()
            + apex
            + struct.pack(">IIIII", self._serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self._ttl)
        )
        return _rr(apex, TYPE_SOA, self._ttl, rdata)

    def _in_domain(self, name: bytes) -> bool:
        """Whether a lower-case wire name is the apex or below it, on a label boundary."""
        if not name.endswith(self._apex):
            return False
        boundary = len(name) - len(self._apex)
        position = 0
        while position < boundary:
            position += name[position] + 1
        return position == boundary

    def _ancestors(self, name: bytes) -> list[bytes]:
        """``name`` and every name between it and the apex (empty non-terminals exist)."""
        found = []
        position = 0
        while True:
            suffix = name[position:]
            found.append(suffix)
            if suffix == self._apex or len(suffix) <= 1:
                return found
            position += name[position] + 1

    # -- answering -----------------------------------------------------------------------

    def answer(
        self, query: bytes, transport: Transport = Transport.UDP, max_udp: int = DEFAULT_MAX_UDP
    ) -> bytes | Forward | None:
        """The reply to ``query``; ``None`` for silence; ``FORWARD`` for the upstreams."""
        size = len(query)
        # The hot path takes one plain question, optionally one OPT record; anything
        # else, including every malformed query, goes to the careful path.
        if size < 17 or size > MAX_QUERY or query[2] & 0xF8 or query[4:11] != _PLAIN_COUNTS:
            return self._careful(query, transport, max_udp)
        end = 12
        try:
            length = query[end]
            while length:
                if length > 63:
                    return self._careful(query, transport, max_udp)
                end += length + 1
                length = query[end]
        except IndexError:
            return self._careful(query, transport, max_udp)
        qend = end + 5
        payload = -1
        do = False
        if query[11] == 0:
            if qend != size:
                return self._careful(query, transport, max_udp)
        elif query[11] == 1:
            opt = query[qend : qend + 11]
            if (
                len(opt) != 11
                or opt[0] != 0
                or opt[1] != 0
                or opt[2] != TYPE_OPT
                or qend + 11 + (opt[9] << 8 | opt[10]) != size
                or not _options_well_formed(query, qend + 11, size)
            ):
                return self._careful(query, transport, max_udp)
            if opt[6] != 0:
                return self._badvers(query[:2], _flag_index(query), query[12:qend], opt[7] >= 0x80)
            payload = opt[3] << 8 | opt[4]
            do = opt[7] >= 0x80
        else:
            return self._careful(query, transport, max_udp)
        key = query[12 : end + 1].lower() + query[end + 1 : qend]
        prepared = self._table.get(key)
        if prepared is None:
            missed = self._miss(key, end - 11)
            if isinstance(missed, Forward):
                return missed
            prepared = missed
        return self._render(
            prepared, query[:2], _flag_index(query), query[12:qend], transport, max_udp, payload, do
        )

    def _miss(self, key: bytes, name_length: int) -> _Prepared | Forward:
        name = key[:name_length]
        qtype = key[name_length] << 8 | key[name_length + 1]
        qclass = key[name_length + 2] << 8 | key[name_length + 3]
        if qclass != CLASS_IN or qtype == TYPE_OPT:
            return self._errors[FORMERR]
        if qtype in (TYPE_AXFR, TYPE_IXFR):
            return self._errors[REFUSED]
        nodata = self._nodata.get(name)
        if nodata is not None:
            return nodata
        if not self._in_domain(name):
            return FORWARD
        return self._negative_reply(NXDOMAIN, len(name) - len(self._apex))

    def _render(
        self,
        prepared: _Prepared,
        qid: bytes,
        index: int,
        question: bytes,
        transport: Transport,
        max_udp: int,
        payload: int,
        do: bool,
    ) -> bytes:
        if payload < 0:
            opt = b""
            limit = MIN_UDP if transport is Transport.UDP else MAX_TCP
        else:
            index |= 4
            opt = _OPT_DO if do else _OPT_PLAIN
            limit = max(MIN_UDP, min(payload, max_udp)) if transport is Transport.UDP else MAX_TCP
        body = prepared.body
        if 12 + len(question) + len(body) + len(opt) <= limit:
            return qid + prepared.headers[index] + question + body + opt
        # Too big: no partial RRset, so that no client mistakes part of a service's
        # instances for all of them. TC tells it to ask again over TCP.
        return qid + prepared.truncated[index] + question + opt

    def _badvers(self, qid: bytes, index: int, question: bytes, do: bool) -> bytes:
        header = _header_variants(NOERROR, False, self._ra, False, 0, 0)[index | 4]
        return qid + header + question + _opt(do, ext_rcode=BADVERS >> 4)

    def _careful(self, query: bytes, transport: Transport, max_udp: int) -> bytes | Forward | None:
        """Every query the hot path declines: parsed by dnspython, or refused whole."""
        if len(query) < 12 or query[2] & _QR:
            return None  # not a query we can address a reply to, or a reply: never answer
        opcode = (query[2] >> 3) & 0x0F
        if opcode != 0:
            return header_only_reply(query, NOTIMP, self._ra)
        if len(query) > MAX_QUERY:
            return header_only_reply(query, FORMERR, self._ra)
        try:
            message = dns.message.from_wire(query)
        except Exception:  # any parse failure of untrusted bytes is FORMERR
            return header_only_reply(query, FORMERR, self._ra)
        if len(message.question) != 1:
            return header_only_reply(query, FORMERR, self._ra)
        rrset = message.question[0]
        name = rrset.name.to_wire() or b""
        tail = struct.pack(">HH", rrset.rdtype, rrset.rdclass)
        question = name + tail
        index = _flag_index(query)
        do = bool(message.ednsflags & _EDNS_DO)
        if message.edns > 0:
            return self._badvers(query[:2], index, question, do)
        key = name.lower() + tail
        prepared = self._table.get(key)
        if prepared is None:
            missed = self._miss(key, len(name))
            if isinstance(missed, Forward):
                return missed
            prepared = missed
        payload = message.payload if message.edns == 0 else -1
        return self._render(prepared, query[:2], index, question, transport, max_udp, payload, do)


def _flag_index(query: bytes) -> int:
    """RD and CD of the query, as the low bits of a ``_Prepared.headers`` index."""
    return (query[2] & 0x01) | ((query[3] & 0x10) >> 3)


def _options_well_formed(query: bytes, start: int, end: int) -> bool:
    position = start
    while position < end:
        if position + 4 > end:
            return False
        position += 4 + (query[position + 2] << 8 | query[position + 3])
    return position == end


def header_only_reply(query: bytes, rcode: int, recursion_available: bool) -> bytes | None:
    """A reply of just a header: the query's ID, opcode and RD, and ``rcode``."""
    if len(query) < 12 or query[2] & _QR:
        return None
    first = _QR | (query[2] & 0x79)  # opcode and RD
    second = (_RA if recursion_available else 0) | rcode
    return query[:2] + bytes((first, second)) + bytes(8)


def failure_reply(query: bytes, rcode: int, recursion_available: bool) -> bytes | None:
    """``rcode`` (SERVFAIL, REFUSED) for a query that could not be forwarded, with the
    question echoed when it parses."""
    try:
        message = dns.message.from_wire(query)
        reply = dns.message.make_response(message)
    except Exception:  # untrusted bytes; a bare header still answers
        return header_only_reply(query, rcode, recursion_available)
    reply.set_rcode(dns.rcode.Rcode(rcode))
    if recursion_available:
        reply.flags |= dns.flags.RA
    else:
        reply.flags &= ~dns.flags.RA
    return reply.to_wire()
