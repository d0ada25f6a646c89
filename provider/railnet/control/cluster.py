"""The cluster description: which nodes exist, how to reach their agents, which are cordoned.

It is what ``railnet lab up`` writes to ``cluster.json``, what ``railnet cluster`` edits and
what the ``railnet:cluster`` stack setting holds (a path or inline JSON)::

    {"nodes": [{"name": "node-1", "agent": "10.0.0.1:7443", "underlay": "10.0.0.1"},
               {"name": "node-2", "agent": "10.0.0.2:7443", "cordoned": true}],
     "tls": {"ca": "tls/ca.pem", "cert": "tls/provider.pem", "key": "tls/provider-key.pem"},
     "operator": {"cert": "tls/operator.pem", "key": "tls/operator-key.pem"}}

Relative TLS paths are relative to the file's directory. ``load_cluster`` is the one way in,
for the provider's stack setting, the CLI's ``--cluster`` and the demo alike; every field is
checked there and an error names it by its path (``cluster.nodes[1].agent``). A key the
format does not define is refused too, so a misspelt ``cordoned`` never passes silently.
The edits (``with_node``, ``without_node``, ``with_cordon``) work on the file's JSON object,
keep what they do not touch, and check the result the same way. docs/cluster.md
describes the format.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_node_name
from railnet.core.store_keys import MEMBERS
from railnet.pki.certs import TlsFiles
from railnet.store.etcd import EtcdStore, StoreAddress

CLUSTER_KEYS = ("nodes", "tls", "operator", "lab", "store")
"""The keys of a cluster file; ``lab`` is the lab's id, written by ``railnet lab up``."""
NODE_KEYS = ("name", "agent", "underlay", "cordoned", "agent_tcp", "netns")
"""The keys of a node entry; ``agent_tcp`` and ``netns`` describe a lab node."""
TLS_KEYS = ("ca", "cert", "key")
OPERATOR_KEYS = ("cert", "key")
STORE_KEYS = ("endpoints", "server_name")
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})"
)


@dataclass(frozen=True)
class ClusterNode:
    name: str
    agent: str
    """The agent's gRPC address: ``host:port`` or ``unix:PATH``."""
    underlay: str = ""
    cordoned: bool = False
    """Cordoned: no new instance, keeper or moved replica is placed here, and the next
    deploy of each environment moves its replicas away (``railnet cluster cordon``)."""


