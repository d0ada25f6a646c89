"""The agent's reads of one link are filtered in the kernel.

In an environment namespace that holds many veths, a read of one link's addresses or of
the routes over one link must cost what that link holds: the dump request carries the
link, and the strict-checking socket of ``railnet.linux.netns.netlink`` makes the kernel
send only its entries. Here the kernel's answer is counted before any filter of ours.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from railnet.agent.linux_network import _addresses, _everything, _routes_via
from railnet.linux.netns import create_netns, delete_netns, netlink

pytestmark = pytest.mark.linux

PAIRS = 40


@pytest.fixture
def crowded() -> Iterator[tuple[str, int, int]]:
    """A namespace with PAIRS veth pairs, each end with an address and a route over it;
    yields (namespace, lo's index, the last veth's index)."""
    name = f"rnft{secrets.token_hex(3)}"
    create_netns(name)
    try:

        def build(ns: Any) -> tuple[int, int]:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            ns.addr("add", index=lo, address="10.99.0.2", prefixlen=32)
            last = 0
            for k in range(PAIRS):
                ns.link("add", ifname=f"fa{k}", kind="veth", peer={"ifname": f"fb{k}"})
                for end in (f"fa{k}", f"fb{k}"):
                    ns.link("set", index=ns.link_lookup(ifname=end)[0], state="up")
                last = ns.link_lookup(ifname=f"fa{k}")[0]
                ns.addr("add", index=last, address=f"10.98.{k}.1", prefixlen=32)
                ns.route("add", dst=f"10.97.{k}.1/32", oif=last)
                ns.route("add", dst=f"fd00:97::{k + 1}/128", oif=last, family=socket.AF_INET6)
            return lo, last

        lo, last = netlink(name, build)
        yield name, lo, last
    finally:
        delete_netns(name)


def test_one_links_addresses_come_filtered_from_the_kernel(
    crowded: tuple[str, int, int],
) -> None:
    name, lo, _ = crowded
    sent = netlink(name, lambda ns: list(ns.addr("dump", index=lo, dump_filter=_everything)))
    assert {m["index"] for m in sent} == {lo}, "the kernel sent other links' addresses"
    assert netlink(name, lambda ns: _addresses(ns, lo)) == {"127.0.0.1", "::1", "10.99.0.2"}


def test_the_routes_over_one_link_come_filtered_from_the_kernel(
    crowded: tuple[str, int, int],
) -> None:
    name, _, last = crowded

    def sent(ns: Any) -> list[Any]:
        return [
            r
            for family in (socket.AF_INET, socket.AF_INET6)
            for r in ns.route("dump", family=family, table=254, oif=last, dump_filter=_everything)
        ]

    oifs = {r.get_attr("RTA_OIF") for r in netlink(name, sent)}
    assert oifs == {last}, "the kernel sent routes over other links"
    routes = netlink(name, lambda ns: _routes_via(ns, last))
    k = PAIRS - 1
    assert {(dst, length) for dst, length, _ in routes} >= {
        (f"10.97.{k}.1", 32),
        (f"fd00:97::{k + 1}", 128),
    }
    assert all(oif == last for _, _, oif in routes)
