"""``railnet cluster``: show, add-node, cordon, uncordon on a cluster file (remove-node,
which asks the node's agent, is in tests/agent/test_cluster_remove.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from railnet.cli.main import main
from railnet.control.cluster import load_cluster

pytestmark = pytest.mark.unit


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "cluster.json"
    code, _, err = run(
        capsys, "cluster", "add-node", "node-1", "--cluster", str(path),
        "--agent", "10.0.0.1:7443", "--underlay", "10.0.0.1", "--tls-dir", "tls",
    )  # fmt: skip
    assert code == 0, err
    return path


def test_add_node_creates_the_file_with_the_tls_material_it_names(cluster: Path) -> None:
    raw = json.loads(cluster.read_text())
    assert raw["nodes"] == [{"name": "node-1", "agent": "10.0.0.1:7443", "underlay": "10.0.0.1"}]
    loaded = load_cluster(cluster, "test")
    assert loaded.tls is not None and loaded.tls.ca == str(cluster.parent / "tls" / "ca.pem")
    assert loaded.operator is not None
    assert loaded.operator.cert == str(cluster.parent / "tls" / "operator.pem")
    assert oct(os.stat(cluster).st_mode & 0o777) == "0o644"


def test_a_new_file_needs_to_say_how_agents_are_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cluster.json"
    code, _, err = run(
        capsys, "cluster", "add-node", "n1", "--cluster", str(path), "--agent", "a:1"
    )
    assert code == 2 and "--tls-dir" in err and "--insecure" in err
    assert len(err.strip().splitlines()) == 1
    assert not path.exists()
    code, _, err = run(
        capsys, "cluster", "add-node", "n1", "--cluster", str(path), "--agent", "a:1", "--insecure"
    )
    assert code == 0, err
    assert "tls" not in json.loads(path.read_text())


def test_show_lists_nodes_and_cordons_and_its_json_is_stable(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "cluster", "add-node", "node-2", "--cluster", str(cluster),
               "--agent", "10.0.0.2:7443")[0] == 0  # fmt: skip
    code, out, _ = run(capsys, "cluster", "cordon", "node-2", "--cluster", str(cluster))
    assert code == 0 and "remove-node node-2" in out
    code, out, _ = run(capsys, "cluster", "show", "--cluster", str(cluster))
    assert code == 0
    assert "2 nodes" in out and "node-2  10.0.0.2:7443  cordoned" in out
    code, out, _ = run(capsys, "cluster", "show", "--cluster", str(cluster), "--json")
    shown = json.loads(out)
    assert shown == {
        "file": str(cluster.resolve()),
        "nodes": [
            {"name": "node-1", "agent": "10.0.0.1:7443", "underlay": "10.0.0.1", "cordoned": False},
            {"name": "node-2", "agent": "10.0.0.2:7443", "underlay": "", "cordoned": True},
        ],
        "tls": {
            "ca": str(cluster.parent / "tls/ca.pem"),
            "cert": str(cluster.parent / "tls/provider.pem"),
            "key": str(cluster.parent / "tls/provider-key.pem"),
        },
        "operator": {
            "ca": str(cluster.parent / "tls/ca.pem"),
            "cert": str(cluster.parent / "tls/operator.pem"),
            "key": str(cluster.parent / "tls/operator-key.pem"),
        },
        "store": None,
    }
    code, out, _ = run(capsys, "cluster", "uncordon", "node-2", "--cluster", str(cluster))
    assert code == 0 and "uncordoned" in out
    assert "cordoned" not in json.loads(cluster.read_text())["nodes"][1]


def test_the_file_comes_from_the_environment_variable(
    cluster: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAILNET_CLUSTER", str(cluster))
    code, out, _ = run(capsys, "cluster", "show", "--json")
    assert code == 0 and json.loads(out)["file"] == str(cluster.resolve())


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (("add-node", "node-1", "--agent", "10.0.0.9:7443"), ("node-1", "already")),
        (("add-node", "node-9", "--agent", "10.0.0.1:7443"), ("10.0.0.1:7443", "node-1")),
        (("add-node", "node-9", "--agent", "nowhere"), ("--agent", "nowhere", "host:port")),
        (("add-node", "Node_9", "--agent", "10.0.0.9:7443"), ("Node_9",)),
        (("cordon", "node-9"), ("node-9", "node-1")),
        (("uncordon", "node-9"), ("node-9",)),
    ],
)
def test_a_bad_edit_is_one_line_naming_the_value_and_changes_nothing(
    cluster: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], names: tuple[str, ...]
) -> None:
    before = cluster.read_bytes()
    code, _, err = run(capsys, "cluster", *argv, "--cluster", str(cluster))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in names), err
    assert cluster.read_bytes() == before


def test_a_damaged_file_is_named_with_its_field(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads(cluster.read_text())
    raw["nodes"][0]["cordonned"] = True
    cluster.write_text(json.dumps(raw))
    code, _, err = run(capsys, "cluster", "cordon", "node-1", "--cluster", str(cluster))
    assert code == 2 and "cluster.nodes[0].cordonned" in err and str(cluster) in err
    code, _, err = run(capsys, "cluster", "show", "--cluster", str(cluster))
    assert code == 2 and "cluster.nodes[0].cordonned" in err


def test_a_missing_file_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cluster", "show", "--cluster", str(tmp_path / "none.json"))
    assert code == 2 and "none.json" in err and "add-node" in err
