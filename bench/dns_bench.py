"""Internal DNS: railnet's resolver ÷ dnsmasq serving the same records, side by side.

One fresh network namespace (``rdb<random>``, removed on the way out) holds:

* **railnet**: the real ``DnsServer``, in this process, serving one environment of
  100 services x 2 replicas on the environment's resolver address (``10.250.0.2:53``),
  bound from outside the namespace exactly as the agent binds it;
* **dnsmasq**: the same names and addresses from a hosts file (``--addn-hosts``), on
  ``127.0.0.2:53``, with ``--local-ttl`` equal to railnet's TTL;
* **naive dnspython** (reference, ``--no-naive`` skips it): a plain asyncio server that
  parses every query and renders every reply with dnspython, on ``127.0.0.3:53``.

dnsperf runs inside the namespace against each in turn, over UDP, with the same query file
(A and AAAA for every service name). Throughput runs alternate railnet and dnsmasq, the
order flipping every round; the table gives the median of each, and the headline ratio is
the median of the per-round ratios (each round shares its moment's machine load). Latency
percentiles come from a separate ``dnsperf -v`` run at a fixed offered rate (every reply's
latency is printed, and the p50/p99 are computed from those), since dnsperf itself prints
only the mean and standard deviation. Memory is the agent's private resident memory (``RssAnon``)
before and after a larger view is applied, per 1,000 records served.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import ipaddress
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import cast

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from bench.common import (
    BenchError,
    Leftovers,
    Result,
    check_prerequisites,
    finish,
    memory_of,
    percentile,
    run,
    say,
    stop,
)
from railnet.agent.dns import DnsServer
from railnet.core.addressing import ula_prefix
from railnet.core.dns import Answerer, ResolverView, Transport
from railnet.core.document import EnvironmentDocument
from railnet.linux.netns import run_in_netns

NAME = "Internal DNS"
TARGET_RATIO = 1.0
P99_RATIO = 1.5
TARGET = (
    f"railnet ÷ dnsmasq qps ≥ {TARGET_RATIO:.2f}, 0 lost; "
    f"p99 at the fixed rate ≤ {P99_RATIO:.1f}x dnsmasq's"
)
REQUIRED_TOOLS = ("ip", "dnsperf", "dnsmasq")
KEY = "A" * 43 + "="
DNSMASQ_ADDRESS = "127.0.0.2"
NAIVE_ADDRESS = "127.0.0.3"
DOMAIN = "railway.internal"


@dataclass(frozen=True)
class Config:
    rounds: int = 7
    seconds: float = 6.0
    services: int = 100
    replicas: int = 2
    latency_qps: int = 20000
    latency_seconds: float = 5.0
    latency_rounds: int = 3
    memory_services: int = 2500
    naive: bool = True


FULL = Config()
QUICK = Config(rounds=1, seconds=3.0, latency_seconds=2.0, latency_rounds=1, memory_services=500)


@dataclass(frozen=True)
class PerfRun:
    """What dnsperf reports for one throughput run."""

    sent: int
    completed: int
    lost: int
    qps: float
    mean_latency: float
    """Seconds."""
    rcodes: str


def make_document(env_id: str, services: int, replicas: int, ttl: int = 5) -> EnvironmentDocument:
    prefix = ula_prefix(env_id).network_address
    network = ipaddress.IPv4Network("10.250.0.0/16").network_address
    offset = 3
    raw_services = []
    for index in range(services):
        instances = []
        for _ in range(replicas):
            instances.append(
                {"node": "node-1", "ipv4": str(network + offset), "ipv6": str(prefix + offset)}
            )
            offset += 1
        raw_services.append({"id": f"s{index}", "name": f"svc-{index:04d}", "instances": instances})
    return EnvironmentDocument.from_dict(
        {
            "id": env_id,
            "project": "bench",
            "environment": "dns",
            "generation": 1,
            "dns_ttl": ttl,
            "nodes": [{"name": "node-1", "public_key": KEY, "endpoint": "198.18.0.1:51820"}],
            "services": raw_services,
        }
    )


def hosts_file(doc: EnvironmentDocument) -> str:
    """The document's names as a hosts file: what dnsmasq serves."""
    lines = []
    for svc in doc.services:
        for index, inst in enumerate(svc.instances):
            names = f"{svc.name}.{doc.domain} {index}.{svc.name}.{doc.domain}"
            for address in (inst.ipv4, inst.ipv6):
                if address is not None:
                    lines.append(f"{address} {names}")
    return "\n".join(lines) + "\n"


