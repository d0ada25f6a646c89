"""The agent's Prometheus metrics (``railnet agent --metrics-listen HOST:PORT``).

Names follow Prometheus conventions: base units (``_seconds``, ``_bytes``), ``_total`` on
counters, and labels with few values (the environment id, a peer's node name, an RCODE),
never one per request. What the kernel and the resolver already count (WireGuard bytes and
handshakes, DNS answers) is read when Prometheus scrapes, not copied on every change:

| metric | type | labels |
|---|---|---|
| ``railnet_environment_generation`` | gauge | env |
| ``railnet_environment_instances`` | gauge | env |
| ``railnet_environment_peers`` | gauge | env |
| ``railnet_environment_drift`` | gauge (changes a repair would make) | env |
| ``railnet_peer_last_handshake_age_seconds`` | gauge (absent before the first) | env, peer |
| ``railnet_peer_receive_bytes_total`` / ``..._transmit_bytes_total`` | counter | env, peer |
| ``railnet_dns_queries_total`` | counter | env |
| ``railnet_dns_responses_total`` | counter | env, rcode |
| ``railnet_dns_response_duration_seconds`` | histogram (the node's views together) | |
| ``railnet_apply_duration_seconds`` | histogram (ApplyDocument, by result) | result |
| ``railnet_drift_repairs_total`` | counter (changes made by repairs) | env |
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from railnet.agent.dns import LATENCY_BUCKETS
from railnet.agent.reconciler import EnvironmentReport

log = logging.getLogger("railnet.agent.metrics")
RCODES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}
APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _NodeCollector(Collector):
    """Reads the node's state when Prometheus scrapes."""

    def __init__(
        self,
        reports: Callable[[], list[EnvironmentReport]],
        dns_stats: Callable[[], Mapping[str, Mapping[str, Any]]] | None,
    ) -> None:
        self.reports = reports
        self.dns_stats = dns_stats

    def collect(self) -> Iterator[Metric]:
        generation = GaugeMetricFamily(
            "railnet_environment_generation", "The stored document's generation", labels=["env"]
        )
        instances = GaugeMetricFamily(
            "railnet_environment_instances", "Instances of the environment here", labels=["env"]
        )
        peers = GaugeMetricFamily(
            "railnet_environment_peers", "WireGuard peers of the environment", labels=["env"]
        )
        drift = GaugeMetricFamily(
            "railnet_environment_drift",
            "Changes a repair would make now (0: the node matches its document)",
            labels=["env"],
        )
        age = GaugeMetricFamily(
            "railnet_peer_last_handshake_age_seconds",
            "Seconds since the last WireGuard handshake with the peer",
            labels=["env", "peer"],
        )
        rx = CounterMetricFamily(
            "railnet_peer_receive_bytes",
            "Bytes received from the peer over WireGuard",
            labels=["env", "peer"],
        )
        tx = CounterMetricFamily(
            "railnet_peer_transmit_bytes",
            "Bytes sent to the peer over WireGuard",
            labels=["env", "peer"],
        )
        now = time.time()
        try:
            reports = self.reports()
        except Exception as exc:  # a scrape must never take the agent down
            log.warning("metrics: cannot read the node's state: %s", exc)
            reports = []
        for r in reports:
            generation.add_metric([r.env_id], r.generation)
            instances.add_metric([r.env_id], len(r.local.instances) if r.local else 0)
            peers.add_metric([r.env_id], len(r.peers))
            drift.add_metric([r.env_id], len(r.drift))
            for p in r.peers:
                if p.last_handshake:
                    age.add_metric([r.env_id, p.node], max(0.0, now - p.last_handshake))
                rx.add_metric([r.env_id, p.node], p.rx_bytes)
                tx.add_metric([r.env_id, p.node], p.tx_bytes)
        yield from (generation, instances, peers, drift, age, rx, tx)
        if self.dns_stats is not None:
            yield from _dns_families(self.dns_stats)


def _dns_families(read: Callable[[], Mapping[str, Mapping[str, Any]]]) -> Iterator[Metric]:
    queries = CounterMetricFamily(
        "railnet_dns_queries", "DNS queries read by the environment's view", labels=["env"]
    )
    responses = CounterMetricFamily(
        "railnet_dns_responses", "DNS replies sent, by RCODE", labels=["env", "rcode"]
    )
    try:
        stats = read()
    except Exception as exc:
        log.warning("metrics: cannot read the resolver's counters: %s", exc)
        stats = {}
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for env_id, s in sorted(stats.items()):
        queries.add_metric([env_id], int(s["queries"]))
        for rcode, n in sorted(dict(s["rcodes"]).items(), key=lambda kv: int(kv[0])):
            responses.add_metric([env_id, RCODES.get(int(rcode), str(rcode))], int(n))
        for i, n in enumerate(s["buckets"]):
            buckets[i] += int(n)
        total += float(s["seconds"])
    cumulative, running = [], 0
    for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], buckets, strict=True):
        running += n
        cumulative.append((bound, running))
    duration = HistogramMetricFamily(
        "railnet_dns_response_duration_seconds",
        "Time from reading a DNS query to sending its reply, every view of the node",
        buckets=cumulative,
        sum_value=total,
    )
    yield from (queries, responses, duration)


class AgentMetrics:
    """The agent's registry: the scrape-time collector plus what the agent itself counts."""

    def __init__(
        self,
        reports: Callable[[], list[EnvironmentReport]],
        dns_stats: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(reports, dns_stats))
        self.apply_duration = Histogram(
            "railnet_apply_duration_seconds",
            "Time an ApplyDocument took on this node, by result",
            ["result"],
            buckets=APPLY_BUCKETS,
            registry=self.registry,
        )
        self.repairs = Counter(
            "railnet_drift_repairs",
            "Changes made by repairs of drift (not by applies)",
            ["env"],
            registry=self.registry,
        )

    def applied(self, seconds: float, result: str) -> None:
        self.apply_duration.labels(result=result).observe(seconds)

    def repaired(self, env_id: str, changes: int) -> None:
        if changes:
            self.repairs.labels(env=env_id).inc(changes)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP; returns the port (0 picks one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
