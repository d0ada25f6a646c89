"""The linux tier: a real lab (namespaces, wireguard-go, agents with mutual TLS).

Every test here needs root, /dev/net/tun, wireguard-go and iproute2; without them the
whole tier is skipped with the reason, never passed (see tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from railnet.control.cluster import load_cluster
from railnet.control.deployer import Applied, EnvironmentDeployer
from railnet.core.desired import EnvironmentSpec
from railnet.lab.local_cluster import Lab

from ..capabilities import missing_capability

__all__ = ["missing_capability"]

NETCHECK = str(Path(__file__).with_name("netcheck.py"))


@dataclass
class Probe:
    ok: bool
    output: str


class LabNet:
    """A lab plus the helpers tests use to deploy and to send traffic inside it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.cluster = load_cluster(lab.cluster_file, "the lab's cluster file")
        self.deployer = EnvironmentDeployer(self.cluster)
        self._servers: list[subprocess.Popen[str]] = []

    def deploy(self, spec: EnvironmentSpec) -> Applied:
        return self.deployer.apply(spec)

    def netns(self, project: str, env: str, service: str, index: int = 0) -> str:
        from railnet.control.inspect import Target, find_instance

        return find_instance(self.cluster, Target(project, env, service, index))[1]

    def run(self, netns: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, timeout=timeout
        )

    def serve(self, netns: str, token: str, port: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, NETCHECK, "serve", token, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._servers.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"echo server in {netns} did not start: {line}"
        return proc

    def tcp(self, netns: str, host: str, port: int, timeout: float = 3) -> Probe:
        r = self.run(netns, sys.executable, NETCHECK, "tcp", host, str(port), str(timeout))
        return Probe(r.returncode == 0, (r.stdout + r.stderr).strip())

    def udp(self, netns: str, host: str, port: int, timeout: float = 2) -> Probe:
        r = self.run(netns, sys.executable, NETCHECK, "udp", host, str(port), str(timeout))
        return Probe(r.returncode == 0, (r.stdout + r.stderr).strip())

    def ping(self, netns: str, host: str, count: int = 1) -> Probe:
        r = self.run(netns, "ping", "-n", "-c", str(count), "-W", "2", host)
        return Probe(r.returncode == 0, (r.stdout + r.stderr).strip())

    def stop_servers(self) -> None:
        for proc in self._servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        self._servers.clear()


def file_cluster(lab: Lab, nodes: list[str] | None = None) -> dict[str, object]:
    """The lab's cluster as a file that lists its nodes itself (no control store), with
    absolute paths: for a test that needs a runner with its own idea of the membership.
    ``nodes``: only these (default: every member)."""
    cluster = load_cluster(lab.cluster_file, "the lab's cluster file")
    assert cluster.tls is not None and cluster.operator is not None
    entries = [
        {"name": n.name, "agent": n.agent, "underlay": n.underlay}
        for n in cluster.nodes
        if nodes is None or n.name in nodes
    ]
    return {
        "nodes": entries,
        "tls": {"ca": cluster.tls.ca, "cert": cluster.tls.cert, "key": cluster.tls.key},
        "operator": {"cert": cluster.operator.cert, "key": cluster.operator.key},
    }


def inline_cluster(lab: Lab) -> str:
    """The lab's cluster file as inline JSON (the stack setting's other form), with
    absolute paths."""
    raw = json.loads(lab.cluster_file.read_text())
    for section in ("tls", "operator"):
        raw[section] = {k: str(lab.directory / v) for k, v in raw[section].items()}
    return json.dumps(raw)


@contextmanager
def running_lab(nodes: int = 3, **kwargs: object) -> Iterator[LabNet]:
    directory = Path(tempfile.mkdtemp(prefix="railnet-test-lab-"))
    lab = Lab.up(directory / "lab", nodes, **kwargs)  # type: ignore[arg-type]
    net = LabNet(lab)
    try:
        yield net
    finally:
        net.stop_servers()
        net.deployer.close()
        lab.down()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def lab3() -> Iterator[LabNet]:
    with running_lab(3) as net:
        yield net


def wait_until(check: object, timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
