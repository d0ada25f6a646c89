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
* the SOA at ``<domain>``, returned in the authority section of NXDOMAIN and NODATA;
* the reverse zones of the environment's own ranges (RFC 6303 style): every other name in
  them is NXDOMAIN with the reverse zone's SOA, answered here and never forwarded.

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
from dataclasses import dataclass, replace

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode

from railnet.core.document import EnvironmentDocument, IpMode, ServiceEntry
from railnet.core.errors import InvalidField

DEFAULT_MAX_UDP = 1232
"""Largest UDP reply the server sends to an EDNS client (the 2020 DNS flag day value).
Whatever the server's limit is, its OPT record advertises exactly that number."""
MIN_UDP = 512
"""The classic limit: replies to clients without EDNS, and the floor of any EDNS size."""
MAX_TCP = 65535
MAX_QUERY = 4096
"""Larger queries are answered FORMERR unread: no real query comes near this size. It is
also the ceiling of the UDP limit, so that the size a reply advertises is one the server
would accept in return."""
MAX_NAME = 255
"""Octets in a wire-format name, root label included (RFC 1035 section 3.1)."""

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
# The terminal of every reverse name (in-addr.arpa, ip6.arpa): a cheap first test.
_ARPA = b"\x04arpa\x00"
# The end of the longest valid name in a query: 12 bytes of header, then 255 octets.
_LAST_NAME_OCTET = 12 + MAX_NAME - 1


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
    reverse_zones: tuple[str, ...] = ()
    """The reverse zones of the environment's own ranges, answered locally (RFC 6303
    style): the IPv4 CIDR's ``in-addr.arpa`` zone(s), then the ULA's ``ip6.arpa`` zone."""

    @classmethod
    def from_document(
        cls, doc: EnvironmentDocument, netns: str | None, *, records: bool = True
    ) -> ResolverView:
        """``doc``'s view; with ``records=False``, only its head."""
        plan = doc.addresses
        listen = tuple(str(a) for a in (plan.resolver4, plan.resolver6) if a is not None)
        return cls(
            env_id=doc.id,
            netns=netns,
            listen=listen,
            domain=doc.domain,
            ttl=doc.dns_ttl,
            serial=doc.generation % 2**32,  # the same serial as the SOA record's
            records=zone_records(doc) if records else (),
            reverse_zones=reverse_zones(plan.ipv4, plan.ipv6),
        )

    def names(self) -> frozenset[str]:
        """Owner names of the view's records."""
        return frozenset(r.name for r in self.records)

    @property
    def head(self) -> ResolverView:
        """The view without its records: what a ``ViewChange`` is checked against."""
        return self if not self.records else replace(self, records=())


@dataclass(frozen=True)
class ViewChange:
    """The next view of an environment, as the change from the one a resolver serves.

    A deploy that adds one service to an environment of a thousand changes a handful of
    names; sending, checking and rendering every record again would cost the whole
    environment. A change names the view it applies to by serial (the document's
    generation, which names one document), and carries each changed owner name's whole
    record set: a resolver that serves another serial, or another namespace or listen
    address, refuses it and is sent the whole view instead."""

    head: ResolverView
    """The next view without its records (``records == ()``); its serial is the next one."""
    base_serial: int
    """The serial of the view the change applies to."""
    removed: tuple[str, ...]
    """Owner names that have no records any more."""
    records: tuple[DnsRecord, ...]
    """Every record of each owner name that is new or changed (an owner's records replace
    all it had), sorted like a view's."""

    def applies_to(self, served: ResolverView) -> bool:
        """Whether ``served`` (a view or its head) is the view this change was made from."""
        return (
            served.serial == self.base_serial
            and replace(served.head, serial=self.head.serial) == self.head
        )

    @classmethod
    def between(
        cls, previous: EnvironmentDocument, doc: EnvironmentDocument, netns: str | None
    ) -> ViewChange | None:
        """The change from ``previous``'s view to ``doc``'s, reading only the services that
        differ; None when the views differ in more than records (another domain, TTL,
        address plan or environment)."""
        head = ResolverView.from_document(doc, netns, records=False)
        if (
            replace(ResolverView.from_document(previous, netns, records=False), serial=head.serial)
            != head
        ):
            return None
        if previous.ip_mode is not doc.ip_mode:
            return None
        was, now = doc.services_changed_from(previous)
        gone = {r.name for before in was for r in service_records(before, previous)}
        records = [r for svc in now for r in service_records(svc, doc)]
        gone.difference_update(r.name for r in records)
        return cls(
            head=head,
            base_serial=previous.generation % 2**32,
            removed=tuple(sorted(gone)),
            records=tuple(sorted(records, key=_record_order)),
        )


