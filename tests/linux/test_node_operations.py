"""Operating nodes on a real lab: ``railnet exec`` through the local agent's socket, and
draining a node (cordon in the cluster file, the next deploy moves everything off it, then
``railnet cluster remove-node``), deployed through the engine-faithful harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from railnet.control.cluster import load_cluster
from railnet.core.names import environment_id
from railnet.lab.local_cluster import Lab

from ..provider.harness import DynamicProvider, Engine, engine_on
from ..provider.test_engine_protocol import program
from .conftest import LabNet, running_lab

pytestmark = pytest.mark.linux

ENV = environment_id("shop", "production")
PORT = 7311


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3) as net:
        yield net


def railnet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railnet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",  # no railnet-lab/cluster.json to fall back on
    )


def no_cluster_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAILNET_CLUSTER"}


def hosted(lab: Lab, node: str) -> list[str]:
    """What ``node``'s agent says it runs: service#index of every instance."""
    member = next(n for n in lab.nodes() if n.name == node)
    with lab.client(member) as client:
        reply = client.status()
    return sorted(f"{i.service}#{i.index}" for e in reply.environments for i in e.instances)


def held_documents(lab: Lab, node: str) -> list[str]:
    member = next(n for n in lab.nodes() if n.name == node)
    with lab.client(member) as client:
        reply = client.status()
    return sorted(d.env_id for d in reply.documents)


def config_of(lab: Lab, node: str) -> Path:
    """The agent.toml the lab started ``node``'s agent from: what a real node has at
    /etc/railnet/agent.toml."""
    return lab.directory / node / "agent.toml"


@pytest.fixture(scope="module")
def deployed(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file)) as engine:
        engine.up(program({"api": {"nodes": ["node-1"]}, "db": {"nodes": ["node-2"]}}))
        yield engine


# -- exec through the local agent ----------------------------------------------------------


def test_exec_on_the_hosting_node_runs_and_passes_the_exit_code(
    lab: LabNet, deployed: Engine
) -> None:
    config = str(config_of(lab.lab, "node-2"))
    for command in ("exec", "build-exec"):
        r = railnet(
            command, "--agent-config", config, "shop/production/db", "--", "sh", "-c", "exit 7",
            env=no_cluster_env(),
        )  # fmt: skip
        assert r.returncode == 7, (command, r.stderr)
    # It really runs inside db's instance: its own address is there.
    r = railnet(
        "exec", "--agent-config", config, "shop/production/db", "--", "ip", "-o", "addr",
        env=no_cluster_env(),
    )  # fmt: skip
    db = deployed.state["db"].outputs
    assert r.returncode == 0 and db["ipv6_addresses"][0] in r.stdout, r.stderr


