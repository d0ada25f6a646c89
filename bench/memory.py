"""Memory: agent and wireguard-go resident memory per environment per node.

A lab of N nodes gets environments one by one; each environment puts two service
instances on every node, and after it is applied one instance on node-1 pings one on
node-2 (a WireGuard handshake and a little traffic, so wireguard-go is past its idle
state). At each sample point the agent (one per node) and every wireguard-go (one per
environment per node) are read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from bench.common import (
    BenchError,
    Memory,
    Result,
    check_prerequisites,
    finish,
    lab_cluster,
    memory_of,
    mib,
    ping,
    run,
    say,
)
from railnet.control.deployer import EnvironmentDeployer
from railnet.control.inspect import Target, find_instance
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.lab.local_cluster import Lab

NAME = "Memory per environment"
TARGET = "none set (tracked)"
PER_NODE = 2
"""Service instances each environment puts on each node."""
SETTLE = 1.0
"""Seconds to let the processes settle before reading them."""


@dataclass(frozen=True)
class Config:
    nodes: int
    samples: tuple[int, ...]
    """Environment counts to sample at, ascending; the first is 0."""


FULL = Config(nodes=3, samples=(0, 1, 10))
QUICK = Config(nodes=2, samples=(0, 1, 3))


@dataclass(frozen=True)
class Sample:
    envs: int
    agents: list[Memory]
    """One per node."""
    wireguard: list[Memory]
    """One per environment per node."""


def _spec(i: int, nodes: int) -> EnvironmentSpec:
    services = tuple(
        ServiceSpec(f"svc-{n}-{j}", (f"node-{n}",))
        for n in range(1, nodes + 1)
        for j in range(PER_NODE)
    )
    return EnvironmentSpec(project="bench", environment=f"mem-{i:02d}", services=services)


def _sample(lab: Lab, envs: int) -> Sample:
    time.sleep(SETTLE)
    agents: list[Memory] = []
    wireguard: list[Memory] = []
    for node in lab.nodes():
        pid = lab.agent_pid(node)
        if pid is None:
            raise BenchError(f"the agent of {node.name} is not running")
        # The agent and, with DNS, the resolver process that serves its views.
        own = [memory_of(p) for p in (pid, lab.resolver_pid(node)) if p is not None]
        agents.append(Memory(*(sum(getattr(m, f) for m in own) for f in ("rss", "anon", "hwm"))))
        pids = lab.wireguard_pids(node)
        if len(pids) != envs:
            raise BenchError(f"{node.name} runs {len(pids)} wireguard-go for {envs} environments")
        wireguard.extend(memory_of(p) for p in pids)
    return Sample(envs, agents, wireguard)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def measure(config: Config, *, dns: bool) -> Result:
    if config.nodes < 2:
        raise BenchError("the memory benchmark needs 2 nodes or more (it pings across nodes)")
    started = time.monotonic()
    samples: list[Sample] = []
    with lab_cluster(config.nodes, dns=dns) as (lab, cluster):
        deployer = EnvironmentDeployer(cluster)
        deployed = 0
        for target in config.samples:
            while deployed < target:
                spec = _spec(deployed, config.nodes)
                deployer.apply(spec)
                _, a = find_instance(cluster, Target("bench", spec.environment, "svc-1-0", 0))
                _, b = find_instance(cluster, Target("bench", spec.environment, "svc-2-0", 0))
                address = _address_of(a)
                ping(b, address)
                deployed += 1
            samples.append(_sample(lab, deployed))
            say(f"memory: {deployed} environments sampled")

    first, last = samples[1], samples[-1]
    agent_step = (_mean([m.rss for m in last.agents]) - _mean([m.rss for m in first.agents])) / (
        last.envs - first.envs
    )
    agent_anon_step = (
        _mean([m.anon for m in last.agents]) - _mean([m.anon for m in first.agents])
    ) / (last.envs - first.envs)
    wg_rss = _mean([m.rss for m in last.wireguard])
    wg_anon = _mean([m.anon for m in last.wireguard])
    per_env = agent_step + wg_rss
    per_env_anon = agent_anon_step + wg_anon
    body = [
        f"A lab of {config.nodes} nodes (DNS {'on' if dns else 'off'}). Environments are "
        f"added one at a time; each puts {PER_NODE} service instances on every node, and "
        "after it is applied an instance on node-1 pings one on node-2. Sampled after "
        f"{SETTLE:g} s of quiet at {', '.join(str(s) for s in config.samples)} environments. "
        "`VmRSS` counts shared library pages in every process; `RssAnon` is the private "
        "heap and stacks, closer to what one more process really costs.",
        "",
        "```",
        f"python -m bench.memory{'' if config == FULL else ' --quick'}",
        "# per node: VmRSS / RssAnon from /proc/<pid>/status of",
        "#   the agent (lab.agent_pid(node)) with its resolver (lab.resolver_pid(node)), and",
        "#   each wireguard-go (lab.wireguard_pids(node))",
        "```",
        "",
        "| environments | agent + resolver VmRSS (mean per node) | agent + resolver RssAnon "
        "| wireguard-go per node "
        "| wireguard-go VmRSS (mean per process) | wireguard-go RssAnon | node total VmRSS |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in samples:
        agent_rss = _mean([m.rss for m in s.agents])
        wg_total = sum(m.rss for m in s.wireguard) / config.nodes
        body.append(
            f"| {s.envs} | {mib(agent_rss)} | {mib(_mean([m.anon for m in s.agents]))} "
            f"| {len(s.wireguard) // config.nodes} "
            f"| {mib(_mean([m.rss for m in s.wireguard])) if s.wireguard else '-'} "
            f"| {mib(_mean([m.anon for m in s.wireguard])) if s.wireguard else '-'} "
            f"| {mib(agent_rss + wg_total)} |"
        )
    body += [
        "",
        f"Per environment per node (from {first.envs} to {last.envs} environments):",
        "",
        "| | VmRSS | RssAnon |",
        "|---|---:|---:|",
        f"| agent growth per environment | {mib(agent_step)} | {mib(agent_anon_step)} |",
        f"| one wireguard-go process | {mib(wg_rss)} | {mib(wg_anon)} |",
        f"| **total per environment per node** | **{mib(per_env)}** | **{mib(per_env_anon)}** |",
        "",
        f"The first environment also starts what every environment shares: the agent goes from "
        f"{mib(_mean([m.rss for m in samples[0].agents]))} with none to "
        f"{mib(_mean([m.rss for m in first.agents]))} with one. The issue sets no memory "
        "target; these numbers are tracked from run to run. The wireguard-go process "
        f"(userspace WireGuard: one Go runtime per device) is {wg_rss / per_env:.0%} of the "
        "VmRSS per environment; with kernel WireGuard that part would be a few kernel pages. "
        "These are idle figures: under load wireguard-go grows its buffer pools (see its "
        "peak VmHWM after the throughput runs in the data-plane section).",
    ]
    return Result(
        name=NAME,
        summary=f"{mib(per_env)} VmRSS ({mib(per_env_anon)} private) per environment per node",
        target=TARGET,
        passed=None,
        body=body,
        seconds=time.monotonic() - started,
    )


def _address_of(netns: str) -> str:
    """The instance's IPv4 address on eth0, read from its namespace."""
    info = json.loads(run(["ip", "-n", netns, "-j", "-4", "addr", "show", "dev", "eth0"]))
    for entry in info:
        for addr in entry.get("addr_info", []):
            return str(addr["local"])
    raise BenchError(f"no IPv4 address on eth0 in {netns}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer nodes and environments")
    parser.add_argument("--no-dns", action="store_true", help="start the lab without DNS")
    args = parser.parse_args()
    check_prerequisites()
    result = measure(QUICK if args.quick else FULL, dns=not args.no_dns)
    return finish(result, judged=False)


if __name__ == "__main__":
    raise SystemExit(main())
