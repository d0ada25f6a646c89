"""The example programs, run under Pulumi's mocks with the real providers behind them.

Each program runs in a subprocess of its own (``python -m tests.examples.test_examples
PROGRAM_DIR RESULT.json``): the Pulumi runtime keeps its settings, root stack and event
loop in process-wide state, so one process per program is the isolation that cannot leak.

``RailnetMocks`` plays the engine's part for ``pulumi up``: it unpickles the provider from
the ``__provider`` input (as ``python -m pulumi.dynamic`` does), configures it with a
three-node cluster, and runs the provider's own ``check`` and ``create``. The agents are
replaced by ``MemoryDeployer``, an in-memory twin of
``railnet.control.deployer.EnvironmentDeployer`` that builds environment documents with
the core (``build_document``), so placement, IPAM, ids, DNS names, env vars and plans are
the real ones; only the WireGuard keys are fake.
A check failure fails the program the way the engine would.

Stack outputs are read from the root ``Stack`` resource, where ``pulumi.export`` puts
them, and resolved inside ``pulumi.runtime.test``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import runpy
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir() if (p / "__main__.py").is_file())
NODES = ("node-1", "node-2", "node-3")
PROVIDER_KEY = "__provider"

pytestmark = pytest.mark.examples


# -- the mocked engine (runs in the subprocess) ---------------------------------------------


class CheckFailed(Exception):
    """The provider's check refused a resource's inputs, as ``pulumi preview`` would."""


@dataclass
class MemoryDeployer:
    """What the nodes hold, in memory: one environment document per environment."""

    cluster: Any
    documents: dict[str, Any] = field(default_factory=dict)

    def read(self, env_id: str, hints: Any = ()) -> dict[str, Any]:
        doc = self.documents.get(env_id)
        hosting = {n.name for n in doc.nodes} if doc is not None else set()
        return {name: (doc if name in hosting else None) for name in self.cluster.names}

    def survey(self, env_id: str, hints: Any = ()) -> Any:
        from railnet.control.deployer import Survey

        return Survey(self.read(env_id))

    def current(self, env_id: str, hints: Any = ()) -> Any:
        return self.documents.get(env_id)

    @staticmethod
    def latest(held: dict[str, Any]) -> Any:
        from railnet.control.deployer import EnvironmentDeployer

        return EnvironmentDeployer.latest(held)

    def update(
        self, project: str, environment: str, edit: Callable[[Any], Any], hints: Any = ()
    ) -> Any:
        from railnet.control.deployer import Applied
        from railnet.core.desired import EnvironmentSpec, build_document, spec_from_document
        from railnet.core.names import environment_id

        env_id = environment_id(project, environment)
        previous = self.documents.get(env_id)
        base = (
            spec_from_document(previous)
            if previous is not None
            else EnvironmentSpec(project, environment)
        )
        spec = edit(base)
        identities = {}
        for node in spec.nodes:
            index = self.cluster.names.index(self.cluster.node(node).name)
            key = base64.b64encode(hashlib.sha256(f"{env_id}/{node}".encode()).digest()).decode()
            identities[node] = (key, f"198.18.0.{index + 1}:51820")
        doc = build_document(spec, previous, identities)
        if previous is not None and doc.with_generation(previous.generation) == previous:
            doc = previous
        self.documents[env_id] = doc
        return Applied(document=doc, changes={n: [] for n in spec.nodes}, removed_from=())

    def destroy(self, env_id: str, hints: Any = ()) -> list[str]:
        doc = self.documents.pop(env_id, None)
        return [] if doc is None else [n.name for n in doc.nodes]


def make_mocks() -> Any:
    """A ``pulumi.runtime.Mocks`` that runs railnet's providers (imports pulumi lazily, so
    that collecting this module stays cheap)."""
    import dill
    import pulumi
    from pulumi.dynamic import Config, ConfigureRequest
    from pulumi.runtime import rpc
    from pulumi.runtime.settings import get_project

    from railnet.control.cluster import Cluster
    from railnet.core.resources import Kind
    from railnet.providers.base import RailnetProvider

    cluster_json = json.dumps(
        {"nodes": [{"name": n, "agent": f"unix:/nonexistent/{n}.sock"} for n in NODES]}
    )

    class RailnetMocks(pulumi.runtime.Mocks):
        def __init__(self) -> None:
            self.deployer = MemoryDeployer(Cluster.from_json(cluster_json))
            self.resources: list[dict[str, Any]] = []
            self.failures: list[str] = []

        def provider(self, args: pulumi.runtime.MockResourceArgs) -> RailnetProvider:
            kinds = {k.dynamic_token: k for k in Kind}
            if args.typ not in kinds:
                raise AssertionError(f"{args.name}: unexpected resource type {args.typ}")
            # The SDK sends the provider as a secret; the engine hands providers plain values.
            blob = rpc.unwrap_rpc_secret(args.inputs.get(PROVIDER_KEY))
            if not isinstance(blob, str):
                raise AssertionError(f"{args.name}: no serialized provider in {PROVIDER_KEY}")
            provider = dill.loads(base64.b64decode(blob))
            if not isinstance(provider, RailnetProvider) or provider.kind is not kinds[args.typ]:
                raise AssertionError(f"{args.name}: {args.typ} carries {provider!r}")
            # What the engine hands a dynamic provider: all stack config, namespaced keys.
            config = Config({"railnet:cluster": cluster_json}, project_name=get_project())
            provider.configure(ConfigureRequest(config))
            # The agents: in memory, shared by every resource of the program.
            provider.deployer = lambda: self.deployer  # type: ignore[method-assign]
            return provider

        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
            provider = self.provider(args)
            news = {k: rpc.unwrap_rpc_secret(v) for k, v in args.inputs.items()}
            result = provider.check({}, news)
            if result.failures:
                reasons = "; ".join(f"{f.property}: {f.reason}" for f in result.failures)
                message = f"{args.typ} {args.name}: check failed: {reasons}"
                self.failures.append(message)
                raise CheckFailed(message)
            inputs = {**result.inputs, PROVIDER_KEY: news[PROVIDER_KEY]}
            created = provider.create(inputs)
            outs = {**(created.outs or {}), PROVIDER_KEY: args.inputs[PROVIDER_KEY]}
            self.resources.append(
                {
                    "type": args.typ,
                    "name": args.name,
                    "id": created.id,
                    "inputs": {k: v for k, v in news.items() if k != PROVIDER_KEY},
                    "outputs": {k: v for k, v in outs.items() if k != PROVIDER_KEY},
                }
            )
            return str(created.id), outs

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
            raise AssertionError(f"railnet programs invoke no functions, got {args.token}")

    return RailnetMocks()


def project_name(program: Path) -> str:
    import yaml

    pulumi_yaml = program / "Pulumi.yaml"
    if pulumi_yaml.is_file():
        return str(yaml.safe_load(pulumi_yaml.read_text())["name"])
    return "railnet-test"


def run_program(program: Path) -> dict[str, Any]:
    """Run ``program/__main__.py`` under the mocks; its outputs, resources and error."""
    import pulumi
    from pulumi.runtime import settings

    mocks = make_mocks()
    pulumi.runtime.set_mocks(mocks, project=project_name(program), stack="test", preview=False)
    result: dict[str, Any] = {"outputs": None, "error": None}
    os.chdir(program)
    sys.path.insert(0, str(program))
    try:
        runpy.run_path(str(program / "__main__.py"), run_name="__main__")

        @pulumi.runtime.test
        def collect() -> Any:
            root = settings.get_root_resource()
            names = sorted(root.outputs)  # type: ignore[union-attr]
            values = [root.outputs[n] for n in names]  # type: ignore[union-attr]
            return pulumi.Output.all(*values).apply(
                lambda resolved: result.update(outputs=dict(zip(names, resolved, strict=True)))
            )

        collect()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    if mocks.failures and result["error"] is None:
        result["error"] = "CheckFailed: " + " | ".join(mocks.failures)
    result["check_failures"] = mocks.failures
    result["resources"] = mocks.resources
    return result


def _main(argv: list[str]) -> int:
    program, out = Path(argv[0]).resolve(), Path(argv[1])
    out.write_text(json.dumps(run_program(program), indent=2, default=str))
    return 0


# -- the tests (in pytest's process) ----------------------------------------------------------


def run_in_subprocess(program: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{program.name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.examples.test_examples", str(program), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and out.is_file(), (
        f"the driver for {program} crashed (exit {proc.returncode}):\n{proc.stderr}"
    )
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def run_example(program: Path, tmp_path: Path) -> dict[str, Any]:
    result = run_in_subprocess(program, tmp_path)
    assert result["error"] is None, f"{program.name}: {result['error']}\n{result.get('traceback')}"
    assert result["outputs"], f"{program.name} exports nothing"
    return result


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def in_prefix(addresses: list[str], prefix: str) -> bool:
    net = network(prefix)
    return all(ipaddress.ip_address(a) in net for a in addresses)


@pytest.mark.parametrize("program", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_is_a_pulumi_python_project(program: Path) -> None:
    import yaml

    project = yaml.safe_load((program / "Pulumi.yaml").read_text())
    assert project["name"]
    runtime = project["runtime"]
    assert (runtime["name"] if isinstance(runtime, dict) else runtime) == "python"
    assert project.get("description")
    readme = (program / "README.md").read_text()
    assert "railnet:cluster" in readme and "lab up" in readme
    assert "import pulumi_railnet as railnet" in (program / "__main__.py").read_text()


@pytest.mark.parametrize("program", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_runs_with_real_providers(program: Path, tmp_path: Path) -> None:
    result = run_example(program, tmp_path)
    assert result["resources"], f"{program.name} declares no railnet resource"
    for res in result["resources"]:
        assert res["type"].startswith("pulumi-python:dynamic/railnet:"), res["type"]
        assert res["outputs"]["plan"], f"{res['name']} has no plan"


def test_basic(tmp_path: Path) -> None:
    from railnet.core.addressing import DEFAULT_IPV4_CIDR, ula_prefix

    out = run_example(EXAMPLES / "basic", tmp_path)["outputs"]
    assert out["api_host"] == "api.railway.internal"
    assert out["worker_host"] == "worker.railway.internal"
    assert out["database_host"] == "database.railway.internal"

    assert len(out["api_ipv4"]) == 2 and len(out["api_ipv6"]) == 2
    assert in_prefix(out["api_ipv4"], DEFAULT_IPV4_CIDR)
    assert in_prefix(out["api_ipv6"], str(ula_prefix(out["env_id"])))
    assert len(set(out["api_ipv4"] + out["api_ipv6"])) == 4

    instances = out["api_instances"]
    assert [i["index"] for i in instances] == [0, 1]
    assert {i["node"] for i in instances} <= set(NODES)
    assert [i["ipv4"] for i in instances] == out["api_ipv4"]
    assert [i["ipv6"] for i in instances] == out["api_ipv6"]

    env = out["worker_env"]
    assert env["RAILWAY_PRIVATE_DOMAIN"] == "worker.railway.internal"
    assert env["RAILWAY_SERVICE_NAME"] == "worker"
    assert env["RAILWAY_ENVIRONMENT_NAME"] == "production"
    assert env["RAILWAY_PROJECT_NAME"] == "shop"
    assert env["DATABASE_URL"] == "http://database.railway.internal:5432/"
    assert env["RAILNET_PRIVATE_IPV4"] and env["RAILNET_PRIVATE_IPV6"]


def test_environments(tmp_path: Path) -> None:
    from railnet.core.addressing import ula_prefix

    out = run_example(EXAMPLES / "environments", tmp_path)["outputs"]
    prod, staging = out["production_env_id"], out["staging_env_id"]
    assert prod != staging
    assert ula_prefix(prod) != ula_prefix(staging)
    for service in ("api", "worker", "database"):
        # The same name in both environments; each environment answers with its own.
        assert out[f"production_{service}_host"] == f"{service}.railway.internal"
        assert out[f"staging_{service}_host"] == f"{service}.railway.internal"
        assert in_prefix(out[f"production_{service}_ipv4"], "10.250.0.0/16")
        assert in_prefix(out[f"staging_{service}_ipv4"], "10.251.0.0/16")
        assert in_prefix(out[f"production_{service}_ipv6"], str(ula_prefix(prod)))
        assert in_prefix(out[f"staging_{service}_ipv6"], str(ula_prefix(staging)))
    assert len(out["production_api_ipv4"]) == 2
    assert len(out["staging_api_ipv4"]) == 1
    assert out["production_resolvers"] != out["staging_resolvers"]


def test_legacy_ipv6(tmp_path: Path) -> None:
    out = run_example(EXAMPLES / "legacy-ipv6", tmp_path)["outputs"]
    assert out["ip_mode"] == "ipv6"
    assert all(ipaddress.ip_address(r).version == 6 for r in out["resolvers"])
    for service, replicas in (("api", 2), ("cache", 1)):
        assert out[f"{service}_host"] == f"{service}.railway.internal"
        assert out[f"{service}_ipv4"] == []
        assert len(out[f"{service}_ipv6"]) == replicas
        assert in_prefix(out[f"{service}_ipv6"], out["ipv6_prefix"])
        dns_lines = [line for line in out[f"{service}_plan"] if line.startswith("dns ")]
        name_line = next(line for line in dns_lines if line.startswith(f"dns {service}.railway"))
        assert ": AAAA," in name_line, name_line
        assert not any(" A," in line or "A, AAAA" in line for line in dns_lines), dns_lines


# -- refusals --------------------------------------------------------------------------------

PROGRAM_HEAD = """
import pulumi
import pulumi_railnet as railnet

