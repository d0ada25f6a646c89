"""`railnet plan --against CLUSTER`: the program's desired state (a preview file) against
what the agents actually hold. Exact addresses, the whole mesh, and drift."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec, spec_from_document, with_service

from ..linux.conftest import LabNet, running_lab

pytestmark = pytest.mark.provider

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "preview" / "update.json"


@pytest.fixture(scope="module")
def deployed() -> Iterator[LabNet]:
    """shop/production as the old state of update.json has it: api on node-1 and node-2,
    worker and database on node-1 (service ids derive from the names, as there)."""
    with running_lab(3) as net:
        net.deploy(
            EnvironmentSpec(
                "shop",
                "production",
                services=(
                    ServiceSpec("api", ("node-1", "node-2")),
                    ServiceSpec("worker", ("node-1",)),
                    ServiceSpec("database", ("node-1",)),
                ),
            )
        )
        yield net


def plan(net: LabNet, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "railnet",
            "plan",
            str(FIXTURE),
            "--against",
            str(net.lab.cluster_file),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_against_the_agents_the_plan_is_exact(deployed: LabNet) -> None:
    r = plan(deployed, "--format", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (env,) = report["environments"]
    held = deployed.deployer.latest(deployed.deployer.read(env["env_id"]))
    assert held is not None
    taken = {a for s in held.services for i in s.instances for a in (i.ipv4, i.ipv6) if a}
    assert report["counts_basis"] == "agents"
    worker = [d for d in env["dns"] if d["name"].startswith("worker.")]
    # worker 1 → 3: two new instances, both families. No agent holds their addresses
    # yet, so the plan counts them (assigned at apply) and never names a held one.
    assert sum(d["pending"] for d in worker) == 4
    added = [a for d in worker for a in d["added"]]
    assert not taken & set(added), "new addresses must not collide with any held one"
    # The whole mesh is known here: a node that starts hosting the environment (the
    # preview puts worker on all three) becomes a peer of every node that held it.
    peers = {p["node"]: set(p["added"]) for p in env["peers"]}
    hosting = {n.name for n in held.nodes}
    joining = {"node-1", "node-2", "node-3"} - hosting
    assert joining == {"node-3"}
    for node in hosting:
        assert peers.get(node, set()) == joining
    for node in joining:
        assert peers[node] == ({"node-1", "node-2", "node-3"} - {node})
    created = {(n["node"], n["holds"]) for n in env["namespaces"] if n["created"]}
    assert {(node, "environment") for node in joining} <= created
    assert not report["notes"]
    # api is untouched by the preview and held as deployed: no change is reported for it.
    assert not [c for c in env["services"] if c["service"] == "api"]


def test_drift_on_the_agents_shows_in_the_plan(deployed: LabNet) -> None:
    env_id = json.loads(plan(deployed, "--format", "json").stdout)["environments"][0]["env_id"]
    held = deployed.deployer.latest(deployed.deployer.read(env_id))
    assert held is not None
    api = held.service("api")
    assert api is not None
    # Someone scales api to one instance on the agents, behind the program's back.
    deployed.deployer.update(
        "shop",
        "production",
        lambda spec: with_service(spec, ServiceSpec("api", ("node-1",), id=api.id)),
    )
    try:
        r = plan(deployed, "--format", "json")
        assert r.returncode == 0, r.stderr
        env = json.loads(r.stdout)["environments"][0]
        # The preview does not touch api, so the plan keeps what the agents hold: the
        # drift is visible as api having one instance where the stack state says two.
        assert env["counts"]["instances_before"] == 3  # api 1 + worker 1 + database 1
        text = plan(deployed).stdout
        assert "worker: scaled (1 → 3 instance(s))" in text
    finally:
        deployed.deployer.update(
            "shop",
            "production",
            lambda spec: with_service(spec, ServiceSpec("api", ("node-1", "node-2"), id=api.id)),
        )
    assert (
        len(spec_from_document(deployed.deployer.latest(deployed.deployer.read(env_id))).services)
        == 3
    )  # type: ignore[arg-type]


def test_against_the_agents_needs_only_the_operator_certificate(
    deployed: LabNet, tmp_path: Path
) -> None:
    # A PR check should not hold the provider's key: with the provider's certificate gone
    # from the cluster file, the plan still reads every document with the operator's.
    cluster_file = deployed.lab.cluster_file
    raw = json.loads(cluster_file.read_text(encoding="utf-8"))
    assert raw.get("operator"), "the lab's cluster file names an operator certificate"
    base = cluster_file.parent

    def absolute(p: str) -> str:
        return str(Path(p) if Path(p).is_absolute() else base / p)

    raw["operator"] = {k: absolute(v) for k, v in raw["operator"].items()}
    raw["tls"] = {
        "ca": absolute(raw["tls"]["ca"]),
        "cert": str(tmp_path / "no-provider.pem"),
        "key": str(tmp_path / "no-provider-key.pem"),
    }
    reader = tmp_path / "cluster.json"
    reader.write_text(json.dumps(raw), encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "railnet", "plan", str(FIXTURE), "--against", str(reader)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "Environment shop/production [update]" in r.stdout
