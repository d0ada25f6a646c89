"""WireGuard key rotation on a real lab, driven as the engine drives the providers: a TCP
stream between instances on two nodes flows while an Environment update with a new
``key_rotation`` gives every node a new key pair. The stream never breaks, the devices are
the same wireguard-go processes with new keys, and the old private keys are gone from every
state directory. (How long the stream pauses is measured in ``bench/rotation.py``.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from railnet.core.names import environment_id
from railnet.core.resources import PROPERTIES, Kind
from railnet.lab.local_cluster import Lab

from ..provider.harness import Declared, Engine, engine_on
from .conftest import LabNet, running_lab

pytestmark = pytest.mark.linux

STREAM = str(Path(__file__).with_name("stream.py"))
ENV = environment_id("shop", "production")
PORT = 7950
LONGEST_PAUSE_BOUND = 3.0
"""Seconds. Far above what a rotation costs (see docs/benchmarks.md) and below WireGuard's
handshake retry (5 s): a stream that had to wait for a retry fails this."""


def props(kind: Kind, **given: Any) -> dict[str, Any]:
    base: dict[str, Any] = {p.name: None for p in PROPERTIES[kind]}
    base.update(given)
    return base


def program(token: str) -> list[Declared]:
    """shop/production with ``key_rotation=token``; a on node-1, b on node-2, both declared
    with the Environment (so they carry its settings, as the SDK makes them)."""
    env = {"project": "shop", "environment": "production", "key_rotation": token}
    return [
        Declared("Project", "shop", lambda s: props(Kind.PROJECT, name="shop")),
        Declared(
            "Environment",
            "production",
            lambda s: props(
                Kind.ENVIRONMENT, name="production", project="shop", key_rotation=token
            ),
        ),
        Declared("Service", "a", lambda s: props(Kind.SERVICE, name="a", nodes=["node-1"], **env)),
        Declared("Service", "b", lambda s: props(Kind.SERVICE, name="b", nodes=["node-2"], **env)),
    ]


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(2, dns=False) as net:
        yield net


@pytest.fixture()
def engine(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file)) as eng:
        yield eng


def key_files(lab: Lab) -> dict[str, str]:
    return {
        n.name: (n.state_dir / "environments" / ENV / "private.key").read_text().strip()
        for n in lab.nodes()
    }


def holders(lab: Lab, key: str) -> list[str]:
    """Files under the lab directory (state dirs, agent logs) that hold ``key`` in any form."""
    raw = base64.b64decode(key)
    forms = (key.encode(), raw, raw.hex().encode())
    return [
        str(p)
        for p in lab.directory.rglob("*")
        if p.is_file() and not p.is_socket() and any(f in p.read_bytes() for f in forms)
    ]


def status(lab: Lab) -> dict[str, Any]:
    found = {}
    for node in lab.nodes():
        with lab.client(node) as client:
            found[node.name] = client.status(ENV).environments[0]
    return found


def test_rotating_the_keys_keeps_a_tcp_stream_flowing(lab: LabNet, engine: Engine) -> None:
    engine.up(program(""))
    b_address = engine.state["b"].outputs["ipv6_addresses"][0]
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns("shop", "production", "b"),
         sys.executable, STREAM, "receive", str(PORT)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    sender = None
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        sender = subprocess.Popen(
            ["ip", "netns", "exec", lab.netns("shop", "production", "a"),
             sys.executable, STREAM, "send", b_address, str(PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert sender.stdout is not None and sender.stdout.readline().strip() == "connected"
        time.sleep(1.0)
        old_keys = key_files(lab.lab)
        before = status(lab.lab)
        processes = {n.name: lab.lab.wireguard_pids(n) for n in lab.lab.nodes()}

        steps = engine.up(program("2024-06"))

        assert [s.op for s in steps if s.name == "production"] == ["update"]
        assert engine.state["production"].outputs["key_rotation"] == "2024-06"
        time.sleep(2.0)
        sent, _ = sender.communicate(timeout=30)  # closes its stdin: it ends the stream
        received, _ = receiver.communicate(timeout=30)
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sender.returncode == 0, sent
    result = json.loads(received.strip().splitlines()[-1])
    # The connection never broke: every chunk, in order, then the end marker.
    assert result["ended"] and result["in_order"], result
    assert sent.strip() == f"sent {result['chunks']}"
    assert result["longest_pause"] < LONGEST_PAUSE_BOUND, result

    after = status(lab.lab)
    new_keys = key_files(lab.lab)
    for node in lab.lab.nodes():
        name = node.name
        assert after[name].public_key != before[name].public_key, name
        assert after[name].listen_port == before[name].listen_port, name
        assert new_keys[name] != old_keys[name], name
        # In place: the same wireguard-go process carries the device, now with its new key.
        assert lab.lab.wireguard_pids(node) == processes[name], name
        (peer,) = after[name].peers
        other = next(n for n in after if n != name)
        assert peer.public_key == after[other].public_key
        assert list(after[name].drift) == []
        assert not (node.state_dir / "environments" / ENV / "staged.key").exists()
    for name, key in old_keys.items():
        assert holders(lab.lab, key) == [], f"the old private key of {name} is still on disk"
    for name, key in new_keys.items():
        assert [Path(p).name for p in holders(lab.lab, key)] == ["private.key"], name