@dataclass(frozen=True)
class ClusterTlsPaths:
    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class ClusterStore:
    """How to reach the control store (etcd); the TLS material is the file's own."""

    endpoints: tuple[str, ...]
    """``host:port`` or ``unix:PATH`` of each member."""
    server_name: str = ""
    """The name the members' certificates carry, when an endpoint is not that name."""


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[ClusterNode, ...]
    tls: ClusterTlsPaths | None
    """The provider's material; ``None`` means the agents run with ``--insecure``."""
    source: str = ""
    operator: ClusterTlsPaths | None = None
    """A read-only (operator) certificate, for ``railnet status`` and ``exec``: they use it
    when the file names one, so they never need the provider's key."""
    store: ClusterStore | None = None
    """The control store's endpoints, when the cluster has one."""

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise InvalidField("node", name, f"is not in the cluster; known: {self.names}")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def schedulable(self) -> list[str]:
        """The nodes that take new instances and keepers: every node not cordoned."""
        return [n.name for n in self.nodes if not n.cordoned]

    @property
    def cordoned(self) -> list[str]:
        return [n.name for n in self.nodes if n.cordoned]

    @classmethod
    def from_json(cls, text: str, base: str = "", source: str = "") -> Cluster:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidField("cluster", source or text[:60], f"is not JSON ({exc})") from None
        return cls.from_dict(raw, base=base, source=source)

    @classmethod
    def from_dict(cls, raw: Any, base: str = "", source: str = "") -> Cluster:
        if not isinstance(raw, dict):
            raise InvalidField("cluster", raw, "must be an object with a 'nodes' list")
        _known_keys("cluster", raw, CLUSTER_KEYS)
        nodes_raw = raw.get("nodes")
        if raw.get("store") is not None:
            # The membership lives in the store: one place every runner reads.
            if nodes_raw is not None:
                raise InvalidField(
                    "cluster.nodes",
                    [n.get("name") if isinstance(n, dict) else n for n in nodes_raw]
                    if isinstance(nodes_raw, list)
                    else nodes_raw,
                    "a cluster with a control store keeps its nodes there, not in the file; "
                    "remove 'nodes' and use 'railnet cluster add-node'",
                )
            nodes_raw = []
        elif not isinstance(nodes_raw, list) or not nodes_raw:
            raise InvalidField("cluster.nodes", nodes_raw, "must be a non-empty list")
        nodes = [parse_node(f"cluster.nodes[{i}]", n) for i, n in enumerate(nodes_raw)]
        names = [n.name for n in nodes]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise InvalidField(f"cluster.nodes[{i}].name", name, "is used twice")
        lab = raw.get("lab")
        if lab is not None and not isinstance(lab, str):
            raise InvalidField("cluster.lab", lab, "must be the lab's id (a string)")
        tls_raw = raw.get("tls")
        tls = None
        if tls_raw is not None:
            if not isinstance(tls_raw, dict):
                raise InvalidField("cluster.tls", tls_raw, "must be an object with ca, cert, key")
            _known_keys("cluster.tls", tls_raw, TLS_KEYS)
            paths = []
            for key in TLS_KEYS:
                value = tls_raw.get(key)
                if not isinstance(value, str) or not value:
                    raise InvalidField(f"cluster.tls.{key}", value, "must be a file path")
                paths.append(str(PurePath(base, value)) if base else value)
            tls = ClusterTlsPaths(*paths)
        operator = None
        operator_raw = raw.get("operator")
        if operator_raw is not None:
            if tls is None:
                raise InvalidField("cluster.operator", operator_raw, "needs cluster.tls (its CA)")
            if not isinstance(operator_raw, dict):
                raise InvalidField(
                    "cluster.operator", operator_raw, "must be an object with cert, key"
                )
            _known_keys("cluster.operator", operator_raw, OPERATOR_KEYS)
            own = []
            for key in OPERATOR_KEYS:
                value = operator_raw.get(key)
                if not isinstance(value, str) or not value:
                    raise InvalidField(f"cluster.operator.{key}", value, "must be a file path")
                own.append(str(PurePath(base, value)) if base else value)
            operator = ClusterTlsPaths(tls.ca, *own)
        store = _store(raw.get("store"))
        return cls(nodes=tuple(nodes), tls=tls, source=source, operator=operator, store=store)


def _known_keys(path: str, raw: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            raise InvalidField(
                f"{path}.{key}",
                raw[key],
                f"is not a field of the cluster file; known: {', '.join(known)}",
            )


def check_agent_address(field: str, value: object) -> str:
    """``host:port`` (a name, an IPv4 address or an [IPv6] one) or ``unix:/absolute/path``."""
    if isinstance(value, str) and value.startswith("unix:"):
        if value[5:].startswith("/") and len(value) > 6:
            return value
        raise InvalidField(field, value, "a unix socket must be unix:/absolute/path")
    match = _HOST_PORT.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group("port")) <= 65535:
        raise InvalidField(
            field, value, "must be host:port (e.g. 10.0.0.1:7443, [fd00::1]:7443) or unix:PATH"
        )
    if match.group("v6") is not None:
        try:
            ipaddress.IPv6Address(match.group("v6"))
        except ValueError:
            raise InvalidField(field, value, "has no valid IPv6 address in brackets") from None
    assert isinstance(value, str)
    return value


def check_underlay(field: str, value: object) -> str:
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise InvalidField(field, value, "must be the node's IP address, e.g. 10.0.0.1") from None


def _store(raw: object) -> ClusterStore | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidField("cluster.store", raw, "must be an object with an 'endpoints' list")
    _known_keys("cluster.store", raw, STORE_KEYS)
    endpoints = raw.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise InvalidField(
            "cluster.store.endpoints", endpoints, "must be a non-empty list of etcd members"
        )
    checked = tuple(
        check_agent_address(f"cluster.store.endpoints[{i}]", e) for i, e in enumerate(endpoints)
    )
    server_name = raw.get("server_name", "")
    if not isinstance(server_name, str):
        raise InvalidField("cluster.store.server_name", server_name, "must be a DNS name")
    return ClusterStore(checked, server_name)


