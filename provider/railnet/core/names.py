"""Names users give and names railnet derives for kernel objects.

User names are DNS labels (RFC 1123). Kernel names are derived, short and collision-free:
interface names are at most 15 characters, and every namespace name carries the node's
prefix so that two agents (or two labs) on one machine never meet.
"""

from __future__ import annotations

import hashlib
import re

from railnet.core.errors import InvalidField

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
OBJECT_ID = re.compile(r"^[a-z0-9]{1,16}$")
NETNS_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
IFNAME_MAX = 15
WG_LINK = "wg0"
"""The WireGuard link's name inside every environment namespace."""
MESH_MTU = 1420
"""wg0's MTU (1500 less WireGuard's 80 bytes over IPv6). Instances' veths get it too, so TCP
never needs path-MTU discovery to cross the mesh."""


def check_dns_label(field: str, value: object) -> str:
    """Return ``value`` if it is a lower-case RFC 1123 label, else raise ``InvalidField``."""
    if not isinstance(value, str) or not DNS_LABEL.fullmatch(value):
        raise InvalidField(
            field,
            value,
            "must be a DNS label: 1-63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit",
        )
    return value


def check_domain(field: str, value: object) -> str:
    """A private domain: one or more DNS labels joined by dots, no trailing dot."""
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidField(field, value, "must be a domain such as railway.internal")
    for label in value.split("."):
        if not DNS_LABEL.fullmatch(label):
            raise InvalidField(field, value, f"label {label!r} is not a lower-case DNS label")
    return value


def check_node_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not NODE_NAME.fullmatch(value):
        raise InvalidField(
            field, value, "must be 1-32 characters of a-z, 0-9 and '-' (e.g. node-1)"
        )
    return value


def check_object_id(field: str, value: object) -> str:
    if not isinstance(value, str) or not OBJECT_ID.fullmatch(value):
        raise InvalidField(field, value, "must be 1-16 characters of a-z and 0-9")
    return value


def check_netns_prefix(field: str, value: object) -> str:
    if not isinstance(value, str) or not NETNS_PREFIX.fullmatch(value):
        raise InvalidField(field, value, "must be 1-24 characters of a-z, 0-9 and '-'")
    return value


def short_hash(*parts: str, length: int = 10) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest[:length]


def environment_id(project: str, environment: str) -> str:
    """The stable id of a project environment, derived from its two names."""
    return "e" + short_hash("environment", project, environment, length=12)


def environment_netns(prefix: str, env_id: str) -> str:
    return f"{prefix}-{env_id}"


def instance_netns(prefix: str, env_id: str, service_id: str, index: int) -> str:
    return f"{prefix}-{env_id}-{service_id}-{index}"


def wireguard_ifname(prefix: str, env_id: str) -> str:
    """The WireGuard interface's name while it lives in the node's host namespace.

    It is also the name of the userspace UAPI socket, which is machine-global, so it
    hashes the node prefix in. Inside the environment namespace the link is ``wg0``.
    """
    return "wg" + short_hash("wg", prefix, env_id, length=IFNAME_MAX - 2)


def veth_ifname(env_id: str, service_id: str, index: int) -> str:
    """The environment-side end of an instance's veth pair."""
    return "v" + short_hash("veth", env_id, service_id, str(index), length=IFNAME_MAX - 1)
