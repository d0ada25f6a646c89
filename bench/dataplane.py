"""Data-plane overhead: railnet instance → instance ÷ a bare wireguard-go tunnel.

Both paths use the same wireguard-go binary, MTU 1420 on the tunnel and the same machine.

* **railnet**: a two-node lab; the iperf3 server runs in a service instance on node-1 and
  the client in one on node-2. The path is instance ``eth0`` → veth → environment
  namespace → ``wg0`` (wireguard-go) → node underlay → bridge → the same in reverse.
* **bare**: two plain namespaces joined by one veth pair, each with a wireguard-go device
  set up with ``wg`` and ``ip`` only; iperf3 runs directly on the tunnel addresses.

The two alternate, round after round (the order flips every round, so neither always
runs on a warmer machine); the report gives the median of each and their ratio.
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
    iperf3,
    lab_cluster,
    median,
    memory_of,
    mib,
    netns_list,
    ping,
    run,
    say,
    stop,
)
from railnet.cli.runtime import Target, find_instance
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.deploy import EnvironmentDeployer

NAME = "Data-plane overhead"
TARGET_RATIO = 0.90
TARGET = f"railnet ÷ bare ≥ {TARGET_RATIO:.2f}"
MTU = 1420
KEEPALIVE = 25
UAPI_DIR = Path("/var/run/wireguard")


@dataclass(frozen=True)
class Config:
    rounds: int
    seconds: float
    """Length of one iperf3 run."""


FULL = Config(rounds=5, seconds=5)
QUICK = Config(rounds=2, seconds=2)


class BareTunnel:
    """Two plain namespaces, one veth pair, one wireguard-go tunnel: nothing else."""

    UNDERLAY = ("198.19.0.1", "198.19.0.2")
    """RFC 2544 benchmark range, the half the lab (198.18.0.0/24) does not use."""
    TUNNEL = ("10.201.0.1", "10.201.0.2")
    PORT = 51820

    def __init__(self) -> None:
        self.prefix = f"rnb{secrets.token_hex(3)}"
        self.netns = (f"{self.prefix}-a", f"{self.prefix}-b")
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
        run(["ip", "-n", a, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", b])
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
        for ns in self.netns:
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
    rows: list[tuple[int, str, Throughput]] = []
    memory: dict[str, list[Memory]] = {}
    with lab_cluster(2, dns=dns) as (lab, cluster), BareTunnel() as bare:
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
        }
        env_ns = server_ns.rsplit("-", 2)[0]
        mtus = {
            "railnet instance eth0": _mtu(server_ns, "eth0"),
            "railnet wg0": _mtu(env_ns, "wg0"),
            "bare tunnel": _mtu(bare.netns[0], bare.ifnames[0]),
        }
        say("data plane: handshakes and a 1 s warm-up run on each path")
        for path, (server, client, address) in paths.items():
            ping(client, address)
            iperf3(server, client, address, 1)
            say(f"  {path}: ready")
        for r in range(config.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for path in order:
                result = iperf3(*paths[path], config.seconds)
                rows.append((r + 1, path, result))
                say(f"data plane round {r + 1}/{config.rounds} {path}: "
                    f"{gbit(result.bits_per_second)} Gbit/s")  # fmt: skip
        wg_pids = {
            "railnet": [pid for node in lab.nodes() for pid in lab.wireguard_pids(node)],
            "bare": bare.pids,
        }
        memory = {path: [memory_of(pid) for pid in pids] for path, pids in wg_pids.items()}

    railnet = [t.bits_per_second for _, p, t in rows if p == "railnet"]
    plain = [t.bits_per_second for _, p, t in rows if p == "bare"]
    ratio = median(railnet) / median(plain)
    passed = ratio >= TARGET_RATIO
    body = [
        "Throughput of one TCP stream (iperf3) from one service instance to another across "
        "two lab nodes, divided by the same measurement over a bare wireguard-go tunnel "
        "between two plain namespaces (same binary, MTU 1420, same machine). The two "
        f"alternate: {config.rounds} rounds of {config.seconds:g} s each, the order flipping "
        "every round, after a ping (handshake) and a 1 s warm-up run per path.",
        "",
        "```",
        "# railnet (server in the instance of 'server' on node-1, client in 'client' on node-2)",
        f"ip netns exec {server_ns} iperf3 -s -1 -B {server_address} -p 5201",
        f"ip netns exec {client_ns} iperf3 -c {server_address} -p 5201 "
        f"-t {config.seconds:g} -J",
        "# bare: wireguard-go -f IF in each namespace, then wg set / ip addr / ip link mtu 1420",
        f"ip netns exec {bare.netns[0]} iperf3 -s -1 -B {BareTunnel.TUNNEL[0]} -p 5201",
        f"ip netns exec {bare.netns[1]} iperf3 -c {BareTunnel.TUNNEL[0]} -p 5201 "
        f"-t {config.seconds:g} -J",
        "```",
        "",
        "| round | path | Gbit/s | retransmits | sender CPU % |",
        "|---:|---|---:|---:|---:|",
    ]
    body += [
        f"| {r} | {p} | {gbit(t.bits_per_second)} | {t.retransmits} | {t.sender_cpu:.0f} |"
        for r, p, t in rows
    ]
    body += [
        "",
        "| | median Gbit/s | min | max |",
        "|---|---:|---:|---:|",
        f"| railnet | {gbit(median(railnet))} | {gbit(min(railnet))} | {gbit(max(railnet))} |",
        f"| bare wireguard-go | {gbit(median(plain))} | {gbit(min(plain))} | {gbit(max(plain))} |",
        "",
        f"**Ratio railnet ÷ bare: {ratio:.3f}** (target ≥ {TARGET_RATIO:.2f}): "
        f"{'**pass**' if passed else '**FAIL**'}.",
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
        summary=f"{gbit(median(railnet))} vs {gbit(median(plain))} Gbit/s, ratio {ratio:.3f}",
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
    print(result.markdown())
    leftovers = Leftovers.report()
    if leftovers:
        print("LEFT BEHIND: " + ", ".join(leftovers))
        return 2
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
