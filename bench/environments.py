"""Many environments on a few nodes: what a node carries when it hosts hundreds of them.

One lab; ``--envs`` environments of ``--services`` services each, every service on one
node (round-robin), so each node builds every environment. Once they are all applied:

* memory per node: the agent, the resolver and every wireguard-go, from
  ``/proc/<pid>/status``, against the same node before any environment;
* idle CPU: what each agent and resolver use over ``--idle`` seconds with nothing to do
  but their periodic repair and their watches;
* DNS memory: the resolver's growth over its empty start, per environment served;
* adoption: one agent is stopped and started again, and timed until it answers (it
  repairs every stored environment before it serves). Adopting means nothing is rebuilt:
  its wireguard-go processes are the same ones, and no environment reports drift.

    python -m bench.environments [--nodes 5] [--envs 200] [--services 5] [--idle 60]
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from bench.common import (
    BenchError,
    Memory,
    Result,
    check_prerequisites,
    command_line,
    cpu_seconds,
    finish,
    lab_cluster,
    load_average,
    memory_of,
    mib,
    say,
)
from railnet.agent.wireguard import INOTIFY_INSTANCES
from railnet.control.deployer import EnvironmentDeployer
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.lab.local_cluster import Lab, LabNode

NAME = "Many environments"
TARGET = "a restarted agent adopts every environment: no wireguard-go replaced, no drift"
PROJECT = "bench"
DEPLOYERS = 2
"""Environments deployed at once while building up."""
ADOPT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Config:
    nodes: int
    envs: int
    services: int
    idle: float


FULL = Config(nodes=5, envs=200, services=5, idle=60.0)
QUICK = Config(nodes=3, envs=10, services=3, idle=10.0)


@dataclass(frozen=True)
class NodeMemory:
    agent: Memory
    resolver: Memory | None
    wireguard: list[Memory]

    @property
    def total_rss(self) -> int:
        parts = [self.agent, *([self.resolver] if self.resolver else []), *self.wireguard]
        return sum(m.rss for m in parts)


@contextmanager
def inotify_instances(needed: int) -> Iterator[int]:
    """At least ``needed`` inotify instances per user for the run, restored afterwards:
    every wireguard-go takes one, and the kernel's default (128) is fewer than the lab
    needs (see docs/operating.md, "Install"). Yields the limit in force."""
    before = int(INOTIFY_INSTANCES.read_text())
    if before >= needed:
        yield before
        return
    INOTIFY_INSTANCES.write_text(str(needed))
    try:
        yield needed
    finally:
        INOTIFY_INSTANCES.write_text(str(before))


def _spec(i: int, config: Config) -> EnvironmentSpec:
    services = tuple(
        ServiceSpec(f"svc-{j}", (f"node-{j % config.nodes + 1}",)) for j in range(config.services)
    )
    return EnvironmentSpec(PROJECT, f"env-{i:03d}", services=services)


def _pids(lab: Lab, node: LabNode) -> tuple[int, int | None]:
    pid = lab.agent_pid(node)
    if pid is None:
        raise BenchError(f"the agent of {node.name} is not running")
    return pid, lab.resolver_pid(node)


def _memory(lab: Lab, node: LabNode) -> NodeMemory:
    agent, resolver = _pids(lab, node)
    return NodeMemory(
        agent=memory_of(agent),
        resolver=memory_of(resolver) if resolver else None,
        wireguard=[memory_of(p) for p in lab.wireguard_pids(node)],
    )


def measure(config: Config, *, dns: bool = True) -> Result:
    started = time.monotonic()
    load = load_average()
    # One per wireguard-go, and a few for each agent and the rest of the machine.
    needed = config.envs * config.nodes + 64 * config.nodes + 256
    with inotify_instances(needed) as limit, lab_cluster(config.nodes, dns=dns) as (lab, cluster):
        say(f"environments: fs.inotify.max_user_instances is {limit} for the run")
        nodes = lab.nodes()
        empty = {n.name: _memory(lab, n) for n in nodes}
        deployer = EnvironmentDeployer(cluster, timeout=600)
        t0 = time.monotonic()

        def deploy(i: int) -> None:
            deployer.apply(_spec(i, config))
            if (i + 1) % 20 == 0:
                say(f"environments: {i + 1}/{config.envs} applied")

        with ThreadPoolExecutor(DEPLOYERS) as pool:
            list(pool.map(deploy, range(config.envs)))
        built = time.monotonic() - t0
        say(f"environments: {config.envs} applied in {built:.0f} s")
        time.sleep(2.0)
        full = {n.name: _memory(lab, n) for n in nodes}
        for node in nodes:
            if len(full[node.name].wireguard) != config.envs:
                raise BenchError(
                    f"{node.name} runs {len(full[node.name].wireguard)} wireguard-go, "
                    f"not {config.envs}"
                )

        # Idle: nothing asked of the agents.
        pids = {n.name: _pids(lab, n) for n in nodes}
        before = {k: (cpu_seconds(a), cpu_seconds(r) if r else 0.0) for k, (a, r) in pids.items()}
        time.sleep(config.idle)
        after = {k: (cpu_seconds(a), cpu_seconds(r) if r else 0.0) for k, (a, r) in pids.items()}
        idle_agent = {k: (after[k][0] - before[k][0]) / config.idle for k in pids}
        idle_resolver = {k: (after[k][1] - before[k][1]) / config.idle for k in pids}

        # Adoption: one agent stopped and started again.
        node = nodes[0]
        wireguard_before = sorted(lab.wireguard_pids(node))
        lab.kill_agent(node, signal.SIGTERM)
        t0 = time.monotonic()
        lab.restart_agent(node, timeout=ADOPT_TIMEOUT)
        adopt = time.monotonic() - t0
        say(f"environments: the agent of {node.name} adopted them in {adopt:.1f} s")
        wireguard_after = sorted(lab.wireguard_pids(node))
        with lab.client(node, timeout=120) as client:
            reports = client.status().environments
        drifting = sorted(r.env_id for r in reports if r.drift)
        replaced = len(set(wireguard_before) - set(wireguard_after))
        deployer.close()
    return _result(
        config,
        empty=empty,
        full=full,
        idle_agent=idle_agent,
        idle_resolver=idle_resolver,
        built=built,
        adopt=adopt,
        reports=len(reports),
        drifting=drifting,
        replaced=replaced,
        dns=dns,
        load=load,
        seconds=time.monotonic() - started,
    )


def _result(
    config: Config,
    *,
    empty: dict[str, NodeMemory],
    full: dict[str, NodeMemory],
    idle_agent: dict[str, float],
    idle_resolver: dict[str, float],
    built: float,
    adopt: float,
    reports: int,
    drifting: list[str],
    replaced: int,
    dns: bool,
    load: str,
    seconds: float,
) -> Result:
    passed = not drifting and replaced == 0 and reports == config.envs
    rows = []
    for name in sorted(full):
        e, f = empty[name], full[name]
        wireguard = sum(m.rss for m in f.wireguard)
        rows.append(
            f"| {name} | {mib(e.agent.rss)} | {mib(f.agent.rss)} | "
            f"{mib(f.resolver.rss) if f.resolver else '-'} | {len(f.wireguard)} | "
            f"{mib(wireguard)} | {mib(f.total_rss)} | {idle_agent[name] * 100:.1f}% | "
            f"{idle_resolver[name] * 100:.1f}% |"
        )
    resolvers = [
        (full[n].resolver.rss - empty[n].resolver.rss)  # type: ignore[union-attr]
        for n in full
        if full[n].resolver is not None and empty[n].resolver is not None
    ]
    dns_growth = sum(resolvers) / len(resolvers) if resolvers else 0.0
    agent_growth = sum(full[n].agent.rss - empty[n].agent.rss for n in full) / len(full)
    total = sum(f.total_rss for f in full.values()) / len(full)
    command = command_line(
        "bench.environments",
        config,
        FULL,
        QUICK,
        {
            "nodes": config.nodes,
            "envs": config.envs,
            "services": config.services,
            "idle": f"{config.idle:g}",
        },
    )
    body = [
        f"One lab of {config.nodes} nodes (DNS {'on' if dns else 'off'}); {config.envs} "
        f"environments of {config.services} services, one instance each, round-robin over "
        f"the nodes, so every node builds every environment (the run raises "
        "`fs.inotify.max_user_instances` for itself: each wireguard-go takes one, see "
        f"docs/operating.md). Applied {DEPLOYERS} at a time, "
        f"in {built:.0f} s. Memory is RSS from `/proc/<pid>/status`, before the first "
        f"environment and after the last; idle CPU is over {config.idle:g} s with nothing "
        "asked (the agents' periodic repair, every 30 s, and their watches run in it), as a "
        "share of one core.",
        "",
        "```",
        command,
        "```",
        "",
        "| node | agent, empty | agent | resolver | wireguard-go | their RSS | node total "
        "| idle agent CPU | idle resolver CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- Per node: **{mib(total)}** in all; the agent grows by "
        f"{mib(agent_growth)} ({agent_growth / config.envs:.0f} KiB per environment).",
        f"- DNS: the resolver grows by **{mib(dns_growth)}** over its empty start, "
        f"{dns_growth / config.envs:.0f} KiB per environment served.",
        f"- Adoption: the agent of node-1, stopped and started again, answered after "
        f"**{adopt:.1f} s**, having repaired all {reports} environments it holds; "
        f"{replaced} wireguard-go replaced, "
        f"{len(drifting)} environments with drift: {'**pass**' if passed else '**FAIL**'}.",
        "",
        f"The 1-minute load average was {load} when the benchmark started.",
    ]
    return Result(
        name=NAME,
        summary=f"{config.envs} environments on {config.nodes} nodes: {mib(total)} per node, "
        f"idle agent CPU {max(idle_agent.values()) * 100:.1f}%, adopted in {adopt:.1f} s",
        target=TARGET,
        passed=passed,
        body=body,
        seconds=seconds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.environments", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small lab, few environments")
    parser.add_argument("--nodes", type=int, help=f"lab nodes (default {FULL.nodes})")
    parser.add_argument("--envs", type=int, help=f"environments (default {FULL.envs})")
    parser.add_argument("--services", type=int, help=f"per environment ({FULL.services})")
    parser.add_argument("--idle", type=float, help=f"idle seconds measured ({FULL.idle:g})")
    parser.add_argument("--no-dns", action="store_true", help="start the lab without DNS")
    args = parser.parse_args()
    check_prerequisites()
    base = QUICK if args.quick else FULL
    config = Config(
        nodes=args.nodes or base.nodes,
        envs=args.envs or base.envs,
        services=args.services or base.services,
        idle=args.idle or base.idle,
    )
    return finish(measure(config, dns=not args.no_dns))


if __name__ == "__main__":
    raise SystemExit(main())