def test_exec_finds_the_socket_by_flag_or_environment_variable(
    lab: LabNet, deployed: Engine
) -> None:
    config = str(config_of(lab.lab, "node-1"))
    socket = str(lab.lab.directory / "node-1.sock")
    env = {**no_cluster_env(), "RAILNET_AGENT_CONFIG": config}
    r = railnet("exec", "--socket", socket, "shop/production/api", "--", "true", env=env)
    assert r.returncode == 0, r.stderr
    env["RAILNET_AGENT_SOCKET"] = str(lab.lab.directory / "nosuch.sock")
    r = railnet("exec", "shop/production/api", "--", "true", env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "nosuch.sock" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_exec_on_another_node_fails_naming_the_node_that_hosts_it(
    lab: LabNet, deployed: Engine
) -> None:
    for node in ("node-1", "node-3"):  # node-1 hosts the environment; node-3 may only keep it
        for command in ("exec", "build-exec"):
            r = railnet(
                command, "--agent-config", str(config_of(lab.lab, node)), "shop/production/db",
                "--", "touch", "/tmp/railnet-exec-ran",
                env=no_cluster_env(),
            )  # fmt: skip
            lines = r.stderr.strip().splitlines()
            assert r.returncode != 0 and len(lines) == 1, r.stderr
            if ENV in held_documents(lab.lab, node):
                assert "runs on node node-2" in lines[0] and f"({node})" in lines[0], lines
            else:
                assert f"node {node} holds nothing of shop/production" in lines[0], lines
    assert not Path("/tmp/railnet-exec-ran").exists()


def test_exec_in_the_lab_by_node_name(lab: LabNet, deployed: Engine) -> None:
    cluster = str(lab.lab.cluster_file)
    r = railnet("exec", "--cluster", cluster, "--node", "node-2", "shop/production/db", "--",
                "sh", "-c", "exit 3")  # fmt: skip
    assert r.returncode == 3, r.stderr
    r = railnet("exec", "--cluster", cluster, "--node", "node-1", "shop/production/db", "--",
                "true")  # fmt: skip
    assert r.returncode != 0 and "runs on node node-2" in r.stderr, r.stderr


def test_exec_exits_as_a_shell_does_when_the_command_cannot_run(
    lab: LabNet, deployed: Engine, tmp_path: Path
) -> None:
    config = str(config_of(lab.lab, "node-2"))
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\ntrue\n")
    for command in ("exec", "build-exec"):
        for cmd, code in (("no-such-command-railnet", 127), (str(plain), 126)):
            r = railnet(command, "--agent-config", config, "shop/production/db", "--", cmd,
                        env=no_cluster_env())  # fmt: skip
            assert r.returncode == code, (command, cmd, r.stderr)
            assert r.stderr.count("\n") == 1 and cmd in r.stderr, r.stderr
    # railnet's own failure is 125: never a status the command could have meant
    r = railnet("exec", "--agent-config", config, "shop/production/nosuch", "--", "true",
                env=no_cluster_env())  # fmt: skip
    assert r.returncode == 125 and "nosuch" in r.stderr, r.stderr


def test_status_exits_the_same_in_text_and_json_and_its_json_is_typed(
    lab: LabNet, deployed: Engine
) -> None:
    cluster = str(lab.lab.cluster_file)
    text = railnet("status", "--cluster", cluster)
    as_json = railnet("status", "--cluster", cluster, "--json")
    assert text.returncode == as_json.returncode == 0, text.stdout + text.stderr
    nodes = json.loads(as_json.stdout)
    assert [n["node"] for n in nodes] == ["node-1", "node-2", "node-3"]
    db = next(
        i for n in nodes for e in n["environments"] for i in e["instances"] if i["service"] == "db"
    )
    assert db["index"] == 0 and db["health"] == "ok" and db["netns"]
    for n in nodes:
        for e in n["environments"]:
            assert isinstance(e["generation"], int) and isinstance(e["listen_port"], int)
            for peer in e["peers"]:
                assert isinstance(peer["rx_bytes"], int) and "handshake_age_seconds" in peer
    assert ".arpa" not in text.stdout  # records are counted, not listed
    assert "--verbose lists them" in text.stdout
    verbose = railnet("status", "--cluster", cluster, "--verbose")
    assert verbose.returncode == 0 and ".arpa PTR " in verbose.stdout
    # A node that does not answer: a problem, the same exit code in both forms.
    node3 = next(n for n in lab.lab.nodes() if n.name == "node-3")
    lab.lab.kill_agent(node3)
    try:
        text = railnet("status", "--cluster", cluster)
        as_json = railnet("status", "--cluster", cluster, "--json")
    finally:
        lab.lab.restart_agent(node3)
    assert text.returncode == as_json.returncode == 1
    assert "node-3: UNREACHABLE" in text.stdout
    silent = next(n for n in json.loads(as_json.stdout) if n["node"] == "node-3")
    assert silent["reachable"] is False and silent["healthy"] is False and silent["error"]


TRIAL_PROGRAM = """
import pulumi
import pulumi_railnet as railnet

project = railnet.Project("trial")
env = railnet.Environment("dev", project=project)
web = railnet.Service("web", environment=env, replicas=2)
pulumi.export("web_host", web.private_domain)
pulumi.export("web_ipv6", web.ipv6_addresses)
"""


def test_a_local_trial_of_your_own_program_up_and_destroy(lab: LabNet, tmp_path: Path) -> None:
    program = tmp_path / "my-program"
    program.mkdir()
    (program / "Pulumi.yaml").write_text("name: my-program\nruntime: python\n")
    (program / "__main__.py").write_text(TRIAL_PROGRAM)
    cluster = str(lab.lab.cluster_file)
    r = railnet("up", str(program), "--cluster", cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "local trial" in r.stdout and "not Pulumi" in r.stdout
    assert 'export web_host: "web.railway.internal"' in r.stdout, r.stdout
    state = program / ".railnet-trial" / "dev.json"
    assert state.stat().st_mode & 0o777 == 0o600
    env = environment_id("trial", "dev")
    web = []
    for n in lab.lab.nodes():
        with lab.lab.client(n) as client:
            web += [i.index for e in client.status(env).environments for i in e.instances]
    assert sorted(web) == [0, 1]
    again = railnet("up", str(program), "--cluster", cluster)
    assert again.returncode == 0 and "web: same" in again.stdout, again.stdout
    r = railnet("destroy", str(program), "--cluster", cluster)
    assert r.returncode == 0 and "deleted 3 resources" in r.stdout, r.stdout + r.stderr
    assert not state.exists()
    for n in lab.lab.nodes():
        with lab.lab.client(n) as client:
            assert env not in [d.env_id for d in client.status().documents]


# -- draining a node -----------------------------------------------------------------------


def fresh_run(engine: Engine, cluster: Path) -> Engine:
    """The next ``pulumi up``: a new provider process (which reads the cluster file
    again) over the same state."""
    engine.provider.close()
    engine.provider = DynamicProvider({"railnet:cluster": str(cluster)})
    engine._record(engine.provider)
    return engine


def test_a_cordoned_node_is_drained_by_the_next_deploy_then_removed() -> None:
    with running_lab(3) as lab, engine_on(str(lab.lab.cluster_file)) as first:
        drain_and_remove(lab, first)


def drain_and_remove(lab: LabNet, engine: Engine) -> None:
    cluster = lab.lab.cluster_file
    services: dict[str, dict[str, Any]] = {"api": {"replicas": 1}, "db": {"replicas": 2}}
    engine.up(program(services))
    before = {name: engine.state[name].outputs for name in services}
    # The node to drain hosts a db replica (and api too, when that cannot be helped).
    db_nodes = before["db"]["placement"]
    drained = next((n for n in db_nodes if n not in before["api"]["placement"]), db_nodes[0])
    assert hosted(lab.lab, drained)
    r = railnet("cluster", "remove-node", drained, "--cluster", str(cluster))
    assert r.returncode != 0 and "drain it first" in r.stderr, r.stderr

    r = railnet("cluster", "cordon", drained, "--cluster", str(cluster))
    assert r.returncode == 0, r.stderr
    assert load_cluster(cluster, "the lab's cluster file").node(drained).cordoned
    engine = fresh_run(engine, cluster)
    # Pinning a service to the cordoned node is refused in check, naming it.
    preview = engine.preview(program({**services, "pinned": {"nodes": [drained]}}))
    pinned = next(s for s in preview if s.name == "pinned")
    assert pinned.op == "failed" and "cordoned" in str(pinned.detail), pinned
    assert drained in str(pinned.detail)

    steps = engine.up(program(services))
    after = {name: engine.state[name].outputs for name in services}
    assert hosted(lab.lab, drained) == []
    assert ENV not in held_documents(lab.lab, drained)  # not even a keeper's copy
    for name in services:
        pairs = zip(before[name]["placement"], after[name]["placement"], strict=True)
        moved = [i for i, (a, b) in enumerate(pairs) if a != b]
        # Only what was on the drained node moved, and it kept its addresses.
        assert moved == [i for i, n in enumerate(before[name]["placement"]) if n == drained]
        assert after[name]["ipv6_addresses"] == before[name]["ipv6_addresses"]
        assert after[name]["ipv4_addresses"] == before[name]["ipv4_addresses"]
        assert drained not in after[name]["placement"]
    updated = {s.name for s in steps if s.op == "update"}
    assert updated == {n for n in services if drained in before[n]["placement"]}
    # The moved replicas answer by name: DNS and traffic work from api.
    api = lab.netns("shop", "production", "api")
    for i in range(len(after["db"]["placement"])):
        server = lab.serve(lab.netns("shop", "production", "db", i), f"db{i}", PORT + i)
        probe = lab.tcp(api, f"{i}.db.railway.internal", PORT + i)
        assert probe.ok and probe.output == f"db{i}:ping", probe.output
        server.kill()
        server.wait(timeout=5)
    r = lab.run(api, "getent", "ahosts", "db.railway.internal")
    for address in after["db"]["ipv4_addresses"] + after["db"]["ipv6_addresses"]:
        assert address in r.stdout, r.stdout + r.stderr

    r = railnet("cluster", "remove-node", drained, "--cluster", str(cluster))
    assert r.returncode == 0, r.stderr
    assert drained not in load_cluster(cluster, "the lab's cluster file").names
    engine = fresh_run(engine, cluster)
    engine.refresh()  # reads placements back: the next deploy must see no move
    assert all(s.op == "same" for s in engine.up(program(services)))
