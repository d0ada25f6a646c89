"""Where railnet's control state lives in etcd: one key layout, and who may touch what.

Everything sits under ``/railnet/v1/``:

``members/<node>``
    The cluster's membership: one JSON record per node (agent address, underlay, cordon).
    Written by the provider and ``railnet cluster``; read by the provider and operators.
``environments/<env_id>/header``, ``environments/<env_id>/services/<service_id>``
    An environment's document, in parts (``railnet.core.stored_document``). Written by the
    provider in one transaction compared on the header's revision.
``environments/_documents``
    Present once the documents live here (``DOCUMENTS_HERE``; no environment id has "_").
``nodes/<node>/environments/<env_id>``
    The document addressed to one hosting node. A node's role reads only ``nodes/<node>/``,
    so a node never learns what it does not host.
``reports/<node>/...``
    What a node says of itself: its liveness (a key under a lease), its WireGuard identity
    per environment and the revision it has applied. Only that node writes there.

The roles (``ROLE_GRANTS``) follow from the layout: etcd checks them on every request, with
the user taken from the client certificate's common name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from railnet.core.errors import InvalidField
from railnet.core.names import check_node_name, check_object_id

ROOT = "/railnet/v1/"
MEMBERS = ROOT + "members/"
ENVIRONMENTS = ROOT + "environments/"
NODES = ROOT + "nodes/"
REPORTS = ROOT + "reports/"

PROVIDER_USER = "railnet-provider"
"""The etcd user of the provider's certificate (its common name)."""
OPERATOR_USER = "railnet-operator"
"""The etcd user of the operators' read-only certificate."""
ADMIN_USER = "root"
"""etcd's own administrator: the only user that may change users and roles. Its certificate
is kept with the CA's key, never in a cluster file."""


def member_key(node: str) -> str:
    return MEMBERS + check_node_name("node", node)


def environment_key(env_id: str) -> str:
    return ENVIRONMENTS + check_object_id("env_id", env_id)


def environment_prefix(env_id: str) -> str:
    """Every part of an environment's stored document (``railnet.core.stored_document``)."""
    return environment_key(env_id) + "/"


DOCUMENTS_HERE = ENVIRONMENTS + "_documents"
"""Present once the environments' documents live in the store (a new cluster, or one whose
documents were moved in): from then on a document only a node holds is a leftover, never
the environment."""


def node_prefix(node: str) -> str:
    """Everything addressed to ``node``."""
    return f"{NODES}{check_node_name('node', node)}/"


def addressed_key(node: str, env_id: str) -> str:
    """The document of ``env_id`` addressed to ``node``."""
    return f"{node_prefix(node)}environments/{check_object_id('env_id', env_id)}"


def report_prefix(node: str) -> str:
    """Everything ``node`` says of itself."""
    return f"{REPORTS}{check_node_name('node', node)}/"


def alive_key(node: str) -> str:
    return report_prefix(node) + "alive"


def applied_key(node: str, env_id: str) -> str:
    return f"{report_prefix(node)}applied/{check_object_id('env_id', env_id)}"


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's ``range_end``)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


@dataclass(frozen=True)
class Grant:
    """One permission of a role: ``access`` to every key under ``prefix``."""

    prefix: str
    access: Access


RESERVED_USERS = frozenset({ADMIN_USER, PROVIDER_USER, OPERATOR_USER})
"""Names no node may have: etcd takes the user from a certificate's common name, so a node
called ``root`` would get the administrator's rights."""


def node_user(node: str) -> str:
    """A node's etcd user: its certificate's common name, the node's name."""
    check_node_name("node", node)
    if node in RESERVED_USERS:
        raise InvalidField(
            "node",
            node,
            f"is reserved for the control store's own users ({sorted(RESERVED_USERS)})",
        )
    return node


def node_role(node: str) -> str:
    return f"railnet-node-{check_node_name('node', node)}"


PROVIDER_ROLE = "railnet-provider"
OPERATOR_ROLE = "railnet-operator"

PROVIDER_GRANTS = (
    Grant(MEMBERS, Access.READWRITE),
    Grant(ENVIRONMENTS, Access.READWRITE),
    Grant(NODES, Access.READWRITE),
    Grant(REPORTS, Access.READ),
)
"""The provider writes intent (membership, documents, what each node is told) and reads
what nodes report; it cannot forge a node's report."""
OPERATOR_GRANTS = (Grant(ROOT, Access.READ),)
"""Operators read everything and write nothing."""


def node_grants(node: str) -> tuple[Grant, ...]:
    """A node reads what is addressed to it and writes only its own reports."""
    return (
        Grant(node_prefix(node), Access.READ),
        Grant(report_prefix(node), Access.READWRITE),
    )
