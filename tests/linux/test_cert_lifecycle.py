"""Certificates that rotate on live agents: revoke the provider's, reload with SIGHUP, and
it is refused; renew every certificate, reload, and the new ones work, with the same agent
processes and the tunnels carrying traffic throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest

from railnet.control.client import AgentAddress, AgentClient, AgentError
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.pki.certs import TlsFiles, holder_of

from .conftest import running_lab, wait_until

pytestmark = pytest.mark.linux

SPEC = EnvironmentSpec(
    "shop", "production", services=(ServiceSpec("a", ("node-1",)), ServiceSpec("b", ("node-2",)))
)


def certs(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "railnet", "certs", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_revoke_and_renew_on_live_agents() -> None:
    with running_lab(2, dns=False) as net:
        lab, tls = net.lab, net.lab.directory / "tls"
        doc = net.deploy(SPEC).document
        net.serve(net.netns("shop", "production", "b"), "b", 7950)
        b = doc.service("b")
        assert b is not None
        a_ns = net.netns("shop", "production", "a")
        assert net.tcp(a_ns, b.instances[0].ipv6, 7950).output == "b:ping"
        pids = [lab.agent_pid(n) for n in lab.nodes()]
        provider = TlsFiles(tls / "ca.pem", tls / "provider.pem", tls / "provider-key.pem")
        operator = TlsFiles(tls / "ca.pem", tls / "operator.pem", tls / "operator-key.pem")
        node_1 = lab.nodes()[0]

        def call(files: TlsFiles) -> object:
            address = AgentAddress("node-1", f"unix:{node_1.agent_socket}", files)
            with AgentClient(address, timeout=10) as client:
                return client.document(SPEC.id)

        assert call(provider) is not None
        old_serial = holder_of(provider.cert.read_bytes()).serial
        certs("revoke", "--dir", str(tls), "--cert", str(provider.cert))
        os.kill(pids[0], signal.SIGHUP)  # node-2 notices the changed file on its own

        def refused() -> bool:
            try:
                call(provider)
            except AgentError as exc:
                return exc.code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in exc.detail
            return False

        assert wait_until(refused, timeout=10)
        assert call(operator) is not None  # only that certificate is refused

        certs("renew", "--dir", str(tls), "--ca-dir", str(lab.directory / "ca"))
        assert holder_of(provider.cert.read_bytes()).serial != old_serial
        for pid in pids:
            assert pid is not None
            os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: call(provider) is not None, timeout=10)
        net.deployer.close()  # new channels: the provider's certificate changed on disk
        spec = EnvironmentSpec(
            "shop", "production", services=(*SPEC.services, ServiceSpec("c", ("node-2",)))
        )
        assert net.deploy(spec).document.generation == doc.generation + 1
        # Same agent processes, and the tunnel never stopped carrying traffic.
        assert [lab.agent_pid(n) for n in lab.nodes()] == pids
        assert net.tcp(a_ns, b.instances[0].ipv6, 7950).output == "b:ping"
