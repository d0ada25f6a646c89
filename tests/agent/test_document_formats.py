"""Document format versions at the agent: what it says it reads, what it refuses, and the
deployer writing the highest format every holder reads, over in-process agents of mixed
versions (one limited to format 1 stands in for the previous release)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.document import FORMAT_VERSION, READABLE_FORMATS, EnvironmentDocument
from railnet.pki.certs import ClusterTls, TlsFiles, node_tls_files
from tests.agent.test_deploy import FakeCluster, spec, svc
from tests.agent.test_deploy import lab as lab  # the fixture
from tests.agent.test_servicer import (
    PEER_ENDPOINT,
    PEER_KEY,
    RunningAgent,
    connect,
    refused,
    start_agent,
)
from tests.agent.test_servicer import tls as tls  # the fixture

pytestmark = pytest.mark.agent

PREVIOUS = (FORMAT_VERSION - 1,)


@pytest.fixture
def old_agent(tmp_path: Path, tls: ClusterTls) -> Iterator[RunningAgent]:
    running = start_agent("node-1", tmp_path / "state", tls.nodes["node-1"], formats=PREVIOUS)
    yield running
    running.stop()


def _document(key_endpoint: tuple[str, str], version: int) -> EnvironmentDocument:
    spec_ = EnvironmentSpec("shop", "production", services=(ServiceSpec("api", ("node-1",)),))
    return build_document(spec_, None, {"node-1": key_endpoint}, format=version)


def test_an_agent_says_which_formats_it_reads_in_every_reply(
    old_agent: RunningAgent, tls: ClusterTls
) -> None:
    with connect(old_agent, tls) as client:
        assert client.formats is None
        client.status()
        assert client.formats == PREVIOUS
        doc = _document(client.ensure("e18863a1e6704"), PREVIOUS[0])
        assert client.formats == PREVIOUS
        client.document(doc.id)
        assert client.formats == PREVIOUS


def test_an_agent_of_the_previous_format_refuses_the_newer_one_and_applies_its_own(
    old_agent: RunningAgent, tls: ClusterTls
) -> None:
    with connect(old_agent, tls) as client:
        identity = client.ensure("e18863a1e6704")
        newer = _document(identity, FORMAT_VERSION)
        error = refused(lambda: client.apply(newer.to_json(), 0), grpc.StatusCode.INVALID_ARGUMENT)
        assert "format" in error.detail and str(list(PREVIOUS)) in error.detail
        assert client.document(newer.id) is None  # nothing was stored
        own = newer.with_format(PREVIOUS[0])
        assert client.apply(own.to_json(), 0)[0] == 1
        stored = client.document(own.id)
        assert stored is not None and json.loads(stored)["format"] == PREVIOUS[0]


def test_status_lists_every_document_held_hosted_or_only_kept(
    tmp_path: Path, tls: ClusterTls
) -> None:
    running = start_agent("node-1", tmp_path / "state", tls.nodes["node-1"])
    try:
        with connect(running, tls) as client:
            hosted = _document(client.ensure("e18863a1e6704"), FORMAT_VERSION)
            client.apply(hosted.to_json(), 0)
            kept_spec = EnvironmentSpec(
                "shop", "staging", services=(ServiceSpec("api", ("node-2",)),)
            )
            kept = build_document(
                kept_spec, None, {"node-2": (PEER_KEY, PEER_ENDPOINT)}, keepers=("node-1",)
            )
            client.apply(kept.to_json(), 0)
            reply = client.status()
        assert list(reply.document_formats) == list(READABLE_FORMATS)
        held = {d.env_id: (d.project, d.environment, d.hosted, d.format) for d in reply.documents}
        assert held == {
            hosted.id: ("shop", "production", True, FORMAT_VERSION),
            kept.id: ("shop", "staging", False, FORMAT_VERSION),
        }
        assert [e.env_id for e in reply.environments] == [hosted.id]  # as before
    finally:
        running.stop()


def _restart(lab: FakeCluster, node: str, formats: tuple[int, ...]) -> None:
    old = lab.agents[node]
    old.stop()
    lab.agents[node] = start_agent(
        node,
        old.state_dir,
        _node_tls(lab, node),
        kernel=old.kernel,
        resolver=old.resolver,
        listen=old.address,
        formats=formats,
    )


def _node_tls(lab: FakeCluster, node: str) -> TlsFiles:
    assert lab.cluster.tls is not None
    return node_tls_files(Path(lab.cluster.tls.ca).parent, node)


def _formats(lab: FakeCluster) -> dict[str, int]:
    found = {}
    for node in lab.agents:
        with lab.client(node) as client:
            text = client.document(BASE_ENV)
        if text is not None:
            found[node] = int(json.loads(text)["format"])
    return found


BASE = spec(svc("api", "node-1", "node-2"), svc("db", "node-3"))
BASE_ENV = BASE.id


def test_a_mixed_cluster_gets_the_format_every_holder_reads_then_the_newest(
    lab: FakeCluster,
) -> None:
    _restart(lab, "node-2", PREVIOUS)  # node-2 runs the previous release
    applied = lab.deployer.apply(BASE)
    assert applied.document.format == PREVIOUS[0]
    assert _formats(lab) == {n: PREVIOUS[0] for n in lab.agents}
    # A change applies on the mixed cluster, in the format all of them read.
    changed = lab.deployer.apply(spec(svc("api", "node-1", "node-2"), svc("db", "node-2")))
    assert changed.document.format == PREVIOUS[0]
    assert changed.document.generation == applied.document.generation + 1
    # node-2 upgraded: the next deploy writes the newest format, and only that changes.
    _restart(lab, "node-2", READABLE_FORMATS)
    before = lab.mutations()
    upgraded = lab.deployer.apply(spec(svc("api", "node-1", "node-2"), svc("db", "node-2")))
    assert upgraded.document.format == FORMAT_VERSION
    assert (
        upgraded.document.with_format(PREVIOUS[0]).with_generation(changed.document.generation)
        == changed.document
    )
    assert _formats(lab) == {n: FORMAT_VERSION for n in lab.agents}
    assert lab.mutations() == before  # a new format moves no kernel object
