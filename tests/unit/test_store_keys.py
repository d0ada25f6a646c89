"""The control store's key layout and the grants derived from it (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from railnet.core.errors import InvalidField
from railnet.core.store_keys import (
    ENVIRONMENTS,
    NODES,
    REPORTS,
    Access,
    addressed_key,
    alive_key,
    applied_key,
    environment_key,
    node_grants,
    prefix_end,
)

pytestmark = pytest.mark.unit

NODE = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


def covered(key: str, prefix: str) -> bool:
    """Whether etcd's range [prefix, prefix_end(prefix)) holds ``key``."""
    return prefix <= key < prefix_end(prefix)


@given(NODE, NODE, st.from_regex(r"[a-z0-9]{1,16}", fullmatch=True))
def test_a_nodes_grants_cover_its_keys_and_no_other_nodes(
    node: str, other: str, env_id: str
) -> None:
    grants = node_grants(node)
    readable = [g.prefix for g in grants]
    writable = [g.prefix for g in grants if g.access is not Access.READ]
    assert any(covered(addressed_key(node, env_id), p) for p in readable)
    assert any(covered(applied_key(node, env_id), p) for p in writable)
    assert not any(covered(environment_key(env_id), p) for p in readable)
    assert not any(covered(addressed_key(node, env_id), p) for p in writable)
    if other != node:
        # node-1 never reaches node-10's keys, nor node-10 node-1's.
        assert not any(covered(addressed_key(other, env_id), p) for p in readable)
        assert not any(covered(alive_key(other), p) for p in writable)


def test_prefix_end_is_the_next_key_after_the_prefix() -> None:
    assert prefix_end("/railnet/v1/") == "/railnet/v10"
    assert prefix_end(ENVIRONMENTS) > ENVIRONMENTS + "zzzz"
    assert prefix_end(NODES) <= REPORTS


def test_keys_refuse_names_that_would_escape_their_prefix() -> None:
    for bad in ("node-1/../node-2", "", "Node-1"):
        with pytest.raises(InvalidField) as raised:
            addressed_key(bad, "abc")
        assert raised.value.field == "node"
    with pytest.raises(InvalidField) as raised:
        environment_key("abc/def")
    assert raised.value.field == "env_id"


@pytest.mark.parametrize("name", ["root", "railnet-provider", "railnet-operator"])
def test_no_node_may_be_named_as_a_store_user(name: str) -> None:
    from railnet.core.store_keys import node_user

    with pytest.raises(InvalidField) as raised:
        node_user(name)
    assert raised.value.field == "node" and "reserved" in str(raised.value)
