"""The test side of the engine-faithful harness: an ``Engine`` that plays pulumi
preview/up/refresh/destroy over a declared list of resources, on
``railnet.engine.emulator.DynamicProvider``.

The Pulumi engine runs dynamic providers as ``python -u -m pulumi.dynamic``: the process
serves the ResourceProvider gRPC service on 127.0.0.1 and prints its port on the first line.
This harness does the same and speaks the same protobuf messages (``pulumi.runtime.proto``),
with properties serialized by the SDK's own ``rpc.serialize_properties`` and providers by
its own ``serialize_provider``. ``Engine`` then plays the engine's part: check → diff →
create/update/replace, read for refresh, delete for destroy, and unknowns in preview.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from railnet.engine.emulator import (
    PROVIDER_KEY,
    PROVIDERS,
    Deployment,
    DynamicProvider,
    Goal,
    ProgramStep,
    ProviderError,
    Refreshed,
    Unknown,
    checkpoint,
    refresh,
    reveal,
    secret,
    urn,
)
from railnet.engine.emulator import ResourceState as State

__all__ = [
    "PROVIDERS",
    "DynamicProvider",
    "ProviderError",
    "Refreshed",
    "State",
    "Unknown",
    "reveal",
    "secret",
]


@dataclass
class Declared:
    """One resource of a program: its kind, name and a function of the states so far."""

    kind: str
    name: str
    props: Callable[[dict[str, State] | None], dict[str, Any]]
    """Given the states (None in a preview of a fresh stack), the resource's inputs."""
    depends_on: tuple[str, ...] = ()
    delete_before_replace: bool | None = None
    """ResourceOptions.delete_before_replace (None: not set, the provider decides)."""
    additional_secret_outputs: tuple[str, ...] = ()


@dataclass
class Step:
    name: str
    op: str
    """same, create, update, replace, delete, failed."""
    replaces: list[str] = field(default_factory=list)
    detail: Any = None
    """preview: the checked inputs (failures for a failed step); up: the new outputs."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """The outputs the step leaves (in a preview, what the program would see)."""


class Engine:
    """The engine's side of ``pulumi preview/up/refresh/destroy`` for a list of resources,
    through ``railnet.engine.emulator.Deployment`` (which cites the engine's source)."""

    def __init__(self, provider: DynamicProvider, stack: str = "test") -> None:
        self.provider = provider
        self.stack = stack
        self.state: dict[str, State] = {}
        self.calls: list[str] = []
        """Every hook the provider was called with, in order: "Create api", ..."""
        self._record(provider)

    def _record(self, provider: DynamicProvider) -> None:
        for hook in ("check", "diff", "create", "update", "read", "delete"):
            original = getattr(provider, hook)

            def recorded(*args: Any, _hook: str = hook, _original: Any = original) -> Any:
                target = next(a for a in args if isinstance(a, str) and a.startswith("urn:"))
                self.calls.append(f"{_hook.capitalize()} {target.rsplit('::', 1)[-1]}")
                return _original(*args)

            setattr(provider, hook, recorded)

    def urn(self, kind: str, name: str) -> str:
        return urn(kind, name, stack=self.stack)

    def _news(self, declared: Declared, preview: bool) -> dict[str, Any]:
        states = None if preview and not self._all_known(declared) else self.state
        news = declared.props(states)
        news[PROVIDER_KEY] = PROVIDERS[declared.kind]
        # What the SDK sets: the resource's own URN as its owner, and for a service the
        # URN of the Environment it was declared with (None: keep what the program says).
        if "owner" in news and news["owner"] is None:
            news["owner"] = self.urn(declared.kind, declared.name)
        if news.get("environment_owner") is None and declared.kind == "Service":
            env = news.get("environment")
            news["environment_owner"] = (
                Unknown if env is Unknown else self.urn("Environment", str(reveal(env)))
            )
        return news

    def _all_known(self, declared: Declared) -> bool:
        try:
            declared.props(self.state)
        except KeyError:
            return False
        return True

    def _goal(self, declared: Declared, preview: bool) -> Goal:
        return Goal(
            declared.kind,
            declared.name,
            self._news(declared, preview),
            delete_before_replace=declared.delete_before_replace,
            dependencies=declared.depends_on,
            additional_secret_outputs=declared.additional_secret_outputs,
        )

    def _deployment(self, preview: bool) -> Deployment:
        return Deployment(self.provider, self.state, preview=preview, stack=self.stack)

    def preview(self, program: list[Declared]) -> list[Step]:
        """Check and diff only, as preview does: no create, update or delete."""
        deployment = self._deployment(preview=True)
        steps = [_step(deployment.register(self._goal(d, True)), True) for d in program]
        return steps + [_step(s, True) for s in deployment.finish()]

    def up(self, program: list[Declared]) -> list[Step]:
        deployment = self._deployment(preview=False)
        steps = []
        for declared in program:
            step = deployment.register(self._goal(declared, False))
            if step.failures:
                raise ProviderError(grpc.StatusCode.INVALID_ARGUMENT, repr(step.failures))
            steps.append(_step(step, False))
        return steps + [_step(s, False) for s in deployment.finish()]

    def refresh(self) -> dict[str, Refreshed]:
        """Read every resource, then Diff for the drift; name → what refresh saw."""
        return refresh(self.provider, self.state, stack=self.stack)

    def checkpoint(self) -> str:
        """The state as a checkpoint file would hold it (secrets encrypted)."""
        return checkpoint(self.state, "railnet-test", self.stack)

    def _dependents_first(self, names: list[str]) -> list[str]:
        """Deletion order: services, then environments, then projects, as the engine's
        dependency graph has it (each latest-created first)."""
        rank = {"Service": 0, "Environment": 1, "Project": 2}
        return sorted(reversed(names), key=lambda n: rank[self.state[n].kind])

    def destroy(self) -> None:
        for name in self._dependents_first(list(self.state)):
            st = self.state[name]
            self.provider.delete(st.id, self.urn(st.kind, name), reveal(st.outputs))
            del self.state[name]  # as the engine does: a failed delete stays in the state


def _step(step: ProgramStep, preview: bool) -> Step:
    if step.op == "failed":
        return Step(step.name, "failed", step.replaces, detail=step.failures)
    if step.op == "delete":
        return Step(step.name, "delete")
    detail = step.checked if preview or step.op == "same" else step.outputs
    return Step(step.name, step.op, step.replaces, detail=detail, outputs=step.outputs)


@contextmanager
def engine_on(cluster: str, stack: str = "test") -> Iterator[Engine]:
    """An ``Engine`` over a fresh provider process configured with ``cluster`` (a path or
    inline JSON); on exit it destroys what is left in its state and stops the provider."""
    provider = DynamicProvider({"railnet:cluster": cluster})
    engine = Engine(provider, stack=stack)
    try:
        yield engine
    finally:
        try:
            engine.destroy()
        finally:
            engine.provider.close()
