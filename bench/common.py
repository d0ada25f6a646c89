"""What every benchmark shares: a throwaway lab, iperf3 runs, RSS, statistics, results.

Everything a benchmark creates is named with a prefix that is unique to this run (the
lab's ``rl<id>``, the bare tunnel's ``rnb<id>``) and is removed in ``finally`` blocks, so
a failed or interrupted run leaves nothing behind. ``Leftovers`` records those prefixes and
the processes started, so ``bench.run`` can prove the machine is clean afterwards.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from railnet.control.cluster import Cluster, load_cluster
from railnet.lab.local_cluster import Lab, LabNode

REQUIRED_TOOLS = ("ip", "ss", "ping", "wg", "wireguard-go", "iperf3", "etcd")


class BenchError(Exception):
    """A benchmark could not run; the message says what to fix."""


def say(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check_prerequisites(
    tools: Sequence[str] = REQUIRED_TOOLS,
    packages: str = "wireguard-go wireguard-tools iperf3 iproute2 iputils-ping etcd-server",
) -> None:
    """Root (the benchmarks create network namespaces) and ``tools`` on PATH."""
    if os.geteuid() != 0:
        raise BenchError("the benchmarks create network namespaces: run them as root")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)}; install them "
            f"(apt-get install -y --no-install-recommends {packages})"
        )


# -- results -----------------------------------------------------------------------------


@dataclass
class Result:
    """One benchmark's outcome, rendered as a section of docs/benchmarks.md."""

    name: str
    """The section title."""
    summary: str
    """One line for the summary table: the headline number(s)."""
    target: str
    """The target in words, or "none (tracked)"."""
    passed: bool | None
    """``None`` when the benchmark has no target."""
    body: list[str] = field(default_factory=list)
    """Markdown lines of the section, after its title."""
    seconds: float = 0.0
    """Wall time the benchmark took."""

    @property
    def verdict(self) -> str:
        return {True: "**pass**", False: "**FAIL**", None: "n/a"}[self.passed]

    def markdown(self) -> str:
        lines = [f"## {self.name}", "", *self.body, ""]
        lines.append(f"_Took {self.seconds:.0f} s._")
        return "\n".join(lines).rstrip() + "\n"


def finish(result: Result, output: Path | None = None, *, judged: bool = True) -> int:
    """Print (and write) a benchmark's section; exit code 2 if it left anything behind,
    else 1 if it missed its target (when ``judged``), else 0."""
    section = result.markdown()
    print(section)
    if output is not None:
        output.write_text(section)
    leftovers = Leftovers.report()
    if leftovers:
        print("LEFT BEHIND: " + ", ".join(leftovers))
        return 2
    return 0 if result.passed or not judged else 1


def command_line(
    module: str, config: object, full: object, quick: object, flags: dict[str, object]
) -> str:
    """The command that runs ``module`` with ``config`` again: bare for its full run,
    ``--quick`` for its quick one, else with every flag in ``flags`` (name -> value)."""
    command = f"python -m {module}"
    if config == full:
        return command
    if config == quick:
        return f"{command} --quick"
    return command + "".join(f" --{name} {value}" for name, value in flags.items())


def failed_result(name: str, target: str, exc: BaseException, seconds: float) -> Result:
    return Result(
        name=name,
        summary=f"did not run: {type(exc).__name__}",
        target=target,
        passed=False,
        body=["The benchmark failed before producing numbers:", "", "```", str(exc), "```"],
        seconds=seconds,
    )


# -- statistics --------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


# -- processes and memory ----------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """From /proc/<pid>/status, in KiB."""

    rss: int
    """VmRSS: resident set, shared library pages included."""
    anon: int
    """RssAnon: private anonymous pages (heap, stacks): what one more process really costs."""
    hwm: int
    """VmHWM: the peak resident set."""


def memory_of(pid: int) -> Memory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            fields[key] = int(value.split()[0])
    return Memory(rss=fields["VmRSS"], anon=fields["RssAnon"], hwm=fields["VmHWM"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_running(pid: int, needle: str) -> bool:
    """``pid`` exists, is not a zombie and its command line contains ``needle``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z" and needle.encode() in cmdline


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """End a process this run started (by its pid, through its Popen) and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def run(command: Sequence[str], *, timeout: float = 60.0, input: str | None = None) -> str:
    """Run a command to completion; its stdout, or a ``BenchError`` naming it and its stderr."""
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, input=input
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(command)}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()[-800:]}"
        )
    return done.stdout


def netns_list() -> list[str]:
    try:
        return sorted(os.listdir("/var/run/netns"))
    except FileNotFoundError:
        return []


# -- what this run created ---------------------------------------------------------------


