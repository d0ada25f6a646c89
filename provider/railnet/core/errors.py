"""One exception hierarchy for everything railnet reports to a user.

The docstring of each class is its default message; subclasses carry typed context and
``__str__`` renders it. The agent maps these classes to gRPC status codes in one table
(``railnet.agent.status_codes``).
"""

from __future__ import annotations

from typing import Any


class RailnetError(Exception):
    """Something went wrong in railnet."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidField(RailnetError):
    """A value is not acceptable."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


class StaleIdentity(InvalidField):
    """A document carries an old WireGuard identity (key or endpoint) for this node: the
    node lost its state and made a new one. The writer asks the nodes again."""


class StaleGeneration(RailnetError):
    """Someone else changed the environment since the caller read it."""

    def __init__(self, env_id: str, stored: int, expected: int) -> None:
        self.env_id = env_id
        self.stored = stored
        self.expected = expected
        super().__init__(
            f"environment {env_id}: the node holds generation {stored}, not the "
            f"{expected} this change was based on; read the current document, merge, "
            "and apply again"
        )


class StaleBase(StaleGeneration):
    """A change was made against another document than the one the node holds (the same
    generation may hold another document after racing writers, or a lost one)."""

    def __init__(self, env_id: str, stored: int, expected: int) -> None:
        self.env_id = env_id
        self.stored = stored
        self.expected = expected
        RailnetError.__init__(
            self,
            f"environment {env_id}: the change was made against generation {expected}, "
            f"and this node holds another document (generation {stored}); read it again "
            "and apply the whole document",
        )


class EnvironmentNotFound(RailnetError):
    """The environment is not known on this node."""

    def __init__(self, env_id: str, node: str) -> None:
        self.env_id = env_id
        self.node = node
        super().__init__(f"environment {env_id} is not known on node {node}; ensure it there first")


class DataPlaneError(RailnetError):
    """The node could not build or change part of its network."""


class DamagedState(RailnetError):
    """A file in the agent's state directory cannot be read; it is kept as it is."""

    def __init__(self, env_id: str, path: str, reason: str) -> None:
        self.env_id = env_id
        self.path = path
        self.reason = reason
        super().__init__(
            f"state file {path} of environment {env_id} is damaged ({reason}); it is kept "
            "as it is, the environment keeps running, and the provider's next apply of it "
            "replaces the file"
        )


class AgentUnreachable(RailnetError):
    """A node agent could not be reached."""

    def __init__(self, node: str, address: str, detail: str) -> None:
        self.node = node
        self.address = address
        super().__init__(f"node {node} agent at {address} is unreachable: {detail}")
