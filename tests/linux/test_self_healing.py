"""Self-healing: the agent notices drift when it happens (netlink events, wireguard-go
exits, namespace deletion, the device's peers) and repairs it in place, long before its
periodic repair (set to 300 s here, so only the self-healer can heal within the bound).

Each test breaks one thing with the tools an operator would use (``kill -9``, ``wg``,
``ip route``, ``ip netns del``) while an echo server runs in an instance on node-2, and
waits (with a generous bound) for traffic from node-1 to flow again. A second lab runs
its agents with ``--no-self-heal``: there the same drift stays, and status reports it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.agent.healing import GRACE
from railnet.agent.wireguard import Uapi
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import EnvironmentDocument
from railnet.core.names import environment_netns, veth_ifname, wireguard_ifname

from .conftest import LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux

HEAL_BOUND = 15.0
"""Seconds a test waits for a repair, against a periodic repair every ``INTERVAL``; the
benchmark (``python -m bench.self_heal``) measures the real time, these only say that it
happens without the timer."""
INTERVAL = 300
SPEC = EnvironmentSpec(
    "heal",
    "production",
    services=(ServiceSpec("client", ("node-1",)), ServiceSpec("server", ("node-2",))),
)
PORT = 7300


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(2, dns=False, reconcile_interval=INTERVAL) as net:
        net.deploy(SPEC)
        yield net


@pytest.fixture()
def server(lab: LabNet) -> Iterator[subprocess.Popen[str]]:
    proc = lab.serve(lab.netns("heal", "production", "server"), "srv", PORT)
    # Past the grace after the agents' last change (the deploy, the last test's repair):
    # a fault within it is taken for that change's own events and left to the periodic
    # repair (docs/operating.md, "Self-healing").
    time.sleep(2 * GRACE)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


def document(lab: LabNet) -> EnvironmentDocument:
    doc = lab.deployer.latest(lab.deployer.read(SPEC.id))
    assert doc is not None
    return doc


def server_addresses(lab: LabNet) -> tuple[str, str]:
    svc = document(lab).service("server")
    assert svc is not None and svc.instances[0].ipv4
    return svc.instances[0].ipv4, svc.instances[0].ipv6


def answers(lab: LabNet, host: str) -> bool:
    client = lab.netns("heal", "production", "client")
    probe = lab.tcp(client, host, PORT, timeout=1)
    return probe.ok and probe.output == "srv:ping"


def flowing(lab: LabNet) -> bool:
    return all(answers(lab, host) for host in server_addresses(lab))


def drift(lab: LabNet, i: int) -> list[str]:
    with lab.lab.client(lab.lab.node(i)) as client:
        return list(client.status(SPEC.id).environments[0].drift)


def lost(lab: LabNet, i: int) -> list[str]:
    with lab.lab.client(lab.lab.node(i)) as client:
        return list(client.status(SPEC.id).environments[0].lost)


def device(lab: LabNet, i: int) -> Uapi:
    node = lab.lab.node(i)
    return Uapi(wireguard_ifname(node.netns_prefix, SPEC.id))


def peer_key(lab: LabNet, i: int) -> str:
    """The public key node ``i``'s device knows its one peer by."""
    (peer,) = device(lab, i).get().peers
    return peer.public_key


_read: dict[Path, int] = {}


def heals(lab: LabNet, i: int) -> list[str]:
    """The self-healer's repairs in node ``i``'s agent log, since the last call."""
    path = lab.lab.directory / lab.lab.node(i).name / "agent.log"
    seen = _read.get(path, 0)
    text = path.read_text(errors="replace")
    _read[path] = len(text)
    return [line for line in text[seen:].splitlines() if " healed in " in line]


def healed(lab: LabNet) -> bool:
    return flowing(lab) and drift(lab, 2) == [] and drift(lab, 1) == []


