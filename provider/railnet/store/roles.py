"""etcd's users and roles for railnet: least privilege, checked by etcd on every request.

etcd takes the user from the client certificate's common name (``--client-cert-auth``), so
each certificate the cluster CA issues is an etcd user of the same name:

* ``railnet-provider`` writes membership, documents and what each node is told, and reads
  what nodes report;
* ``railnet-operator`` reads;
* each node (its name) reads what is addressed to it and writes only its own reports;
* ``root``, etcd's administrator, changes users and roles; its certificate stays with the
  CA's key.

``ensure_roles`` makes it so and turns authentication on; run again, it changes nothing.
The users have no password: a certificate is the only way in.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from aetcd.rpc import auth_pb2, rpc_pb2

from railnet.core.store_keys import (
    ADMIN_USER,
    OPERATOR_GRANTS,
    OPERATOR_ROLE,
    OPERATOR_USER,
    PROVIDER_GRANTS,
    PROVIDER_ROLE,
    PROVIDER_USER,
    Access,
    Grant,
    node_grants,
    node_role,
    node_user,
    prefix_end,
)
from railnet.store.etcd import EtcdStore, StoreError

_PERMISSION = {
    Access.READ: auth_pb2.Permission.READ,
    Access.WRITE: auth_pb2.Permission.WRITE,
    Access.READWRITE: auth_pb2.Permission.READWRITE,
}
_TIMEOUT = 10.0


def _wanted(nodes: Iterable[str]) -> dict[str, tuple[str, tuple[Grant, ...]]]:
    """Per user, its role and the role's grants."""
    wanted: dict[str, tuple[str, tuple[Grant, ...]]] = {
        PROVIDER_USER: (PROVIDER_ROLE, PROVIDER_GRANTS),
        OPERATOR_USER: (OPERATOR_ROLE, OPERATOR_GRANTS),
    }
    for node in nodes:
        wanted[node_user(node)] = (node_role(node), node_grants(node))
    return wanted


def ensure_roles(store: EtcdStore, nodes: Iterable[str]) -> list[str]:
    """Create what is missing of railnet's users, roles and grants (for ``nodes`` too), then
    turn etcd's authentication on. ``store`` must hold the administrator's certificate.
    Returns what it changed, in words; empty when everything was already there."""
    auth = store.auth()
    changed: list[str] = []
    try:
        users = set(auth.UserList(rpc_pb2.AuthUserListRequest(), timeout=_TIMEOUT).users)
        roles = set(auth.RoleList(rpc_pb2.AuthRoleListRequest(), timeout=_TIMEOUT).roles)
        if ADMIN_USER not in users:
            _add_user(auth, ADMIN_USER)
            auth.UserGrantRole(
                rpc_pb2.AuthUserGrantRoleRequest(user=ADMIN_USER, role="root"), timeout=_TIMEOUT
            )
            changed.append("user root (etcd's administrator)")
        for user, (role, grants) in _wanted(nodes).items():
            if role not in roles:
                auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=role), timeout=_TIMEOUT)
                changed.append(f"role {role}")
            held = auth.RoleGet(rpc_pb2.AuthRoleGetRequest(role=role), timeout=_TIMEOUT).perm
            have = {(bytes(p.key), bytes(p.range_end), p.permType) for p in held}
            for grant in grants:
                perm = auth_pb2.Permission(
                    permType=_PERMISSION[grant.access],
                    key=grant.prefix.encode(),
                    range_end=prefix_end(grant.prefix).encode(),
                )
                if (perm.key, perm.range_end, perm.permType) in have:
                    continue
                auth.RoleGrantPermission(
                    rpc_pb2.AuthRoleGrantPermissionRequest(name=role, perm=perm), timeout=_TIMEOUT
                )
                changed.append(f"{role}: {grant.access.value} {grant.prefix}")
            if user not in users:
                _add_user(auth, user)
                changed.append(f"user {user}")
            granted = auth.UserGet(rpc_pb2.AuthUserGetRequest(name=user), timeout=_TIMEOUT).roles
            if role not in granted:
                auth.UserGrantRole(
                    rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role), timeout=_TIMEOUT
                )
                changed.append(f"{user} has {role}")
        # etcd 3.4 has no AuthStatus; enabling what is enabled already is a no-op there.
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=_TIMEOUT)
    except grpc.RpcError as exc:
        raise StoreError(
            f"could not set up etcd's roles: {exc.details() or exc.code().name} (this needs "
            "the store administrator's certificate, CN=root)"
        ) from None
    return changed


def remove_node_user(store: EtcdStore, node: str) -> None:
    """Take a removed node's user and role away: its certificate reads nothing any more."""
    auth = store.auth()
    try:
        users = set(auth.UserList(rpc_pb2.AuthUserListRequest(), timeout=_TIMEOUT).users)
        if node_user(node) in users:
            auth.UserDelete(rpc_pb2.AuthUserDeleteRequest(name=node_user(node)), timeout=_TIMEOUT)
        roles = set(auth.RoleList(rpc_pb2.AuthRoleListRequest(), timeout=_TIMEOUT).roles)
        if node_role(node) in roles:
            auth.RoleDelete(rpc_pb2.AuthRoleDeleteRequest(role=node_role(node)), timeout=_TIMEOUT)
    except grpc.RpcError as exc:
        raise StoreError(
            f"could not remove node {node}'s etcd user: {exc.details() or exc.code().name}"
        ) from None


def _add_user(auth: object, name: str) -> None:
    auth.UserAdd(  # type: ignore[attr-defined]
        rpc_pb2.AuthUserAddRequest(name=name, options=auth_pb2.UserAddOptions(no_password=True)),
        timeout=_TIMEOUT,
    )
