"""The providers as the engine calls them: ``python -m pulumi.dynamic`` over gRPC, against a
real lab. Preview with unknowns (no side effects), up, update in place, replacement,
refresh with drift, destroy (the lab left empty), concurrency and failure reporting."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from railnet.core.desired import ServiceSpec, spec_from_document, with_service
from railnet.core.resources import PROPERTIES, Kind
from railnet.lab.local_cluster import Lab

from ..linux.conftest import LabNet, file_cluster, running_lab
from .harness import Declared, DynamicProvider, Engine, ProviderError, State, Unknown, engine_on

pytestmark = pytest.mark.provider


def props(kind: Kind, **given: Any) -> dict[str, Any]:
    base: dict[str, Any] = {p.name: None for p in PROPERTIES[kind]}
    base.update(given)
    return base


def env_inputs(states: dict[str, State] | None, env: str) -> dict[str, Any]:
    if states is None:
        return {
            k: Unknown
            for k in ("project", "environment", "ip_mode", "ipv4_cidr", "domain", "dns_ttl")
        }
    outs = states[env].outputs
    return {
        "project": outs["project"],
        "environment": outs["name"],
        "ip_mode": outs["ip_mode"],
        "ipv4_cidr": outs["ipv4_cidr"],
        "domain": outs["domain"],
        "dns_ttl": outs["dns_ttl"],
    }


def program(
    services: dict[str, dict[str, Any]],
    environments: tuple[str, ...] = ("production",),
    ip_mode: str | None = None,
) -> list[Declared]:
    decl = [Declared("Project", "shop", lambda s: props(Kind.PROJECT, name="shop"))]
    for env in environments:
        decl.append(
            Declared(
                "Environment",
                env,
                lambda s, env=env: props(
                    Kind.ENVIRONMENT,
                    name=env,
                    project=Unknown if s is None else s["shop"].outputs["name"],
                    ip_mode=ip_mode,
                ),
                depends_on=("shop",),
            )
        )
    for name, spec in services.items():
        env = spec.get("env", "production")
        decl.append(
            Declared(
                "Service",
                name,
                lambda s, name=name, spec=spec, env=env: props(
                    Kind.SERVICE,
                    name=spec.get("name", name),
                    replicas=spec.get("replicas"),
                    nodes=spec.get("nodes"),
                    **env_inputs(s, env),
                ),
                depends_on=(env,),
            )
        )
    return decl


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3) as net:
        yield net


@pytest.fixture()
def engine(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file)) as eng:
        yield eng


def environments_on_nodes(lab: Lab) -> dict[str, list[str]]:
    held = {}
    for node in lab.nodes():
        with lab.client(node) as client:
            held[node.name] = sorted(e.env_id for e in client.status().environments)
    return held


def resolve(net: LabNet, netns: str, name: str) -> list[str]:
    code = (
        "import socket,sys; "
        "print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80)})))"
    )
    r = net.run(netns, sys.executable, "-c", code, name)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


SEED = {
    "api": {"replicas": 2},
    "worker": {"nodes": ["node-2"]},
    "database": {"nodes": ["node-3"]},
}


def test_preview_with_unknowns_has_no_side_effects(lab: LabNet, engine: Engine) -> None:
    before = environments_on_nodes(lab.lab)
    steps = engine.preview(program(SEED))
    assert [s.op for s in steps] == ["create"] * 5
    api = steps[2].detail
    assert api["name"] == "api"
    from pulumi.output import Unknown as Computed

    assert isinstance(api["project"], Computed)  # from the environment: not known yet
    assert isinstance(api["private_domain"], Computed) and isinstance(api["plan"], Computed)
    assert environments_on_nodes(lab.lab) == before
    # With known inputs, check computes what preview shows: the name and the network plan.
    engine.up(program({}))
    steps = engine.preview(program(SEED))
    api = next(s for s in steps if s.name == "api").detail
    assert api["private_domain"] == "api.railway.internal"
    # The plan is the network's: this environment's document on the agents now, against
    # the one this service makes (read-only), in the core's words.
    nodes = api["placement"]
    assert len(nodes) == 2
    assert api["plan"][0] == "shop/production: create"
    assert f"service api: added (2 instance(s) on {nodes[0]}, {nodes[1]})" in api["plan"]
    # No agent holds an address for it yet: the agents assign them at apply, and another
    # service created in the same run could take any address this plan would guess.
    assert "dns + api.railway.internal A (2 addresses assigned at apply)" in api["plan"]
    assert "dns + api.railway.internal AAAA (2 addresses assigned at apply)" in api["plan"]
    others = [s.detail for s in steps if s.name in ("worker", "database")]
    assert all("10.250.0.3" not in " ".join(o["plan"]) for o in others)
    assert f"netns {nodes[0]}: + environment" in api["plan"]
    assert f"netns {nodes[0]}: + api#0" in api["plan"]
    assert engine.preview(program(SEED)) == steps  # deterministic
    assert environments_on_nodes(lab.lab) == before


def test_check_failures_name_the_property(engine: Engine) -> None:
    engine.up(program({}))
    bad = program({"Bad_Name": {}, "x": {"nodes": ["node-9"]}, "y": {"replicas": -1}})
    steps = {s.name: s for s in engine.preview(bad)}
    assert [p for p, _ in steps["Bad_Name"].detail] == ["name"]
    assert "Bad_Name" in steps["Bad_Name"].detail[0][1]
    assert steps["x"].detail[0][0] == "nodes"
    assert "node-9" in steps["x"].detail[0][1]
    assert steps["y"].detail[0][0] == "replicas"


def test_up_change_refresh_destroy(lab: LabNet, engine: Engine) -> None:
    steps = engine.up(program(SEED))
    assert [s.op for s in steps] == ["create"] * 5
    api = engine.state["api"].outputs
    assert api["private_domain"] == "api.railway.internal"
    assert len(api["ipv4_addresses"]) == 2 and len(api["ipv6_addresses"]) == 2
    assert [i["node"] for i in api["instances"]] == sorted(
        {i["node"] for i in api["instances"]}
    ) or len(api["instances"]) == 2
    assert api["env_vars"]["RAILWAY_PRIVATE_DOMAIN"] == "api.railway.internal"
    worker = engine.state["worker"].outputs
    assert [i["node"] for i in worker["instances"]] == ["node-2"]

    # Readiness: the name resolves on every node and connects on the first try.
    worker_ns = lab.netns("shop", "production", "worker")
    lab.serve(worker_ns, "worker", 7400)
    for i in range(2):
        api_ns = lab.netns("shop", "production", "api", i)
        names = resolve(lab, api_ns, "worker.railway.internal")
        assert sorted(names) == sorted(worker["ipv4_addresses"] + worker["ipv6_addresses"])
        assert lab.tcp(api_ns, "worker.railway.internal", 7400).output == "worker:ping"

    # A change: scale api to 3 and rename database → db (both in place), and preview it.
    changed = dict(SEED, api={"replicas": 3}, database={"nodes": ["node-3"], "name": "db"})
    preview = {s.name: s for s in engine.preview(program(changed))}
    assert preview["api"].op == "update" and preview["database"].op == "update"
    assert preview["worker"].op == "same"
    old_api = engine.state["api"].outputs
    steps = {s.name: s for s in engine.up(program(changed))}
    assert steps["api"].op == "update"
    new_api = engine.state["api"].outputs
    assert new_api["ipv4_addresses"][:2] == old_api["ipv4_addresses"]  # stable
    assert len(new_api["ipv4_addresses"]) == 3
    assert new_api["private_domain"] == "api.railway.internal"  # update returns all outputs
    db = engine.state["database"].outputs
    assert db["private_domain"] == "db.railway.internal"
    assert db["service_id"] == engine.state["database"].outputs["service_id"]
    api_ns = lab.netns("shop", "production", "api", 2)
    assert sorted(resolve(lab, api_ns, "db.railway.internal")) == sorted(
        db["ipv4_addresses"] + db["ipv6_addresses"]
    )

    # A replacement: worker moves to staging.
    moved = dict(changed, worker={"nodes": ["node-2"], "env": "staging"})
    plan = {s.name: s for s in engine.preview(program(moved, ("production", "staging")))}
    # staging does not exist yet, so its outputs (project, name) are unknown in preview
    assert plan["worker"].op == "replace" and "environment" in plan["worker"].replaces
    engine.up(program(moved, ("production", "staging")))
    assert engine.state["worker"].outputs["environment"] == "staging"
    prod_doc = lab.deployer.latest(lab.deployer.read(engine.state["production"].outputs["env_id"]))
    assert prod_doc is not None and prod_doc.service("worker") is None

    # Refresh with drift: someone scales api to 1 behind Pulumi's back.
    env_id = engine.state["production"].outputs["env_id"]
    sid = engine.state["api"].outputs["service_id"]
    lab.deployer.update(
        "shop",
        "production",
        lambda spec: with_service(spec, ServiceSpec("api", ("node-1",), id=sid)),
    )
    seen = engine.refresh()
    before, after = seen["api"].before, seen["api"].after
    assert len(before["ipv4_addresses"]) == 3 and len(after["ipv4_addresses"]) == 1
    assert engine.state["api"].inputs["replicas"] == 1
    assert {s.name: s.op for s in engine.preview(program(moved, ("production", "staging")))}[
        "api"
    ] == "update"
    engine.up(program(moved, ("production", "staging")))
    assert len(engine.state["api"].outputs["ipv4_addresses"]) == 3

    # Destroy leaves every node empty.
    engine.destroy()
    assert environments_on_nodes(lab.lab) == {n.name: [] for n in lab.lab.nodes()}
    assert not [n for n in _namespaces() if n.startswith(lab.lab.prefix + "n")]
    del env_id


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line]


def test_deleting_what_is_gone_succeeds(lab: LabNet, engine: Engine) -> None:
    engine.up(program({"solo": {"nodes": ["node-1"]}}))
    st = engine.state["solo"]
    engine.provider.delete(st.id, "urn:x", st.outputs)
    engine.provider.delete(st.id, "urn:x", st.outputs)  # again: already gone
    rid, outs, _ = engine.provider.read(st.id, "urn:x", st.outputs, st.inputs)
    assert (rid == "" and outs == {}) or rid == ""
    del engine.state["solo"]


def test_fifty_concurrent_services_get_unique_addresses(lab: LabNet, engine: Engine) -> None:
    engine.up(program({}))
    env_state = engine.state["production"]
    errors: list[BaseException] = []
    results: dict[str, dict[str, Any]] = {}

    def create(i: int) -> None:
        name = f"svc{i}"
        news = props(Kind.SERVICE, name=name, replicas=1, **env_inputs(engine.state, "production"))
        news["__provider"] = __import__("tests.provider.harness", fromlist=["PROVIDERS"]).PROVIDERS[
            "Service"
        ]
        try:
            checked, failures = engine.provider.check(f"urn:{name}", {}, news)
            assert not failures
            rid, outs = engine.provider.create(f"urn:{name}", checked)
            results[name] = outs
            engine.state[name] = State(rid, "Service", checked, outs)
        except BaseException as exc:  # collected and raised below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    v4 = [a for o in results.values() for a in o["ipv4_addresses"]]
    v6 = [a for o in results.values() for a in o["ipv6_addresses"]]
    assert len(v4) == 50 and len(set(v4)) == 50 and len(set(v6)) == 50
    doc = lab.deployer.latest(lab.deployer.read(env_state.outputs["env_id"]))
    assert doc is not None and len(doc.services) == 50
    assert sorted(s.name for s in spec_from_document(doc).services) == sorted(results)


def test_unreachable_agent_is_named(lab: LabNet, tmp_path: Any) -> None:
    cluster = file_cluster(lab.lab)
    cluster["nodes"][1]["agent"] = f"unix:{tmp_path}/nobody.sock"  # type: ignore[index]
    provider = DynamicProvider({"railnet:cluster": json.dumps(cluster)})
    engine = Engine(provider)
    try:
        with pytest.raises(ProviderError) as err:
            engine.up(program({"lonely": {"nodes": ["node-2"]}}))
        assert err.value.code == grpc.StatusCode.UNKNOWN
        assert "node-2" in err.value.details and "nobody.sock" in err.value.details
    finally:
        engine.state.pop("lonely", None)
        engine.destroy()
        provider.close()


def test_missing_cluster_setting_fails_check_clearly() -> None:
    provider = DynamicProvider({})
    try:
        _, failures = provider.check(
            "urn:x",
            {},
            {
                **props(Kind.PROJECT, name="shop"),
                "__provider": __import__(
                    "tests.provider.harness", fromlist=["PROVIDERS"]
                ).PROVIDERS["Project"],
            },
        )
        assert failures and failures[0][0] == "railnet:cluster"
        assert "pulumi config set railnet:cluster" in failures[0][1]
    finally:
        provider.close()
