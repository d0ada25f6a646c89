"""Cost per change as the fleet grows: one service added to an environment spread over more
and more nodes of one large lab.

One lab of ``--nodes`` nodes; one environment, first spread over the first ``spreads[0]``
nodes (``--per-node`` services on each), then grown over more of them. At each spread,
each sample adds one service and then removes it again, and counts what the deployer's
clients did: RPCs and bytes, and which nodes they asked. The cluster stays the same size
all along, so a deploy that read the cluster would ask every node at every spread; one
that reads only the environment asks its holders (hosting nodes and keepers).

    python -m bench.fleet [--nodes 40] [--spreads 10,20,40] [--adds 5] [--per-node 2]
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
    finish,
    lab_cluster,
    load_average,
    median,
    percentile,
    say,
)
from railnet.control.deployer import EnvironmentDeployer
from railnet.core.desired import EnvironmentSpec, ServiceSpec

NAME = "Cost per change, fleet size"
MAX_SPREAD = 1.25
TARGET = (
    "no node outside the environment is asked; RPCs per holder at the widest spread "
    f"<= {MAX_SPREAD}x the narrowest"
)
PROJECT, ENVIRONMENT = "bench", "fleet"


@dataclass(frozen=True)
class Config:
    nodes: int
    spreads: tuple[int, ...]
    adds: int
    per_node: int


FULL = Config(nodes=40, spreads=(10, 20, 40), adds=5, per_node=2)
QUICK = Config(nodes=8, spreads=(2, 4, 8), adds=3, per_node=2)


@dataclass(frozen=True)
class Spread:
    nodes: int
    """Hosting nodes of the environment."""
    holders: int
    """Nodes that hold its document: the hosting ones and the keepers."""
    adds: tuple[float, ...]
    """Seconds per add."""
    rpcs: int
    """Median RPCs per add."""
    sent: int
    received: int
    asked: int
    """Most nodes asked by one add."""
    outside: tuple[str, ...]
    """Nodes asked that do not hold the environment (any sample)."""


def measure(config: Config, *, dns: bool = True) -> Result:
    if max(config.spreads) > config.nodes:
        raise BenchError(f"a spread of {max(config.spreads)} needs as many lab nodes")
    started = time.monotonic()
    load = load_average()
    results: list[Spread] = []
    with lab_cluster(config.nodes, dns=dns) as (lab, cluster):
        names = [n.name for n in lab.nodes()]
        deployer = EnvironmentDeployer(cluster, timeout=600)

        def counters() -> dict[str, tuple[int, int, int]]:
            return {
                node: (c.calls, c.sent_bytes, c.received_bytes)
                for node, c in list(deployer._clients.items())
            }

        for spread in config.spreads:
            hosting = names[:spread]
            base = tuple(
                ServiceSpec(f"svc-{i:03d}", (hosting[i % spread],))
                for i in range(spread * config.per_node)
            )
            spec = EnvironmentSpec(PROJECT, ENVIRONMENT, services=base)
            t0 = time.perf_counter()
            deployer.apply(spec)
            say(f"fleet: spread over {spread} of {config.nodes} nodes in "
                f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
            samples: list[tuple[float, int, int, int, int]] = []
            outside: set[str] = set()
            holders = 0
            for k in range(config.adds + 1):  # the first is a warm-up
                node = hosting[k % spread]
                with_new = EnvironmentSpec(
                    PROJECT, ENVIRONMENT, services=(*base, ServiceSpec(f"add-{k:02d}", (node,)))
                )
                before = counters()
                t0 = time.perf_counter()
                applied = deployer.apply(with_new)
                elapsed = time.perf_counter() - t0
                after = counters()
                doc = applied.document
                holding = {n.name for n in doc.nodes} | set(doc.keepers) | set(doc.leaving)
                holders = len(holding)
                asked = {n for n, c in after.items() if c[0] > before.get(n, (0, 0, 0))[0]}
                outside |= asked - holding
                if k:
                    samples.append(
                        (
                            elapsed,
                            _grown(0, before, after),
                            _grown(1, before, after),
                            _grown(2, before, after),
                            len(asked),
                        )
                    )
                    say(f"fleet {spread}: add {k}/{config.adds} {elapsed * 1000:.0f} ms, "
                        f"{len(asked)} nodes asked")  # fmt: skip
                deployer.apply(spec)
            results.append(
                Spread(
                    nodes=spread,
                    holders=holders,
                    adds=tuple(s[0] for s in samples),
                    rpcs=int(median([float(s[1]) for s in samples])),
                    sent=int(median([float(s[2]) for s in samples])),
                    received=int(median([float(s[3]) for s in samples])),
                    asked=max(s[4] for s in samples),
                    outside=tuple(sorted(outside)),
                )
            )
        deployer.close()
    return _result(config, results, dns, load, time.monotonic() - started)


def _grown(
    field: int, before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
) -> int:
    """How much one of the clients' counters (calls, bytes sent, received) grew, summed."""
    return sum(c[field] - before.get(n, (0, 0, 0))[field] for n, c in after.items())