def query_file(doc: EnvironmentDocument) -> str:
    lines = []
    for svc in doc.services:
        lines += [f"{svc.name}.{doc.domain} A", f"{svc.name}.{doc.domain} AAAA"]
    return "\n".join(lines) + "\n"


# -- dnsperf ------------------------------------------------------------------------------


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if found is None:
        raise BenchError(f"dnsperf output lacks {pattern!r}:\n{text[-1500:]}")
    return float(found.group(1))


def dnsperf(netns: str, address: str, datafile: Path, seconds: float) -> PerfRun:
    out = run(
        ["ip", "netns", "exec", netns, "dnsperf", "-s", address, "-p", "53",
         "-d", str(datafile), "-l", f"{seconds:g}", "-c", "1", "-q", "100", "-t", "2"],
        timeout=seconds + 30,
    )  # fmt: skip
    rcodes = re.search(r"Response codes:\s+(.*)", out)
    return PerfRun(
        sent=int(_number(r"Queries sent:\s+(\d+)", out)),
        completed=int(_number(r"Queries completed:\s+(\d+)", out)),
        lost=int(_number(r"Queries lost:\s+(\d+)", out)),
        qps=_number(r"Queries per second:\s+([\d.]+)", out),
        mean_latency=_number(r"Average Latency \(s\):\s+([\d.]+)", out),
        rcodes=rcodes.group(1).strip() if rcodes else "?",
    )


def dnsperf_latencies(
    netns: str, address: str, datafile: Path, seconds: float, rate: int
) -> list[float]:
    """Every reply's latency (seconds) at a fixed offered ``rate``, from ``dnsperf -v``."""
    with tempfile.TemporaryFile("w+") as output:
        done = subprocess.run(
            ["ip", "netns", "exec", netns, "dnsperf", "-s", address, "-p", "53",
             "-d", str(datafile), "-l", f"{seconds:g}", "-Q", str(rate), "-v", "-t", "2"],
            stdout=output, stderr=subprocess.PIPE, text=True, timeout=seconds + 30,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"dnsperf -v against {address} failed: {done.stderr[-800:]}")
        output.seek(0)
        latencies = [
            float(line.rsplit(" ", 1)[1]) for line in output if line.startswith("> NOERROR ")
        ]
    if not latencies:
        raise BenchError(f"dnsperf -v against {address} printed no replies")
    return latencies


# -- the servers --------------------------------------------------------------------------