def test_deleted_routes_come_back_and_the_running_process_keeps_its_network(
    lab: LabNet, server: subprocess.Popen[str]
) -> None:
    """The server was started before the fault; after the repair the very same process
    answers on both families: its namespace was patched, not rebuilt."""
    assert flowing(lab)
    heals(lab, 2)
    ns = lab.netns("heal", "production", "server")
    doc = document(lab)
    svc = doc.service("server")
    assert svc is not None
    veth = veth_ifname(doc.id, svc.id, 0)
    env_ns = ns.rsplit("-", 2)[0]
    inode = os.stat(f"/var/run/netns/{ns}").st_ino
    # Inside the instance, and the environment's routes towards it.
    for family in ("-4", "-6"):
        subprocess.run(["ip", "-n", ns, family, "route", "flush", "default"], check=True)
        subprocess.run(["ip", "-n", env_ns, family, "route", "flush", "dev", veth], check=True)
    assert wait_until(lambda: healed(lab), timeout=HEAL_BOUND), drift(lab, 2)
    assert server.poll() is None
    assert os.stat(f"/var/run/netns/{ns}").st_ino == inode, "the namespace was rebuilt"
    assert any(f"rewire instance server#0 in {ns} in place" in line for line in heals(lab, 2))


def test_a_killed_wireguard_go_comes_back_with_its_key_port_and_peers(
    lab: LabNet, server: subprocess.Popen[str]
) -> None:
    assert flowing(lab)
    heals(lab, 2)
    uapi = device(lab, 2)
    before = uapi.get()
    pid = uapi.pid()
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: healed(lab), timeout=HEAL_BOUND), drift(lab, 2)
    after = uapi.get()
    assert uapi.pid() != pid
    # The exit event, or on a loaded machine the device poll that saw the device gone
    # first (the exit event alone is tested in test_drift_watch.py).
    assert any(re.search(r"after [a-z, ]*\b(exit|device)\b", line) for line in heals(lab, 2))
    assert (after.public_key, after.listen_port) == (before.public_key, before.listen_port)
    assert {(p.public_key, p.allowed_ips) for p in after.peers} == {
        (p.public_key, p.allowed_ips) for p in before.peers
    }
    assert server.poll() is None  # the instance was not touched


def test_a_peer_removed_with_wg_comes_back(lab: LabNet, server: subprocess.Popen[str]) -> None:
    assert flowing(lab)
    heals(lab, 1)
    ifname = device(lab, 1).path.stem
    key = peer_key(lab, 1)
    subprocess.run(["wg", "set", ifname, "peer", key, "remove"], check=True)
    assert wait_until(lambda: healed(lab), timeout=HEAL_BOUND), drift(lab, 1)
    assert peer_key(lab, 1) == key
    # No netlink event says so with wireguard-go: the device poll found it.
    assert any(re.search(r"after [a-z, ]*\bdevice\b", line) for line in heals(lab, 1))


def test_a_deleted_instance_namespace_is_made_again_and_status_says_its_processes_are_gone(
    lab: LabNet, server: subprocess.Popen[str]
) -> None:
    assert flowing(lab)
    ns = lab.netns("heal", "production", "server")
    inode = os.stat(f"/var/run/netns/{ns}").st_ino
    subprocess.run(["ip", "netns", "del", ns], check=True)
    assert wait_until(lambda: os.path.exists(f"/var/run/netns/{ns}"), timeout=HEAL_BOUND)
    assert os.stat(f"/var/run/netns/{ns}").st_ino != inode
    assert wait_until(lambda: drift(lab, 2) == [], timeout=HEAL_BOUND), drift(lab, 2)
    assert any(f"namespace {ns} was gone" in line for line in lost(lab, 2)), lost(lab, 2)
    # The old process kept the old namespace (with only lo): nothing answers until the
    # workload starts again, in the new one.
    assert not answers(lab, server_addresses(lab)[1])
    server.kill()
    server.wait(timeout=5)
    again = lab.serve(ns, "srv", PORT)
    assert wait_until(lambda: flowing(lab), timeout=HEAL_BOUND)
    again.kill()
    again.wait(timeout=5)


def test_an_environment_namespace_deleted_is_rebuilt(
    lab: LabNet, server: subprocess.Popen[str]
) -> None:
    """Its wg0 and the veths' outer ends go with it; the instance namespaces stay and are
    rewired in place, so the running server answers again."""
    assert flowing(lab)
    node = lab.lab.node(2)
    env_ns = environment_netns(node.netns_prefix, SPEC.id)
    subprocess.run(["ip", "netns", "del", env_ns], check=True)
    assert wait_until(lambda: healed(lab), timeout=HEAL_BOUND), drift(lab, 2)
    assert server.poll() is None


