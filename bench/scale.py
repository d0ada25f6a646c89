"""Cost in proportion to the change: one service added to environments of growing size.

One lab, one environment. It starts at the first size, and each sample adds one service
(then removes it again) and measures: the time until every node has applied it, the CPU
the agents spent, and what the deployer sent and received (bytes, RPCs). Then the
environment grows to the next size and the samples run again. All sizes run in one run, so
their ratios compare like with like on a shared machine.

    python -m bench.scale [--nodes 10] [--sizes 100,300,1000] [--adds 12]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from bench.common import (
    BenchError,
    Result,
    check_prerequisites,
    command_line,
    cpu_seconds,
    finish,
    lab_cluster,
    load_average,
    median,
    percentile,
    say,
)
from railnet.control.deployer import EnvironmentDeployer
from railnet.core.desired import EnvironmentSpec, ServiceSpec

NAME = "Cost per change"
MAX_RATIO = 1.5
TARGET_P50_MS = 250.0
TARGET = (
    f"p50 and agent CPU per add at the largest size <= {MAX_RATIO}x the smallest; "
    f"p50 at the largest < {TARGET_P50_MS:.0f} ms"
)
PROJECT, ENVIRONMENT = "bench", "scale"
REPAIR_INTERVAL = 3600.0
"""Seconds between the agents' periodic full repairs in this lab: beyond the run. A full
repair reads the whole environment by design (it is how drift nobody reported is found),
and the lab's agents, started together, repair together: every 30 s (the default) all ten
would read all of it on the two cores the samples share, and land in whichever sample
runs then. Its cost is measured where it belongs, as idle CPU (``bench.environments``)."""


@dataclass(frozen=True)
class Config:
    nodes: int
    sizes: tuple[int, ...]
    adds: int


FULL = Config(nodes=10, sizes=(100, 300, 1000), adds=12)
QUICK = Config(nodes=4, sizes=(20, 100), adds=3)


@dataclass(frozen=True)
class Size:
    services: int
    adds: tuple[float, ...]
    """Seconds per add."""
    cpu_per_node: float
    """Median over the adds: agents' CPU seconds per add, divided by the nodes."""
    busiest: float
    """Median over the adds: the busiest agent's CPU seconds."""
    sent: int
    """Median bytes the deployer sent per add (protobuf requests)."""
    received: int
    rpcs: int
    document: int
    """Bytes of the whole document after the add: what a whole send would carry per node."""


def node_of(i: int, nodes: int) -> str:
    return f"node-{i % nodes + 1}"


def services(count: int, nodes: int) -> tuple[ServiceSpec, ...]:
    return tuple(ServiceSpec(f"svc-{i:04d}", (node_of(i, nodes),)) for i in range(count))


def measure(config: Config, *, dns: bool = True) -> Result:
    started = time.monotonic()
    load = load_average()
    results: list[Size] = []
    with lab_cluster(config.nodes, dns=dns, reconcile_interval=REPAIR_INTERVAL) as (
        lab,
        cluster,
    ):
        per_node = []
        for node in lab.nodes():
            pid = lab.agent_pid(node)
            if not pid:
                raise BenchError(f"the agent of {node.name} is not running")
            per_node.append([pid] + ([r] if (r := lab.resolver_pid(node)) else []))
        deployer = EnvironmentDeployer(cluster, timeout=900)  # growing takes a while

        def counters() -> tuple[int, int, int]:
            clients = list(deployer._clients.values())
            return (
                sum(c.sent_bytes for c in clients),
                sum(c.received_bytes for c in clients),
                sum(c.calls for c in clients),
            )

        for size in config.sizes:
            base = services(size, config.nodes)
            spec = EnvironmentSpec(PROJECT, ENVIRONMENT, services=base)
            t0 = time.perf_counter()
            deployer.apply(spec)
            took = time.perf_counter() - t0
            say(f"scale: {size} services on {config.nodes} nodes in {took:.1f} s")
            samples: list[tuple[float, float, float, int, int, int]] = []
            document = 0
            for k in range(config.adds + 1):  # the first is a warm-up
                name, node = f"add-{k:02d}", node_of(k, config.nodes)
                with_new = EnvironmentSpec(
                    PROJECT, ENVIRONMENT, services=(*base, ServiceSpec(name, (node,)))
                )
                cpu_before = [sum(cpu_seconds(p) for p in pids) for pids in per_node]
                sent, received, rpcs = counters()
                t0 = time.perf_counter()
                applied = deployer.apply(with_new)
                elapsed = time.perf_counter() - t0
                used = [
                    sum(cpu_seconds(p) for p in pids) - b
                    for pids, b in zip(per_node, cpu_before, strict=True)
                ]
                after = counters()
                if not any(f"create instance {name}#0" in c for c in applied.changes[node]):
                    raise BenchError(f"adding {name}: {node} reported {applied.changes[node]}")
                document = len(applied.document.to_json())
                if k:
                    samples.append(
                        (
                            elapsed,
                            sum(used) / config.nodes,
                            max(used),
                            after[0] - sent,
                            after[1] - received,
                            after[2] - rpcs,
                        )
                    )
                    say(f"scale {size}: add {k}/{config.adds} {elapsed * 1000:.0f} ms")
                deployer.apply(spec)
            results.append(
                Size(
                    services=size,
                    adds=tuple(s[0] for s in samples),
                    cpu_per_node=median([s[1] for s in samples]),
                    busiest=median([s[2] for s in samples]),
                    sent=int(median([float(s[3]) for s in samples])),
                    received=int(median([float(s[4]) for s in samples])),
                    rpcs=int(median([float(s[5]) for s in samples])),
                    document=document,
                )
            )
    return _result(config, results, dns, load, time.monotonic() - started)


