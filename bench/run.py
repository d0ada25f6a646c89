"""Run every benchmark and write docs/benchmarks.md; what ``make bench`` calls.

    python -m bench.run [--quick]
                        [--only dataplane|apply|memory|rotation|self_heal|scale|fleet|envs ...]
                        [--output FILE]

Each benchmark builds its own throwaway lab and removes it, on failure too. When
``bench/dns_bench.py`` exists it runs as ``python -m bench.dns_bench --output FILE`` and
its markdown section is appended. The document is written whatever happens; the exit
code is 0 when every target is met, 1 when one is missed, 2 when a benchmark could not
run or something it created was left behind.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import apply_latency, dataplane, environments, fleet, memory, rotation, scale, self_heal
from bench.common import (
    BenchError,
    Leftovers,
    Result,
    check_prerequisites,
    failed_result,
    load_average,
    machine,
    say,
)

REPO = Path(__file__).resolve().parent.parent
DNS_BENCH = REPO / "bench" / "dns_bench.py"
DNS_MODULE = "bench.dns_bench"
DNS_TIMEOUT = 3600.0
PLAN_BENCH = REPO / "bench" / "plan_bench.py"
PLAN_MODULE = "bench.plan_bench"


def _benchmarks(quick: bool) -> dict[str, tuple[str, str, Callable[[bool], Result]]]:
    """name → (section title, target, run(dns))."""
    return {
        "dataplane": (
            dataplane.NAME,
            dataplane.TARGET,
            lambda dns: dataplane.measure(dataplane.QUICK if quick else dataplane.FULL, dns=dns),
        ),
        "apply": (
            apply_latency.NAME,
            apply_latency.TARGET,
            lambda dns: apply_latency.measure(
                apply_latency.QUICK if quick else apply_latency.FULL, dns=dns
            ),
        ),
        "memory": (
            memory.NAME,
            memory.TARGET,
            lambda dns: memory.measure(memory.QUICK if quick else memory.FULL, dns=dns),
        ),
        "rotation": (
            rotation.NAME,
            rotation.TARGET,
            lambda dns: rotation.measure(rotation.QUICK if quick else rotation.FULL, dns=dns),
        ),
        "self_heal": (
            self_heal.NAME,
            self_heal.TARGET,
            lambda dns: self_heal.measure(self_heal.QUICK if quick else self_heal.FULL, dns=dns),
        ),
        "scale": (
            scale.NAME,
            scale.TARGET,
            lambda dns: scale.measure(scale.QUICK if quick else scale.FULL, dns=dns),
        ),
        "fleet": (
            fleet.NAME,
            fleet.TARGET,
            lambda dns: fleet.measure(fleet.QUICK if quick else fleet.FULL, dns=dns),
        ),
        "envs": (
            environments.NAME,
            environments.TARGET,
            lambda dns: environments.measure(
                environments.QUICK if quick else environments.FULL, dns=dns
            ),
        ),
    }


# -- the DNS benchmark, someone else's script --------------------------------------------


@dataclass(frozen=True)
class DnsSection:
    markdown: str
    exit_code: int
    seconds: float
    wrote: bool
    """Whether the script wrote its section (if not, it crashed)."""


def run_dns_bench(
    quick: bool, script: Path = DNS_BENCH, module: str = DNS_MODULE, title: str = "DNS"
) -> DnsSection | None:
    """``python -m MODULE --output FILE`` in a child process; None if there is no script."""
    if not script.exists():
        return None
    command = [sys.executable, "-m", module]
    if quick and "--quick" in _help_of(command):
        command.append("--quick")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="railnet-bench-dns-") as tmp:
        output = Path(tmp) / "dns.md"
        log = Path(tmp) / "dns.log"
        say(f"{title}: {' '.join(command[1:])} --output FILE")
        with open(log, "wb") as out:
            child = subprocess.Popen(
                [*command, "--output", str(output)], cwd=REPO, stdout=out, stderr=out
            )
            try:
                code = child.wait(timeout=DNS_TIMEOUT)
            except BaseException:
                # Let it clean up what it made (SIGTERM, then a grace period) before SIGKILL.
                if child.poll() is None:
                    child.terminate()
                    try:
                        child.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait()
                raise
        seconds = time.monotonic() - started
        text = output.read_text() if output.exists() else ""
        tail = log.read_text(errors="replace")[-3000:]
    wrote = bool(text.strip())
    if code != 0 or not wrote:
        text = (text.rstrip() + "\n\n" if text.strip() else f"## {title}\n\n") + (
            f"`python -m {module}` exited with {code}"
            f"{' and wrote no section' if not text.strip() else ''}; its output ends:\n\n"
            f"```\n{tail.strip()}\n```\n"
        )
    return DnsSection(text.rstrip() + "\n", code, seconds, wrote)


def _help_of(command: list[str]) -> str:
    try:
        done = subprocess.run(
            [*command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


# -- the document ------------------------------------------------------------------------


def _git_revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def render(
    results: list[Result],
    dns: DnsSection | None,
    *,
    quick: bool,
    date: datetime,
    seconds: float,
    leftovers: list[str],
    argv: list[str],
    load: str,
    plan: DnsSection | None = None,
) -> str:
    command = " ".join(["python -m bench.run", *argv])
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (`make bench` runs `python -m bench.run`) on "
        f"{date:%Y-%m-%d %H:%M} UTC at revision {_git_revision()}"
        f"{'; a **quick** run (smaller and shorter)' if quick else ''}. The whole run took "
        f"{seconds / 60:.1f} min. Regenerate it rather than editing it.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine().items()),
        f"| Load average (1 min) when the run started | {load} |",
        "",
        "Every benchmark runs on a local lab (`railnet.lab.local_cluster.Lab`): each node is a "
        "network namespace with its own agent, all on this one machine, WireGuard in userspace "
        "(wireguard-go; this kernel has no WireGuard module). Other work on the machine "
        "shares the same CPUs and shows up as noise.",
        "",
        "## Summary",
        "",
        "| benchmark | result | target | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.name} | {r.summary} | {r.target} | {r.verdict} |" for r in results]
    if dns is not None:
        lines.append(
            f"| DNS (`bench/dns_bench.py`, {dns.seconds:.0f} s) | see its section "
            "| see its section | "
            f"{'exit 0' if dns.exit_code == 0 else f'**exit {dns.exit_code}**'} |"
        )
    if plan is not None:
        lines.append(
            f"| Plan rendering (`bench/plan_bench.py`, {plan.seconds:.0f} s) | see its section "
            "| < 1 s | "
            f"{'exit 0' if plan.exit_code == 0 else f'**exit {plan.exit_code}**'} |"
        )
    lines += [
        "",
        "Cleanup check: "
        + (
            "nothing this run created (namespaces, wireguard-go processes, UAPI sockets) "
            "was left behind."
            if not leftovers
            else "**left behind: " + ", ".join(leftovers) + "**."
        ),
        "",
        "Run one benchmark alone with `python -m bench.dataplane`, `python -m "
        "bench.apply_latency`, `python -m bench.memory`, `python -m bench.rotation`, "
        "`python -m bench.self_heal`, `python -m bench.scale`, `python -m bench.fleet` or "
        "`python -m bench.environments` (each takes `--quick`); it prints its section.",
        "",
    ]
    for result in results:
        lines += [result.markdown(), ""]
    if dns is not None:
        lines += [dns.markdown, ""]
    if plan is not None:
        lines += [plan.markdown, ""]
    return "\n".join(lines).rstrip() + "\n"


# -- main --------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> Any:
    # SystemExit unwinds through every finally block: labs and tunnels come down.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument(
        "--only",
        action="append",
        choices=(
            "dataplane",
            "apply",
            "memory",
            "rotation",
            "self_heal",
            "scale",
            "fleet",
            "envs",
            "dns",
            "plan",
        ),
        help="run only these (repeatable)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-dns", action="store_true", help="start the labs without DNS")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        check_prerequisites()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    date = datetime.now(UTC)
    load_start = load_average()
    results: list[Result] = []
    crashed = False
    for name, (title, target, measure) in _benchmarks(args.quick).items():
        if args.only and name not in args.only:
            continue
        say(f"=== {title}")
        t0 = time.monotonic()
        try:
            result = measure(not args.no_dns)
        except Exception as exc:
            traceback.print_exc()
            result = failed_result(title, target, exc, time.monotonic() - t0)
            crashed = True
        results.append(result)
        say(f"=== {title}: {result.summary} ({result.verdict.strip('*')})")
    dns = None
    if not args.only or "dns" in args.only:
        dns = run_dns_bench(args.quick)
        if dns is None:
            say("dns: bench/dns_bench.py does not exist yet; skipped")
    plan = None
    if not args.only or "plan" in args.only:
        plan = run_dns_bench(args.quick, PLAN_BENCH, PLAN_MODULE, "Plan rendering")
    leftovers = Leftovers.report()
    text = render(
        results,
        dns,
        quick=args.quick,
        date=date,
        seconds=time.monotonic() - started,
        leftovers=leftovers,
        argv=list(sys.argv[1:] if argv is None else argv),
        load=load_start,
        plan=plan,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    say(f"wrote {args.output} in {(time.monotonic() - started) / 60:.1f} min")
    if leftovers:
        say("LEFT BEHIND: " + ", ".join(leftovers))
    sections = [s for s in (dns, plan) if s is not None]
    if crashed or leftovers or any(s.exit_code != 0 and not s.wrote for s in sections):
        return 2
    missed = any(r.passed is False for r in results) or any(s.exit_code != 0 for s in sections)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
