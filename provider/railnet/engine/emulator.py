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
from collections.abc import Sequence
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

    def __init__(self, config: dict[str, str], secret_keys: Sequence[str] = ()) -> None:
        """``config``: the stack's settings (``railnet:cluster``, ...); ``secret_keys``: the
        ones set with ``--secret``, which Configure receives marked secret (the dynamic
        provider unwraps them: pulumi/dynamic/__main__.py, Configure)."""
        self.secret_keys = frozenset(secret_keys)
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
        # provider_plugin.go, provider.Configure: args keep their secrets; the engine itself
        # asks for secrets (acceptSecrets=True) and the provider answers whether it takes them.
        # Dynamic providers get the whole stack configuration, keyed "<namespace>:<key>",
        # secure settings marked secret (pkg/resource/deploy/target.go, GetPackageConfig).
        args = to_struct({k: secret(v) if k in self.secret_keys else v for k, v in config.items()})
        request = provider_pb2.ConfigureRequest(args=args, acceptSecrets=True)
        reply = self._call("Configure", request)
        self.accepts_secrets = bool(reply.acceptSecrets)

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


# -- the engine's steps ----------------------------------------------------------------------
#
# What the engine does around the provider hooks, from its own source (github.com/pulumi/pulumi
# at 1b5949891b3cefcb9974752b24a5ecef0acc86c8; SDK 3.272.0 for the Python side):
#
# - pkg/resource/deploy/step_generator.go, stepGenerator.generateStepsFromDiff: a resource
#   whose diff says "replace" is checked again with no old inputs (prov.Check with only News)
#   before its replacement is created. Without delete-before-replace the old resource gets a
#   delete-replaced step, which stepGenerator.GenerateDeletes issues only after the program
#   has registered everything, so it runs after every create and update of the run. With
#   delete-before-replace (the provider's DiffResponse.deleteBeforeReplace, overridden by
#   the user's ResourceOptions.delete_before_replace when set) the old resource is deleted
#   first. stepGenerator.calculateDependentReplacements also condemns dependents whose
#   *property* dependencies point at it; railnet's SDK passes declared values, not another
#   resource's outputs, so its resources have none and the emulator deletes only the one.
# - sdk/go/common/resource/plugin/provider_plugin.go, provider.Create and provider.Update:
#   in a preview, a provider that does not support previews (the dynamic provider's
#   Configure never claims it) is not called at all; the engine hands back the checked new
#   inputs as the outputs, and everything else stays unknown to the program.
# - pkg/resource/deploy/step.go, RefreshStep.Apply: Read with the old inputs and state, then
#   diffResource with the refreshed inputs and outputs in the "old" places and the old
#   inputs as the "new" ones; the inverted diff is the drift refresh shows.
# - provider_plugin.go, provider.Configure/Check/Create/Update/Read and annotateSecrets: the
#   dynamic provider answers acceptSecrets=false (pulumi/dynamic/__main__.py, Configure), so
#   properties are marshalled to it without secrets, and on the way back a property is
#   secret again only when the input of the same name was (objects recursively). The
#   program's additional_secret_outputs are applied on top (pkg/resource/deploy/
#   source_eval.go, resmon.RegisterResource).

SECRET_SIG_KEY = rpc._special_sig_key
SECRET_SIG = rpc._special_secret_sig


def secret(value: Any) -> dict[str, Any]:
    """A secret property value, in the SDK's wire form (what the monitor receives)."""
    return {SECRET_SIG_KEY: SECRET_SIG, "value": value}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG


def contains_secrets(value: Any) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secrets(v) for v in value)
    return False


def reveal(value: Any) -> Any:
    """The value as the engine marshals it to a provider without acceptSecrets."""
    if is_secret(value):
        return reveal(value.get("value"))
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def annotate_secrets(outs: dict[str, Any], ins: dict[str, Any]) -> dict[str, Any]:
    """provider_plugin.go, annotateSecrets: an output is secret when the input of the same
    name contains a secret; where both are objects, field by field."""
    result = dict(outs)
    for key, value in ins.items():
        if key not in result:
            continue
        out = result[key]
        if isinstance(out, dict) and isinstance(value, dict) and not is_secret(value):
            if not is_secret(out):
                result[key] = annotate_secrets(out, value)
        elif not is_secret(out) and contains_secrets(value):
            result[key] = secret(out)
    return result


