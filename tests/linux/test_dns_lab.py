"""Internal DNS on a real lab, through real clients: libc getaddrinfo and dnspython inside
instance namespaces (via `railnet exec`, which reads /etc/netns/<ns>/resolv.conf), a TCP
connection by name, `railnet status` records, and forwarding to an upstream in the lab."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import IpMode

from .conftest import NETCHECK, LabNet, running_lab

pytestmark = pytest.mark.linux

UPSTREAM = "198.18.0.250"
UPSTREAM_SCRIPT = str(Path(__file__).with_name("upstream_dns.py"))
PORT = 7600


@pytest.fixture(scope="module")
def net() -> Iterator[LabNet]:
    with running_lab(3, dns_upstreams=(f"{UPSTREAM}:53",)) as lab:
        # The node's upstream resolver, on the underlay (reachable from the agents only).
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                lab.lab.underlay_netns,
                "ip",
                "addr",
                "add",
                f"{UPSTREAM}/24",
                "dev",
                "br0",
            ],
            check=True,
        )
        upstream = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                lab.lab.underlay_netns,
                sys.executable,
                UPSTREAM_SCRIPT,
                UPSTREAM,
                "53",
                "192.0.2.77",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert upstream.stdout is not None and upstream.stdout.readline().strip() == "ready"
            lab.deploy(
                EnvironmentSpec(
                    "shop",
                    "production",
                    services=(
                        ServiceSpec("api", ("node-1",)),
                        ServiceSpec("worker", ("node-2", "node-3")),
                    ),
                )
            )
            lab.deploy(
                EnvironmentSpec(
                    "shop",
                    "legacy",
                    ip_mode=IpMode.IPV6,
                    services=(ServiceSpec("api", ("node-1",)), ServiceSpec("worker", ("node-2",))),
                )
            )
            yield lab
        finally:
            upstream.kill()
            upstream.wait()


def railnet_exec(net: LabNet, target: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "railnet",
            "exec",
            "--cluster",
            str(net.lab.cluster_file),
            target,
            "--",
            *cmd,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


GETADDRINFO = (
    "import json,socket,sys; "
    "print(json.dumps(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80)})))"
)
DNSPYTHON = (
    "import json,sys,dns.resolver; r=dns.resolver.Resolver(); "
    "print(json.dumps({t: sorted(a.to_text() for a in r.resolve(sys.argv[1], t)) "
    "for t in sys.argv[2:]}))"
)


def worker_addresses(net: LabNet, env: str) -> tuple[list[str], list[str]]:
    doc = net.deployer.latest(net.deployer.read(_env_id("shop", env)))
    assert doc is not None
    svc = doc.service("worker")
    assert svc is not None
    return [i.ipv4 for i in svc.instances if i.ipv4], [i.ipv6 for i in svc.instances]


def _env_id(project: str, env: str) -> str:
    from railnet.core.names import environment_id

    return environment_id(project, env)


def test_libc_and_dnspython_see_both_families(net: LabNet) -> None:
    v4, v6 = worker_addresses(net, "production")
    r = railnet_exec(
        net, "shop/production/api", sys.executable, "-c", GETADDRINFO, "worker.railway.internal"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == sorted(v4 + v6)
    r = railnet_exec(
        net,
        "shop/production/api",
        sys.executable,
        "-c",
        DNSPYTHON,
        "WORKER.railway.internal",
        "A",
        "AAAA",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"A": sorted(v4), "AAAA": sorted(v6)}
    # One replica by name: <i>.<service>.<domain>.
    r = railnet_exec(
        net, "shop/production/api", sys.executable, "-c", GETADDRINFO, "1.worker.railway.internal"
    )
    assert json.loads(r.stdout) == sorted([v4[1], v6[1]])


def test_ipv6_only_environment_answers_aaaa_only(net: LabNet) -> None:
    _, v6 = worker_addresses(net, "legacy")
    r = railnet_exec(
        net, "shop/legacy/api", sys.executable, "-c", GETADDRINFO, "worker.railway.internal"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == sorted(v6)


def test_tcp_by_name_from_another_instance(net: LabNet) -> None:
    net.serve(net.netns("shop", "production", "worker", 0), "worker0", PORT)
    net.serve(net.netns("shop", "production", "worker", 1), "worker1", PORT)
    r = railnet_exec(
        net,
        "shop/production/api",
        sys.executable,
        NETCHECK,
        "tcp",
        "worker.railway.internal",
        str(PORT),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("worker0:ping", "worker1:ping")
    r = railnet_exec(
        net,
        "shop/production/api",
        sys.executable,
        NETCHECK,
        "tcp",
        "1.worker.railway.internal",
        str(PORT),
    )
    assert r.stdout.strip() == "worker1:ping"


def test_names_outside_the_domain_go_to_the_nodes_upstream(net: LabNet) -> None:
    r = railnet_exec(
        net, "shop/production/api", sys.executable, "-c", DNSPYTHON, "www.example.com", "A"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"A": ["192.0.2.77"]}
    # The instance itself cannot reach the upstream: only its agent can.
    r = railnet_exec(net, "shop/production/api", "ping", "-c", "1", "-W", "1", UPSTREAM)
    assert r.returncode != 0


def test_status_shows_each_environments_records_per_node(net: LabNet) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "railnet",
            "status",
            "--cluster",
            str(net.lab.cluster_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    v4, v6 = worker_addresses(net, "production")
    for node in json.loads(r.stdout):
        prod = next(e for e in node["environments"] if e["environment"] == "production")
        records = {(rec["name"], rec["type"], rec["value"]) for rec in prod["records"]}
        for address in v4:
            assert ("worker.railway.internal", "A", address) in records
        for address in v6:
            assert ("worker.railway.internal", "AAAA", address) in records
        legacy = [e for e in node["environments"] if e["environment"] == "legacy"]
        # legacy runs on node-1 and node-2 only; there it serves AAAA and no A at all.
        assert len(legacy) == (0 if node["node"] == "node-3" else 1)
        for env in legacy:
            types = {rec["type"] for rec in env["records"]}
            assert "AAAA" in types and "A" not in types