def _result(config: Config, results: list[Spread], dns: bool, load: str, seconds: float) -> Result:
    first, last = results[0], results[-1]
    per_holder = {r.nodes: r.rpcs / r.holders for r in results}
    growth = per_holder[last.nodes] / per_holder[first.nodes]
    outside = sorted({n for r in results for n in r.outside})
    passed = not outside and growth <= MAX_SPREAD
    rows = [
        f"| {r.nodes} | {r.holders} | {percentile(list(r.adds), 50) * 1000:.0f} | "
        f"{percentile(list(r.adds), 95) * 1000:.0f} | {r.rpcs} | {r.asked} | "
        f"{r.rpcs / r.holders:.2f} | {r.sent:,} | {r.received:,} | {len(r.outside)} |"
        for r in results
    ]
    command = command_line(
        "bench.fleet",
        config,
        FULL,
        QUICK,
        {
            "nodes": config.nodes,
            "spreads": ",".join(map(str, config.spreads)),
            "adds": config.adds,
            "per-node": config.per_node,
        },
    )
    body = [
        f"One lab of {config.nodes} nodes (DNS {'on' if dns else 'off'}); one environment "
        f"spread over {', '.join(str(s) for s in config.spreads)} of them, "
        f"{config.per_node} services per hosting node. At each spread, {config.adds} samples "
        "(after one warm-up) each add one service and time `EnvironmentDeployer.apply` until "
        "every node has applied it, then remove it again. RPCs, bytes and the nodes asked "
        "are counted on the deployer's clients; holders are the environment's hosting nodes "
        "and its keepers (which keep its document wherever it runs).",
        "",
        "```",
        command,
        "```",
        "",
        "| hosting nodes | holders | p50 ms | p95 ms | RPCs per add | nodes asked "
        "| RPCs per holder | bytes sent | bytes received | nodes asked outside |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"The cluster has {config.nodes} nodes at every spread. RPCs per holder at "
        f"{last.nodes} hosting nodes against {first.nodes}: **{growth:.2f}x** (target <= "
        f"{MAX_SPREAD}x); nodes asked outside the environment: "
        f"**{', '.join(outside) if outside else 'none'}**: "
        f"{'**pass**' if passed else '**FAIL**'}.",
        "",
        "Bytes grow faster than the holders: every node's delta carries the document's "
        "header, whose node list (keys, endpoints) is the environment's.",
        "",
        f"The 1-minute load average was {load} when the benchmark started.",
    ]
    return Result(
        name=NAME,
        summary=f"{first.nodes}→{last.nodes} hosting nodes of {config.nodes}: RPCs per holder "
        f"{growth:.2f}x, {len(outside)} nodes asked outside",
        target=TARGET,
        passed=passed,
        body=body,
        seconds=seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small lab and spreads")
    parser.add_argument("--nodes", type=int, help=f"lab nodes (default {FULL.nodes})")
    parser.add_argument("--spreads", help="hosting nodes per step, comma-separated (10,20,40)")
    parser.add_argument("--adds", type=int, help=f"samples per spread (default {FULL.adds})")
    parser.add_argument(
        "--per-node", type=int, help=f"services per hosting node (default {FULL.per_node})"
    )
    parser.add_argument("--no-dns", action="store_true", help="start the lab without DNS")
    args = parser.parse_args()
    check_prerequisites()
    base = QUICK if args.quick else FULL
    config = Config(
        nodes=args.nodes or base.nodes,
        spreads=tuple(int(s) for s in args.spreads.split(",")) if args.spreads else base.spreads,
        adds=args.adds or base.adds,
        per_node=args.per_node or base.per_node,
    )
    return finish(measure(config, dns=not args.no_dns))


if __name__ == "__main__":
    raise SystemExit(main())
