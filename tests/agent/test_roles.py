"""Roles on the control channel: the per-RPC table, enforced on a real mTLS server, and the
audit line of every mutating call."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest

from railnet.agent.authz import MUTATING, RPC_ROLES
from railnet.control.client import AgentAddress, AgentClient
from railnet.pki.certs import (
    OPERATOR_COMMON_NAME,
    ClusterTls,
    Role,
    TlsFiles,
    holder_of,
)
from tests.certs import roleless_client

from .test_servicer import ENV, RPC_TIMEOUT, SPEC, RunningAgent, agent, build, refused, tls

__all__ = ["agent", "tls"]  # the fixtures this module shares with test_servicer

pytestmark = pytest.mark.agent


def client_for(agent: RunningAgent, files: TlsFiles) -> AgentClient:
    return AgentClient(AgentAddress("node-1", agent.address, files), timeout=RPC_TIMEOUT)


def test_every_certificate_carries_its_role(tls: ClusterTls) -> None:
    assert holder_of(tls.provider.cert.read_bytes()).role is Role.PROVIDER
    assert tls.operator is not None
    operator = holder_of(tls.operator.cert.read_bytes())
    assert (operator.role, operator.name) == (Role.OPERATOR, OPERATOR_COMMON_NAME)
    assert holder_of(tls.nodes["node-1"].cert.read_bytes()).role is Role.NODE


def test_the_table_covers_every_rpc_of_the_service() -> None:
    from railnet.agent.v1 import agent_pb2

    rpcs = {m.name for m in agent_pb2.DESCRIPTOR.services_by_name["NodeAgent"].methods}
    assert set(RPC_ROLES) == rpcs
    assert all(Role.NODE not in roles for roles in RPC_ROLES.values())
    assert all(RPC_ROLES[rpc] == {Role.PROVIDER} for rpc in MUTATING)


def test_an_operator_reads_but_cannot_change_anything(agent: RunningAgent, tls: ClusterTls) -> None:
    with client_for(agent, tls.provider) as provider:
        doc = build(provider)
        provider.apply(doc.to_json(), 0)
    assert tls.operator is not None
    with client_for(agent, tls.operator) as operator:
        assert operator.document(ENV) == doc.to_json()
        assert operator.status(ENV).environments[0].generation == doc.generation
        denied = [
            refused(lambda: operator.ensure("eother"), grpc.StatusCode.PERMISSION_DENIED),
            refused(
                lambda: operator.apply(doc.with_generation(2).to_json(), doc.generation),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            refused(lambda: operator.delete(ENV), grpc.StatusCode.PERMISSION_DENIED),
        ]
    rpcs = ("EnsureEnvironment", "ApplyDocument", "DeleteEnvironment")
    for error, rpc in zip(denied, rpcs, strict=True):
        assert "role operator" in error.detail and rpc in error.detail
    # Nothing changed: same document, no new environment.
    assert agent.reconciler.document(ENV) == doc
    assert agent.reconciler.document("eother") is None
    assert agent.state_dir.joinpath("environments", "eother").exists() is False


def test_a_certificate_without_a_role_may_do_nothing(
    agent: RunningAgent, tls: ClusterTls, tmp_path: Path
) -> None:
    with client_for(agent, tls.provider) as provider:
        doc = build(provider)
        provider.apply(doc.to_json(), 0)
    with client_for(agent, roleless_client(tls.ca_cert, tls.ca_key, tmp_path)) as nobody:
        for call in (
            lambda: nobody.document(ENV),
            lambda: nobody.status(),
            lambda: nobody.ensure("eother"),
            lambda: nobody.apply(doc.with_generation(2).to_json(), doc.generation),
            lambda: nobody.delete(ENV),
        ):
            error = refused(call, grpc.StatusCode.PERMISSION_DENIED)
            assert "role none" in error.detail and "stranger" in error.detail
    assert agent.reconciler.document(ENV) == doc


def test_every_mutating_call_writes_one_audit_line(
    agent: RunningAgent, tls: ClusterTls, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="railnet.audit")
    serial = format(holder_of(tls.provider.cert.read_bytes()).serial, "x")
    with client_for(agent, tls.provider) as provider:
        doc = build(provider)
        provider.apply(doc.to_json(), 0)
        refused(
            lambda: provider.apply(doc.with_generation(3).to_json(), 0), grpc.StatusCode.ABORTED
        )
        provider.document(ENV)  # a read: no audit line
        provider.delete(ENV)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "railnet.audit"]
    assert [(e["audit"], e["generation_before"], e["generation_after"]) for e in lines] == [
        ("EnsureEnvironment", 0, 0),
        ("ApplyDocument", 0, 1),
        ("ApplyDocument", 1, 1),
        ("DeleteEnvironment", 1, 0),
    ]
    assert all(e["env_id"] == SPEC.id and e["serial"] == serial for e in lines)
    assert all(e["caller"] == "CN=railnet-provider" and e["role"] == "provider" for e in lines)
    assert [e["result"].split(":")[0] for e in lines] == ["ok", "ok", "ABORTED", "ok"]