@functools.lru_cache(maxsize=1024)  # every view of an environment asks again
def reverse_zones(
    ipv4: ipaddress.IPv4Network | None, ipv6: ipaddress.IPv6Network
) -> tuple[str, ...]:
    """The reverse zones that hold exactly the names of ``ipv4`` and ``ipv6``.

    Reverse names have a label per octet (IPv4) or per nibble (IPv6), so a range whose
    prefix does not end on a label boundary is covered by several zones: a /12 by sixteen
    /16 zones, a /20 by sixteen /24 zones. A range smaller than a /24 gets its whole /24
    zone, whose names are one address each: the rest of that /24 is private space too
    (ranges are RFC 1918 and similar) that no instance can reach, so nobody upstream can
    say more about it, and RFC 6303 would keep it local anyway.
    """
    zones: list[str] = []
    for network, bits in ((ipv4, 8), (ipv6, 4)):
        if network is None:
            continue
        boundary = min(-(-network.prefixlen // bits) * bits, network.max_prefixlen - bits)
        if boundary < network.prefixlen:
            network = network.supernet(new_prefix=boundary)
        dropped = (network.max_prefixlen - boundary) // bits
        for part in network.subnets(new_prefix=boundary):
            labels = part.network_address.reverse_pointer.split(".")
            zones.append(".".join(labels[dropped:]))
    return tuple(zones)


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
        records.extend(service_records(svc, doc))
    return tuple(sorted(records, key=_record_order))


def service_records(svc: ServiceEntry, doc: EnvironmentDocument) -> list[DnsRecord]:
    """The records of one service of ``doc`` (every owner name is the service's alone)."""
    dual = doc.ip_mode is IpMode.DUAL
    records: list[DnsRecord] = []
    for index, inst in enumerate(svc.instances):
        ipv4 = inst.ipv4 if dual else None
        records.extend(_instance_records(svc.name, index, ipv4, inst.ipv6, doc.domain, doc.dns_ttl))
    return records


@functools.lru_cache(maxsize=65536)
def _instance_records(
    service: str, index: int, ipv4: str | None, ipv6: str, domain: str, ttl: int
) -> tuple[DnsRecord, ...]:
    """One instance's records. Cached: from one generation to the next, nearly every
    instance's records are what they were, and building them is most of a view's cost."""
    shared = service_name(service, domain)
    own = instance_name(service, index, domain)
    records = []
    for address in (ipv4, ipv6):
        if address is None:
            continue
        ip = ipaddress.ip_address(address)
        rtype = "A" if ip.version == 4 else "AAAA"
        records.append(DnsRecord(shared, rtype, str(ip), ttl))
        records.append(DnsRecord(own, rtype, str(ip), ttl))
        records.append(DnsRecord(ip.reverse_pointer, "PTR", own, ttl))
    return tuple(records)


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


def _opt(do: bool, ext_rcode: int = 0, max_udp: int = DEFAULT_MAX_UDP) -> bytes:
    """Our OPT record: root owner, the UDP size this server really serves, the client's
    DO bit copied (RFC 3225)."""
    flags = _EDNS_DO if do else 0
    return b"\x00" + struct.pack(">HHBBHH", TYPE_OPT, max_udp, ext_rcode, 0, flags, 0)


_OPT_PLAIN = _opt(False)
_OPT_DO = _opt(True)


@functools.lru_cache(maxsize=64)
def _opts_for(max_udp: int) -> tuple[bytes, bytes]:
    """The OPT records (without DO, with DO) of a server whose UDP limit is ``max_udp``."""
    return (_opt(False, max_udp=max_udp), _opt(True, max_udp=max_udp))


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


@dataclass(frozen=True)
class StagedChange:
    """A ``ViewChange`` checked and rendered by ``Answerer.prepare``, for ``commit``."""

    head: ResolverView
    removed: tuple[bytes, ...]
    """Owner names (lower-case wire) that go."""
    owners: tuple[tuple[bytes, tuple[DnsRecord, ...], list[tuple[bytes, _Prepared]] | None], ...]
    """Each changed owner name: its records and their rendered replies (None at an apex)."""


class Answerer:
    """Answers queries for one ``ResolverView`` from replies rendered in advance."""

    def __init__(
        self,
        view: ResolverView,
        *,
        recursion_available: bool = True,
        previous: Answerer | None = None,
    ) -> None:
        """``previous``: the answerer this one replaces; the replies of names whose records
        did not change are taken from it instead of being rendered again, so a new whole
        view of a large environment costs what changed in it (and a walk over its names).
        ``changed`` makes the next answerer from a ``ViewChange`` without that walk."""
        self._view: ResolverView | None = view
        self._head = view.head
        self._ra = recursion_available
        self._apex = _name_wire(view.domain)
        self._reverse_apexes = frozenset(_name_wire(zone).lower() for zone in view.reverse_zones)
        self._ttl = view.ttl
        self._serial = view.serial
        self._table: dict[bytes, _Prepared] = {}
        """Question (lower-case name, type, class) -> its positive reply."""
        self._negative: dict[tuple[int, int, bool], _Prepared] = {}
        self._errors = {
            rcode: _Prepared(rcode, False, recursion_available, 0, 0, b"")
            for rcode in (FORMERR, SERVFAIL, NOTIMP, REFUSED)
        }
        self._records: dict[bytes, tuple[DnsRecord, ...]] = {}
        """Per owner name (lower-case wire), its records, the SOA aside."""
        self._rendered: dict[bytes, list[tuple[bytes, _Prepared]]] = {}
        """Per owner name, its positive entries of ``_table``."""
        self._below: dict[bytes, int] = {}
        """Per name that exists in one of the zones, how many owner names are it or below
        it (empty non-terminals exist while one is); every apex counts one more."""
        self._nodata: dict[bytes, tuple[int, bool]] = {}
        """Per existing name, its NODATA reply's key: where its zone's apex starts in it,
        and whether that zone is a reverse one (see ``_negative_reply``)."""
        reuse = (
            previous
            if previous is not None
            and previous._ttl == self._ttl
            and previous._ra == self._ra
            and previous._apex == self._apex
            and previous._reverse_apexes == self._reverse_apexes
            else None
        )
        for apex in (self._apex, *self._reverse_apexes):
            self._exist(apex, 1)  # an apex exists even in an empty view
        for owner, records in _by_owner(view.records, "records.type").items():
            self._set_owner(owner, tuple(records), reuse)
        self._render_apexes()

    def changed(self, change: ViewChange) -> Answerer:
        """The answerer of the view ``change`` makes of this one's: this one's tables,
        copied, with the changed owner names rendered again and the SOA at the new serial.
        Costs what changed, and a copy of the tables (this one keeps answering). A server
        whose queries are answered on one thread changes its answerer in place instead
        (``prepare``, then ``commit`` there), without the copy."""
        staged = self.prepare(change)
        new = object.__new__(Answerer)
        new._view = None
        new._head = change.head
        new._ra, new._apex, new._reverse_apexes = self._ra, self._apex, self._reverse_apexes
        new._ttl, new._serial = self._ttl, change.head.serial
        new._table = self._table.copy()
        new._negative = {}
        new._errors = self._errors
        new._records = self._records.copy()
        new._rendered = self._rendered.copy()
        new._below = self._below.copy()
        new._nodata = self._nodata.copy()
        new.commit(staged)
        return new

    def prepare(self, change: ViewChange) -> StagedChange:
        """``change`` checked against this answerer's view and its names rendered, with
        nothing of this answerer changed: what ``commit`` then puts in place. Raises
        ``InvalidField`` for a change of another view or a record that cannot be served."""
        if not change.applies_to(self._head):
            raise InvalidField(
                "change.base_serial",
                change.base_serial,
                f"the view served is serial {self._serial} of {self._head.env_id}",
            )
        owners = []
        for owner, found in _by_owner(change.records, "change.records.type", soa=False).items():
            records = tuple(found)
            # An apex is rendered with its SOA at commit (``_render_apexes``).
            entries = None if self._is_apex(owner) else self._entries(owner, records)
            owners.append((owner, records, entries))
        removed = tuple(_name_wire(name).lower() for name in change.removed)
        return StagedChange(change.head, removed, tuple(owners))

    def commit(self, staged: StagedChange) -> None:
        """Put a change ``prepare`` made of this answerer's view in place, in this answerer:
        costs the names it changes. It cannot fail half-way (everything that can be wrong
        was refused by ``prepare``). For a server that answers on one thread, called on that
        thread, between queries; one that answers on several uses ``changed``."""
        self._view = None
        self._head = staged.head
        self._serial = staged.head.serial
        self._negative = {}  # its replies carry the SOA, whose serial moved
        for owner in staged.removed:
            if owner in self._records:
                self._drop_owner(owner)
        for owner, records, entries in staged.owners:
            self._set_owner(owner, records, None, entries)
        self._render_apexes()

    @property
    def head(self) -> ResolverView:
        """The view answered, without its records: what a ``ViewChange`` is checked
        against."""
        return self._head

    @property
    def view(self) -> ResolverView:
        """The view answered (built from the tables when the answerer came of a change)."""
        view = self._view
        if view is None:
            head = self._head
            soa = DnsRecord(
                head.domain, "SOA", soa_value(head.domain, head.serial, head.ttl), head.ttl
            )
            records = [soa, *(r for rs in self._records.values() for r in rs)]
            view = replace(head, records=tuple(sorted(records, key=_record_order)))
            self._view = view
        return view

    # -- building ------------------------------------------------------------------------

    def _is_apex(self, owner: bytes) -> bool:
        return owner == self._apex or owner in self._reverse_apexes

    def _set_owner(
        self,
        owner: bytes,
        records: tuple[DnsRecord, ...],
        reuse: Answerer | None,
        entries: list[tuple[bytes, _Prepared]] | None = None,
    ) -> None:
        """Serve ``records`` (all of them) at ``owner``, instead of what it had; ``entries``:
        their replies, rendered already."""
        if owner in self._records:
            self._unrender(owner)
        else:
            self._exist(owner, 1)
        self._records[owner] = records
        if self._is_apex(owner):
            return  # ``_render_apexes`` renders it, with the SOA
        kept = entries
        if kept is None and reuse is not None and reuse._records.get(owner) == records:
            kept = reuse._rendered.get(owner)
        if kept is None:
            kept = self._entries(owner, records)
        self._rendered[owner] = kept
        self._table.update(kept)

    def _drop_owner(self, owner: bytes) -> None:
        self._unrender(owner)
        del self._records[owner]
        self._exist(owner, -1)
        if self._is_apex(owner):
            self._render_apex(owner)

    def _unrender(self, owner: bytes) -> None:
        for key, _ in self._rendered.pop(owner, ()):
            self._table.pop(key, None)

    def _render_apexes(self) -> None:
        for apex in (self._apex, *self._reverse_apexes):
            self._unrender(apex)
            self._render_apex(apex)

    def _render_apex(self, apex: bytes) -> None:
        soa = self._soa_rr(0) if apex == self._apex else self._reverse_soa_rr(0)
        entries = self._entries(apex, self._records.get(apex, ()), soa)
        self._rendered[apex] = entries
        self._table.update(entries)

    def _entries(
        self, owner: bytes, records: tuple[DnsRecord, ...], soa: bytes | None = None
    ) -> list[tuple[bytes, _Prepared]]:
        """The positive entries of ``owner``: one per type it has, and ANY."""
        answers: dict[int, list[bytes]] = {}
        for record in records:
            rtype = RECORD_TYPES[record.type]
            rr = _rr(b"\xc0\x0c", rtype, self._ttl, self._rdata(record, rtype))
            answers.setdefault(rtype, []).append(rr)
        if soa is not None:
            answers[TYPE_SOA] = [soa]
        entries = [
            (owner + struct.pack(">HH", rtype, CLASS_IN), self._positive(rrs))
            for rtype, rrs in answers.items()
        ]
        every = [rr for rtype in sorted(answers) for rr in answers[rtype]]
        if every:
            entries.append((owner + struct.pack(">HH", TYPE_ANY, CLASS_IN), self._positive(every)))
        return entries

    def _exist(self, owner: bytes, count: int) -> None:
        """Count ``owner`` in (1) or out (-1) of the names that exist: it and every name
        between it and its zone's apex (empty non-terminals)."""
        zone = self._zone_of(owner)
        if zone is None:
            return  # outside every zone: answered, but no NODATA or NXDOMAIN of ours
        apex_offset, reverse = zone
        below, nodata = self._below, self._nodata
        for position in _label_starts(owner, apex_offset):
            name = owner[position:]
            left = below.get(name, 0) + count
            if left > 0:
                below[name] = left
                nodata[name] = (apex_offset - position, reverse)
            else:
                below.pop(name, None)
                nodata.pop(name, None)

    def _positive(self, rrs: list[bytes]) -> _Prepared:
        return _Prepared(NOERROR, True, self._ra, len(rrs), 0, b"".join(rrs))

    def _negative_reply(self, rcode: int, apex_offset: int, reverse: bool = False) -> _Prepared:
        """NXDOMAIN or NODATA with the zone's SOA; shared by every name whose apex starts at
        the same offset, as the SOA's owner is a pointer to there in the question. Every
        reverse zone has the same SOA data, so one entry per offset serves them all."""
        key = (rcode, apex_offset, reverse)
        prepared = self._negative.get(key)
        if prepared is None:
            soa = self._reverse_soa_rr(apex_offset) if reverse else self._soa_rr(apex_offset)
            prepared = _Prepared(rcode, True, self._ra, 0, 1, soa)
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

    def _reverse_soa_rr(self, apex_offset: int) -> bytes:
        """The SOA of a reverse zone, its owner a pointer to the zone's apex in the question.
        The server names itself by the environment's domain, written out in full: the
        question holds no copy of it to point at."""
        rdata = (
            self._apex
            + bytes((len(HOSTMASTER),))
            + HOSTMASTER.encode()
            + self._apex
            + struct.pack(">IIIII", self._serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self._ttl)
        )
        return _rr(_pointer(12 + apex_offset), TYPE_SOA, self._ttl, rdata)

    def _zone_of(self, name: bytes) -> tuple[int, bool] | None:
        """Where the apex of ``name``'s zone starts in it, and whether the zone is a reverse
        one; ``None`` when the name is in none of the view's zones."""
        if self._in_domain(name):
            return (len(name) - len(self._apex), False)
        offset = self._reverse_offset(name)
        return None if offset < 0 else (offset, True)

    def _reverse_offset(self, name: bytes) -> int:
        """Where a reverse zone's apex starts in a lower-case wire name; -1 for none."""
        if not self._reverse_apexes or not name.endswith(_ARPA):
            return -1
        apexes = self._reverse_apexes
        position = 0
        while position < len(name) - 1:
            if name[position:] in apexes:
                return position
            position += name[position] + 1
        return -1

    def _in_domain(self, name: bytes) -> bool:
        """Whether a lower-case wire name is the apex or below it, on a label boundary."""
        if not name.endswith(self._apex):
            return False
        boundary = len(name) - len(self._apex)
        position = 0
        while position < boundary:
            position += name[position] + 1
        return position == boundary

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
        if end > _LAST_NAME_OCTET:
            return self._careful(query, transport, max_udp)  # over 255 octets: FORMERR
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
                return self._badvers(
                    query[:2], _flag_index(query), query[12:qend], opt[7] >= 0x80, max_udp
                )
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
        if qtype == TYPE_OPT:
            return self._errors[FORMERR]
        if qclass != CLASS_IN or qtype in (TYPE_AXFR, TYPE_IXFR):
            # No data in CH, HS or any other class, here or upstream, and no transfers:
            # a policy, so REFUSED, with the question echoed and AA clear.
            return self._errors[REFUSED]
        nodata = self._nodata.get(name)
        if nodata is not None:
            return self._negative_reply(NOERROR, *nodata)
        if self._in_domain(name):
            return self._negative_reply(NXDOMAIN, len(name) - len(self._apex))
        offset = self._reverse_offset(name)
        if offset >= 0:
            return self._negative_reply(NXDOMAIN, offset, reverse=True)
        return FORWARD

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
            if max_udp == DEFAULT_MAX_UDP:
                opt = _OPT_DO if do else _OPT_PLAIN
            else:
                opt = _opts_for(max_udp)[do]
            limit = max(MIN_UDP, min(payload, max_udp)) if transport is Transport.UDP else MAX_TCP
        body = prepared.body
        if 12 + len(question) + len(body) + len(opt) <= limit:
            return qid + prepared.headers[index] + question + body + opt
        # Too big: no partial RRset, so that no client mistakes part of a service's
        # instances for all of them. TC tells it to ask again over TCP.
        return qid + prepared.truncated[index] + question + opt

    def _badvers(self, qid: bytes, index: int, question: bytes, do: bool, max_udp: int) -> bytes:
        header = _header_variants(NOERROR, False, self._ra, False, 0, 0)[index | 4]
        return qid + header + question + _opt(do, ext_rcode=BADVERS >> 4, max_udp=max_udp)

    def _careful(self, query: bytes, transport: Transport, max_udp: int) -> bytes | Forward | None:
        """Every query the hot path declines: parsed by dnspython, or refused whole."""
        if len(query) < 12 or query[2] & _QR:
            return None  # not a query we can address a reply to, or a reply: never answer
        opcode = (query[2] >> 3) & 0x0F
        if opcode != 0:
            return notimp_reply(query)
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
            return self._badvers(query[:2], index, question, do, max_udp)
        key = name.lower() + tail
        prepared = self._table.get(key)
        if prepared is None:
            missed = self._miss(key, len(name))
            if isinstance(missed, Forward):
                return missed
            prepared = missed
        payload = message.payload if message.edns == 0 else -1
        return self._render(prepared, query[:2], index, question, transport, max_udp, payload, do)


def _by_owner(
    records: tuple[DnsRecord, ...], field: str, *, soa: bool = True
) -> dict[bytes, list[DnsRecord]]:
    """``records`` by owner name (lower-case wire), their types checked, the SOA left out
    (an answerer renders it from the view's domain, TTL and serial); ``soa=False`` refuses
    one, as a change never carries it."""
    grouped: dict[bytes, list[DnsRecord]] = defaultdict(list)
    allowed = "A, AAAA, PTR or SOA" if soa else "A, AAAA or PTR"
    for record in records:
        if record.type not in RECORD_TYPES or (record.type == "SOA" and not soa):
            raise InvalidField(field, record.type, f"must be {allowed}")
        if record.type != "SOA":
            grouped[_name_wire(record.name).lower()].append(record)
    return grouped


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


def _label_starts(name: bytes, last: int) -> list[int]:
    """The offsets of the labels of a wire name, from its first label up to ``last``."""
    starts = [0]
    position = 0
    while position < last:
        position += name[position] + 1
        starts.append(position)
    return starts


def notimp_reply(query: bytes) -> bytes | None:
    """NOTIMP for an opcode other than QUERY: the query's ID and opcode, and no flag at all.
    RD, like AA, RA, AD, CD and Z, is defined for QUERY only, so none is copied or set; ISC's
    DNS compliance tests (``genreport``, probes ``opcode`` and ``opcodeflg``) check exactly
    this. No question, no OPT: the message's format is that of an opcode not understood."""
    if len(query) < 12 or query[2] & _QR:
        return None
    return query[:2] + bytes((_QR | (query[2] & 0x78), NOTIMP)) + bytes(8)


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
