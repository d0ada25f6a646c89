"""Speak the Pulumi engine's side of the dynamic-provider protocol, without the engine.

The Pulumi engine runs Python dynamic providers as ``python -u -m pulumi.dynamic``: the
process serves the ResourceProvider gRPC service on 127.0.0.1 and prints its port on the
first line. ``DynamicProvider`` does the same and speaks the same protobuf messages
(``pulumi.runtime.proto``), with properties serialized by the SDK's own
``rpc.serialize_properties`` and providers by its own ``serialize_provider``.

``run_program`` runs an unmodified Pulumi program (``examples/basic/__main__.py``) in this
process with the SDK's mock monitor, whose resource registrations are forwarded to that
provider process exactly as the engine would: check, then diff, then create or update (or
only check and diff, in a preview). The CLI cannot be installed on every machine; this is
how ``railnet demo`` and the tests drive real programs through the real provider protocol.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import runpy
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
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
        self._call(
            "Delete", provider_pb2.DeleteRequest(id=id_, urn=urn, properties=to_struct(props))
        )


def urn(kind: str, name: str, project: str = "railnet-test", stack: str = "test") -> str:
    return f"urn:pulumi:{stack}::{project}::pulumi-python:dynamic/railnet:{kind}::{name}"


# -- running a real program ------------------------------------------------------------------


@dataclass
class ResourceState:
    id: str
    kind: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class ProgramStep:
    name: str
    kind: str
    op: str
    """create, update, replace, same, delete (what ``pulumi up`` would do)."""
    replaces: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    """The resource's ``plan`` property after check: the network change."""


@dataclass
class ProgramResult:
    steps: list[ProgramStep]
    exports: dict[str, Any]


def operation(diff: Any) -> tuple[str, list[str]]:
    """What the engine does with a DiffResponse: (replace|update|same, replaced keys)."""
    if list(diff.replaces):
        return "replace", list(diff.replaces)
    if diff.changes == provider_pb2.DiffResponse.DIFF_SOME:
        return "update", []
    return "same", []


class ProgramFailed(Exception):
    """A resource of the program failed check or an operation."""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if (
            rpc._special_sig_key in value
            and value.get(rpc._special_sig_key) == rpc._special_secret_sig
        ):
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _kind(type_token: str) -> str:
    return type_token.rsplit(":", 1)[-1]


class _ForwardingMocks:
    """A ``pulumi.runtime.Mocks`` whose resources are created by the real provider process."""

    def __init__(
        self,
        provider: DynamicProvider,
        state: dict[str, ResourceState],
        preview: bool,
        project: str,
        stack: str,
    ) -> None:
        self.provider = provider
        self.state = state
        self.preview = preview
        self.project = project
        self.stack = stack
        self.steps: list[ProgramStep] = []
        self.seen: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
        kind = _kind(args.typ)
        name = args.name
        inputs = _plain(dict(args.inputs))
        u = urn(kind, name, self.project, self.stack)
        with self._lock:
            self.seen.append(name)
            old = self.state.get(name)
        try:
            checked, failures = self.provider.check(u, old.inputs if old else {}, inputs)
        except ProviderError as exc:
            self.errors.append(f"{kind} {name}: {exc.details.strip().splitlines()[-1]}")
            raise
        if failures:
            detail = "; ".join(reason for _, reason in failures)
            self.errors.append(f"{kind} {name}: {detail}")
            raise ProgramFailed(f"{kind} {name}: {detail}")
        plan = checked.get("plan") if isinstance(checked.get("plan"), list) else []
        if old is None:
            step = ProgramStep(name, kind, "create", plan=list(plan or []))
        else:
            op, replaces = operation(self.provider.diff(old.id, u, old.outputs, checked))
            step = ProgramStep(name, kind, op, replaces, list(plan or []))
        with self._lock:
            self.steps.append(step)
        if self.preview:
            return (old.id if old else None), checked if old is None else {**old.outputs, **checked}
        try:
            if step.op == "create":
                id_, outs = self.provider.create(u, checked)
            elif step.op == "replace":
                assert old is not None
                id_, outs = self.provider.create(u, checked)
                self.provider.delete(old.id, u, old.outputs)
            elif step.op == "update":
                assert old is not None
                id_, outs = old.id, self.provider.update(old.id, u, old.outputs, checked)
            else:
                assert old is not None
                id_, outs = old.id, old.outputs
        except ProviderError as exc:
            self.errors.append(f"{kind} {name}: {exc.details.strip().splitlines()[-1]}")
            raise
        with self._lock:
            self.state[name] = ResourceState(id_, kind, checked, outs)
        return id_, outs


def run_program(
    program: Path,
    provider: DynamicProvider,
    state: dict[str, ResourceState],
    *,
    preview: bool,
    config: dict[str, str] | None = None,
    project: str = "railnet",
    stack: str = "dev",
) -> ProgramResult:
    """Run a Pulumi program file as ``pulumi preview`` or ``pulumi up`` would, through
    ``provider``. ``state`` plays the stack's checkpoint and is updated in place."""
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_pulumi_func

    mocks = _ForwardingMocks(provider, state, preview, project, stack)

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
            return mocks.new_resource(args)

        def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
            return mocks.call(args)

    def body() -> None:
        # A fresh context: the SDK keeps its root Stack in a ContextVar, so every run
        # gets a new stack, as every `pulumi up` does.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            settings.SETTINGS.rpc_manager.clear()
            settings.SETTINGS.outputs.clear()
            pulumi.runtime.set_mocks(Mocks(), project=project, stack=stack, preview=preview)

            async def program_run() -> None:
                runpy.run_path(str(program), run_name="__main__")

            loop.run_until_complete(run_pulumi_func(program_run))
            root = settings.get_root_resource()
            outputs = dict(getattr(root, "outputs", None) or {})

            async def resolve() -> None:
                for key, value in outputs.items():
                    exports[key] = await pulumi.Output.from_input(value).future()

            loop.run_until_complete(resolve())
        finally:
            loop.close()
            asyncio.set_event_loop(None)

    exports: dict[str, Any] = {}
    old_config = os.environ.get("PULUMI_CONFIG")
    os.environ["PULUMI_CONFIG"] = json.dumps(config or {})
    try:
        contextvars.Context().run(body)
    except Exception as exc:
        if mocks.errors:
            raise ProgramFailed("; ".join(mocks.errors)) from exc
        raise
    finally:
        if old_config is None:
            os.environ.pop("PULUMI_CONFIG", None)
        else:
            os.environ["PULUMI_CONFIG"] = old_config
    steps = list(mocks.steps)
    if not preview:
        for name in [n for n in reversed(list(state)) if n not in mocks.seen]:
            old = state.pop(name)
            provider.delete(old.id, urn(old.kind, name, project, stack), old.outputs)
            steps.append(ProgramStep(name, old.kind, "delete"))
    else:
        steps += [
            ProgramStep(n, state[n].kind, "delete")
            for n in reversed(list(state))
            if n not in mocks.seen
        ]
    return ProgramResult(steps=steps, exports=exports)


def destroy(
    provider: DynamicProvider,
    state: dict[str, ResourceState],
    project: str = "railnet",
    stack: str = "dev",
) -> None:
    """``pulumi destroy``: delete every resource, dependents first."""
    for name in reversed(list(state)):
        old = state.pop(name)
        provider.delete(old.id, urn(old.kind, name, project, stack), old.outputs)
