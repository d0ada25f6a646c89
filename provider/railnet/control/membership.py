"""The cluster's membership in the control store: one record per node under ``members/``.

Every runner reads the same membership, so two stacks can no longer disagree on which nodes
exist, which are cordoned, or where an environment's nodes are. Each edit is one compared
transaction on the record's revision: of two edits at once, one wins and the other reads
again. A record holds the keys a cluster file's node entry holds (docs/cluster.md) and is
checked by the same parser, so a damaged record is named by its key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from railnet.control.cluster import (
    ClusterNode,
    check_agent_address,
    check_underlay,
    node_entry,
    parse_member,
    parse_node,
    read_members,
)
from railnet.core.errors import InvalidField
from railnet.core.store_keys import MEMBERS, member_key, node_user

__all__ = ["MembershipConflict", "add_member", "read_members", "remove_member", "set_cordon"]
from railnet.store.etcd import Compare, Delete, EtcdStore, Put, StoreError, Unchanged

MAX_TRIES = 8


class MembershipConflict(StoreError):
    """The membership changed under this edit too many times in a row."""


def member_record(node: ClusterNode, extra: Mapping[str, str] | None = None) -> bytes:
    """The stored form of ``node``; ``extra``: a lab node's ``agent_tcp`` and ``netns``."""
    entry = node_entry(node)
    entry.update(extra or {})
    parse_node(f"store {member_key(node.name)}", entry)
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def add_member(store: EtcdStore, node: ClusterNode, extra: Mapping[str, str] | None = None) -> int:
    """Add ``node``: refused when its name or its agent address is taken by another record.
    The same record again is no change (a retried add whose first reply was lost). Returns
    the revision the membership holds it at."""
    node_user(node.name)  # never root, the provider's or the operators' name
    check_agent_address("--agent", node.agent)
    if node.underlay:
        check_underlay("--underlay", node.underlay)
    record = member_record(node, extra)
    key = member_key(node.name)
    for _ in range(MAX_TRIES):
        revision, entries = store.list(MEMBERS)
        for entry in entries:
            other, _ = parse_member(entry.key, entry.value)
            if entry.key == key and entry.value == record:
                return entry.mod_revision
            if other.name == node.name:
                raise InvalidField(
                    "node", node.name, "is already a member; remove-node it first to change it"
                )
            if other.agent == node.agent:
                raise InvalidField("--agent", node.agent, f"is already the agent of {other.name}")
        # Nothing under members/ written since the read: an agent address taken meanwhile
        # by another add is seen, whatever its name.
        done = store.commit([Unchanged(MEMBERS, revision), Compare(key, 0)], [Put(key, record)])
        if done.succeeded:
            return done.revision
    raise MembershipConflict(f"adding {node.name}: the membership kept changing; try again")


def remove_member(store: EtcdStore, name: str) -> int:
    """Remove ``name``; refused when it is not a member. Returns the revision."""
    key = member_key(name)
    seen = False
    for _ in range(MAX_TRIES):
        revision, entry = store.get(key)
        if entry is None:
            if seen:
                return revision  # removed by our own attempt whose reply was lost
            _, nodes = read_members(store)
            raise InvalidField("node", name, f"is not a member; members: {[n.name for n in nodes]}")
        seen = True
        done = store.commit([Compare(key, entry.mod_revision)], [Delete(key)])
        if done.succeeded:
            return done.revision
    raise MembershipConflict(f"removing {name}: the membership kept changing; try again")


def set_cordon(store: EtcdStore, name: str, cordoned: bool) -> bool:
    """Cordon (or uncordon) ``name``; returns whether it was cordoned before."""
    key = member_key(name)
    for _ in range(MAX_TRIES):
        _, entry = store.get(key)
        if entry is None:
            _, nodes = read_members(store)
            raise InvalidField("node", name, f"is not a member; members: {[n.name for n in nodes]}")
        node, raw = parse_member(key, entry.value)
        if node.cordoned == cordoned:
            return node.cordoned
        if cordoned:
            raw["cordoned"] = True
        else:
            raw.pop("cordoned", None)
        value = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
        if store.commit([Compare(key, entry.mod_revision)], [Put(key, value)]).succeeded:
            return node.cordoned
    raise MembershipConflict(f"cordoning {name}: the membership kept changing; try again")