def parse_node(path: str, raw: object) -> ClusterNode:
    """A node entry of a cluster file, or a member record of the store; errors name
    ``path``."""
    if not isinstance(raw, dict):
        raise InvalidField(path, raw, "must be an object")
    _known_keys(path, raw, NODE_KEYS)
    name = check_node_name(f"{path}.name", raw.get("name"))
    agent = check_agent_address(f"{path}.agent", raw.get("agent"))
    underlay = raw.get("underlay")
    cordoned = raw.get("cordoned", False)
    if not isinstance(cordoned, bool):
        raise InvalidField(f"{path}.cordoned", cordoned, "must be true or false")
    return ClusterNode(
        name=name,
        agent=agent,
        underlay="" if underlay in (None, "") else check_underlay(f"{path}.underlay", underlay),
        cordoned=cordoned,
    )


# -- edits ---------------------------------------------------------------------------------
# Each takes the file's JSON object and returns a new one (checked), keeping every other key.


def new_cluster_file(tls_dir: str | None = None) -> dict[str, Any]:
    """The object of a new cluster file, with the TLS material ``railnet certs init`` wrote
    to ``tls_dir`` (relative to the file's directory, or absolute); None: no TLS."""
    if tls_dir is None:
        return {"nodes": []}
    return {
        "nodes": [],
        "tls": {
            "ca": str(PurePath(tls_dir, "ca.pem")),
            "cert": str(PurePath(tls_dir, "provider.pem")),
            "key": str(PurePath(tls_dir, "provider-key.pem")),
        },
        "operator": {
            "cert": str(PurePath(tls_dir, "operator.pem")),
            "key": str(PurePath(tls_dir, "operator-key.pem")),
        },
    }


def _nodes_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = raw.get("nodes")
    if not isinstance(nodes, list):
        raise InvalidField("cluster.nodes", nodes, "must be a list")
    return nodes


def _index(raw: dict[str, Any], name: str) -> int:
    for i, entry in enumerate(_nodes_of(raw)):
        if isinstance(entry, dict) and entry.get("name") == name:
            return i
    known = [e.get("name") for e in _nodes_of(raw) if isinstance(e, dict)]
    raise InvalidField("node", name, f"is not in the cluster file; its nodes: {known}")


def node_entry(node: ClusterNode) -> dict[str, Any]:
    """A node as a cluster file's entry, or a member record of the store, writes it: the
    optional keys only when set, so an entry reads as it was written."""
    entry: dict[str, Any] = {"name": node.name, "agent": node.agent}
    if node.underlay:
        entry["underlay"] = node.underlay
    if node.cordoned:
        entry["cordoned"] = True
    return entry


def with_node(raw: dict[str, Any], node: ClusterNode) -> dict[str, Any]:
    """``raw`` with ``node`` added; a node of that name must not exist yet."""
    check_node_name("node", node.name)
    check_agent_address("--agent", node.agent)
    if node.underlay:
        check_underlay("--underlay", node.underlay)
    if any(isinstance(e, dict) and e.get("name") == node.name for e in _nodes_of(raw)):
        raise InvalidField(
            "node", node.name, "is already in the cluster file; remove-node it first to change it"
        )
    taken = next(
        (
            e.get("name")
            for e in _nodes_of(raw)
            if isinstance(e, dict) and e.get("agent") == node.agent
        ),
        None,
    )
    if taken is not None:
        raise InvalidField("--agent", node.agent, f"is already the agent of node {taken}")
    entry = node_entry(node)
    edited = copy.deepcopy(raw)
    edited["nodes"] = [*_nodes_of(edited), entry]
    Cluster.from_dict(edited)
    return edited


