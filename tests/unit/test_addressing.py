"""Address plans: the ULA prefix, reserved addresses, and allocation."""

from __future__ import annotations

import ipaddress

import pytest

from railnet.core.addressing import (
    DEFAULT_IPV4_CIDR,
    AddressPlan,
    check_ipv4_cidr,
    ula_prefix,
)
from railnet.core.errors import InvalidField
from railnet.core.names import environment_id

pytestmark = pytest.mark.unit

ULA = ipaddress.IPv6Network("fd00::/8")


def plan(cidr: str | None = "10.250.0.0/16", env_id: str = "e1") -> AddressPlan:
    return AddressPlan(
        ipv4=None if cidr is None else ipaddress.IPv4Network(cidr), ipv6=ula_prefix(env_id)
    )


# -- the ULA prefix (RFC 4193) ---------------------------------------------------------------


def test_ula_prefix_is_a_slash_64_inside_fd00_slash_8() -> None:
    prefix = ula_prefix("e0123456789ab")
    assert prefix.prefixlen == 64
    assert prefix.subnet_of(ULA)
    assert prefix.network_address.packed[0] == 0xFD  # L bit set: locally assigned


def test_ula_prefix_is_deterministic_and_pinned() -> None:
    assert ula_prefix("eabc") == ula_prefix("eabc")
    # Pinned: changing the derivation would renumber every running environment.
    assert str(ula_prefix("e0123456789ab")) == "fd0f:525b:b4::/64"


def test_ula_prefix_differs_per_environment() -> None:
    ids = [environment_id("shop", f"env{i}") for i in range(200)]
    prefixes = {ula_prefix(i) for i in ids}
    assert len(prefixes) == len(ids)
    # The 40-bit global id is random-looking, not a counter: not all share a first byte.
    assert len({p.network_address.packed[1] for p in prefixes}) > 50


def test_ula_global_id_is_40_bits_and_subnet_id_is_zero() -> None:
    packed = ula_prefix("eabc").network_address.packed
    assert packed[1:6] != bytes(5)
    assert packed[6:8] == b"\x00\x00"  # subnet id
    assert packed[8:] == bytes(8)  # the /64's network address


# -- reserved addresses ----------------------------------------------------------------------


def test_gateway_and_resolver_are_the_first_hosts() -> None:
    p = plan("10.250.0.0/16")
    base6 = p.ipv6.network_address
    assert str(p.gateway4) == "10.250.0.1"
    assert str(p.resolver4) == "10.250.0.2"
    assert p.gateway6 == base6 + 1
    assert p.resolver6 == base6 + 2


@pytest.mark.parametrize(
    "address", ["10.250.0.0", "10.250.0.1", "10.250.0.2", "10.250.255.255", "10.251.0.3"]
)
def test_reserved_or_foreign_ipv4_is_not_assignable(address: str) -> None:
    assert not plan().is_assignable(ipaddress.IPv4Address(address))


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_reserved_ipv6_is_not_assignable(offset: int) -> None:
    p = plan()
    assert not p.is_assignable(p.ipv6.network_address + offset)


def test_foreign_ipv6_is_not_assignable() -> None:
    assert not plan(env_id="e1").is_assignable(ula_prefix("e2").network_address + 3)


def test_first_free_hosts_are_assignable() -> None:
    p = plan()
    assert p.is_assignable(ipaddress.IPv4Address("10.250.0.3"))
    assert p.is_assignable(ipaddress.IPv4Address("10.250.255.254"))
    assert p.is_assignable(p.ipv6.network_address + 3)
    # The IPv6 /64 has no broadcast: its last address is a host.
    assert p.is_assignable(p.ipv6.broadcast_address)


def test_ipv6_only_plan_assigns_no_ipv4() -> None:
    p = plan(None)
    assert p.gateway4 is None and p.resolver4 is None
    assert not p.is_assignable(ipaddress.IPv4Address("10.250.0.3"))
    assert p.is_assignable(p.ipv6.network_address + 3)


# -- allocation -----------------------------------------------------------------------------


def test_allocate_starts_after_the_reserved_hosts_in_pairs() -> None:
    p = plan()
    base6 = p.ipv6.network_address
    assert p.allocate([], 3) == [
        ("10.250.0.3", str(base6 + 3)),
        ("10.250.0.4", str(base6 + 4)),
        ("10.250.0.5", str(base6 + 5)),
    ]


def test_allocate_zero_is_empty() -> None:
    assert plan().allocate([], 0) == []


def test_allocate_avoids_used_addresses_of_either_family() -> None:
    p = plan()
    base6 = p.ipv6.network_address
    used = ["10.250.0.3", str(base6 + 4), "10.250.0.6"]
    got = p.allocate(used, 3)
    assert got == [
        ("10.250.0.5", str(base6 + 5)),
        ("10.250.0.7", str(base6 + 7)),
        ("10.250.0.8", str(base6 + 8)),
    ]
    flat = {a for pair in got for a in pair if a}
    assert not flat & set(used)


def test_allocate_in_ipv6_only_mode_returns_no_ipv4() -> None:
    p = plan(None)
    got = p.allocate([str(p.ipv6.network_address + 3)], 2)
    assert got == [
        (None, str(p.ipv6.network_address + 4)),
        (None, str(p.ipv6.network_address + 5)),
    ]


def test_allocate_never_hands_out_the_broadcast_and_says_when_full() -> None:
    p = plan("10.250.0.0/28")  # 16 addresses: network, gateway, resolver, broadcast
    pairs = p.allocate([], 12)
    v4 = [a for a, _ in pairs]
    assert v4[0] == "10.250.0.3" and v4[-1] == "10.250.0.14"
    with pytest.raises(InvalidField) as caught:
        p.allocate([], 13)
    assert caught.value.field == "ipv4_cidr"
    assert "larger" in str(caught.value)


def test_allocated_addresses_are_all_assignable() -> None:
    p = plan("10.0.0.0/24")
    for v4, v6 in p.allocate([], 100):
        assert v4 is not None
        assert p.is_assignable(ipaddress.ip_address(v4))
        assert p.is_assignable(ipaddress.ip_address(v6))


# -- the IPv4 CIDR ----------------------------------------------------------------------------


def test_default_cidr_is_acceptable() -> None:
    assert str(check_ipv4_cidr("ipv4_cidr", DEFAULT_IPV4_CIDR)) == DEFAULT_IPV4_CIDR


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/12", "192.168.7.0/24", "10.9.0.0/28"])
def test_private_cidrs_are_accepted(cidr: str) -> None:
    assert str(check_ipv4_cidr("ipv4_cidr", cidr)) == cidr


@pytest.mark.parametrize(
    "cidr",
    ["8.8.8.0/24", "10.0.0.0/29", "10.0.0.1/24", "fd00::/64", "nonsense", "", 10],
)
def test_bad_cidrs_are_refused_naming_the_field(cidr: object) -> None:
    with pytest.raises(InvalidField) as caught:
        check_ipv4_cidr("spec.ipv4_cidr", cidr)
    assert caught.value.field == "spec.ipv4_cidr"
    assert caught.value.value == cidr
    assert "spec.ipv4_cidr" in str(caught.value)
