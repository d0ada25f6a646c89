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
    DynamicProvider,
    ProviderError,
    Unknown,
    operation,
    urn,
)
from railnet.engine.emulator import ResourceState as State

__all__ = ["PROVIDERS", "DynamicProvider", "ProviderError", "State", "Unknown"]


@dataclass
class Declared:
    """One resource of a program: its kind, name and a function of the states so far."""

    kind: str
    name: str
    props: Callable[[dict[str, State] | None], dict[str, Any]]
    """Given the states (None in a preview of a fresh stack), the resource's inputs."""


@dataclass
class Step:
    name: str
    op: str
    """same, create, update, replace, delete."""
    replaces: list[str] = field(default_factory=list)
    detail: Any = None


class Engine:
    """The engine's side of ``pulumi preview/up/refresh/destroy`` for a list of resources."""

    def __init__(self, provider: DynamicProvider, stack: str = "test") -> None:
        self.provider = provider
        self.stack = stack
        self.state: dict[str, State] = {}

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
                Unknown if env is Unknown else self.urn("Environment", str(env))
            )
        return news

    def _all_known(self, declared: Declared) -> bool:
        try:
            declared.props(self.state)
        except KeyError:
            return False
        return True

    def preview(self, program: list[Declared]) -> list[Step]:
        """Check and diff only, as preview does: no create, update or delete."""
        steps = []
        for declared in program:
            news = self._news(declared, preview=True)
            old = self.state.get(declared.name)
            checked, failures = self.provider.check(
                self.urn(declared.kind, declared.name), old.inputs if old else {}, news
            )
            if failures:
                steps.append(Step(declared.name, "failed", detail=failures))
                continue
            if old is None:
                steps.append(Step(declared.name, "create", detail=checked))
                continue
            diff = self.provider.diff(
                old.id, self.urn(declared.kind, declared.name), old.outputs, checked
            )
            steps.append(self._step(declared.name, diff, checked))
        return steps

    @staticmethod
    def _step(name: str, diff: Any, checked: dict[str, Any]) -> Step:
        op, replaces = operation(diff)
        return Step(name, op, replaces, checked)

    def up(self, program: list[Declared]) -> list[Step]:
        steps = []
        wanted = {d.name for d in program}
        for declared in program:
            u = self.urn(declared.kind, declared.name)
            news = self._news(declared, preview=False)
            old = self.state.get(declared.name)
            checked, failures = self.provider.check(u, old.inputs if old else {}, news)
            if failures:
                raise ProviderError(grpc.StatusCode.INVALID_ARGUMENT, repr(failures))
            if old is None:
                id_, outs = self.provider.create(u, checked)
                self.state[declared.name] = State(id_, declared.kind, checked, outs)
                steps.append(Step(declared.name, "create", detail=outs))
                continue
            step = self._step(
                declared.name, self.provider.diff(old.id, u, old.outputs, checked), checked
            )
            if step.op == "replace":
                # create-before-delete, the engine's default when deleteBeforeReplace is unset
                id_, outs = self.provider.create(u, checked)
                self.provider.delete(old.id, u, old.outputs)
                self.state[declared.name] = State(id_, declared.kind, checked, outs)
                step.detail = outs
            elif step.op == "update":
                outs = self.provider.update(old.id, u, old.outputs, checked)
                self.state[declared.name] = State(old.id, declared.kind, checked, outs)
                step.detail = outs
            steps.append(step)
        for name in self._dependents_first([n for n in self.state if n not in wanted]):
            old = self.state.pop(name)
            self.provider.delete(old.id, self.urn(old.kind, name), old.outputs)
            steps.append(Step(name, "delete"))
        return steps

    def refresh(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Read every resource; returns name → (old outputs, refreshed outputs)."""
        seen = {}
        for name, st in list(self.state.items()):
            id_, outs, inputs = self.provider.read(
                st.id, self.urn(st.kind, name), st.outputs, st.inputs
            )
            seen[name] = (st.outputs, outs)
            if not id_:
                del self.state[name]
            else:
                self.state[name] = State(id_, st.kind, inputs or st.inputs, outs)
        return seen

    def _dependents_first(self, names: list[str]) -> list[str]:
        """Deletion order: services, then environments, then projects, as the engine's
        dependency graph has it (each latest-created first)."""
        rank = {"Service": 0, "Environment": 1, "Project": 2}
        return sorted(reversed(names), key=lambda n: rank[self.state[n].kind])

    def destroy(self) -> None:
        for name in self._dependents_first(list(self.state)):
            st = self.state[name]
            self.provider.delete(st.id, self.urn(st.kind, name), st.outputs)
            del self.state[name]  # as the engine does: a failed delete stays in the state


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