def without_node(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """``raw`` without the node ``name``; the last node cannot be removed (a cluster file
    lists at least one)."""
    index = _index(raw, name)
    edited = copy.deepcopy(raw)
    nodes = _nodes_of(edited)
    if len(nodes) == 1:
        raise InvalidField("node", name, "is the cluster's last node; a cluster file needs one")
    del nodes[index]
    Cluster.from_dict(edited)
    return edited


def with_cordon(raw: dict[str, Any], name: str, cordoned: bool) -> dict[str, Any]:
    """``raw`` with the node ``name`` cordoned (or not); ``cordoned`` is written only when
    true, so an uncordoned node's entry is what it was before."""
    index = _index(raw, name)
    edited = copy.deepcopy(raw)
    entry = _nodes_of(edited)[index]
    if cordoned:
        entry["cordoned"] = True
    else:
        entry.pop("cordoned", None)
    Cluster.from_dict(edited)
    return edited


def cluster_json(raw: dict[str, Any]) -> str:
    """How ``railnet cluster`` writes a cluster file: indented, a newline at the end."""
    return json.dumps(raw, indent=2) + "\n"


class ClusterFileError(RailnetError):
    """The cluster description cannot be found or read."""


def parse_member(key: str, value: bytes) -> tuple[ClusterNode, dict[str, Any]]:
    """A member record of the store: the node and the record's JSON object."""
    where = f"store {key}"
    try:
        raw = json.loads(value)
    except ValueError as exc:
        raise InvalidField(where, value[:60], f"is not JSON ({exc})") from None
    node = parse_node(where, raw)
    if f"{MEMBERS}{node.name}" != key:
        raise InvalidField(f"{where}.name", node.name, "does not match the record's key")
    return node, raw


def read_members(store: EtcdStore) -> tuple[int, tuple[ClusterNode, ...]]:
    """Every member of the store, by name, and the store's revision at the read."""
    revision, entries = store.list(MEMBERS)
    nodes = [parse_member(e.key, e.value)[0] for e in entries]
    return revision, tuple(sorted(nodes, key=lambda n: n.name))


def store_address(cluster: Cluster, *, read_only: bool = False) -> StoreAddress:
    """How to reach the cluster's control store: with the provider's certificate, or the
    operator's (``read_only``, when the file names one)."""
    if cluster.store is None:
        raise ClusterFileError(
            f"{cluster.source or 'the cluster'} names no control store ('store'); "
            "see docs/cluster.md"
        )
    paths = cluster.operator if read_only and cluster.operator is not None else cluster.tls
    files = None if paths is None else TlsFiles(Path(paths.ca), Path(paths.cert), Path(paths.key))
    return StoreAddress(cluster.store.endpoints, files, cluster.store.server_name)


def with_membership(cluster: Cluster) -> Cluster:
    """``cluster`` with its nodes read from its control store (itself when it has none).
    Reads with the operator's certificate when the file names one: reading is all it does.
    Fails closed: a store that does not answer raises, never an empty cluster."""
    if cluster.store is None:
        return cluster
    with EtcdStore(store_address(cluster, read_only=True)) as store:
        _, nodes = read_members(store)
    return dataclasses.replace(cluster, nodes=nodes)


def load_cluster(source: str | Path, origin: str, hint: str = "") -> Cluster:
    """The cluster that ``source`` describes: inline JSON (a string starting with ``{``) or
    the path of a cluster file. ``origin`` says where ``source`` came from (a stack setting,
    a flag) and ``hint`` what to do when it cannot be read; errors name both. A cluster
    with a control store gets its nodes from there."""
    if isinstance(source, str):
        text = source.strip()
        if not text:
            raise ClusterFileError(f"{origin} is empty{'; ' + hint if hint else ''}")
        if text.startswith("{"):
            return with_membership(Cluster.from_json(text, source=origin))
        source = Path(text)
    path = source.expanduser()
    content = _read(path, origin, hint)
    try:
        cluster = Cluster.from_json(content, base=str(path.resolve().parent), source=str(path))
    except InvalidField as exc:
        raise InvalidField(exc.field, exc.value, f"{exc.reason} (in {path})") from None
    return with_membership(cluster)


def _read(path: Path, origin: str, hint: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ClusterFileError(
            f"cannot read cluster file {path} ({origin}): {exc.strerror}"
            + (f"; {hint}" if hint else "")
        ) from None


def load_cluster_object(path: Path, origin: str) -> dict[str, Any]:
    """A cluster file's JSON object, checked (``load_cluster`` would accept it), for an
    edit: the edit keeps every key it does not change."""
    content = _read(path, origin, "")
    try:
        raw = json.loads(content)
    except ValueError as exc:
        raise InvalidField("cluster", str(path), f"is not JSON ({exc})") from None
    try:
        Cluster.from_dict(raw)
    except InvalidField as exc:
        raise InvalidField(exc.field, exc.value, f"{exc.reason} (in {path})") from None
    assert isinstance(raw, dict)
    return raw
