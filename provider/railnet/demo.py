"""``railnet demo``: the seed topology on a local lab, start to finish, checked as it goes.

API, Worker and Database run in shop/production on three nodes; shop/staging runs its own
API. The demo shows API → Worker → Database over plain HTTP by DNS name (IPv4 and IPv6),
staging unable to reach production by name or address, a build step with no private
network, a change (Worker scaled to two replicas), and then tears everything down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from railnet.cli.runtime import Target, find_instance
from railnet.core.cluster import Cluster
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.deploy import EnvironmentDeployer
from railnet.lab import Lab

DB_PORT = 5432
WORKER_PORT = 8080


class Demo:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.cluster = Cluster.from_json(lab.cluster_file.read_text(), base=str(lab.directory))
        self.deployer = EnvironmentDeployer(self.cluster)
        self.processes: list[subprocess.Popen[str]] = []
        self.failures = 0

    # -- output ---------------------------------------------------------------------------

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {what}" + (f": {detail}" if detail else ""), flush=True)
        if not ok:
            self.failures += 1

    # -- helpers --------------------------------------------------------------------------

    def netns(self, env: str, service: str, index: int = 0) -> str:
        return find_instance(self.cluster, Target("shop", env, service, index))[1]

    def start(self, env: str, service: str, *args: str, index: int = 0) -> None:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns(env, service, index),
                sys.executable,
                "-m",
                "railnet.demo_apps",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{service} did not start: {line}")

    def fetch(self, command: str, env: str, service: str, url: str) -> tuple[bool, Any]:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "railnet",
                command,
                "--cluster",
                str(self.lab.cluster_file),
                f"shop/{env}/{service}",
                "--",
                sys.executable,
                "-m",
                "railnet.demo_apps",
                "fetch",
                url,
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            return False, (r.stderr.strip().splitlines() or ["no output"])[-1]
        return True, json.loads(r.stdout)

    def resolve(self, env: str, service: str, name: str) -> list[str]:
        code = (
            "import socket,sys\n"
            "try: print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80)})))\n"
            "except socket.gaierror as e: print('error', e)\n"
        )
        r = subprocess.run(
            ["ip", "netns", "exec", self.netns(env, service), sys.executable, "-c", code, name],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return r.stdout.split()

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # -- the story ------------------------------------------------------------------------

    def production(self, worker_nodes: tuple[str, ...]) -> EnvironmentSpec:
        return EnvironmentSpec(
            "shop",
            "production",
            services=(
                ServiceSpec("api", ("node-1",)),
                ServiceSpec("worker", worker_nodes),
                ServiceSpec("database", ("node-3",)),
            ),
        )

    def run(self) -> int:
        self.step("Deploy shop/production (api, worker, database) and shop/staging (api)")
        t0 = time.monotonic()
        prod = self.deployer.apply(self.production(("node-2",))).document
        self.check("production applied on every node", True, f"{time.monotonic() - t0:.2f}s")
        for svc in prod.services:
            for i, inst in enumerate(svc.instances):
                print(f"       {svc.name}#{i} on {inst.node}: {inst.ipv4}, {inst.ipv6}")
        self.deployer.apply(
            EnvironmentSpec("shop", "staging", services=(ServiceSpec("api", ("node-1",)),))
        )
        self.check("staging applied", True)

        self.step("Start the apps: database, then worker (talks to database.railway.internal)")
        self.start("production", "database", "database", str(DB_PORT))
        self.start(
            "production",
            "worker",
            "worker",
            str(WORKER_PORT),
            f"http://database.railway.internal:{DB_PORT}/",
        )
        self.check("database and worker listening", True)

        self.step("API → Worker → Database over HTTP by DNS name")
        names = self.resolve("production", "api", "worker.railway.internal")
        has4 = any(":" not in a for a in names)
        has6 = any(":" in a for a in names)
        self.check(
            "worker.railway.internal resolves to IPv4 and IPv6", has4 and has6, " ".join(names)
        )
        ok, body = self.fetch(
            "exec", "production", "api", f"http://worker.railway.internal:{WORKER_PORT}/"
        )
        self.check(
            "api fetched worker, worker fetched database",
            ok and body == {"service": "worker", "database": {"service": "database", "rows": 42}},
            json.dumps(body),
        )
        svc = prod.service("worker")
        assert svc is not None
        for address in (svc.instances[0].ipv4, svc.instances[0].ipv6):
            host = f"[{address}]" if address and ":" in address else address
            ok, body = self.fetch("exec", "production", "api", f"http://{host}:{WORKER_PORT}/")
            self.check(f"api reached worker at {address}", ok)

        self.step("Isolation: staging cannot reach production")
        names = self.resolve("staging", "api", "worker.railway.internal")
        self.check(
            "worker.railway.internal does not resolve in staging",
            names[:1] == ["error"],
            " ".join(names),
        )
        for address in (svc.instances[0].ipv4, svc.instances[0].ipv6):
            host = f"[{address}]" if address and ":" in address else address
            ok, body = self.fetch("exec", "staging", "api", f"http://{host}:{WORKER_PORT}/")
            self.check(
                f"staging api cannot reach production worker at {address}", not ok, str(body)
            )

        self.step("Build phase: no private network")
        ok, body = self.fetch(
            "build-exec", "production", "api", f"http://worker.railway.internal:{WORKER_PORT}/"
        )
        self.check("a build step cannot reach worker.railway.internal", not ok, str(body))

        self.step("A change: worker scaled to two replicas (node-2, node-3)")
        t0 = time.monotonic()
        applied = self.deployer.apply(self.production(("node-2", "node-3")))
        elapsed = time.monotonic() - t0
        for node, changes in sorted(applied.changes.items()):
            for change in changes:
                print(f"       {node}: {change}")
        self.check("applied on every node", True, f"{elapsed:.2f}s")
        self.start(
            "production",
            "worker",
            "worker",
            str(WORKER_PORT),
            f"http://database.railway.internal:{DB_PORT}/",
            index=1,
        )
        names = self.resolve("production", "api", "worker.railway.internal")
        self.check("worker.railway.internal now has 4 addresses", len(names) == 4, " ".join(names))
        ok, body = self.fetch(
            "exec", "production", "api", f"http://worker.railway.internal:{WORKER_PORT}/"
        )
        self.check("api still reaches worker", ok)
        return 1 if self.failures else 0


@contextmanager
def demo_lab(directory: Path | None) -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix="railnet-demo-")) if directory is None else directory
    print("== Bring up a 3-node lab (namespaces, underlay, an agent per node, mutual TLS)")
    lab = Lab.up(base / "lab", 3, progress=True)
    try:
        yield lab
    finally:
        print("\n== Tear down")
        removed = lab.down()
        print(f"  removed {len(removed)} objects (namespaces, agents, wireguard-go processes)")


def run_demo(args: argparse.Namespace) -> int:
    with demo_lab(args.dir) as lab:
        demo = Demo(lab)
        try:
            code = demo.run()
        finally:
            demo.stop()
    print(
        "\nrailnet demo: "
        + ("all checks passed" if code == 0 else f"{demo.failures} checks failed")
    )
    return code


def add_demo_parser(
    subparsers: Any, runner: Callable[[argparse.Namespace], int] = run_demo
) -> None:
    p = subparsers.add_parser("demo", help="the seed topology on a local lab, checked")
    p.add_argument("--dir", type=Path, help="where to keep the lab while it runs")
    p.set_defaults(func=runner)
