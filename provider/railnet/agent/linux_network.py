"""Namespaces, veth pairs, addresses and routes with pyroute2.

Layout per environment on a node (see docs/architecture.md):

* the environment namespace holds ``wg0``, the resolver addresses on ``lo``, one veth end
  per local instance (with the gateway addresses), a /32 or /128 route to each local
  instance over its veth, and the environment's whole ranges over ``wg0``;
* each instance namespace holds ``eth0`` with its /32 and /128 and default routes to the
  gateway, nothing else. There is no route to the host, the underlay or another
  environment: isolation is structural.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import NetlinkError

from railnet.agent.backends import NetworkBackend
from railnet.agent.dns import STUB_ATTEMPTS, STUB_TIMEOUT
from railnet.core.errors import DataPlaneError
from railnet.core.local import InstancePlacement, LocalEnvironment
from railnet.core.names import MESH_MTU, WG_LINK, veth_ifname
from railnet.core.reconcile import ObservedInstance
from railnet.linux.files import write_atomic
from railnet.linux.netns import (
    create_netns,
    delete_netns,
    list_netns,
    netlink,
    netns_exists,
    netns_fd,
    read_sysctl,
    write_sysctls,
)

ETC_NETNS = Path("/etc/netns")
LOOPBACK = {"127.0.0.1", "::1"}
ENV_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_dad": "0",
}
INSTANCE_SYSCTLS = {
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_ra": "0",
}


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _prefixlen(address: str) -> int:
    return 128 if ":" in address else 32


def _everything(message: Any) -> bool:
    return True


def _addresses(ns: Any, index: int) -> set[str]:
    """One link's addresses. The index goes into the dump request, where the kernel filters
    by it (a strict-checking socket, see ``railnet.linux.netns.netlink``): pyroute2's own
    filter would read and parse every address of the namespace first. The check here keeps
    it right on a socket without strict checking."""
    return {
        a.get_attr("IFA_ADDRESS")
        for a in ns.addr("dump", index=index, dump_filter=_everything)
        if a["index"] == index
    }


def _routes(ns: Any, family: int) -> set[tuple[str, int, int]]:
    found = set()
    for r in ns.get_routes(family=family, table=254):
        dst = r.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        found.add((dst, r["dst_len"], r.get_attr("RTA_OIF") or 0))
    return found


def _routes_via(ns: Any, oif: int) -> set[tuple[str, int, int]]:
    """The main table's routes over one link (both families)."""
    found = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        # Filtered in the kernel, as ``_addresses`` is: table and link go into the request.
        for r in ns.route("dump", family=family, table=254, oif=oif, dump_filter=_everything):
            if (r.get_attr("RTA_OIF") or 0) != oif or (
                r.get_attr("RTA_TABLE") or r["table"]
            ) != 254:
                continue
            dst = r.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
            found.add((dst, r["dst_len"], oif))
    return found


RTM_F_FIB_MATCH = 0x2000
"""Asks ``route get`` for the routing table entry that matches, prefix length included,
instead of the route the kernel would build for that one destination."""


def _route_to(ns: Any, address: str) -> tuple[str, int, int] | None:
    """The main table's entry that routes ``address``: (destination, length, link index);
    one request, where a dump with a filter reads every route and drops the others."""
    try:
        found = ns.route("get", dst=address, flags=RTM_F_FIB_MATCH)
    except NetlinkError:
        return None  # unreachable: no entry
    for r in found:
        if (r.get_attr("RTA_TABLE") or r["table"]) != 254:
            continue
        family = r["family"]
        dst = r.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        return (dst, r["dst_len"], r.get_attr("RTA_OIF") or 0)
    return None


def _link(ns: Any, ifname: str) -> Any | None:
    """One link by name (a single request, not a dump); None when there is none."""
    try:
        found = ns.link("get", ifname=ifname)
    except NetlinkError:
        return None
    return found[0] if found else None


def _link_index(ns: Any, ifname: str) -> int | None:
    found = ns.link_lookup(ifname=ifname)
    return found[0] if found else None


def _require_link(ns: Any, ifname: str, where: str) -> int:
    index = _link_index(ns, ifname)
    if index is None:
        raise DataPlaneError(f"{ifname} is missing in namespace {where}")
    return index


def _is_up(ns: Any, index: int) -> bool:
    link = ns.get_links(index)[0]
    return bool(link["flags"] & 1)


