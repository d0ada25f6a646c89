"""An instance with CAP_NET_ADMIN cannot send from a neighbour's address: packets with any
source but its own are dropped where they enter the environment namespace. Raw IPv4
packets and IPv6 from an address added by hand are both tried; datagrams from the
instance's own addresses arrive, so the drop is the guard, not a broken network."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import EnvironmentDocument
from railnet.core.names import veth_ifname

from .conftest import LabNet, running_lab

pytestmark = pytest.mark.linux

SPOOF = str(Path(__file__).with_name("spoof.py"))
SPEC = EnvironmentSpec(
    "shop",
    "production",
    services=(
        ServiceSpec("a", ("node-1",)),
        ServiceSpec("b", ("node-1",)),
        ServiceSpec("c", ("node-2",)),
    ),
)
PORT = 7900


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    # No repair during the tests, periodic or self-healing: the drift test repairs when it
    # says so (test_self_healing shows the guard restored without being asked).
    with running_lab(2, dns=False, reconcile_interval=3600, self_heal=False) as net:
        yield net


def spoofing_round(lab: LabNet, doc: EnvironmentDocument, targets: str = "bc") -> list[str]:
    """From instance a, a datagram with a neighbour's source and one with its own, over
    IPv4 and IPv6, to each target; what the targets received."""
    a, b, c = (doc.service(n) for n in "abc")
    assert a is not None and b is not None and c is not None
    a0, b0, c0 = a.instances[0], b.instances[0], c.instances[0]
    assert a0.ipv4 and b0.ipv4 and c0.ipv4
    sender = lab.netns("shop", "production", "a")
    received: list[str] = []
    for target in targets:
        ns = lab.netns("shop", "production", target)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, SPOOF, "listen", str(PORT), "10"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        dst = b0 if target == "b" else c0
        for args in (
            ("send4", b0.ipv4, dst.ipv4, f"spoof4-{target}"),
            ("send4", a0.ipv4, dst.ipv4, f"own4-{target}"),
            ("send6", b0.ipv6, dst.ipv6, f"spoof6-{target}"),
            ("send6", a0.ipv6, dst.ipv6, f"own6-{target}"),
        ):
            command, src, to, payload = args
            sent = lab.run(
                sender, sys.executable, SPOOF, command, str(src), str(to), str(PORT), payload
            )
            assert sent.returncode == 0, sent.stderr
        out, _ = listener.communicate(timeout=30)
        received += out.split()  # after the 'ready' line, already read
    return sorted(received)


def test_an_instance_cannot_send_from_a_neighbours_address(lab: LabNet) -> None:
    doc = lab.deploy(SPEC).document
    assert spoofing_round(lab, doc) == ["own4-b", "own4-c", "own6-b", "own6-c"]


def test_deleted_guard_rules_are_drift_and_restored_in_place(lab: LabNet) -> None:
    doc = lab.deploy(SPEC).document
    a = doc.service("a")
    assert a is not None
    veth = veth_ifname(doc.id, a.id, 0)
    node_1 = next(n for n in lab.lab.nodes() if n.name == "node-1")
    with lab.lab.client(node_1) as client:
        env_ns = client.status(doc.id).environments[0].netns
    instance_ns = lab.netns("shop", "production", "a")
    inode = os.stat(f"/var/run/netns/{instance_ns}").st_ino
    deleted = 0
    for family in ("-4", "-6"):
        for priority in ("100", "101"):
            while lab.run(env_ns, "ip", family, "rule", "del", "pref", priority, "iif", veth)\
                    .returncode == 0:  # fmt: skip
                deleted += 1
    assert deleted == 4  # from its IPv4, from its IPv6, and a drop per family

    with lab.lab.client(node_1) as client:
        drift = list(client.status(doc.id).environments[0].drift)
    assert drift == [f"restore the source guard of instance a#0 in {instance_ns}"]
    # The drift is real: a neighbour's address now gets through (to another node; one on
    # the same node drops a packet from its own address anyway).
    assert {"spoof4-c", "spoof6-c"} <= set(spoofing_round(lab, doc, "c"))

    repaired = lab.deploy(SPEC)  # nothing declared changed: the held document again
    assert repaired.document.generation == doc.generation
    assert repaired.changes["node-1"] == drift
    assert os.stat(f"/var/run/netns/{instance_ns}").st_ino == inode
    with lab.lab.client(node_1) as client:
        assert list(client.status(doc.id).environments[0].drift) == []
    assert spoofing_round(lab, doc) == ["own4-b", "own4-c", "own6-b", "own6-c"]


def guard_rules(lab: LabNet, env_ns: str, veth: str) -> list[str]:
    rules = []
    for family in ("-4", "-6"):
        out = lab.run(env_ns, "ip", family, "rule", "show").stdout
        rules += [line.split(":", 1)[1].strip() for line in out.splitlines() if veth in line]
    return sorted(rules)


def test_a_removed_instance_takes_its_guard_rules_and_a_namesake_gets_only_its_own(
    lab: LabNet,
) -> None:
    doc = lab.deploy(SPEC).document
    a = doc.service("a")
    assert a is not None and a.instances[0].ipv4
    old = a.instances[0]
    veth = veth_ifname(doc.id, a.id, 0)
    node_1 = next(n for n in lab.lab.nodes() if n.name == "node-1")
    with lab.lab.client(node_1) as client:
        env_ns = client.status(doc.id).environments[0].netns
    assert len(guard_rules(lab, env_ns, veth)) == 4

    without_a = EnvironmentSpec("shop", "production", services=SPEC.services[1:])
    lab.deploy(without_a)
    assert guard_rules(lab, env_ns, veth) == []

    again = lab.deploy(SPEC).document  # "a" again: the same id and veth, new addresses
    a2 = again.service("a")
    assert a2 is not None and a2.id == a.id
    new = a2.instances[0]
    assert new.ipv4 != old.ipv4 and new.ipv6 != old.ipv6  # the old ones rest
    rules = guard_rules(lab, env_ns, veth)
    assert len(rules) == 4
    assert any(f"from {new.ipv4} " in r for r in rules) and any(new.ipv6 in r for r in rules)
    assert not any(old.ipv4 in r or old.ipv6 in r for r in rules)
    assert spoofing_round(lab, again) == ["own4-b", "own4-c", "own6-b", "own6-c"]