def ask_in(netns: str, address: str, name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    return run_in_netns(netns, lambda: dns.query.udp(query, address, port=53, timeout=1))


def wait_answering(netns: str, address: str, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = ask_in(netns, address, name)
            if reply.answer:
                return
        except (OSError, dns.exception.Timeout):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"no server answered {name} on {address} in {netns}")
        time.sleep(0.1)


def start_dnsmasq(netns: str, hosts: Path, ttl: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
         f"--addn-hosts={hosts}", f"--listen-address={DNSMASQ_ADDRESS}", "--port=53",
         "--bind-interfaces", f"--local-ttl={ttl}", f"--local=/{DOMAIN}/", "--user=root",
         "--pid-file=", "--cache-size=1000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def start_naive(netns: str, hosts: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "bench.dns_bench",
         "--naive-serve", NAIVE_ADDRESS, "--hosts", str(hosts)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip


def serve_naive(address: str, hosts: Path) -> None:
    """The reference point: parse every query and render every reply with dnspython."""
    rrsets: dict[tuple[dns.name.Name, int], list[str]] = {}
    for line in hosts.read_text().splitlines():
        address_text, *names = line.split()
        rdtype = dns.rdatatype.AAAA if ":" in address_text else dns.rdatatype.A
        for name in names:
            rrsets.setdefault((dns.name.from_text(name), rdtype), []).append(address_text)

    class Protocol(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            try:
                query = dns.message.from_wire(data)
            except Exception:  # the reference server may be naive, not fragile
                return
            reply = dns.message.make_response(query)
            question = query.question[0]
            found = rrsets.get((question.name.canonicalize(), question.rdtype))
            if found is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            else:
                reply.answer.append(
                    dns.rrset.from_text_list(question.name, 5, "IN", question.rdtype, found)
                )
            self.transport.sendto(reply.to_wire(), addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Protocol, local_addr=(address, 53))
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the measurement ----------------------------------------------------------------------


def hot_path_rate(view: ResolverView, seconds: float = 1.0) -> float:
    """Answers per second of ``Answerer.answer`` alone, in this process, no sockets."""
    answerer = Answerer(view)
    queries = [
        dns.message.make_query(f"{name}", rdtype).to_wire()
        for name in sorted(view.names())[:50]
        for rdtype in ("A", "AAAA")
    ]
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for wire in queries:
            answerer.answer(wire, Transport.UDP)
        count += len(queries)
    return count / (time.perf_counter() - started)


def measure(config: Config) -> Result:
    started = time.monotonic()
    netns = f"rdb{secrets.token_hex(4)}"
    Leftovers.prefixes.append(netns)
    workdir = Path(tempfile.mkdtemp(prefix="railnet-dns-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    server: DnsServer | None = None
    doc = make_document("dnsbench", config.services, config.replicas)
    view = ResolverView.from_document(doc, netns)
    resolver = view.listen[0]
    hosts = workdir / "hosts"
    hosts.write_text(hosts_file(doc))
    queries = workdir / "queries.txt"
    queries.write_text(query_file(doc))
    probe = f"{doc.services[0].name}.{doc.domain}"
    runs: dict[str, list[PerfRun]] = {"railnet": [], "dnsmasq": []}
    latencies: dict[str, list[float]] = {"railnet": [], "dnsmasq": []}
    p99_rounds: dict[str, list[float]] = {"railnet": [], "dnsmasq": []}
    try:
        run(["ip", "netns", "add", netns])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        for address in view.listen:
            prefix = 128 if ":" in address else 32
            run(["ip", "-n", netns, "addr", "add", f"{address}/{prefix}", "dev", "lo", "nodad"])
        for address in (DNSMASQ_ADDRESS, NAIVE_ADDRESS):
            run(["ip", "-n", netns, "addr", "add", f"{address}/32", "dev", "lo"])

        gc.collect()
        before_start = memory_of(os.getpid())
        server = DnsServer()
        server.start()
        gc.collect()
        before = memory_of(os.getpid())
        server.apply(view)
        gc.collect()
        after = memory_of(os.getpid())
        wait_answering(netns, resolver, probe)

        dnsmasq = start_dnsmasq(netns, hosts, doc.dns_ttl)
        processes.append(dnsmasq)
        wait_answering(netns, DNSMASQ_ADDRESS, probe)
        targets = {"railnet": resolver, "dnsmasq": DNSMASQ_ADDRESS}
        say(f"dns: warm-up, then {config.rounds} round(s) of {config.seconds:g} s per server")
        for address in targets.values():
            dnsperf(netns, address, queries, 1.0)
        for round_number in range(config.rounds):
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for name in order:
                result = dnsperf(netns, targets[name], queries, config.seconds)
                runs[name].append(result)
                say(f"dns round {round_number + 1}/{config.rounds} {name}: "
                    f"{result.qps:,.0f} qps, {result.lost} lost")  # fmt: skip
        for round_number in range(config.latency_rounds):
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for name in order:
                sample = dnsperf_latencies(
                    netns, targets[name], queries, config.latency_seconds, config.latency_qps
                )
                latencies[name] += sample
                p99_rounds[name].append(percentile(sample, 99))
        naive: PerfRun | None = None
        if config.naive:
            naive_process = start_naive(netns, hosts)
            processes.append(naive_process)
            wait_answering(netns, NAIVE_ADDRESS, probe)
            naive = dnsperf(netns, NAIVE_ADDRESS, queries, config.seconds)
            say(f"dns naive dnspython: {naive.qps:,.0f} qps")
            stop(naive_process)

        # Memory per record, on a larger view that the agent serves next to the first.
        big_doc = make_document("dnsmem", config.memory_services, 2)
        big_view = dataclasses.replace(
            ResolverView.from_document(big_doc, netns), listen=("127.0.0.4",)
        )
        gc.collect()
        before_big = memory_of(os.getpid())
        server.apply(big_view)
        gc.collect()
        after_big = memory_of(os.getpid())
        rate = hot_path_rate(view)
    finally:
        if server is not None:
            server.close()
        for process in processes:
            stop(process)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    def med(name: str) -> PerfRun:
        ordered = sorted(runs[name], key=lambda r: r.qps)
        return ordered[len(ordered) // 2]

    railnet, dnsmasq_run = med("railnet"), med("dnsmasq")
    # Each round runs both servers back to back, so their ratio shares the machine's
    # momentary load; the median over rounds is robust to a round disturbed by others.
    round_ratios = [r.qps / d.qps for r, d in zip(runs["railnet"], runs["dnsmasq"], strict=True)]
    ratio = statistics.median(round_ratios)
    lost = sum(r.lost for r in runs["railnet"])
    # Like the throughput: the median of the per-round ratios, each round side by side.
    p99_ratios = [r / d for r, d in zip(p99_rounds["railnet"], p99_rounds["dnsmasq"], strict=True)]
    p99_ratio = statistics.median(p99_ratios)
    passed = ratio >= TARGET_RATIO and lost == 0 and p99_ratio <= P99_RATIO
    records = len(view.records)
    per_thousand_small = (after.anon - before.anon) / records * 1000
    per_thousand_big = (after_big.anon - before_big.anon) / len(big_view.records) * 1000

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.3f}"

    body = [
        f"One fresh namespace; dnsperf inside it over UDP; the query file asks A and AAAA for "
        f"each of {config.services} services x {config.replicas} replicas "
        f"({2 * config.services} queries, {records} records in railnet's view). "
        f"{config.rounds} round(s) of {config.seconds:g} s per server, alternating, after a "
        "1 s warm-up each; the median round of each is shown. dnsperf: 1 client, 100 queries "
        f"outstanding, 2 s timeout. Latency: {config.latency_rounds} round(s) of "
        f"{config.latency_seconds:g} s per server at {config.latency_qps:,} qps offered, "
        "alternating; the table's p50/p99 pool every round's replies.",
        "",
        "```",
        f"# railnet: DnsServer in the benchmark process, bound inside {netns} on {resolver}:53",
        f"dnsmasq --no-daemon --no-resolv --no-hosts --addn-hosts=HOSTS "
        f"--listen-address={DNSMASQ_ADDRESS} --port=53 --bind-interfaces "
        f"--local-ttl={doc.dns_ttl} --local=/{DOMAIN}/",
        f"dnsperf -s ADDRESS -p 53 -d QUERIES -l {config.seconds:g} -c 1 -q 100 -t 2",
        f"dnsperf -s ADDRESS -p 53 -d QUERIES -l {config.latency_seconds:g} "
        f"-Q {config.latency_qps} -v   # per-reply latencies -> p50/p99",
        "```",
        "",
        "| server | qps (median) | ÷ dnsmasq | sent | lost | mean latency ms (saturated) "
        f"| p50 ms @ {config.latency_qps:,} qps | p99 ms @ {config.latency_qps:,} qps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in (("railnet", railnet), ("dnsmasq", dnsmasq_run)):
        lat = latencies[name]
        body.append(
            f"| {name} | {result.qps:,.0f} | {result.qps / dnsmasq_run.qps:.2f} | "
            f"{result.sent:,} | {result.lost} | {ms(result.mean_latency)} | "
            f"{ms(percentile(lat, 50))} | {ms(percentile(lat, 99))} |"
        )
    if naive is not None:
        body.append(
            f"| naive dnspython (reference) | {naive.qps:,.0f} | "
            f"{naive.qps / dnsmasq_run.qps:.2f} | {naive.sent:,} | {naive.lost} | "
            f"{ms(naive.mean_latency)} | - | - |"
        )
    body += [
        "",
        "Every round: "
        + "; ".join(
            f"{name} " + ", ".join(f"{r.qps:,.0f} qps / {r.lost} lost" for r in results)
            for name, results in runs.items()
        )
        + f". Per-round ratios: {', '.join(f'{x:.2f}' for x in round_ratios)}. "
        f"Response codes (railnet, median round): {railnet.rcodes}. "
        "p99 per latency round (ms): "
        + "; ".join(
            f"{name} " + ", ".join(ms(x) for x in values) for name, values in p99_rounds.items()
        )
        + f"; ratios {', '.join(f'{x:.2f}' for x in p99_ratios)}.",
        "",
        f"**Ratio railnet ÷ dnsmasq (median of the per-round ratios): {ratio:.2f}** "
        f"(target ≥ {TARGET_RATIO:.2f}), "
        f"{lost} queries lost over all railnet rounds (target 0), "
        f"p99 at {config.latency_qps:,} qps {p99_ratio:.2f}x dnsmasq's "
        f"(target ≤ {P99_RATIO:.1f}x): "
        f"{'**pass**' if passed else '**FAIL**'}.",
        "",
        f"Hot path alone (``Answerer.answer`` in a loop, no sockets): {rate:,.0f} answers/s.",
        "",
        'How railnet gets there from Python (docs/dns.md, "The hot path"): every answer is '
        "rendered when the view is applied; a query asked before (the same bytes after the "
        "ID, letter case included) is answered from a per-view memo with one dict lookup; "
        "and each wake-up of a UDP socket reads up to 64 queries with one `recvmmsg`, writes "
        "each reply over its query in place, and sends them all with one `sendmmsg`, so that "
        "a query costs less CPU than in dnsmasq (measured from the threads' times: about "
        "2 us user + 6 us system per query, against dnsmasq's 2 + 8-9 us).",
        "",
        "Agent memory (private resident memory, ``RssAnon``, of the process serving DNS): "
        f"+{before.anon - before_start.anon:,} KiB to start the loop thread; "
        f"+{(after.anon - before.anon):,} KiB for the {records}-record view "
        f"({per_thousand_small:,.0f} KiB per 1,000 records); "
        f"+{(after_big.anon - before_big.anon):,} KiB for a second view of "
        f"{len(big_view.records):,} records ({config.memory_services:,} services x 2): "
        f"**{per_thousand_big:,.0f} KiB per 1,000 records**. Whole process VmRSS at the end: "
        f"{after_big.rss / 1024:.1f} MiB.",
    ]
    return Result(
        name=NAME,
        summary=(
            f"{railnet.qps:,.0f} vs {dnsmasq_run.qps:,.0f} qps, ratio {ratio:.2f}, {lost} lost, "
            f"p99 {p99_ratio:.2f}x dnsmasq's"
        ),
        target=TARGET,
        passed=passed,
        body=body,
        seconds=time.monotonic() - started,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the markdown section here")
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--seconds", type=float, help="override the length of one run")
    parser.add_argument("--no-naive", action="store_true", help="skip the dnspython reference")
    parser.add_argument("--naive-serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--hosts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_serve:
        serve_naive(args.naive_serve, args.hosts)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    check_prerequisites(REQUIRED_TOOLS, "dnsperf dnsmasq-base iproute2")
    config = QUICK if args.quick else FULL
    config = dataclasses.replace(
        config,
        rounds=args.rounds or config.rounds,
        seconds=args.seconds or config.seconds,
        naive=not args.no_naive,
    )
    result = measure(config)
    return finish(result, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
