"""The cluster description: which nodes exist and how to reach their agents.

It is what ``railnet lab up`` writes to ``cluster.json`` and what the ``railnet:cluster``
stack setting holds (a path or inline JSON)::

    {"nodes": [{"name": "node-1", "agent": "unix:/.../node-1.sock", "underlay": "198.18.0.1"}],
     "tls": {"ca": "ca.pem", "cert": "provider.pem", "key": "provider-key.pem"}}

Relative TLS paths are relative to the file's directory. ``load_cluster`` is the one way in,
for the provider's stack setting, the CLI's ``--cluster`` and the demo alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_node_name


@dataclass(frozen=True)
class ClusterNode:
    name: str
    agent: str
    """The agent's gRPC address: ``host:port`` or ``unix:PATH``."""
    underlay: str = ""


@dataclass(frozen=True)
class ClusterTlsPaths:
    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[ClusterNode, ...]
    tls: ClusterTlsPaths | None
    """The provider's material; ``None`` means the agents run with ``--insecure``."""
    source: str = ""
    operator: ClusterTlsPaths | None = None
    """A read-only (operator) certificate, for ``railnet status`` and ``exec``: they use it
    when the file names one, so they never need the provider's key."""

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise InvalidField("node", name, f"is not in the cluster; known: {self.names}")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

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
        nodes_raw = raw.get("nodes")
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise InvalidField("cluster.nodes", nodes_raw, "must be a non-empty list")
        nodes = []
        for i, n in enumerate(nodes_raw):
            if not isinstance(n, dict):
                raise InvalidField(f"cluster.nodes[{i}]", n, "must be an object")
            name = check_node_name(f"cluster.nodes[{i}].name", n.get("name"))
            agent = n.get("agent")
            if not isinstance(agent, str) or not agent:
                raise InvalidField(
                    f"cluster.nodes[{i}].agent", agent, "must be host:port or unix:PATH"
                )
            nodes.append(ClusterNode(name=name, agent=agent, underlay=str(n.get("underlay", ""))))
        names = [n.name for n in nodes]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise InvalidField(f"cluster.nodes[{i}].name", name, "is used twice")
        tls_raw = raw.get("tls")
        tls = None
        if tls_raw is not None:
            if not isinstance(tls_raw, dict):
                raise InvalidField("cluster.tls", tls_raw, "must be an object with ca, cert, key")
            paths = []
            for key in ("ca", "cert", "key"):
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
            own = []
            for key in ("cert", "key"):
                value = operator_raw.get(key)
                if not isinstance(value, str) or not value:
                    raise InvalidField(f"cluster.operator.{key}", value, "must be a file path")
                own.append(str(PurePath(base, value)) if base else value)
            operator = ClusterTlsPaths(tls.ca, *own)
        return cls(nodes=tuple(nodes), tls=tls, source=source, operator=operator)


class ClusterFileError(RailnetError):
    """The cluster description cannot be found or read."""


def load_cluster(source: str | Path, origin: str, hint: str = "") -> Cluster:
    """The cluster that ``source`` describes: inline JSON (a string starting with ``{``) or
    the path of a cluster file. ``origin`` says where ``source`` came from (a stack setting,
    a flag) and ``hint`` what to do when it cannot be read; errors name both."""
    if isinstance(source, str):
        text = source.strip()
        if not text:
            raise ClusterFileError(f"{origin} is empty{'; ' + hint if hint else ''}")
        if text.startswith("{"):
            return Cluster.from_json(text, source=origin)
        source = Path(text)
    path = source.expanduser()
    try:
        content = path.read_text()
    except OSError as exc:
        raise ClusterFileError(
            f"cannot read cluster file {path} ({origin}): {exc.strerror}"
            + (f"; {hint}" if hint else "")
        ) from None
    return Cluster.from_json(content, base=str(path.resolve().parent), source=str(path))