shop = railnet.Project("shop")
prod = railnet.Environment("production", project=shop)
"""


def write_program(tmp_path: Path, body: str) -> Path:
    program = tmp_path / "program"
    program.mkdir()
    (program / "__main__.py").write_text(PROGRAM_HEAD + body)
    return program


def test_sdk_refuses_replicas_and_nodes(tmp_path: Path) -> None:
    program = write_program(
        tmp_path, 'railnet.Service("api", environment=prod, replicas=2, nodes=["node-1"])\n'
    )
    result = run_in_subprocess(program, tmp_path)
    assert result["error"] is not None
    assert result["error"].startswith("ValueError"), result["error"]
    assert "replicas or nodes, not both" in result["error"]
    assert "api" in result["error"]
    assert not any(r["name"] == "api" for r in result["resources"])


def test_bad_service_name_fails_check_naming_the_property(tmp_path: Path) -> None:
    program = write_program(
        tmp_path,
        'bad = railnet.Service("Bad_Name", environment=prod)\n'
        'pulumi.export("host", bad.private_domain)\n',
    )
    result = run_in_subprocess(program, tmp_path)
    assert result["error"] is not None
    assert len(result["check_failures"]) == 1, result["check_failures"]
    failure = result["check_failures"][0]
    assert "Bad_Name" in failure and "check failed: name:" in failure, failure


def test_bad_service_name_through_the_provider_check() -> None:
    from railnet.providers import ServiceProvider

    result = ServiceProvider().check(
        {},
        {
            "name": "Bad_Name",
            "project": "shop",
            "environment": "production",
            "__provider": "blob",
        },
    )
    assert [f.property for f in result.failures] == ["name"]
    assert "Bad_Name" in result.failures[0].reason


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
