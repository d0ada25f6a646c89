"""The cluster description: nodes, agent addresses and TLS paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from railnet.control.cluster import (
    Cluster,
    ClusterNode,
    ClusterTlsPaths,
    load_cluster,
    with_cordon,
    with_node,
    without_node,
)
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


# -- the format's other fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "key"),
    [("", "nodez"), ("nodes[0]", "cordonned"), ("tls", "bundle"), ("operator", "ca")],
)
def test_a_key_the_format_does_not_define_is_refused_by_its_path(where: str, key: str) -> None:
    raw = raw_cluster()
    raw["operator"] = {"cert": "op.pem", "key": "op-key.pem"}
    target: Any = raw if not where else raw[where] if "[" not in where else raw["nodes"][0]
    target[key] = True
    path = f"cluster.{where}.{key}" if where else f"cluster.{key}"
    assert "known:" in str(expect_invalid(raw, path))


def test_the_lab_fields_are_part_of_the_format() -> None:
    raw = raw_cluster()
    raw["lab"] = "a1b2c3"
    raw["nodes"][0].update(agent_tcp="198.18.0.1:7443", netns="rla1b2c3-n1")
    assert Cluster.from_dict(raw).names == ["node-1", "node-2"]


def test_cordoned_nodes_take_nothing_new() -> None:
    raw = raw_cluster()
    raw["nodes"][1]["cordoned"] = True
    cluster = Cluster.from_dict(raw)
    assert cluster.node("node-2").cordoned and not cluster.node("node-1").cordoned
    assert cluster.schedulable == ["node-1"] and cluster.cordoned == ["node-2"]
    raw["nodes"][1]["cordoned"] = "yes"
    expect_invalid(raw, "cluster.nodes[1].cordoned")


@pytest.mark.parametrize(
    "agent",
    ["node-1", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "unix:", "unix:relative.sock",
     "[fd00::zz]:7443", "host name:1"],
)  # fmt: skip
def test_an_agent_address_is_host_port_or_an_absolute_unix_path(agent: str) -> None:
    raw = raw_cluster()
    raw["nodes"][0]["agent"] = agent
    expect_invalid(raw, "cluster.nodes[0].agent")


@pytest.mark.parametrize("agent", ["10.0.0.1:7443", "[fd00::1]:7443", "node-1.lan:7443"])
def test_good_agent_addresses(agent: str) -> None:
    raw = raw_cluster()
    raw["nodes"][0]["agent"] = agent
    assert Cluster.from_dict(raw).nodes[0].agent == agent


def test_an_underlay_must_be_an_ip_address() -> None:
    raw = raw_cluster()
    raw["nodes"][0]["underlay"] = "node-1.lan"
    expect_invalid(raw, "cluster.nodes[0].underlay")


def test_a_bad_file_names_the_field_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    raw = raw_cluster()
    raw["nodes"][1]["agent"] = "nowhere"
    path.write_text(json.dumps(raw))
    with pytest.raises(InvalidField) as caught:
        load_cluster(path, "--cluster")
    assert caught.value.field == "cluster.nodes[1].agent"
    assert str(path) in str(caught.value) and "nowhere" in str(caught.value)


# -- edits ------------------------------------------------------------------------------


def test_edits_keep_every_other_key_and_check_the_result() -> None:
    raw = raw_cluster()
    raw["lab"] = "a1b2c3"
    added = with_node(raw, ClusterNode("node-3", "10.0.0.3:7443", "10.0.0.3"))
    assert raw == raw_cluster() | {"lab": "a1b2c3"}  # the input is not changed
    assert added["lab"] == "a1b2c3" and added["tls"] == raw["tls"]
    assert added["nodes"][-1] == {
        "name": "node-3",
        "agent": "10.0.0.3:7443",
        "underlay": "10.0.0.3",
    }
    cordoned = with_cordon(added, "node-3", True)
    assert cordoned["nodes"][-1]["cordoned"] is True
    assert with_cordon(cordoned, "node-3", False) == added  # uncordoned: as it was
    assert [n["name"] for n in without_node(cordoned, "node-1")["nodes"]] == ["node-2", "node-3"]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: with_node(r, ClusterNode("node-1", "10.0.0.9:7443")), "node"),
        (lambda r: with_node(r, ClusterNode("Node-9", "10.0.0.9:7443")), "node"),
        (lambda r: with_node(r, ClusterNode("node-9", "198.18.0.2:7443")), "--agent"),
        (lambda r: with_node(r, ClusterNode("node-9", "nowhere")), "--agent"),
        (lambda r: with_node(r, ClusterNode("node-9", "10.0.0.9:7443", "x")), "--underlay"),
        (lambda r: without_node(r, "node-9"), "node"),
        (lambda r: with_cordon(r, "node-9", True), "node"),
    ],
)
def test_a_bad_edit_names_the_field_and_the_value(edit: Any, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        edit(raw_cluster())
    assert caught.value.field == field


def test_the_last_node_cannot_be_removed() -> None:
    raw = raw_cluster()
    with pytest.raises(InvalidField, match="last node"):
        without_node(without_node(raw, "node-2"), "node-1")


def test_the_store_section_names_the_etcd_endpoints() -> None:
    raw = raw_cluster()
    del raw["nodes"]  # they live in the store then
    raw["store"] = {"endpoints": ["unix:/run/etcd.sock:2379", "[fd00::1]:2379"], "server_name": "x"}
    cluster = Cluster.from_dict(raw)
    store = cluster.store
    assert store is not None and cluster.nodes == ()
    assert store.endpoints == ("unix:/run/etcd.sock:2379", "[fd00::1]:2379")
    assert store.server_name == "x"
    assert Cluster.from_dict(raw_cluster()).store is None


@pytest.mark.parametrize(
    ("store", "field"),
    [
        ({"endpoints": []}, "cluster.store.endpoints"),
        ({"endpoints": ["no-port"]}, "cluster.store.endpoints[0]"),
        ({"endpoints": ["10.0.0.1:2379"], "servername": "x"}, "cluster.store.servername"),
        ({"endpoints": ["10.0.0.1:2379"], "server_name": 3}, "cluster.store.server_name"),
        ("10.0.0.1:2379", "cluster.store"),
    ],
)
def test_a_bad_store_section_names_its_field(store: object, field: str) -> None:
    raw = raw_cluster()
    del raw["nodes"]
    raw["store"] = store
    with pytest.raises(InvalidField) as raised:
        Cluster.from_dict(raw)
    assert raised.value.field == field


def test_a_file_with_a_store_may_not_list_nodes_too() -> None:
    raw = raw_cluster()
    raw["store"] = {"endpoints": ["10.0.0.1:2379"]}
    with pytest.raises(InvalidField) as raised:
        Cluster.from_dict(raw)
    assert raised.value.field == "cluster.nodes"
    assert "railnet cluster add-node" in str(raised.value)
