"""Data-plane overhead: railnet instance → instance ÷ a bare wireguard-go tunnel.

Both paths use the same wireguard-go binary, MTU 1420 on the tunnel and the same machine.

* **railnet**: a two-node lab; the iperf3 server runs in a service instance on node-1 and
  the client in one on node-2. The path is instance ``eth0`` → veth → environment
  namespace → ``wg0`` (wireguard-go) → node underlay → bridge → the same in reverse.
* **bare** (the baseline of the verdict): two plain namespaces, each with a wireguard-go
  device set up with ``wg`` and ``ip`` only, iperf3 directly on the tunnel addresses, and
  the underlay through a bridge in a third namespace exactly as the lab wires its nodes.
  The baseline has the same underlay as railnet, so the ratio is railnet's own cost.
* **bare, direct veth** (reported too): the same tunnel over one veth pair, without the
  bridge; it shows what the lab's bridged underlay itself costs.

They alternate, round after round (the order rotates every round, so none always runs on
a warmer machine); the report gives the median of each and railnet ÷ bare.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.common import (
    BenchError,
    Leftovers,
    Memory,
    Result,
    Throughput,
    check_prerequisites,
    finish,
    iperf3,
    lab_cluster,
    load_average,
    median,
    memory_of,
    mib,
    netns_list,
    ping,
    run,
    say,
    stop,
)
from railnet.control.deployer import EnvironmentDeployer
from railnet.control.inspect import Target, find_instance
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.names import MESH_MTU

NAME = "Data-plane overhead"
TARGET_RATIO = 0.90
TARGET = f"railnet ÷ bare ≥ {TARGET_RATIO:.2f}"
MTU = MESH_MTU
KEEPALIVE = 25
UAPI_DIR = Path("/var/run/wireguard")
BRIDGED = "bare, bridged underlay"


@dataclass(frozen=True)
class Config:
    rounds: int
    seconds: float
    """Length of one iperf3 run."""


FULL = Config(rounds=7, seconds=5)
QUICK = Config(rounds=2, seconds=2)


class BareTunnel:
    """Two plain namespaces, one wireguard-go tunnel between them: nothing else.

    The underlay is one veth pair, or with ``bridged`` a veth from each into a bridge in a
    third namespace, which is how the lab wires its nodes (``rl<id>-ul``).
    """

    UNDERLAY = ("198.19.0.1", "198.19.0.2")
    """RFC 2544 benchmark range, the half the lab (198.18.0.0/24) does not use."""
    TUNNEL = ("10.201.0.1", "10.201.0.2")
    PORT = 51820

    def __init__(self, *, bridged: bool = False) -> None:
        self.bridged = bridged
        self.prefix = f"rnb{secrets.token_hex(3)}"
        self.netns = (f"{self.prefix}-a", f"{self.prefix}-b")
        self.underlay_netns = f"{self.prefix}-ul"
        self.ifnames = (f"{self.prefix}a", f"{self.prefix}b")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workdir: Path | None = None

    def __enter__(self) -> BareTunnel:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def up(self) -> None:
        Leftovers.prefixes.append(self.prefix)
        Leftovers.uapi_sockets.extend(UAPI_DIR / f"{name}.sock" for name in self.ifnames)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        a, b = self.netns
        for ns in self.netns:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if self.bridged:
            ul = self.underlay_netns
            run(["ip", "netns", "add", ul])
            run(["ip", "-n", ul, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", ul, "link", "set", "br0", "up"])
            for i, ns in enumerate(self.netns):
                run(["ip", "-n", ul, "link", "add", f"p{i}", "type", "veth",
                     "peer", "name", "ul0", "netns", ns])  # fmt: skip
                run(["ip", "-n", ul, "link", "set", f"p{i}", "master", "br0", "up"])
        else:
            run(["ip", "-n", a, "link", "add", "ul0", "type", "veth",
                 "peer", "name", "ul0", "netns", b])  # fmt: skip
        for ns, address in zip(self.netns, self.UNDERLAY, strict=True):
            run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "ul0"])
            run(["ip", "-n", ns, "link", "set", "ul0", "up"])
        keys = [run(["wg", "genkey"]).strip() for _ in self.netns]
        publics = [run(["wg", "pubkey"], input=key + "\n").strip() for key in keys]
        for i, (ns, ifname) in enumerate(zip(self.netns, self.ifnames, strict=True)):
            key_file = self.workdir / f"{ifname}.key"
            key_file.touch(mode=0o600)
            key_file.write_text(keys[i] + "\n")
            with open(self.workdir / f"{ifname}.log", "ab") as log:
                process = subprocess.Popen(
                    ["ip", "netns", "exec", ns, "wireguard-go", "-f", ifname],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env={**os.environ, "LOG_LEVEL": "error"},
                    start_new_session=True,  # a terminal's ^C reaches us, not it: we stop it
                )
            self.processes.append(process)
            Leftovers.wireguard_pids.append(process.pid)
        for i, (ns, ifname) in enumerate(zip(self.netns, self.ifnames, strict=True)):
            self._wait_socket(ifname, self.processes[i])
            other = 1 - i
            run(
                [
                    "wg", "set", ifname,
                    "private-key", str(self.workdir / f"{ifname}.key"),
                    "listen-port", str(self.PORT),
                    "peer", publics[other],
                    "endpoint", f"{self.UNDERLAY[other]}:{self.PORT}",
                    "allowed-ips", f"{self.TUNNEL[other]}/32",
                    "persistent-keepalive", str(KEEPALIVE),
                ]
            )  # fmt: skip
            run(["ip", "-n", ns, "addr", "add", f"{self.TUNNEL[i]}/24", "dev", ifname])
            run(["ip", "-n", ns, "link", "set", ifname, "mtu", str(MTU), "up"])

    @staticmethod
    def _wait_socket(ifname: str, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
        sock = UAPI_DIR / f"{ifname}.sock"
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if process.poll() is not None:
                raise BenchError(f"wireguard-go for {ifname} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"wireguard-go for {ifname} did not open {sock} in {timeout} s")
            time.sleep(0.02)

    def down(self) -> None:
        # The processes first: their TUN fd and UDP socket keep a deleted namespace alive.
        for process in self.processes:
            stop(process)
        for ns in (*self.netns, self.underlay_netns):
            if ns in netns_list():
                subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        for ifname in self.ifnames:
            (UAPI_DIR / f"{ifname}.sock").unlink(missing_ok=True)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _mtu(netns: str, ifname: str) -> int:
    links = json.loads(run(["ip", "-n", netns, "-j", "link", "show", ifname]))
    return int(links[0]["mtu"])


def gbit(value: float) -> str:
    return f"{value / 1e9:.2f}"


def measure(config: Config, *, dns: bool) -> Result:
    started = time.monotonic()
    load = load_average()
    rows: list[tuple[int, str, Throughput]] = []
    memory: dict[str, list[Memory]] = {}
    with (
        lab_cluster(2, dns=dns) as (lab, cluster),
        BareTunnel() as bare,
        BareTunnel(bridged=True) as bridged,
    ):
        spec = EnvironmentSpec(
            project="bench",
            environment="dataplane",
            services=(ServiceSpec("server", ("node-1",)), ServiceSpec("client", ("node-2",))),
        )
        applied = EnvironmentDeployer(cluster).apply(spec)
        server_address = next(
            s.instances[0].ipv4 for s in applied.document.services if s.name == "server"
        )
        if server_address is None:
            raise BenchError("the benchmark environment has no IPv4 address for 'server'")
        _, server_ns = find_instance(cluster, Target("bench", "dataplane", "server", 0))
        _, client_ns = find_instance(cluster, Target("bench", "dataplane", "client", 0))
        paths = {
            "railnet": (server_ns, client_ns, server_address),
            "bare": (bare.netns[0], bare.netns[1], BareTunnel.TUNNEL[0]),
            BRIDGED: (bridged.netns[0], bridged.netns[1], BareTunnel.TUNNEL[0]),
        }
        env_ns = server_ns.rsplit("-", 2)[0]
        mtus = {
            "railnet instance eth0": _mtu(server_ns, "eth0"),
            "railnet wg0": _mtu(env_ns, "wg0"),
            "bare tunnel": _mtu(bare.netns[0], bare.ifnames[0]),
        }
        say("data plane: handshakes and a 1 s warm-up run on each path")
        for path, (server, client, address) in paths.items():
            first = ping(client, address)
            iperf3(server, client, address, 1)
            say(f"  {path}: first ping answered after {first:.2f} s")
        names = list(paths)
        for r in range(config.rounds):
            # Rotate, so that no path always runs first or right after the same one.
            order = names[r % len(names) :] + names[: r % len(names)]
            for path in order:
                result = iperf3(*paths[path], config.seconds)
                rows.append((r + 1, path, result))
                say(f"data plane round {r + 1}/{config.rounds} {path}: "
                    f"{gbit(result.bits_per_second)} Gbit/s")  # fmt: skip
        wg_pids = {
            "railnet": [pid for node in lab.nodes() for pid in lab.wireguard_pids(node)],
            "bare": bare.pids,
            BRIDGED: bridged.pids,
        }
        memory = {path: [memory_of(pid) for pid in pids] for path, pids in wg_pids.items()}

    railnet = [t.bits_per_second for _, p, t in rows if p == "railnet"]
    plain = [t.bits_per_second for _, p, t in rows if p == "bare"]
    via_bridge = [t.bits_per_second for _, p, t in rows if p == BRIDGED]
    # The verdict compares paths with the same underlay (the lab's bridge): what is left is
    # railnet's own cost. The direct-veth tunnel is reported beside it.
    ratio = median(railnet) / median(via_bridge)
    direct_ratio = median(railnet) / median(plain)
    # The runs of one round are back to back, so their ratio cancels slow drifts in what
    # else the machine is doing; its median is the cross-check of the headline.
    paired = [r / b for r, b in zip(railnet, via_bridge, strict=True)]
    paired_direct = [r / b for r, b in zip(railnet, plain, strict=True)]
    underlay_cost = [b / p for b, p in zip(via_bridge, plain, strict=True)]
    passed = ratio >= TARGET_RATIO
    body = [
        "Throughput of one TCP stream (iperf3) from one service instance to another across "
        "two lab nodes, divided by the same measurement over a bare wireguard-go tunnel "
        "between two plain namespaces (same binary, MTU 1420, same machine, and the same "
        "bridged underlay as the lab's nodes, so that the ratio is railnet's own cost: the "
        "veth hop and forwarding between instance and environment namespaces at both ends). "
        f"The paths alternate: {config.rounds} rounds of {config.seconds:g} s each, the order "
        "rotating every round, after a ping (handshake) and a 1 s warm-up run per path. A "
        "third path, the bare tunnel over one direct veth pair, is reported beside it.",
        "",
        "```",
        "# railnet (server in the instance of 'server' on node-1, client in 'client' on node-2)",
        f"ip netns exec {server_ns} iperf3 -s -1 -B {server_address} -p 5201",
        f"ip netns exec {client_ns} iperf3 -c {server_address} -p 5201 -t {config.seconds:g} -J",
        "# bare: wireguard-go -f IF in each namespace, then wg set / ip addr / ip link mtu 1420",
        f"ip netns exec {bare.netns[0]} iperf3 -s -1 -B {BareTunnel.TUNNEL[0]} -p 5201",
        f"ip netns exec {bare.netns[1]} iperf3 -c {BareTunnel.TUNNEL[0]} -p 5201 "
        f"-t {config.seconds:g} -J",
        f"#   (baseline: in {bridged.netns[0]} / {bridged.netns[1]}, the underlay through br0 "
        f"in {bridged.underlay_netns}; direct veth: {bare.netns[0]} / {bare.netns[1]})",
        "```",
        "",
        "| round | path | Gbit/s | TCP retransmits |",
        "|---:|---|---:|---:|",
    ]
    body += [f"| {r} | {p} | {gbit(t.bits_per_second)} | {t.retransmits} |" for r, p, t in rows]
    body += [
        "",
        "| | median Gbit/s | min | max |",
        "|---|---:|---:|---:|",
        f"| railnet | {gbit(median(railnet))} | {gbit(min(railnet))} | {gbit(max(railnet))} |",
        f"| bare wireguard-go, bridged underlay (baseline) | {gbit(median(via_bridge))} "
        f"| {gbit(min(via_bridge))} | {gbit(max(via_bridge))} |",
        f"| bare wireguard-go, direct veth | {gbit(median(plain))} | {gbit(min(plain))} "
        f"| {gbit(max(plain))} |",
        "",
        f"**Ratio railnet ÷ bare: {ratio:.3f}** (target ≥ {TARGET_RATIO:.2f}): "
        f"{'**pass**' if passed else '**FAIL**'}. Cross-check, the median of the per-round "
        f"ratios: {median(paired):.3f} (range {min(paired):.3f}-{max(paired):.3f}).",
        "",
        f"Against the direct-veth tunnel instead: {direct_ratio:.3f} (per-round median "
        f"{median(paired_direct):.3f}). The bridge costs {median(underlay_cost):.3f} of the "
        "direct path here; on real machines a NIC and a switch stand in its place.",
        "",
        f"This machine has {os.cpu_count()} CPUs, which both iperf3 ends, both wireguard-go "
        "processes and the kernel's forwarding share: throughput is CPU-bound, and anything "
        "else running shows up as noise between rounds (compare the min and max above). "
        f"The 1-minute load average was {load} when this benchmark started.",
        "",
        "MTUs on the paths: " + ", ".join(f"{k} {v}" for k, v in mtus.items()) + ".",
        "",
        "wireguard-go memory after these runs (per process): "
        + "; ".join(
            f"{path}: VmRSS {', '.join(mib(m.rss) for m in ms)}, "
            f"peak VmHWM {', '.join(mib(m.hwm) for m in ms)}"
            for path, ms in memory.items()
        )
        + ".",
    ]
    return Result(
        name=NAME,
        summary=(
            f"{gbit(median(railnet))} vs {gbit(median(via_bridge))} Gbit/s, ratio {ratio:.3f} "
            f"({direct_ratio:.3f} against a direct-veth tunnel)"
        ),
        target=TARGET,
        passed=passed,
        body=body,
        seconds=time.monotonic() - started,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--seconds", type=float, help="override the length of one run")
    parser.add_argument("--no-dns", action="store_true", help="start the lab without DNS")
    args = parser.parse_args()
    check_prerequisites()
    config = QUICK if args.quick else FULL
    config = Config(args.rounds or config.rounds, args.seconds or config.seconds)
    result = measure(config, dns=not args.no_dns)
    return finish(result)


if __name__ == "__main__":
    raise SystemExit(main())
