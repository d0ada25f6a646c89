"""An instance with CAP_NET_ADMIN cannot send from a neighbour's address: packets with any
source but its own are dropped where they enter the environment namespace. Raw IPv4
packets and IPv6 from an address added by hand are both tried; datagrams from the
instance's own addresses arrive, so the drop is the guard, not a broken network."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec

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
    with running_lab(2, dns=False) as net:
        yield net


def test_an_instance_cannot_send_from_a_neighbours_address(lab: LabNet) -> None:
    doc = lab.deploy(SPEC).document
    a, b, c = (doc.service(n) for n in "abc")
    assert a is not None and b is not None and c is not None
    a0, b0, c0 = a.instances[0], b.instances[0], c.instances[0]
    assert a0.ipv4 and b0.ipv4 and c0.ipv4
    sender = lab.netns("shop", "production", "a")
    received: list[str] = []
    for target in ("b", "c"):
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
    assert sorted(received) == ["own4-b", "own4-c", "own6-b", "own6-c"]
