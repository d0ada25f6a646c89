"""``railnet cluster remove-node`` asks the node's agent what it still holds, and refuses
to forget a node that holds any environment (hosted, or only its document kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from railnet.cli.main import main
from railnet.control.cluster import load_cluster
from tests.agent.test_deploy import FakeCluster, spec, svc
from tests.agent.test_deploy import lab as lab  # the fixture

pytestmark = pytest.mark.agent


def cluster_file(lab: FakeCluster, directory: Path) -> Path:
    tls = lab.cluster.tls
    assert tls is not None
    raw = {
        "nodes": [{"name": n.name, "agent": n.agent} for n in lab.cluster.nodes],
        "tls": {"ca": tls.ca, "cert": tls.cert, "key": tls.key},
    }
    path = directory / "cluster.json"
    path.write_text(json.dumps(raw))
    return path


def remove(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> tuple[int, str, str]:
    code = main(["cluster", "remove-node", "node-3", "--cluster", str(path), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_node_that_hosts_or_keeps_an_environment_is_not_removed(
    lab: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cluster_file(lab, tmp_path)
    lab.deployer.apply(spec(svc("api", "node-3"), environment="production"))
    lab.deployer.apply(spec(svc("api", "node-1"), environment="staging"))  # node-3 keeps it
    before = path.read_bytes()
    code, _, err = remove(capsys, path)
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1
    assert "shop/production (hosts it)" in err and "shop/staging (keeps its document)" in err
    assert "railnet cluster cordon node-3" in err
    assert path.read_bytes() == before
    lab.deployer.destroy(spec(environment="production").id)
    lab.deployer.destroy(spec(environment="staging").id)
    code, out, err = remove(capsys, path)
    assert code == 0, err
    assert "removed node-3" in out and load_cluster(path, "t").names == ["node-1", "node-2"]


def test_a_node_whose_agent_does_not_answer_is_removed_only_with_force(
    lab: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cluster_file(lab, tmp_path)
    lab.agents["node-3"].stop()
    code, _, err = remove(capsys, path)
    assert code == 1 and "node-3" in err and "--force" in err
    assert load_cluster(path, "t").names == ["node-1", "node-2", "node-3"]
    code, _, err = remove(capsys, path, "--force")
    assert code == 0, err
    assert load_cluster(path, "t").names == ["node-1", "node-2"]


def test_an_unknown_node_is_bad_input(
    lab: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cluster_file(lab, tmp_path)
    code = main(["cluster", "remove-node", "node-9", "--cluster", str(path)])
    assert code == 2 and "node-9" in capsys.readouterr().err
