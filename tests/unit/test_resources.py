"""The resources' input contract: defaults, and failures that name the property and value."""

from __future__ import annotations

from typing import Any

import pytest

from railnet.core.errors import InvalidField
from railnet.core.resources import Kind, check_inputs, placement, service_env_vars

pytestmark = pytest.mark.unit

SERVICE = {"name": "api", "project": "shop", "environment": "production"}


def failures(kind: Kind, **news: Any) -> dict[str, str]:
    _, found = check_inputs(kind, "", news, cluster_nodes=["node-1", "node-2"])
    return dict(found)


def test_defaults_fill_in() -> None:
    inputs, found = check_inputs(Kind.SERVICE, "", SERVICE, default_domain="corp.internal")
    assert found == []
    assert inputs["ip_mode"] == "dual" and inputs["ipv4_cidr"] == "10.250.0.0/16"
    assert inputs["domain"] == "corp.internal" and inputs["dns_ttl"] == 5
    assert inputs["replicas"] == 1
    assert inputs["key_rotation"] == ""


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("name", "Api", "DNS label"),
        ("name", "a" * 64, "DNS label"),
        ("project", "shop_1", "DNS label"),
        ("ip_mode", "ipv4", "'dual' or 'ipv6'"),
        ("ipv4_cidr", "10.0.0.0/33", "not an IPv4 network"),
        ("ipv4_cidr", "8.8.8.0/24", "private"),
        ("ipv4_cidr", "10.0.0.0/30", "/28 or larger"),
        ("domain", "Railway.Internal", "not a lower-case DNS label"),
        ("dns_ttl", -1, "from 0 to"),
        ("dns_ttl", 2.5, "whole number"),
        ("key_rotation", 7, "printable text"),
        ("key_rotation", "2024\n", "printable text"),
        ("replicas", -1, "from 0 to"),
        ("replicas", 65, "from 0 to"),
    ],
)
def test_a_bad_service_input_names_the_property_and_value(
    field: str, value: Any, words: str
) -> None:
    found = failures(Kind.SERVICE, **{**SERVICE, field: value})
    assert list(found) == [field]
    assert repr(value) in found[field] and words in found[field]


def test_nodes_must_be_known_and_exclude_replicas() -> None:
    found = failures(Kind.SERVICE, **SERVICE, nodes=["node-1", "node-9"])
    assert list(found) == ["nodes"] and "'node-9'" in found["nodes"]
    found = failures(Kind.SERVICE, **SERVICE, nodes=["node-1"], replicas=2)
    assert list(found) == ["replicas"] and "not both" in found["replicas"]


def test_ipv6_only_ignores_the_ipv4_cidr() -> None:
    assert (
        failures(
            Kind.ENVIRONMENT, name="legacy", project="shop", ip_mode="ipv6", ipv4_cidr="not a cidr"
        )
        == {}
    )
    assert "ipv4_cidr" in failures(
        Kind.ENVIRONMENT, name="x", project="shop", ipv4_cidr="not a cidr"
    )


def test_placement_is_stable_per_service_id_and_never_moves_on_rename() -> None:
    nodes = ["node-1", "node-2", "node-3"]
    first = placement({**SERVICE, "replicas": 2}, nodes, "sabc")
    renamed = placement({**SERVICE, "name": "gateway", "replicas": 2}, nodes, "sabc")
    assert first == renamed and len(set(first)) == 2
    assert placement({**SERVICE, "replicas": 3}, nodes, "sabc")[:2] == first
    assert placement({**SERVICE, "nodes": ["node-2"]}, nodes, "sabc") == ("node-2",)


def test_a_service_never_lands_on_a_cordoned_node() -> None:
    nodes = ["node-1", "node-2", "node-3"]
    before = placement({**SERVICE, "replicas": 3}, nodes, "sabc")
    after = placement({**SERVICE, "replicas": 3}, nodes, "sabc", before, cordoned=["node-2"])
    assert "node-2" not in after
    assert [a for a, b in zip(before, after, strict=True) if a != b] == ["node-2"]
    fresh = placement({**SERVICE, "replicas": 4}, nodes, "sxyz", cordoned=["node-2"])
    assert set(fresh) == {"node-1", "node-3"}


def test_every_node_cordoned_is_named_as_such() -> None:
    with pytest.raises(InvalidField, match="cordoned"):
        placement({**SERVICE, "replicas": 1}, ["node-1"], "sabc", cordoned=["node-1"])


def test_explicit_nodes_naming_a_cordoned_node_fail_check_with_the_next_step() -> None:
    _, found = check_inputs(
        Kind.SERVICE,
        "",
        {**SERVICE, "nodes": ["node-1", "node-2"]},
        cluster_nodes=["node-1", "node-2"],
        cordoned_nodes=["node-2"],
    )
    assert [p for p, _ in found] == ["nodes"]
    message = found[0][1]
    assert "nodes[1]" in message and "'node-2'" in message and "cordoned" in message
    assert "uncordon" in message


def test_env_vars() -> None:
    got = service_env_vars(
        {**SERVICE, "domain": "railway.internal"}, ["10.250.0.3"], ["fd00::3", "fd00::4"]
    )
    assert got["RAILWAY_PRIVATE_DOMAIN"] == "api.railway.internal"
    assert got["RAILNET_PRIVATE_IPV6"] == "fd00::3,fd00::4"


def test_an_environment_takes_a_key_rotation_token() -> None:
    env = {"name": "production", "project": "shop"}
    inputs, found = check_inputs(Kind.ENVIRONMENT, "", {**env, "key_rotation": "2024-06"})
    assert found == [] and inputs["key_rotation"] == "2024-06"
    found_bad = failures(Kind.ENVIRONMENT, **env, key_rotation=" x")
    assert list(found_bad) == ["key_rotation"] and "' x'" in found_bad["key_rotation"]
