"""Running railnet on a real host: the systemd unit systemd itself accepts, and the DNS
counters of a real resolver process reaching Prometheus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import pytest

from railnet.agent.config import load_agent_config
from railnet.agent.install import UNIT_NAME, install
from railnet.agent.metrics import AgentMetrics
from railnet.agent.resolver import ResolverProcess
from railnet.core.dns import ResolverView, ViewChange

from ..documents import make_document

pytestmark = pytest.mark.linux


def test_node_install_writes_a_unit_that_systemd_accepts(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze on this machine: the unit cannot be verified here")
    done = install(
        node="node-1",
        endpoint_host="198.18.0.1",
        config=tmp_path / "agent.toml",
        unit_dir=tmp_path,
        tls_dir=tmp_path / "tls",
    )
    assert done.unit == tmp_path / UNIT_NAME and done.config_written and not done.enabled
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(done.unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert UNIT_NAME not in verify.stderr, verify.stderr  # no warning about the unit
    # The skeleton is the agent's own format: with its TLS files named, it loads.
    config = load_agent_config(done.config, {})
    assert config.node == "node-1" and config.tls is not None
    assert config.tls.cert == tmp_path / "tls" / "node-1.pem"
    # A second install keeps the operator's config.
    done.config.write_text(done.config.read_text() + "\n# edited\n")
    again = install(node="x", endpoint_host=None, config=done.config, unit_dir=tmp_path)
    assert not again.config_written and done.config.read_text().endswith("# edited\n")


def test_dns_counters_of_a_real_resolver_reach_prometheus(tmp_path: Path) -> None:
    resolver = ResolverProcess(tmp_path / "resolver.sock", port=0)
    resolver.start()
    pid = resolver.pid
    try:
        doc = make_document({"api": 2}, env_id="emetrics")
        view = ResolverView.from_document(doc, None)
        loopback = ResolverView(**{**view.__dict__, "listen": ("127.0.0.1",)})
        resolver.apply(loopback)
        (_, port), *_ = resolver.endpoints("emetrics")
        for name, rcode in (("api.railway.internal", 0), ("nope.railway.internal", 3)) * 3:
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port)
            assert reply.rcode() == rcode
        metrics = AgentMetrics(list, resolver.stats)
        http = metrics.serve("127.0.0.1", 0)
        text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read()
        lines = set(text.decode().splitlines())
        assert 'railnet_dns_queries_total{env="emetrics"} 6.0' in lines
        assert 'railnet_dns_responses_total{env="emetrics",rcode="NOERROR"} 3.0' in lines
        assert 'railnet_dns_responses_total{env="emetrics",rcode="NXDOMAIN"} 3.0' in lines
        assert "railnet_dns_response_duration_seconds_count 6.0" in lines
    finally:
        resolver.close()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)


def test_a_real_resolver_serves_a_view_change_and_refuses_a_stale_one(tmp_path: Path) -> None:
    resolver = ResolverProcess(tmp_path / "resolver.sock", port=0)
    resolver.start()
    pid = resolver.pid
    adopter = ResolverProcess(tmp_path / "resolver.sock", port=0)
    try:
        first = make_document({"api": 2}, env_id="echange")
        second = make_document({"api": 2, "db": 1}, env_id="echange", generation=2)
        third = make_document({"db": 1}, env_id="echange", generation=3)
        on_loopback = {"listen": ("127.0.0.1",)}
        view = ResolverView.from_document(first, None)
        resolver.apply(ResolverView(**{**view.__dict__, **on_loopback}))
        (_, port), *_ = resolver.endpoints("echange")

        def ask(name: str) -> int:
            query = dns.message.make_query(name, "A")
            return dns.query.udp(query, "127.0.0.1", port=port, timeout=2).rcode()

        assert ask("db.railway.internal") == 3
        change = ViewChange.between(first, second, None)
        assert change is not None
        change = ViewChange(
            ResolverView(**{**change.head.__dict__, **on_loopback}),
            change.base_serial,
            change.removed,
            change.records,
        )
        assert resolver.update(change)
        assert ask("db.railway.internal") == 0 and ask("api.railway.internal") == 0
        assert resolver.served() == {"echange": 2}
        assert resolver.endpoints("echange")[0][1] == port  # the same sockets
        # A second agent (it has sent nothing, so it asks) with a change made from serial 1,
        # which the resolver no longer serves: refused, and nothing changes.
        stale = ViewChange.between(first, third, None)
        assert stale is not None
        assert adopter.update(stale) is False
        assert resolver.served() == {"echange": 2} and ask("api.railway.internal") == 0
    finally:
        adopter.close()
        resolver.close()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