def _result(config: Config, results: list[Size], dns: bool, load: str, seconds: float) -> Result:
    first, last = results[0], results[-1]
    p50 = {r.services: percentile(list(r.adds), 50) for r in results}
    latency_ratio = p50[last.services] / p50[first.services]
    cpu_ratio = last.cpu_per_node / first.cpu_per_node if first.cpu_per_node else float("inf")
    passed = (
        latency_ratio <= MAX_RATIO
        and cpu_ratio <= MAX_RATIO
        and p50[last.services] * 1000 < TARGET_P50_MS
    )
    rows = [
        f"| {r.services} | {p50[r.services] * 1000:.0f} | "
        f"{percentile(list(r.adds), 95) * 1000:.0f} | {r.cpu_per_node * 1000:.0f} | "
        f"{r.busiest * 1000:.0f} | {r.sent:,} | {r.received:,} | {r.rpcs} | {r.document:,} |"
        for r in results
    ]
    body = [
        f"One environment on {config.nodes} lab nodes (DNS {'on' if dns else 'off'}), grown "
        f"through {', '.join(str(s) for s in config.sizes)} services (one instance each, "
        f"round-robin). At each size, {config.adds} samples (after one warm-up) each add one "
        "service and time `EnvironmentDeployer.apply` until every node has applied it; the "
        "service is removed again between samples. CPU is read from `/proc/<pid>/stat` of "
        "every agent and resolver; bytes and RPCs are what the deployer's clients sent and "
        "received (protobuf sizes). The agents' periodic full repair is set beyond the run "
        f"({REPAIR_INTERVAL:.0f} s): it reads the whole environment by design, whatever "
        "changed, and the lab's agents would all run it at the same moments on the cores "
        "the samples share; the self-healer's watches stay on. Its cost shows as idle CPU "
        "in Many environments.",
        "",
        "```",
        command_line(
            "bench.scale",
            config,
            FULL,
            QUICK,
            {"nodes": config.nodes, "sizes": ",".join(map(str, config.sizes)), "adds": config.adds},
        ),
        "```",
        "",
        "| services | p50 ms | p95 ms | agent CPU ms per node per add | busiest agent ms "
        "| bytes sent | bytes received | RPCs | whole document bytes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"At {last.services} services against {first.services}: p50 **{latency_ratio:.2f}x**, "
        f"agent CPU per node **{cpu_ratio:.2f}x** (target <= {MAX_RATIO}x); p50 at "
        f"{last.services}: **{p50[last.services] * 1000:.0f} ms** (target < "
        f"{TARGET_P50_MS:.0f} ms): {'**pass**' if passed else '**FAIL**'}.",
        "",
        f"The 1-minute load average was {load} when the benchmark started.",
    ]
    return Result(
        name=NAME,
        summary=f"{first.services}→{last.services} services: p50 {latency_ratio:.2f}x, "
        f"CPU {cpu_ratio:.2f}x, p50 {p50[last.services] * 1000:.0f} ms",
        target=TARGET,
        passed=passed,
        body=body,
        seconds=seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small lab and sizes")
    parser.add_argument("--nodes", type=int, help=f"lab nodes (default {FULL.nodes})")
    parser.add_argument("--sizes", help="services per size, comma-separated (default 100,300,1000)")
    parser.add_argument("--adds", type=int, help=f"samples per size (default {FULL.adds})")
    parser.add_argument("--no-dns", action="store_true", help="start the lab without DNS")
    args = parser.parse_args()
    check_prerequisites()
    base = QUICK if args.quick else FULL
    config = Config(
        nodes=args.nodes or base.nodes,
        sizes=tuple(int(s) for s in args.sizes.split(",")) if args.sizes else base.sizes,
        adds=args.adds or base.adds,
    )
    return finish(measure(config, dns=not args.no_dns))


if __name__ == "__main__":
    raise SystemExit(main())
