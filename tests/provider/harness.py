"""An engine-faithful driver of the Python dynamic provider.

The Pulumi engine runs dynamic providers as ``python -u -m pulumi.dynamic``: the process
serves the ResourceProvider gRPC service on 127.0.0.1 and prints its port on the first line.
This harness does the same and speaks the same protobuf messages (``pulumi.runtime.proto``),
with properties serialized by the SDK's own ``rpc.serialize_properties`` and providers by
its own ``serialize_provider``. ``Engine`` then plays the engine's part: check → diff →
create/update/replace, read for refresh, delete for destroy, and unknowns in preview.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from railnet.providers import EnvironmentProvider, ProjectProvider, ServiceProvider

UNKNOWN = rpc.UNKNOWN
PROVIDER_KEY = "__provider"
PROVIDERS = {
    "Project": serialize_provider(ProjectProvider()),
    "Environment": serialize_provider(EnvironmentProvider()),
    "Service": serialize_provider(ServiceProvider()),
}


def to_struct(props: dict[str, Any]) -> struct_pb2.Struct:
    """Serialize like the engine: the SDK's serializer, unknowns as the UNKNOWN sentinel."""
    known = {k: v for k, v in props.items() if v is not Unknown}
    loop = asyncio.new_event_loop()
    try:
        struct = loop.run_until_complete(rpc.serialize_properties(known, {}))
    finally:
        loop.close()
    for key, value in props.items():
        if value is Unknown:
            struct[key] = UNKNOWN
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(rpc.deserialize_properties(struct, keep_unknowns=True))


class _UnknownMarker:
    def __repr__(self) -> str:
        return "<unknown>"


Unknown = _UnknownMarker()
"""Put this in a property to send it as unknown, as preview does."""


class ProviderError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class DynamicProvider:
    """``python -m pulumi.dynamic`` in a subprocess, and a client of its gRPC service."""

    def __init__(self, config: dict[str, str]) -> None:
        env = {**os.environ, "PULUMI_PROJECT": "railnet-test"}
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.dynamic"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline().decode().strip())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)
        args = struct_pb2.Struct()
        args.update(config)
        self._call("Configure", provider_pb2.ConfigureRequest(args=args, acceptSecrets=False))

    def close(self) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=180)
        except grpc.RpcError as exc:
            raise ProviderError(exc.code(), exc.details()) from None

    def check(
        self, urn: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        r = self._call(
            "Check", provider_pb2.CheckRequest(urn=urn, olds=to_struct(olds), news=to_struct(news))
        )
        return from_struct(r.inputs), [(f.property, f.reason) for f in r.failures]

    def diff(self, id_: str, urn: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return self._call(
            "Diff",
            provider_pb2.DiffRequest(id=id_, urn=urn, olds=to_struct(olds), news=to_struct(news)),
        )

    def create(self, urn: str, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        r = self._call("Create", provider_pb2.CreateRequest(urn=urn, properties=to_struct(props)))
        return r.id, from_struct(r.properties)

    def update(
        self, id_: str, urn: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> dict[str, Any]:
        r = self._call(
            "Update",
            provider_pb2.UpdateRequest(id=id_, urn=urn, olds=to_struct(olds), news=to_struct(news)),
        )
        return from_struct(r.properties)

    def read(
        self, id_: str, urn: str, props: dict[str, Any], inputs: dict[str, Any]
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        r = self._call(
            "Read",
            provider_pb2.ReadRequest(
                id=id_, urn=urn, properties=to_struct(props), inputs=to_struct(inputs)
            ),
        )
        return r.id, from_struct(r.properties), from_struct(r.inputs)

    def delete(self, id_: str, urn: str, props: dict[str, Any]) -> None:
        self._call("Delete", provider_pb2.DeleteRequest(id=id_, urn=urn, properties=to_struct(props)))


def urn(kind: str, name: str) -> str:
    return f"urn:pulumi:test::railnet-test::pulumi-python:dynamic/railnet:{kind}::{name}"


@dataclass
class State:
    id: str
    kind: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


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

    def __init__(self, provider: DynamicProvider) -> None:
        self.provider = provider
        self.state: dict[str, State] = {}

    def _news(self, declared: Declared, preview: bool) -> dict[str, Any]:
        states = None if preview and not self._all_known(declared) else self.state
        news = declared.props(states)
        news[PROVIDER_KEY] = PROVIDERS[declared.kind]
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
                urn(declared.kind, declared.name), old.inputs if old else {}, news
            )
            if failures:
                steps.append(Step(declared.name, "failed", detail=failures))
                continue
            if old is None:
                steps.append(Step(declared.name, "create", detail=checked))
                continue
            diff = self.provider.diff(old.id, urn(declared.kind, declared.name), old.outputs, checked)
            steps.append(self._step(declared.name, diff, checked))
        return steps

    @staticmethod
    def _step(name: str, diff: Any, checked: dict[str, Any]) -> Step:
        if list(diff.replaces):
            return Step(name, "replace", list(diff.replaces), checked)
        if diff.changes == provider_pb2.DiffResponse.DIFF_SOME:
            return Step(name, "update", detail=checked)
        return Step(name, "same", detail=checked)

    def up(self, program: list[Declared]) -> list[Step]:
        steps = []
        wanted = {d.name for d in program}
        for declared in program:
            u = urn(declared.kind, declared.name)
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
            step = self._step(declared.name, self.provider.diff(old.id, u, old.outputs, checked), checked)
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
        for name in [n for n in reversed(list(self.state)) if n not in wanted]:
            old = self.state.pop(name)
            self.provider.delete(old.id, urn(old.kind, name), old.outputs)
            steps.append(Step(name, "delete"))
        return steps

    def refresh(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Read every resource; returns name → (old outputs, refreshed outputs)."""
        seen = {}
        for name, st in list(self.state.items()):
            id_, outs, inputs = self.provider.read(st.id, urn(st.kind, name), st.outputs, st.inputs)
            seen[name] = (st.outputs, outs)
            if not id_:
                del self.state[name]
            else:
                self.state[name] = State(id_, st.kind, inputs or st.inputs, outs)
        return seen

    def destroy(self) -> None:
        for name in reversed(list(self.state)):
            st = self.state.pop(name)
            self.provider.delete(st.id, urn(st.kind, name), st.outputs)
