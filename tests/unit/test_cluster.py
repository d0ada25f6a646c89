"""The cluster description: nodes, agent addresses and TLS paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from railnet.control.cluster import Cluster, ClusterNode, ClusterTlsPaths
from railnet.core.errors import InvalidField

pytestmark = pytest.mark.unit


def raw_cluster() -> dict[str, Any]:
    return {
        "nodes": [
            {"name": "node-1", "agent": "unix:/run/railnet/node-1.sock", "underlay": "198.18.0.1"},
            {"name": "node-2", "agent": "198.18.0.2:7443"},
        ],
        "tls": {"ca": "tls/ca.pem", "cert": "tls/provider.pem", "key": "/etc/railnet/key.pem"},
    }


def expect_invalid(raw: object, field: str) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        Cluster.from_dict(raw)
    assert caught.value.field == field, str(caught.value)
    assert field in str(caught.value)
    return caught.value


def test_reads_nodes_in_order_with_defaults() -> None:
    cluster = Cluster.from_dict(raw_cluster())
    assert cluster.nodes == (
        ClusterNode("node-1", "unix:/run/railnet/node-1.sock", "198.18.0.1"),
        ClusterNode("node-2", "198.18.0.2:7443", ""),
    )
    assert cluster.names == ["node-1", "node-2"]
    assert cluster.node("node-2").agent == "198.18.0.2:7443"


def test_relative_tls_paths_are_relative_to_the_files_directory() -> None:
    cluster = Cluster.from_json(json.dumps(raw_cluster()), base="/srv/lab", source="x.json")
    assert cluster.tls == ClusterTlsPaths(
        ca="/srv/lab/tls/ca.pem", cert="/srv/lab/tls/provider.pem", key="/etc/railnet/key.pem"
    )
    assert cluster.source == "x.json"


def test_tls_paths_without_base_are_kept() -> None:
    cluster = Cluster.from_dict(raw_cluster())
    assert cluster.tls is not None
    assert cluster.tls.ca == "tls/ca.pem"


def test_no_tls_means_insecure_agents() -> None:
    raw = raw_cluster()
    del raw["tls"]
    assert Cluster.from_dict(raw).tls is None


def test_unknown_node_names_the_known_ones() -> None:
    cluster = Cluster.from_dict(raw_cluster())
    with pytest.raises(InvalidField) as caught:
        cluster.node("node-9")
    assert caught.value.field == "node"
    assert caught.value.value == "node-9"
    assert "node-1" in str(caught.value) and "node-2" in str(caught.value)


def test_not_json_names_the_source() -> None:
    with pytest.raises(InvalidField) as caught:
        Cluster.from_json("{", source="/srv/lab/cluster.json")
    assert caught.value.field == "cluster"
    assert caught.value.value == "/srv/lab/cluster.json"


@pytest.mark.parametrize("raw", [[], "nodes", None])
def test_not_an_object(raw: object) -> None:
    expect_invalid(raw, "cluster")


@pytest.mark.parametrize("nodes", [[], None, "node-1", {}])
def test_nodes_must_be_a_non_empty_list(nodes: object) -> None:
    raw = raw_cluster()
    raw["nodes"] = nodes
    expect_invalid(raw, "cluster.nodes")


def test_node_entry_must_be_an_object() -> None:
    raw = raw_cluster()
    raw["nodes"][1] = "node-2"
    expect_invalid(raw, "cluster.nodes[1]")


@pytest.mark.parametrize("name", ["Node-1", "", None, "node_1", "-node"])
def test_bad_node_name(name: object) -> None:
    raw = raw_cluster()
    raw["nodes"][1]["name"] = name
    assert expect_invalid(raw, "cluster.nodes[1].name").value == name


@pytest.mark.parametrize("agent", ["", None, 7443])
def test_bad_agent_address(agent: object) -> None:
    raw = raw_cluster()
    raw["nodes"][0]["agent"] = agent
    expect_invalid(raw, "cluster.nodes[0].agent")


def test_duplicate_node_names() -> None:
    raw = raw_cluster()
    raw["nodes"][1]["name"] = "node-1"
    expect_invalid(raw, "cluster.nodes[1].name")


def test_tls_must_be_an_object() -> None:
    raw = raw_cluster()
    raw["tls"] = "tls/"
    expect_invalid(raw, "cluster.tls")


@pytest.mark.parametrize("key", ["ca", "cert", "key"])
def test_each_tls_path_is_required(key: str) -> None:
    raw = raw_cluster()
    del raw["tls"][key]
    expect_invalid(raw, f"cluster.tls.{key}")
    raw["tls"][key] = ""
    expect_invalid(raw, f"cluster.tls.{key}")


def test_an_operator_certificate_is_used_for_reads_only() -> None:
    from railnet.control.client import agent_address

    raw = {
        "nodes": [{"name": "node-1", "agent": "unix:/run/a.sock"}],
        "tls": {"ca": "ca.pem", "cert": "provider.pem", "key": "provider-key.pem"},
        "operator": {"cert": "operator.pem", "key": "operator-key.pem"},
    }
    cluster = Cluster.from_dict(raw, base="/etc/railnet")
    write = agent_address(cluster, "node-1")
    read = agent_address(cluster, "node-1", read_only=True)
    assert write.tls is not None and read.tls is not None
    assert str(write.tls.cert) == "/etc/railnet/provider.pem"
    assert str(read.tls.cert) == "/etc/railnet/operator.pem"
    assert read.tls.ca == write.tls.ca
    without = Cluster.from_dict({k: v for k, v in raw.items() if k != "operator"})
    assert (
        agent_address(without, "node-1", read_only=True).tls == agent_address(without, "node-1").tls
    )


@pytest.mark.parametrize(
    "operator, field",
    [
        ("op.pem", "cluster.operator"),
        ({"cert": "op.pem"}, "cluster.operator.key"),
        ({"cert": "", "key": "k"}, "cluster.operator.cert"),
    ],
)
def test_a_bad_operator_entry_names_the_field(operator: object, field: str) -> None:
    raw = {
        "nodes": [{"name": "node-1", "agent": "unix:/run/a.sock"}],
        "tls": {"ca": "ca.pem", "cert": "p.pem", "key": "p-key.pem"},
        "operator": operator,
    }
    with pytest.raises(InvalidField) as bad:
        Cluster.from_dict(raw)
    assert bad.value.field == field