def _mark_secret(outs: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    result = dict(outs)
    for name in names:
        if name in result and not is_secret(result[name]):
            result[name] = secret(result[name])
    return result


@dataclass
class ResourceState:
    id: str
    kind: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    """Secret values are kept in the SDK's wire form (``secret(...)``), as the checkpoint
    keeps them encrypted."""
    dependencies: tuple[str, ...] = ()
    """Names of the resources of the stack this one depends on."""


@dataclass(frozen=True)
class Goal:
    """One resource registration of a program: what the engine receives from the SDK."""

    kind: str
    name: str
    inputs: dict[str, Any]
    """May hold ``secret(...)`` values and :data:`Unknown`."""
    delete_before_replace: bool | None = None
    """The user's ResourceOptions.delete_before_replace; None when not set."""
    dependencies: tuple[str, ...] = ()
    additional_secret_outputs: tuple[str, ...] = ()


@dataclass
class ProgramStep:
    name: str
    kind: str
    op: str
    """create, update, replace, same, delete, failed (what ``pulumi up`` would do)."""
    replaces: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    """The resource's ``plan`` property after check: the network change."""
    checked: dict[str, Any] = field(default_factory=dict)
    """The inputs after check (after the second check, for a replacement)."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """The outputs the step leaves in the state (in a preview: the checked inputs)."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    delete_before_replace: bool = False


@dataclass
class Refreshed:
    """One resource after ``pulumi refresh``: the Read, then the Diff that shows drift."""

    name: str
    before: dict[str, Any]
    """The outputs in the state before."""
    after: dict[str, Any]
    """The outputs Read returned ({} when the resource is gone)."""
    drift: bool
    """The provider's Diff, run as RefreshStep.Apply runs it, found a change."""
    drift_replaces: list[str] = field(default_factory=list)


def operation(diff: Any) -> tuple[str, list[str]]:
    """What the engine does with a DiffResponse: (replace|update|same, replaced keys)."""
    if list(diff.replaces):
        return "replace", list(diff.replaces)
    if diff.changes == provider_pb2.DiffResponse.DIFF_SOME:
        return "update", []
    return "same", []


class Deployment:
    """One ``pulumi preview`` or ``pulumi up`` over a stack's state, as the engine runs it:
    ``register`` for each resource the program declares, then ``finish`` for the deletes."""

    def __init__(
        self,
        provider: DynamicProvider,
        state: dict[str, ResourceState],
        *,
        preview: bool,
        project: str = "railnet-test",
        stack: str = "test",
    ) -> None:
        self.provider = provider
        self.state = state
        self.preview = preview
        self.project = project
        self.stack = stack
        self.previous = list(state)
        """The snapshot's order: deletes run in its reverse (dependents first)."""
        self.seen: set[str] = set()
        self.condemned: dict[str, ResourceState] = {}
        """Replaced resources whose delete waits for the end of the run."""
        self._lock = threading.Lock()

    def urn(self, kind: str, name: str) -> str:
        return urn(kind, name, self.project, self.stack)

    def _check(self, u: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        checked, failures = self.provider.check(u, reveal(olds), reveal(news))
        return annotate_secrets(checked, news), failures

    def register(self, goal: Goal) -> ProgramStep:
        u = self.urn(goal.kind, goal.name)
        with self._lock:
            self.seen.add(goal.name)
            old = self.state.get(goal.name)
        checked, failures = self._check(u, old.inputs if old else {}, goal.inputs)
        if failures:
            return ProgramStep(goal.name, goal.kind, "failed", failures=failures)
        op, replaces, dbr = "create", [], False
        if old is not None:
            diff = self.provider.diff(old.id, u, reveal(old.outputs), reveal(checked))
            op, replaces = operation(diff)
            if op == "replace":
                # stepGenerator.generateStepsFromDiff: defaults are recomputed for the
                # replacement, with no old inputs.
                checked, failures = self._check(u, {}, goal.inputs)
                if failures:
                    return ProgramStep(goal.name, goal.kind, "failed", replaces, failures=failures)
                dbr = bool(diff.deleteBeforeReplace)
                if goal.delete_before_replace is not None:
                    dbr = goal.delete_before_replace
        plan = checked.get("plan")
        step = ProgramStep(
            goal.name,
            goal.kind,
            op,
            replaces,
            plan=[str(line) for line in plan] if isinstance(plan, list) else [],
            checked=checked,
            delete_before_replace=dbr,
        )
        if self.preview:
            # provider_plugin.go, provider.Create/Update with req.Preview: the checked
            # inputs are the outputs; a same step keeps the old outputs.
            step.outputs = dict(old.outputs) if op == "same" and old else dict(checked)
            return step
        if op == "same":
            assert old is not None
            new = ResourceState(old.id, goal.kind, checked, old.outputs, goal.dependencies)
        elif op == "update":
            assert old is not None
            outs = self.provider.update(old.id, u, reveal(old.outputs), reveal(checked))
            new = ResourceState(
                old.id, goal.kind, checked, self._outputs(outs, checked, goal), goal.dependencies
            )
        else:
            if op == "replace" and old is not None:
                if dbr:
                    self.provider.delete(old.id, u, reveal(old.outputs))
                else:
                    with self._lock:
                        self.condemned[goal.name] = old
            id_, outs = self.provider.create(u, reveal(checked))
            new = ResourceState(
                id_, goal.kind, checked, self._outputs(outs, checked, goal), goal.dependencies
            )
        with self._lock:
            self.state[goal.name] = new
        step.outputs = new.outputs
        return step

    @staticmethod
    def _outputs(outs: dict[str, Any], checked: dict[str, Any], goal: Goal) -> dict[str, Any]:
        return _mark_secret(annotate_secrets(outs, checked), goal.additional_secret_outputs)

    def finish(self) -> list[ProgramStep]:
        """stepGenerator.GenerateDeletes: after the program registered everything, delete
        what it no longer declares and the resources it replaced, dependents first."""
        steps = []
        for name in reversed(self.previous):
            old = self.condemned.get(name)
            removed = name not in self.seen
            if old is None and not removed:
                continue
            if removed:
                old = self.state[name]
            assert old is not None
            if not self.preview:
                self.provider.delete(old.id, self.urn(old.kind, name), reveal(old.outputs))
                if removed:
                    del self.state[name]
            if removed:
                steps.append(ProgramStep(name, old.kind, "delete"))
        self.condemned.clear()
        return steps


def refresh(
    provider: DynamicProvider,
    state: dict[str, ResourceState],
    project: str = "railnet-test",
    stack: str = "test",
) -> dict[str, Refreshed]:
    """``pulumi refresh``: RefreshStep.Apply for every resource (step.go): Read with the old
    inputs and state, then Diff with the refreshed side as "old" and the old inputs as "new"."""
    seen = {}
    for name, st in list(state.items()):
        u = urn(st.kind, name, project, stack)
        id_, outs, inputs = provider.read(st.id, u, reveal(st.outputs), reveal(st.inputs))
        if not id_:
            seen[name] = Refreshed(name, st.outputs, {}, True)
            del state[name]
            continue
        new_inputs = annotate_secrets(inputs, st.inputs) if inputs else st.inputs
        new_outputs = annotate_secrets(outs, st.outputs)
        diff = provider.diff(id_, u, reveal(new_outputs), reveal(st.inputs))
        op, replaces = operation(diff)
        seen[name] = Refreshed(name, st.outputs, new_outputs, op != "same", replaces)
        state[name] = ResourceState(id_, st.kind, new_inputs, new_outputs, st.dependencies)
    return seen


def checkpoint(state: dict[str, ResourceState], project: str, stack: str) -> str:
    """The state as a checkpoint file holds it: secrets encrypted, everything else in clear
    (pkg/resource/stack/deployment.go, SerializePropertyValue with the stack's encrypter).
    The stand-in ciphertext never holds the value."""

    def encode(value: Any) -> Any:
        if is_secret(value):
            return {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": "v1:encrypted"}
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [encode(v) for v in value]
        return value

    resources = [
        {
            "urn": urn(st.kind, name, project, stack),
            "custom": True,
            "id": st.id,
            "type": f"pulumi-python:dynamic/railnet:{st.kind}",
            "inputs": encode(st.inputs),
            "outputs": encode(st.outputs),
        }
        for name, st in state.items()
    ]
    return json.dumps({"version": 3, "deployment": {"resources": resources}}, indent=2)


class ProgramFailed(Exception):
    """A resource of the program failed check or an operation."""


def _kind(type_token: str) -> str:
    return type_token.rsplit(":", 1)[-1]


def _name(urn_: str) -> str:
    return urn_.rsplit("::", 1)[-1]


@dataclass
class ProgramResult:
    steps: list[ProgramStep]
    exports: dict[str, Any]


class _ForwardingMocks:
    """A ``pulumi.runtime.Mocks`` whose resources are created by the real provider process."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.options: dict[str, Any] = {}
        """The RegisterResource request of each resource, by name (its options)."""
        self.steps: list[ProgramStep] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
        kind = _kind(args.typ)
        name = args.name
        request = self.options.get(name)
        dbr = None
        if request is not None and request.deleteBeforeReplaceDefined:
            dbr = bool(request.deleteBeforeReplace)
        goal = Goal(
            kind,
            name,
            dict(args.inputs),
            delete_before_replace=dbr,
            dependencies=tuple(_name(d) for d in (request.dependencies if request else ())),
            additional_secret_outputs=tuple(request.additionalSecretOutputs if request else ()),
        )
        try:
            step = self.deployment.register(goal)
        except ProviderError as exc:
            self.errors.append(f"{kind} {name}: {exc.details.strip().splitlines()[-1]}")
            raise
        if step.failures:
            detail = "; ".join(reason for _, reason in step.failures)
            self.errors.append(f"{kind} {name}: {detail}")
            raise ProgramFailed(f"{kind} {name}: {detail}")
        with self._lock:
            self.steps.append(step)
        if self.deployment.preview:
            old = self.deployment.state.get(name)
            # A resource not created yet has no id in a preview.
            return (old.id if old and step.op in ("same", "update") else None), step.outputs
        return self.deployment.state[name].id, step.outputs


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

    deployment = Deployment(provider, state, preview=preview, project=project, stack=stack)
    mocks = _ForwardingMocks(deployment)

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: Any) -> tuple[str | None, dict[str, Any]]:
            return mocks.new_resource(args)

        def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
            return mocks.call(args)

    def remember_options(monitor: Any) -> None:
        # The mock monitor hands new_resource only the inputs; the engine also gets the
        # request's options (delete_before_replace, dependencies, additional secrets).
        register = monitor.RegisterResource

        def registering(request: Any) -> Any:
            mocks.options[request.name] = request
            return register(request)

        monitor.RegisterResource = registering

    def body() -> None:
        # A fresh context: the SDK keeps its root Stack in a ContextVar, so every run
        # gets a new stack, as every `pulumi up` does.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            settings.SETTINGS.rpc_manager.clear()
            settings.SETTINGS.outputs.clear()
            pulumi.runtime.set_mocks(Mocks(), project=project, stack=stack, preview=preview)
            remember_options(settings.SETTINGS.monitor)

            # A plain function: run_pulumi_func (pulumi/runtime/stack.py) awaits what it
            # returns in 3.272, but at the declared floor (3.219) only calls it.
            def program_run() -> None:
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
    old_secret_keys = os.environ.get("PULUMI_CONFIG_SECRET_KEYS")
    os.environ["PULUMI_CONFIG"] = json.dumps(config or {})
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(sorted(provider.secret_keys))
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
        if old_secret_keys is None:
            os.environ.pop("PULUMI_CONFIG_SECRET_KEYS", None)
        else:
            os.environ["PULUMI_CONFIG_SECRET_KEYS"] = old_secret_keys
    steps = [*mocks.steps, *deployment.finish()]
    return ProgramResult(steps=steps, exports=exports)


def destroy(
    provider: DynamicProvider,
    state: dict[str, ResourceState],
    project: str = "railnet",
    stack: str = "dev",
) -> None:
    """``pulumi destroy``: delete every resource, dependents first."""
    for name in reversed(list(state)):
        old = state[name]
        provider.delete(old.id, urn(old.kind, name, project, stack), reveal(old.outputs))
        del state[name]  # as the engine does: a failed delete stays in the state
