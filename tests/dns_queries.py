"""Random DNS queries for property tests: names of a view and around it, in random letter
case, with random types, classes, header flags and EDNS."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rdataclass
from hypothesis import strategies as st

from railnet.core.addressing import ula_prefix

DOMAIN = "railway.internal"


def _names(env_id: str) -> list[str]:
    prefix = ula_prefix(env_id).network_address
    return [
        f"api.{DOMAIN}",
        f"0.api.{DOMAIN}",
        f"1.api.{DOMAIN}",
        f"9.api.{DOMAIN}",
        f"db.{DOMAIN}",
        f"big.{DOMAIN}",
        f"ghost.{DOMAIN}",
        f"x.y.ghost.{DOMAIN}",
        DOMAIN,
        "internal",
        "3.0.250.10.in-addr.arpa",
        "99.0.250.10.in-addr.arpa",
        "250.10.in-addr.arpa",
        "0.250.10.in-addr.arpa",
        (prefix + 3).reverse_pointer,
        (prefix + 999).reverse_pointer,
        "www.example.com",
        "version.bind",
    ]


def _recase(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def queries(draw: st.DrawFn, env_id: str = "e1") -> bytes:
    """Wire bytes of one query: mostly well formed, sometimes with a name over 255 octets."""
    qid = draw(st.integers(0, 0xFFFF))
    rdtype = draw(st.sampled_from([1, 28, 12, 6, 255, 15, 16, 252, 251, 41, 99, 65280]))
    rdclass = draw(st.sampled_from([1, 1, 1, 1, 3, 4, 254, 255]))
    if draw(st.integers(0, 19)) == 0:  # over 255 octets: FORMERR
        labels = [_recase(draw, "a" * 63)] * 5
        name = b"".join(bytes((len(label),)) + label.encode() for label in labels) + b"\x00"
        header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        return header + name + struct.pack(">HH", rdtype, rdclass)
    name = _recase(draw, draw(st.sampled_from(_names(env_id))))
    edns = draw(st.sampled_from([-1, -1, 0, 0, 1]))
    options = []
    if edns >= 0 and draw(st.booleans()):
        options.append(dns.edns.GenericOption(10, draw(st.binary(min_size=8, max_size=8))))
    query = dns.message.make_query(
        name,
        rdtype,
        rdclass=dns.rdataclass.RdataClass(rdclass),
        use_edns=edns,
        payload=draw(st.sampled_from([512, 1232, 1400, 4096, 600])),
        want_dnssec=edns >= 0 and draw(st.booleans()),
        options=options or None,
    )
    query.id = qid
    flags = dns.flags.Flag(0)
    for flag in (dns.flags.RD, dns.flags.CD, dns.flags.AD):
        if draw(st.booleans()):
            flags |= flag
    query.flags = flags
    return query.to_wire()