class LinuxNetwork(NetworkBackend):
    """The real thing: named namespaces under /var/run/netns."""

    def observe(
        self,
        env: LocalEnvironment,
        deep: bool | frozenset[str] = True,
        only: frozenset[str] | None = None,
    ) -> tuple[bool, bool, tuple[ObservedInstance, ...]]:
        if only is None:
            names = set(list_netns())
            mine = sorted(n for n in names if n.startswith(env.netns + "-"))
            exists = env.netns in names
        else:
            # One look per namespace asked about: the node's list of namespaces holds every
            # instance of every environment.
            mine = sorted(n for n in only if n.startswith(env.netns + "-") and netns_exists(n))
            exists = netns_exists(env.netns)
        if not exists:
            # Instance namespaces outlive it, their veths do not: they are to be rewired.
            return False, False, tuple(ObservedInstance(n, frozenset(), False, None) for n in mine)
        wanted_veth = {i.netns: i for i in env.instances}

        def look(ns: Any) -> tuple[Any, ...]:
            links = {link.get_attr("IFLA_IFNAME"): link for link in ns.get_links()}
            addresses: dict[int, set[str]] = {}
            for a in ns.get_addr():
                addresses.setdefault(a["index"], set()).add(a.get_attr("IFA_ADDRESS"))
            routes = _routes(ns, socket.AF_INET) | _routes(ns, socket.AF_INET6)
            return links, addresses, routes, _source_guards(ns)

        def look_at_some(ns: Any) -> tuple[Any, ...]:
            # Requests for the links asked about, not dumps of all: what an apply reads
            # grows with the change, not with the instances the node hosts.
            veths = [wanted_veth[n].veth for n in mine if n in wanted_veth]
            links = {
                name: link
                for name in ("lo", WG_LINK, *veths)
                if (link := _link(ns, name)) is not None
            }
            addresses: dict[int, set[str]] = {}
            if "lo" in links:
                lo = links["lo"]["index"]
                addresses[lo] = _addresses(ns, lo)
            # The environment's ranges over wg0: one matching-entry request each (a stray
            # route over wg0 is for the full look of start-up and repairs).
            routes: set[tuple[str, int, int]] = set()
            for cidr in (env.ipv4_cidr, env.ipv6_prefix):
                if cidr and (entry := _route_to(ns, cidr.split("/")[0])) is not None:
                    routes.add(entry)
            # An instance that exists and changes (a readdress, rare): every route over its
            # veth, old addresses included.
            for veth in veths:
                if veth in links:
                    routes |= _routes_via(ns, links[veth]["index"])
            # Guards matter for instances that exist and stay (a readdress): rare.
            guards = _source_guards(ns) if veths else {}
            return links, addresses, routes, guards

        links, addresses, routes, guards = netlink(
            env.netns, look if only is None else look_at_some
        )
        base = self._base_ready(env, links, addresses, routes)
        if base:
            base = read_sysctl(env.netns, "net.ipv4.ip_forward") == "1"
        found: list[ObservedInstance] = []
        for name in mine:
            placement = wanted_veth.get(name)
            veth = links.get(placement.veth) if placement else None
            # The environment's side of the wiring: the veth (whose other end lives in the
            # instance namespace, so it vanishes with it) up, with the instance's routes.
            routed = frozenset(
                dst
                for dst, length, oif in routes
                if veth is not None and oif == veth["index"] and length in (32, 128)
            )
            outside = veth is not None and bool(veth["flags"] & 1)
            guard = guards.get(placement.veth) if placement else None
            if deep is True or (not isinstance(deep, bool) and name in deep):
                inside, linked = self._observe_instance(name)
                found.append(
                    ObservedInstance(
                        netns=name,
                        addresses=inside,
                        linked=linked and outside and inside <= routed,
                        guard=guard,
                    )
                )
            else:
                # An apply trusts the inside of instances it built; start-up and the
                # periodic repair look inside every one (deep), a repair after events
                # inside those the events came from.
                found.append(
                    ObservedInstance(netns=name, addresses=routed, linked=outside, guard=guard)
                )
        return True, base, tuple(found)

    @staticmethod
    def _base_ready(
        env: LocalEnvironment,
        links: dict[str, Any],
        addresses: dict[int, set[str]],
        routes: set[tuple[str, int, int]],
    ) -> bool:
        wg, lo = links.get(WG_LINK), links.get("lo")
        if wg is None or lo is None or not wg["flags"] & 1 or not lo["flags"] & 1:
            return False
        if addresses.get(lo["index"], set()) - LOOPBACK != set(env.resolvers):
            return False
        meshed = {f"{dst}/{length}" for dst, length, oif in routes if oif == wg["index"]}
        return meshed == {c for c in (env.ipv6_prefix, env.ipv4_cidr) if c}

    @staticmethod
    def _observe_instance(name: str) -> tuple[frozenset[str], bool]:

        def look(ns: Any) -> tuple[frozenset[str], bool]:
            eth0 = _link_index(ns, "eth0")
            if eth0 is None:
                return frozenset(), False
            addrs = frozenset(a for a in _addresses(ns, eth0) if not a.startswith("fe80:"))
            defaults = {
                (dst, length)
                for family in (socket.AF_INET, socket.AF_INET6)
                for dst, length, _ in _routes(ns, family)
                if length == 0
            }
            wanted_defaults = {("::", 0)} | (
                {("0.0.0.0", 0)} if any(":" not in a for a in addrs) else set()
            )
            return addrs, _is_up(ns, eth0) and wanted_defaults <= defaults

        try:
            return netlink(name, look)
        except (NetlinkError, OSError, DataPlaneError):
            return frozenset(), False

    def create_namespace(self, name: str) -> None:
        if not netns_exists(name):
            create_netns(name)
        netlink(name, lambda ns: ns.link("set", index=_link_index(ns, "lo"), state="up"))

    def configure_namespace(self, env: LocalEnvironment) -> None:
        write_sysctls(env.netns, ENV_SYSCTLS)

        def configure(ns: Any) -> None:
            lo = _require_link(ns, "lo", env.netns)
            ns.link("set", index=lo, state="up")
            have = _addresses(ns, lo) - LOOPBACK
            for address in sorted(have - set(env.resolvers)):  # e.g. after a switch to IPv6
                ns.addr("del", index=lo, address=address, prefixlen=_prefixlen(address))
            for address in env.resolvers:
                if address not in have:
                    ns.addr("add", index=lo, address=address, prefixlen=_prefixlen(address))
            wg = _require_link(ns, WG_LINK, env.netns)
            ns.link("set", index=wg, state="up")
            wanted = {c for c in (env.ipv4_cidr, env.ipv6_prefix) if c}
            for family in (socket.AF_INET, socket.AF_INET6):
                for dst, length, oif in _routes(ns, family):
                    if oif == wg and f"{dst}/{length}" not in wanted:
                        ns.route("del", dst=f"{dst}/{length}", oif=wg, family=family)
            for cidr in sorted(wanted):
                ns.route("replace", dst=cidr, oif=wg)

        netlink(env.netns, configure)

    def create_instance(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        if netns_exists(instance.netns):
            # Never removed to be made again: its processes would keep the old one.
            self.rewire_instance(env, instance)
            return
        create_netns(instance.netns)
        try:
            self._wire(env, instance)
        except Exception as exc:
            self.remove_instance(instance.netns)  # only the one made just now
            raise DataPlaneError(
                f"cannot build instance {instance.service}#{instance.index} "
                f"in {instance.netns}: {exc}"
            ) from exc

    def rewire_instance(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        try:
            self._wire(env, instance)
        except (NetlinkError, OSError, DataPlaneError) as exc:
            raise DataPlaneError(
                f"cannot rewire instance {instance.service}#{instance.index} "
                f"in {instance.netns}: {exc}"
            ) from exc

    def _wire(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        """Make an existing instance namespace's wiring exactly what ``instance`` says,
        adding what is missing and leaving what is right alone: the veth pair (made again
        only when either end is gone), its addresses, routes, source guard, sysctls and
        resolv.conf. Processes in the namespace keep running and find their network back."""

        def has(ifname: str) -> Callable[[Any], bool]:
            return lambda ns: _link_index(ns, ifname) is not None

        def drop(ifname: str) -> Callable[[Any], None]:
            def work(ns: Any) -> None:
                index = _link_index(ns, ifname)
                if index is not None:
                    ns.link("del", index=index)

            return work

        made: list[bool] = []  # whether outside() made the veth just now

        def outside(ens: Any) -> None:
            veth = _link_index(ens, instance.veth)
            made.append(veth is None)
            if veth is None:
                fd = netns_fd(instance.netns)
                try:
                    ens.link(
                        "add",
                        ifname=instance.veth,
                        kind="veth",
                        mtu=MESH_MTU,
                        peer={"ifname": "eth0", "net_ns_fd": fd, "mtu": MESH_MTU},
                    )
                finally:
                    os.close(fd)
                veth = _require_link(ens, instance.veth, env.netns)
            ens.link("set", index=veth, state="up", mtu=MESH_MTU)
            have = _addresses(ens, veth)
            gateways = {(env.gateway6, 64)} | ({(env.gateway4, 32)} if env.gateway4 else set())
            for address, length in sorted(gateways):
                if address not in have:
                    ens.addr("add", index=veth, address=address, prefixlen=length)

        def routes(ens: Any) -> None:
            veth = _require_link(ens, instance.veth, env.netns)
            for address in sorted(instance.addresses):
                ens.route("replace", dst=f"{address}/{_prefixlen(address)}", oif=veth)
            for dst, length, _ in _routes_via(ens, veth):
                if length in (32, 128) and dst not in instance.addresses:
                    ens.route("del", dst=f"{dst}/{length}", oif=veth, family=_family(dst))
            _guard_sources(ens, instance.veth, instance.addresses, fresh=made[-1])

        def inside(ins: Any) -> None:
            ins.link("set", index=_require_link(ins, "lo", instance.netns), state="up")
            eth0 = _require_link(ins, "eth0", instance.netns)
            ins.link("set", index=eth0, state="up")
            have = {a for a in _addresses(ins, eth0) if not a.startswith("fe80:")}
            for address in sorted(have - instance.addresses):
                ins.addr("del", index=eth0, address=address, prefixlen=_prefixlen(address))
            for address in sorted(instance.addresses - have):
                ins.addr("add", index=eth0, address=address, prefixlen=_prefixlen(address))
            if instance.ipv4 and env.gateway4:
                ins.route("replace", dst=f"{env.gateway4}/32", oif=eth0, scope=253)
                ins.route("replace", dst="0.0.0.0/0", gateway=env.gateway4, oif=eth0)
            ins.route("replace", dst="::/0", gateway=env.gateway6, oif=eth0, family=socket.AF_INET6)

        write_sysctls(instance.netns, INSTANCE_SYSCTLS)
        if not (netlink(env.netns, has(instance.veth)) and netlink(instance.netns, has("eth0"))):
            # Half a pair is no pair: the veth left pointing into an instance namespace that
            # was deleted while a process held it, or an eth0 of someone else's.
            netlink(env.netns, drop(instance.veth))
            netlink(instance.netns, drop("eth0"))
        # The instance holds its addresses before anything is routed to it: a packet that
        # came first would start ARP for an address nobody has yet, and ARP asks again only
        # after a second (retrans_time_ms), which traffic would wait for.
        netlink(env.netns, outside)
        netlink(instance.netns, inside)
        netlink(env.netns, routes)
        self._write_resolv_conf(env, instance.netns)

    def readdress_instance(
        self,
        env: LocalEnvironment,
        instance: InstancePlacement,
        removed: tuple[str, ...],
        added: tuple[str, ...],
    ) -> None:
        def outside(ens: Any) -> None:
            veth = _require_link(ens, instance.veth, env.netns)
            for address in removed:
                ens.route("del", dst=f"{address}/{_prefixlen(address)}", oif=veth)
            for address in added:
                ens.route("replace", dst=f"{address}/{_prefixlen(address)}", oif=veth)
            gateways = {a for a in _addresses(ens, veth) if ":" not in a}
            for address in sorted(gateways - ({env.gateway4} if env.gateway4 else set())):
                ens.addr("del", index=veth, address=address, prefixlen=32)
            if env.gateway4 and env.gateway4 not in gateways:
                ens.addr("add", index=veth, address=env.gateway4, prefixlen=32)
            _guard_sources(ens, instance.veth, instance.addresses)

        def inside(ins: Any) -> None:
            eth0 = _require_link(ins, "eth0", instance.netns)
            for address in removed:
                ins.addr("del", index=eth0, address=address, prefixlen=_prefixlen(address))
            have = _addresses(ins, eth0)
            for address in added:
                if address not in have:  # only its route was gone (seen from outside)
                    ins.addr("add", index=eth0, address=address, prefixlen=_prefixlen(address))
            gateway = env.gateway4 if instance.ipv4 else None
            if gateway:
                # replace: the default route moves to the new gateway in one step
                ins.route("replace", dst=f"{gateway}/32", oif=eth0, scope=253)
                ins.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=eth0)
            for dst, length, _ in _routes(ins, socket.AF_INET):
                if gateway is None or (length == 32 and dst != gateway):
                    ins.route("del", dst=f"{dst}/{length}", oif=eth0, family=socket.AF_INET)

        try:
            netlink(env.netns, outside)
            netlink(instance.netns, inside)
            self._write_resolv_conf(env, instance.netns)
        except (NetlinkError, OSError) as exc:
            raise DataPlaneError(
                f"cannot readdress instance {instance.service}#{instance.index} "
                f"in {instance.netns}: {exc}"
            ) from exc

    @staticmethod
    def _write_resolv_conf(env: LocalEnvironment, name: str) -> None:
        directory = ETC_NETNS / name
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"nameserver {a}" for a in env.resolvers]
        # One try outlasts the forwarding budget, so libc hears every SERVFAIL instead of
        # sending the question again while it is still being forwarded (docs/dns.md).
        lines += [
            f"search {env.domain}",
            f"options timeout:{STUB_TIMEOUT} attempts:{STUB_ATTEMPTS}",
        ]
        write_atomic(directory / "resolv.conf", ("\n".join(lines) + "\n").encode(), durable=False)

    def guard_sources(self, env: LocalEnvironment, instance: InstancePlacement) -> None:
        try:
            netlink(env.netns, lambda ens: _guard_sources(ens, instance.veth, instance.addresses))
        except (NetlinkError, OSError) as exc:
            raise DataPlaneError(
                f"cannot guard the sources of instance {instance.service}#{instance.index} "
                f"in {env.netns}: {exc}"
            ) from exc

    def remove_instance(self, name: str) -> None:
        self._drop_guards_of(name)
        delete_netns(name)
        shutil.rmtree(ETC_NETNS / name, ignore_errors=True)

    @staticmethod
    def _drop_guards_of(name: str) -> None:
        """The instance's guard rules in its environment namespace go with it: a later
        namesake then starts from none (see ``_guard_sources``, ``fresh``)."""
        try:
            head, env_id, service_id, index = name.rsplit("-", 3)
            veth = veth_ifname(env_id, service_id, int(index))
        except ValueError:
            return
        env_netns = f"{head}-{env_id}"
        if not netns_exists(env_netns):
            return

        def addresses(ns: Any) -> frozenset[str] | None:
            eth0 = _link_index(ns, "eth0")
            if eth0 is None:
                return None
            return frozenset(a for a in _addresses(ns, eth0) if not a.startswith("fe80:"))

        try:
            own = netlink(name, addresses) if netns_exists(name) else None
        except (NetlinkError, OSError, DataPlaneError):
            own = None
        netlink(env_netns, lambda ens: _drop_guards(ens, veth, own))

    def delete_environment(self, name: str) -> None:
        for child in list_netns():
            if child.startswith(name + "-"):
                self.remove_instance(child)
        delete_netns(name)


SOURCE_GUARD_PRIORITY = 100
"""After the ``local`` table (0), so packets to the environment's own gateway and resolver
addresses, and IPv6 neighbour discovery, are delivered; before ``main`` (32766), so nothing
an instance sends is forwarded unless it comes from that instance's own address. Two rules
per veth and family: ``from ADDR iif VETH lookup main`` here, ``iif VETH blackhole`` next."""
MAIN_TABLE = 254
FR_ACT_TO_TBL = 1
FR_ACT_BLACKHOLE = 6


def _guard_sources(ens: Any, veth: str, addresses: frozenset[str], *, fresh: bool = False) -> None:
    """Anti-spoofing in the environment namespace: a packet that enters from an instance's
    veth with any source but that instance's own address is dropped (a family the instance
    has no address in is dropped whole). Rules of veths that no longer exist go too.

    ``fresh``: the veth was made just now, so it has no rules but those a removal of its
    namesake left (``_drop_guards`` removes them, so at most identical ones): the rules are
    added without reading every rule of the namespace, which costs what the namespace
    holds. A deep repair reads them all and puts any difference right."""
    guard = (SOURCE_GUARD_PRIORITY, SOURCE_GUARD_PRIORITY + 1)
    if not fresh:
        links = {link.get_attr("IFLA_IFNAME") for link in ens.get_links()}
        for family in (socket.AF_INET, socket.AF_INET6):
            for rule in ens.get_rules(family=family):
                iif = rule.get_attr("FRA_IIFNAME")
                if rule.get_attr("FRA_PRIORITY") in guard and (iif == veth or iif not in links):
                    _delete_rule(ens, family, rule)
    for family, length in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
        for own in (a for a in addresses if (":" in a) == (family == socket.AF_INET6)):
            _add_rule(ens, fresh, family=family, priority=guard[0], iifname=veth, src=own,
                      src_len=length, table=MAIN_TABLE, action=FR_ACT_TO_TBL)  # fmt: skip
        _add_rule(ens, fresh, family=family, priority=guard[1], iifname=veth,
                  action=FR_ACT_BLACKHOLE)  # fmt: skip


def _delete_rule(ens: Any, family: int, rule: Any) -> None:
    fields = {"src": rule.get_attr("FRA_SRC"), "src_len": rule["src_len"]}
    ens.rule(
        "del",
        family=family,
        priority=rule.get_attr("FRA_PRIORITY"),
        iifname=rule.get_attr("FRA_IIFNAME"),
        action=rule["action"],
        table=rule.get_attr("FRA_TABLE"),
        **{k: v for k, v in fields.items() if v},
    )


def _add_rule(ens: Any, exists_ok: bool, **rule: Any) -> None:
    try:
        ens.rule("add", **rule)
    except NetlinkError as exc:
        if not (exists_ok and exc.code == errno.EEXIST):
            raise


def _drop_guards(ens: Any, veth: str, addresses: frozenset[str] | None) -> None:
    """Remove a veth's guard rules (its instance is being removed). With its addresses
    known, one request per rule; else by reading every rule of the namespace."""
    guard = (SOURCE_GUARD_PRIORITY, SOURCE_GUARD_PRIORITY + 1)
    if addresses is None:
        for family in (socket.AF_INET, socket.AF_INET6):
            for rule in ens.get_rules(family=family):
                if rule.get_attr("FRA_PRIORITY") in guard and rule.get_attr("FRA_IIFNAME") == veth:
                    _delete_rule(ens, family, rule)
        return
    wanted: list[dict[str, Any]] = []
    for family, length in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
        for own in (a for a in addresses if (":" in a) == (family == socket.AF_INET6)):
            wanted.append(
                {
                    "family": family,
                    "priority": guard[0],
                    "iifname": veth,
                    "src": own,
                    "src_len": length,
                    "table": MAIN_TABLE,
                    "action": FR_ACT_TO_TBL,
                }
            )
        wanted.append(
            {"family": family, "priority": guard[1], "iifname": veth, "action": FR_ACT_BLACKHOLE}
        )
    for rule in wanted:
        try:
            ens.rule("del", **rule)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise


def _source_guards(ens: Any) -> dict[str, frozenset[str] | None]:
    """Per veth, the sources its guard rules let through (see ``_guard_sources``); ``None``
    when either family's catch-all drop is missing. A rule at the guard's priority that
    ``_guard_sources`` would not write (another table, a wider source) shows as a source
    no instance has, so the guard is written again."""
    allowed: dict[str, set[str]] = {}
    dropped: dict[str, set[int]] = {}
    for family, full in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
        for rule in ens.get_rules(family=family):
            iif = rule.get_attr("FRA_IIFNAME")
            priority = rule.get_attr("FRA_PRIORITY")
            if iif is None or priority not in (SOURCE_GUARD_PRIORITY, SOURCE_GUARD_PRIORITY + 1):
                continue
            src, length = rule.get_attr("FRA_SRC"), rule["src_len"]
            table = rule.get_attr("FRA_TABLE") or rule["table"]
            if priority == SOURCE_GUARD_PRIORITY + 1:
                if rule["action"] == FR_ACT_BLACKHOLE and not length:
                    dropped.setdefault(iif, set()).add(family)
                    continue
                allowed.setdefault(iif, set()).add(f"unexpected rule {priority} {rule}")
            elif rule["action"] == FR_ACT_TO_TBL and table == MAIN_TABLE and length == full:
                allowed.setdefault(iif, set()).add(str(src))
            else:
                allowed.setdefault(iif, set()).add(f"{src}/{length} (action {rule['action']})")
    return {
        iif: frozenset(allowed.get(iif, set()))
        if families == {socket.AF_INET, socket.AF_INET6}
        else None
        for iif, families in dropped.items()
    } | {iif: None for iif in allowed if iif not in dropped}
