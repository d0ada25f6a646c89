"""Address plans of an environment.

Environments never route to each other, so each one is its own address domain: every
environment may use the same IPv4 CIDR. The IPv6 prefix is a ULA /64 (RFC 4193) whose
40-bit global id is derived from the environment id, so it is stable and distinct per
environment without coordination.

Reserved in every environment:

* the first IPv4 host: the gateway on every instance's veth (IPv6 uses the link-local
  ``fe80::1`` there; ``<prefix>::1`` stays reserved);
* the second IPv4 host and ``<prefix>::2``: the environment's DNS resolver.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from railnet.core.errors import InvalidField

DEFAULT_IPV4_CIDR = "10.250.0.0/16"
RESERVED_HOSTS = 2
LINK_LOCAL_GATEWAY6 = "fe80::1"


ADDRESS_CACHE = 1 << 17
"""Parsed addresses kept (``parse_address``): every address of a few large environments.
Each deploy and apply reads every address of its document again, and parsing them (the
IPv6 ones above all) was most of what reading a large document cost."""


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(text)``, remembered (the objects are immutable)."""
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def canonical_address(text: str) -> str:
    """The address in its one written form (``str`` of the parsed address); ValueError
    for text that is not an address."""
    return str(parse_address(text))


def ula_prefix(env_id: str) -> ipaddress.IPv6Network:
    global_id = hashlib.sha256(f"ula\0{env_id}".encode()).digest()[:5]
    packed = bytes([0xFD]) + global_id + bytes(10)
    return ipaddress.IPv6Network((packed, 64))


def check_ipv4_cidr(field: str, value: object) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise InvalidField(field, value, f"is not an IPv4 network ({exc})") from None
    if not isinstance(value, str):
        raise InvalidField(field, value, "must be a string such as 10.250.0.0/16")
    if network.prefixlen > 28:
        raise InvalidField(field, value, "must be a /28 or larger")
    if not network.is_private:
        raise InvalidField(field, value, "must be a private range (RFC 1918 or similar)")
    return network


@dataclass(frozen=True)
class AddressPlan:
    """The reserved and assignable addresses of one environment."""

    ipv4: ipaddress.IPv4Network | None
    """The IPv4 CIDR; ``None`` in IPv6-only environments."""
    ipv6: ipaddress.IPv6Network
    """The ULA /64."""

    @property
    def gateway4(self) -> ipaddress.IPv4Address | None:
        return None if self.ipv4 is None else self.ipv4.network_address + 1

    @property
    def resolver4(self) -> ipaddress.IPv4Address | None:
        return None if self.ipv4 is None else self.ipv4.network_address + 2

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        return self.ipv6.network_address + 1

    @property
    def resolver6(self) -> ipaddress.IPv6Address:
        return self.ipv6.network_address + 2

    def is_assignable(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        network = self.ipv4 if address.version == 4 else self.ipv6
        if network is None or address not in network:
            return False
        offset = int(address) - int(network.network_address)
        if offset <= RESERVED_HOSTS:
            return False
        return not (address.version == 4 and address == network.broadcast_address)

    def allocate_ipv4(self, used: Iterable[str], count: int) -> list[str]:
        """``count`` fresh IPv4 addresses, lowest first, avoiding ``used``."""
        if self.ipv4 is None:
            raise InvalidField("ipv4_cidr", None, "an IPv6-only environment has no IPv4 range")
        taken = {parse_address(a) for a in used}
        found: list[str] = []
        candidate = self.ipv4.network_address + RESERVED_HOSTS + 1
        while len(found) < count:
            if candidate not in self.ipv4 or candidate == self.ipv4.broadcast_address:
                raise InvalidField(
                    "ipv4_cidr", str(self.ipv4), "has no free address left; use a larger CIDR"
                )
            if candidate not in taken:
                found.append(str(candidate))
            candidate += 1
        return found

    def allocate(self, used: Iterable[str], count: int) -> list[tuple[str | None, str]]:
        """``count`` fresh (IPv4, IPv6) pairs, lowest first, avoiding ``used``."""
        # One set serves both families: an IPv4 address is below 2**32, one of the ULA
        # prefix far above it.
        taken = {int(parse_address(a)) for a in used}
        base6 = int(self.ipv6.network_address)
        base4 = None if self.ipv4 is None else int(self.ipv4.network_address)
        last4 = None if self.ipv4 is None else int(self.ipv4.broadcast_address) - 1
        pairs: list[tuple[str | None, str]] = []
        offset = RESERVED_HOSTS + 1
        while len(pairs) < count:
            if base4 is not None and last4 is not None and base4 + offset > last4:
                raise InvalidField(
                    "ipv4_cidr", str(self.ipv4), "has no free address left; use a larger CIDR"
                )
            v6 = base6 + offset
            v4 = None if base4 is None else base4 + offset
            if v6 not in taken and (v4 is None or v4 not in taken):
                pairs.append(
                    (
                        None if v4 is None else str(ipaddress.IPv4Address(v4)),
                        str(ipaddress.IPv6Address(v6)),
                    )
                )
            offset += 1
        return pairs
