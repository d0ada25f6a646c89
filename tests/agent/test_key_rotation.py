"""WireGuard key rotation at one agent, on fake backends: EnsureEnvironment with a rotation
token stages a new key (the same one again when asked again), and the document that names
it promotes it: the device gets the key in place, and the old private key leaves the disk."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import stat
from pathlib import Path

import pytest

from railnet.agent.state import StateDir
from railnet.agent.wireguard import generate_private_key, public_key_of
from railnet.control.client import AgentClient
from railnet.core.desired import build_document
from railnet.core.document import EnvironmentDocument

from .test_servicer import (
    ENV,
    PEER_ENDPOINT,
    PEER_KEY,
    SPEC,
    RunningAgent,
    agent,
    applied,
    client,
    env_netns,
    tls,
)

__all__ = ["agent", "applied", "client", "tls"]  # the fixtures shared with test_servicer

pytestmark = pytest.mark.agent

ROTATION = "2024-06"


def env_dir(agent: RunningAgent) -> Path:
    return agent.state_dir / "environments" / ENV


def private_key(agent: RunningAgent) -> str:
    return (env_dir(agent) / "private.key").read_text().strip()


def on_disk(agent: RunningAgent, key: str) -> list[str]:
    """The files of the agent's state dir that hold ``key``, in any of its forms."""
    raw = base64.b64decode(key)
    forms = (key.encode(), raw, raw.hex().encode())
    found = []
    for path in agent.state_dir.rglob("*"):
        if path.is_file() and any(f in path.read_bytes() for f in forms):
            found.append(str(path.relative_to(agent.state_dir)))
    return found


def rotated(
    client: AgentClient,
    previous: EnvironmentDocument,
    token: str = ROTATION,
    peer_key: str = PEER_KEY,
) -> EnvironmentDocument:
    """The next document, with node-1's key staged for ``token`` and node-2's ``peer_key``."""
    spec = dataclasses.replace(SPEC, key_rotation=token)
    identities = {
        "node-1": client.ensure(ENV, key_rotation=token),
        "node-2": (peer_key, PEER_ENDPOINT),
    }
    return build_document(spec, previous, identities)


def test_staging_a_key_keeps_the_current_one_in_service(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    current, endpoint = client.ensure(ENV)
    old_private = private_key(agent)
    mutations = agent.kernel.mutations

    staged, staged_endpoint = client.ensure(ENV, key_rotation=ROTATION)
    assert staged != current and staged_endpoint == endpoint
    # Asked again (a retried round): the same staged key, not another one.
    assert client.ensure(ENV, key_rotation=ROTATION) == (staged, endpoint)
    # Without a token (an older provider), or for the token in service: the current key.
    assert client.ensure(ENV) == (current, endpoint)
    assert private_key(agent) == old_private
    staged_file = env_dir(agent) / "staged.key"
    assert stat.S_IMODE(staged_file.stat().st_mode) == 0o600
    assert public_key_of(staged_file.read_text().strip()) == staged
    # Nothing on the node changed: the device still has the current key.
    assert agent.kernel.mutations == mutations
    device = agent.kernel.device_in(env_netns(agent))
    assert device is not None and device.public_key == current


def test_the_document_with_the_staged_key_promotes_it_in_place(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    old_private = private_key(agent)
    device = agent.kernel.device_in(env_netns(agent))
    assert device is not None
    new_peer_key = public_key_of(generate_private_key())
    doc = rotated(client, applied, peer_key=new_peer_key)
    staged = doc.node("node-1")
    assert staged is not None and staged.public_key != public_key_of(old_private)
    log_from = len(agent.kernel.log)

    generation, changes = client.apply(doc.to_json(), 1)
    assert generation == 2
    calls = agent.kernel.log[log_from:]
    assert calls[0] == f"set_private_key {device.ifname}"
    assert not any(c.startswith(("delete_device", "create_device")) for c in calls)
    assert agent.kernel.device_in(env_netns(agent)) is device  # the same device
    assert device.public_key == staged.public_key
    # Its peer node-2 rotated too: the new key holds the allowed IPs, the old one is gone.
    assert set(device.peers) == {new_peer_key}
    assert device.peers[new_peer_key].endpoint == PEER_ENDPOINT
    assert any("handshake now" in c for c in changes)
    assert not any("delete WireGuard device" in c for c in changes)

    assert public_key_of(private_key(agent)) == staged.public_key
    assert not (env_dir(agent) / "staged.key").exists()
    assert on_disk(agent, old_private) == []
    # The rotation is done: the token now names the key in service.
    assert client.ensure(ENV, key_rotation=ROTATION)[0] == staged.public_key
    assert client.apply(doc.to_json(), 2) == (2, [])
    assert list(client.status(ENV).environments[0].drift) == []


def test_a_stale_document_does_not_promote(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    old_private = private_key(agent)
    doc = rotated(client, applied)
    with pytest.raises(Exception, match="generation"):
        client.apply(doc.to_json(), 7)  # compare-and-set fails: nothing changes
    assert private_key(agent) == old_private
    assert (env_dir(agent) / "staged.key").exists()


def test_a_new_token_replaces_an_unused_staged_key(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    first = client.ensure(ENV, key_rotation="r1")[0]
    first_private = (env_dir(agent) / "staged.key").read_text().strip()
    second = client.ensure(ENV, key_rotation="r2")[0]
    assert second != first
    assert on_disk(agent, first_private) == []
    # Back to the token in service: nothing is staged any more.
    client.ensure(ENV, key_rotation="")
    assert not (env_dir(agent) / "staged.key").exists()


def test_a_promotion_cut_short_is_read_as_done(
    agent: RunningAgent, client: AgentClient, applied: EnvironmentDocument
) -> None:
    staged = client.ensure(ENV, key_rotation=ROTATION)[0]
    # The agent died between moving the staged key into place and recording its token.
    os.replace(env_dir(agent) / "staged.key", env_dir(agent) / "private.key")
    identity = StateDir(agent.state_dir).identity(ENV)
    assert identity is not None
    assert public_key_of(identity.private_key) == staged
    assert identity.rotation == ROTATION
    assert client.ensure(ENV, key_rotation=ROTATION)[0] == staged  # no second rotation


def test_rotation_keeps_private_keys_out_of_replies_and_logs(
    caplog: pytest.LogCaptureFixture,
    agent: RunningAgent,
    client: AgentClient,
    applied: EnvironmentDocument,
) -> None:
    caplog.set_level(logging.DEBUG)
    old_private = private_key(agent)
    doc = rotated(client, applied)
    _, changes = client.apply(doc.to_json(), 1)
    new_private = private_key(agent)
    assert "rotation" in caplog.text  # the agent logged the rotation
    for key in (old_private, new_private):
        raw = base64.b64decode(key)
        for form in (key, raw.hex()):
            assert form not in caplog.text
            assert all(form not in c for c in changes)
            assert form not in doc.to_json()
        assert raw not in caplog.text.encode()