class Leftovers:
    """The prefixes and processes this run created, to check that none survive it."""

    prefixes: list[str] = []
    wireguard_pids: list[int] = []
    uapi_sockets: list[Path] = []
    etcd_pids: list[int] = []

    @classmethod
    def report(cls) -> list[str]:
        """What is still there, after a short wait for init to reap the daemons."""
        deadline = time.monotonic() + 5
        while True:
            found = [
                f"namespace {name}"
                for name in netns_list()
                if any(name.startswith(prefix) for prefix in cls.prefixes)
            ]
            found += [
                f"wireguard-go pid {pid}"
                for pid in cls.wireguard_pids
                if is_running(pid, "wireguard-go")
            ]
            found += [f"socket {path}" for path in cls.uapi_sockets if path.exists()]
            found += [f"etcd pid {pid}" for pid in cls.etcd_pids if is_running(pid, "etcd")]
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


# -- the lab -----------------------------------------------------------------------------


@contextmanager
def lab_cluster(
    nodes: int, *, dns: bool, reconcile_interval: float | None = None, self_heal: bool = True
) -> Iterator[tuple[Lab, Cluster]]:
    """A fresh lab of ``nodes`` nodes (userspace WireGuard), removed on the way out."""
    parent = Path(tempfile.mkdtemp(prefix="railnet-bench-"))
    lab: Lab | None = None
    try:
        started = time.monotonic()
        lab = Lab.up(
            parent / "lab",
            nodes,
            wireguard="userspace",
            dns=dns,
            reconcile_interval=reconcile_interval,
            self_heal=self_heal,
        )
        Leftovers.prefixes.append(lab.prefix)
        Leftovers.etcd_pids.extend(p for m in lab.etcd_members() if (p := lab.etcd_pid(m)))
        say(f"lab {lab.lab_id}: {nodes} nodes up in {time.monotonic() - started:.1f} s")
        cluster = load_cluster(lab.cluster_file, "the lab's cluster file")
        yield lab, cluster
    finally:
        if lab is not None:
            for node in _members(lab):
                Leftovers.wireguard_pids.extend(_quiet_wireguard_pids(lab, node))
            started = time.monotonic()
            lab.down()
            say(f"lab {lab.lab_id}: down in {time.monotonic() - started:.1f} s")
        shutil.rmtree(parent, ignore_errors=True)


def _members(lab: Lab) -> list[LabNode]:
    try:
        return lab.nodes()
    except (OSError, ValueError):
        return []


def _quiet_wireguard_pids(lab: Lab, node: LabNode) -> list[int]:
    try:
        return lab.wireguard_pids(node)
    except OSError:
        return []


# -- iperf3 ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    bits_per_second: float
    """What the receiver got (``end.sum_received``)."""
    retransmits: int


def wait_listening(netns: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"])
        if out.strip():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"iperf3 did not listen on port {port} in {netns} in {timeout} s")
        time.sleep(0.05)


def iperf3(
    server_ns: str, client_ns: str, address: str, seconds: float, port: int = 5201
) -> Throughput:
    """One TCP iperf3 run: the server in ``server_ns`` bound to ``address``, the client in
    ``client_ns``. The one-off server (``-1``) exits after the run; it is stopped anyway."""
    with tempfile.TemporaryFile() as server_log:
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                server_ns,
                "iperf3",
                "-s",
                "-1",
                "-B",
                address,
                "-p",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=server_log,
        )
        try:
            wait_listening(server_ns, port)
            out = run(
                [
                    "ip", "netns", "exec", client_ns,
                    "iperf3", "-c", address, "-p", str(port), "-t", f"{seconds:g}", "-J",
                ],
                timeout=seconds + 30,
            )  # fmt: skip
            server.wait(timeout=10)
        finally:
            stop(server)
    report = json.loads(out)
    if "error" in report:
        raise BenchError(f"iperf3 {client_ns} -> {address}: {report['error']}")
    end = report["end"]
    return Throughput(
        bits_per_second=float(end["sum_received"]["bits_per_second"]),
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
    )


def ping(netns: str, address: str, deadline: float = 10.0) -> float:
    """Seconds until ``address`` first answers from ``netns`` (pinging every 0.2 s, which
    also completes WireGuard handshakes); a ``BenchError`` if it stays silent."""
    started = time.monotonic()
    run(
        ["ip", "netns", "exec", netns, "ping", "-c", "1", "-i", "0.2", "-w", f"{deadline:g}",
         address],
        timeout=deadline + 10,
    )  # fmt: skip
    return time.monotonic() - started


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# -- the machine -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])

    def version(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "not found"
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "Memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "wireguard-go": version(["wireguard-go", "--version"]),
        "iperf3": version(["iperf3", "--version"]),
    }