def test_deleted_source_guard_rules_are_written_again(
    lab: LabNet, server: subprocess.Popen[str]
) -> None:
    """``ip rule`` changes are netlink events too (the rule groups)."""
    heals(lab, 2)
    doc = document(lab)
    svc = doc.service("server")
    assert svc is not None
    veth = veth_ifname(doc.id, svc.id, 0)
    env_ns = environment_netns(lab.lab.node(2).netns_prefix, SPEC.id)
    deleted = 0
    for family in ("-4", "-6"):
        while (
            lab.run(env_ns, "ip", family, "rule", "del", "pref", "101", "iif", veth).returncode == 0
        ):
            deleted += 1
    assert deleted == 2
    assert wait_until(lambda: drift(lab, 2) == [], timeout=HEAL_BOUND), drift(lab, 2)
    assert any("restore the source guard of instance server#0" in line for line in heals(lab, 2))
    assert flowing(lab)


# -- with the self-healer off: drift stays, and status says so --------------------------------


@pytest.fixture(scope="module")
def unhealed() -> Iterator[LabNet]:
    with running_lab(2, dns=False, reconcile_interval=INTERVAL, self_heal=False) as net:
        net.deploy(SPEC)
        yield net


def test_without_self_healing_drift_is_reported_and_stays(unhealed: LabNet) -> None:
    lab = unhealed
    server = lab.serve(lab.netns("heal", "production", "server"), "srv", PORT)
    assert wait_until(lambda: flowing(lab), timeout=HEAL_BOUND)
    ifname = device(lab, 1).path.stem
    subprocess.run(["wg", "set", ifname, "peer", peer_key(lab, 1), "remove"], check=True)
    os.kill(device(lab, 2).pid(), signal.SIGKILL)
    assert wait_until(lambda: drift(lab, 1) != [] and drift(lab, 2) != [], timeout=5)
    time.sleep(3)  # several device polls and debounce windows, had there been a healer
    assert [line.split(" ")[:2] for line in drift(lab, 1)] == [["set", "peer"]]
    assert any(line.startswith("create WireGuard device") for line in drift(lab, 2)), drift(lab, 2)
    assert not answers(lab, server_addresses(lab)[0])
    assert heals(lab, 1) == [] and heals(lab, 2) == []
    # What the provider's read (pulumi refresh) puts in the Environment's drift output.
    reported = lab.deployer.drift(SPEC.id, ["node-1", "node-2"])
    assert any(line.startswith("node-1: set peer") for line in reported), reported
    assert any(line.startswith("node-2: create WireGuard device") for line in reported)
    # What heals it without the watcher: the provider's next apply (or the periodic repair).
    lab.deployer.apply(SPEC)
    assert drift(lab, 1) == [] and drift(lab, 2) == []
    assert lab.deployer.drift(SPEC.id, ["node-1", "node-2"]) == []
    assert wait_until(lambda: flowing(lab), timeout=HEAL_BOUND)
    server.kill()
    server.wait(timeout=5)


def test_refresh_shows_the_drift_until_it_is_repaired(unhealed: LabNet) -> None:
    """Through the real ``python -m pulumi.dynamic`` server, driven as the engine drives
    ``pulumi refresh``: the Environment's ``drift`` output names what a node has not
    repaired (here: the self-healer is off), and is empty again once it is."""
    from railnet.core.names import environment_id

    from ..provider.harness import engine_on
    from ..provider.test_engine_protocol import program

    lab = unhealed
    env_id = environment_id("shop", "production")
    with engine_on(str(lab.lab.cluster_file)) as engine:
        engine.up(program({"api": {"nodes": ["node-1", "node-2"]}}))
        try:
            assert engine.refresh()["production"].after["drift"] == []
            node = lab.lab.node(1)
            uapi = Uapi(wireguard_ifname(node.netns_prefix, env_id))
            (peer,) = uapi.get().peers
            subprocess.run(
                ["wg", "set", uapi.path.stem, "peer", peer.public_key, "remove"], check=True
            )
            drift = engine.refresh()["production"].after["drift"]
            assert [line.split(" ")[:3] for line in drift] == [["node-1:", "set", "peer"]]
            assert "198.18." not in drift[0]  # node names, never addresses, in outputs
            with lab.lab.client(node) as client:  # a repair: the held document again
                held = client.document(env_id)
                assert held is not None
                client.apply(held, EnvironmentDocument.from_json(held).generation)
            assert engine.refresh()["production"].after["drift"] == []
        finally:
            engine.destroy()
