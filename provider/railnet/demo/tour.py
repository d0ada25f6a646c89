"""``railnet demo``: the seed topology on a local lab, start to finish, checked as it goes.

It runs ``examples/basic`` (API, Worker and Database in shop/production) through the real
provider protocol: ``python -m pulumi.dynamic`` driven as the Pulumi engine drives it
(``railnet.engine.emulator``), preview first, then up. A second stack adds shop/staging. The demo
then shows API → Worker → Database over plain HTTP by DNS name (IPv4 and IPv6), staging
unable to reach production by name or address, a build step with no private network, a
change with its network plan (the worker scaled to two replicas), and destroys it all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from railnet.control.cluster import load_cluster
from railnet.control.inspect import Target, find_instance
from railnet.core.errors import RailnetError
from railnet.engine.emulator import (
    DynamicProvider,
    ProgramResult,
    ResourceState,
    destroy,
    run_program,
)
from railnet.lab.local_cluster import Lab

DB_PORT = 5432
WORKER_PORT = 8080


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
STAGING_PROGRAM = EXAMPLES / "staging" / "__main__.py"


class Demo:
    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.cluster = load_cluster(lab.cluster_file, "the lab's cluster file")
        self.processes: list[subprocess.Popen[str]] = []
        self.failures = 0
        self.provider: DynamicProvider | None = None
        self.stacks: dict[str, dict[str, ResourceState]] = {"basic": {}, "staging": {}}

    # -- output ---------------------------------------------------------------------------

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {what}" + (f": {detail}" if detail else ""), flush=True)
        if not ok:
            self.failures += 1

    def show(self, result: ProgramResult, plans: bool) -> None:
        for s in result.steps:
            marker = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}.get(s.op, " ")
            extra = f" (replaces: {', '.join(s.replaces)})" if s.replaces else ""
            print(f"    {marker:2} {s.kind} {s.name}: {s.op}{extra}")
            if plans and s.op != "same":
                for line in s.plan:
                    print(f"         {line}")

    # -- helpers --------------------------------------------------------------------------

    def program(self, stack: str, path: Path, preview: bool) -> ProgramResult:
        assert self.provider is not None
        return run_program(
            path,
            self.provider,
            self.stacks[stack],
            preview=preview,
            config={"railnet:cluster": str(self.lab.cluster_file)},
            project=f"railnet-{stack}",
            stack="demo",
        )

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
                "railnet.demo.apps",
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
            raise RailnetError(f"{service} did not start: {line}")

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
                "railnet.demo.apps",
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

    def run(self) -> int:
        basic = EXAMPLES / "basic" / "__main__.py"
        self.step("Start the provider the way the Pulumi engine does: python -m pulumi.dynamic")
        self.provider = DynamicProvider({"railnet:cluster": str(self.lab.cluster_file)})
        self.check("provider serving the ResourceProvider gRPC protocol", True)

        self.step("pulumi preview: examples/basic (no side effects)")
        preview = self.program("basic", basic, preview=True)
        self.show(preview, plans=True)
        self.check("preview plans 5 creates", [s.op for s in preview.steps] == ["create"] * 5)

        self.step("pulumi up: examples/basic")
        t0 = time.monotonic()
        up = self.program("basic", basic, preview=False)
        self.show(up, plans=False)
        self.check("stack up", True, f"{time.monotonic() - t0:.2f}s")
        for key in ("api_host", "worker_host", "database_host", "api_ipv4", "api_ipv6"):
            print(f"    output {key} = {json.dumps(up.exports.get(key))}")
        self.check("api_host output", up.exports.get("api_host") == "api.railway.internal")

        self.step("pulumi up: a second stack with shop/staging (its own api)")
        self.program("staging", STAGING_PROGRAM, preview=False)
        self.check("staging up", True)

        self.step("Start the apps: database, then worker (calls database.railway.internal)")
        self.start("production", "database", "database", str(DB_PORT))
        self.start(
            "production",
            "worker",
            "worker",
            str(WORKER_PORT),
            f"http://database.railway.internal:{DB_PORT}/",
        )
        self.check("database and worker listening", True)

        self.step("API → Worker → Database over plain HTTP by DNS name")
        worker = self.stacks["basic"]["worker"].outputs
        names = self.resolve("production", "api", "worker.railway.internal")
        expected = sorted(worker["ipv4_addresses"] + worker["ipv6_addresses"])
        self.check(
            "worker.railway.internal resolves to its IPv4 and IPv6",
            sorted(names) == expected,
            " ".join(names),
        )
        ok, body = self.fetch(
            "exec", "production", "api", f"http://worker.railway.internal:{WORKER_PORT}/"
        )
        self.check(
            "api → worker → database",
            ok and body == {"service": "worker", "database": {"service": "database", "rows": 42}},
            json.dumps(body),
        )
        for address in (worker["ipv4_addresses"][0], worker["ipv6_addresses"][0]):
            host = f"[{address}]" if ":" in address else address
            ok, body = self.fetch("exec", "production", "api", f"http://{host}:{WORKER_PORT}/")
            self.check(f"api reaches worker at {address}", ok)

        self.step("Isolation: staging cannot reach production")
        names = self.resolve("staging", "api", "database.railway.internal")
        self.check(
            "database.railway.internal does not resolve in staging",
            names[:1] == ["error"],
            " ".join(names),
        )
        for address in (worker["ipv4_addresses"][0], worker["ipv6_addresses"][0]):
            host = f"[{address}]" if ":" in address else address
            ok, body = self.fetch("exec", "staging", "api", f"http://{host}:{WORKER_PORT}/")
            self.check(f"staging cannot reach production's worker at {address}", not ok, str(body))

        self.step("Build phase: no private network")
        ok, body = self.fetch(
            "build-exec", "production", "api", f"http://worker.railway.internal:{WORKER_PORT}/"
        )
        self.check("a build step cannot reach worker.railway.internal", not ok, str(body))

        self.step("A change: the worker scaled to 2 replicas (pulumi preview, then up)")
        changed = self.workdir / "basic-scaled" / "__main__.py"
        changed.parent.mkdir(parents=True, exist_ok=True)
        source = basic.read_text()
        scaled = source.replace(
            'railnet.Service("worker", environment=prod)',
            'railnet.Service("worker", environment=prod, replicas=2)',
        )
        self.check("program changed", scaled != source)
        changed.write_text(scaled)
        preview = self.program("basic", changed, preview=True)
        self.show(preview, plans=True)
        ops = {s.name: s.op for s in preview.steps}
        self.check(
            "preview: worker updates in place, nothing else changes",
            ops.get("worker") == "update"
            and all(op == "same" for n, op in ops.items() if n != "worker"),
        )
        t0 = time.monotonic()
        self.program("basic", changed, preview=False)
        worker = self.stacks["basic"]["worker"].outputs
        self.check("up: applied on every node", True, f"{time.monotonic() - t0:.2f}s")
        second = worker["instances"][1]
        self.start(
            "production",
            "worker",
            "worker",
            str(WORKER_PORT),
            f"http://database.railway.internal:{DB_PORT}/",
            index=1,
        )
        names = self.resolve("production", "api", "worker.railway.internal")
        self.check(
            "worker.railway.internal now answers 4 addresses", len(names) == 4, " ".join(names)
        )
        ok, body = self.fetch(
            "exec", "production", "api", f"http://[{second['ipv6']}]:{WORKER_PORT}/"
        )
        self.check(f"the new replica on {second['node']} answers", ok)

        self.step("pulumi destroy: both stacks")
        self.stop()
        destroy(self.provider, self.stacks["staging"], "railnet-staging", "demo")
        destroy(self.provider, self.stacks["basic"], "railnet-basic", "demo")
        left = []
        for node in self.lab.nodes():
            with self.lab.client(node) as client:
                left += [e.env_id for e in client.status().environments]
        self.check("no environment left on any node", not left, " ".join(left))
        return 1 if self.failures else 0

    def close(self) -> None:
        self.stop()
        if self.provider is not None:
            self.provider.close()


@contextmanager
def demo_lab(directory: Path | None) -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix="railnet-demo-")) if directory is None else directory
    print("== Bring up a 3-node lab (namespaces, underlay, an agent per node, mutual TLS)")
    try:
        lab = Lab.up(base / "lab", 3, progress=True)
        try:
            yield lab
        finally:
            print("\n== Tear down the lab")
            removed = lab.down()
            print(f"  removed {len(removed)} objects (namespaces, agents, wireguard-go processes)")
    finally:
        if directory is None:
            shutil.rmtree(base, ignore_errors=True)


def run_demo(directory: Path | None = None) -> int:
    """The whole demo on a fresh lab (kept under ``directory`` while it runs); 0 when every
    check passed."""
    # The changed program goes to a directory of its own, gone afterwards: --dir DIR keeps
    # only the lab there, and the lab's down removes that.
    with demo_lab(directory) as lab, tempfile.TemporaryDirectory(prefix="railnet-demo-") as work:
        demo = Demo(lab, Path(work))
        try:
            code = demo.run()
        finally:
            demo.close()
    print(
        "\nrailnet demo: "
        + ("all checks passed" if code == 0 else f"{demo.failures} checks failed")
    )
    return code
