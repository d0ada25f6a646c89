"""What an operator watches: the standard gRPC health service behind the role check, the
Prometheus endpoint, and process logs that never fill the disk."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from railnet.agent.metrics import AgentMetrics
from railnet.agent.server import rotate_logs
from railnet.control.client import channel_credentials, channel_options
from railnet.core.desired import build_document
from railnet.pki.certs import ClusterTls, TlsFiles, write_cluster_tls

from ..certs import roleless_client
from .test_servicer import SPEC, RunningAgent, start_agent

pytestmark = pytest.mark.agent


@pytest.fixture
def tls(tmp_path: Path) -> ClusterTls:
    return write_cluster_tls(tmp_path / "tls", ["node-1"])


@pytest.fixture
def agent(tmp_path: Path, tls: ClusterTls) -> Iterator[RunningAgent]:
    running = start_agent("node-1", tmp_path / "state", tls.nodes["node-1"])
    yield running
    running.stop()


def health(agent: RunningAgent, files: TlsFiles) -> health_pb2_grpc.HealthStub:
    channel = grpc.secure_channel(
        agent.address, channel_credentials(files), options=channel_options("node-1")
    )
    return health_pb2_grpc.HealthStub(channel)


def test_the_health_service_answers_whoever_may_read(
    agent: RunningAgent, tls: ClusterTls, tmp_path: Path
) -> None:
    assert tls.operator is not None
    for files in (tls.operator, tls.provider):
        stub = health(agent, files)
        for service in ("", "railnet.agent.v1.NodeAgent"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        first = next(iter(stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)))
        assert first.status == health_pb2.HealthCheckResponse.SERVING
    (tmp_path / "stranger").mkdir()
    stranger = roleless_client(tls.ca_cert, tls.ca_key, tmp_path / "stranger")
    stub = health(agent, stranger)
    for call in (
        lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=10),
        lambda: next(iter(stub.Watch(health_pb2.HealthCheckRequest(), timeout=10))),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            call()
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    found = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_metrics_follow_the_node(agent: RunningAgent) -> None:
    stats = {
        SPEC.id: {"queries": 7, "rcodes": {"0": 5, "3": 2}, "buckets": [3, 4] + [0] * 13,
                  "seconds": 0.002},
    }  # fmt: skip
    metrics = AgentMetrics(agent.reconciler.status, lambda: stats)
    port = metrics.serve("127.0.0.1", 0)
    env = f'env="{SPEC.id}"'
    assert f"railnet_environment_generation{{{env}}}" not in scrape(port)  # nothing here yet
    key, endpoint = agent.reconciler.ensure(SPEC.id)
    other = ("node-2", ("B" * 43 + "=", "198.18.0.2:51820"))
    doc = build_document(SPEC, None, {"node-1": (key, endpoint), other[0]: other[1]})
    agent.reconciler.apply_document(doc, 0)
    metrics.applied(0.02, "ok")
    metrics.repaired(SPEC.id, 2)
    seen = scrape(port)
    assert seen[f"railnet_environment_generation{{{env}}}"] == doc.generation
    assert seen[f"railnet_environment_instances{{{env}}}"] == 2  # api#0 and db#0 on node-1
    assert seen[f"railnet_environment_peers{{{env}}}"] == 1
    assert seen[f"railnet_environment_drift{{{env}}}"] == 0
    assert seen[f'railnet_peer_receive_bytes_total{{{env},peer="node-2"}}'] == 0
    assert seen[f'railnet_dns_responses_total{{{env},rcode="NXDOMAIN"}}'] == 2
    assert seen[f"railnet_dns_queries_total{{{env}}}"] == 7
    assert seen['railnet_dns_response_duration_seconds_bucket{le="0.0001"}'] == 3
    assert seen['railnet_dns_response_duration_seconds_bucket{le="+Inf"}'] == 7
    assert seen['railnet_apply_duration_seconds_count{result="ok"}'] == 1
    assert seen[f"railnet_drift_repairs_total{{{env}}}"] == 2


def test_process_logs_rotate_while_their_writer_keeps_writing(tmp_path: Path) -> None:
    log = tmp_path / "rnwg0.log"
    with open(log, "ab", buffering=0) as writer:  # as wireguard-go holds its log
        writer.write(b"x" * 2000)
        assert rotate_logs(tmp_path, max_bytes=1000) == [log]
        assert (tmp_path / "rnwg0.log.1").stat().st_size == 2000
        writer.write(b"after\n")
    assert log.read_bytes() == b"after\n"
    assert rotate_logs(tmp_path, max_bytes=1000) == []
