"""The gRPC face of the agent: translate messages, call the reconciler, map errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from railnet.agent.authz import AuditEntry, audit_log, caller
from railnet.agent.reconciler import Reconciler
from railnet.agent.status_codes import code_for
from railnet.agent.v1 import agent_pb2 as pb
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.core.delta import DELTA_VERSION, DocumentDelta
from railnet.core.document import READABLE_FORMATS, EnvironmentDocument
from railnet.core.errors import DamagedState, InvalidField, RailnetError

log = logging.getLogger("railnet.agent")
R = TypeVar("R")


def _guard(context: grpc.ServicerContext, call: Callable[[], R]) -> R:
    try:
        return call()
    except RailnetError as exc:
        context.abort(code_for(exc), str(exc))
    except Exception as exc:
        log.exception("unexpected failure")
        context.abort(grpc.StatusCode.INTERNAL, f"agent failure: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")  # context.abort raises


class NodeAgentServicer(pb_grpc.NodeAgentServicer):  # type: ignore[misc]
    def __init__(
        self,
        reconciler: Reconciler,
        formats: tuple[int, ...] = READABLE_FORMATS,
        on_apply: Callable[[float, str], None] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.formats = formats
        """The document formats this agent accepts (and says it reads, in its replies)."""
        self.on_apply = on_apply
        """Told each ApplyDocument's duration (seconds) and result (``ok`` or a code)."""

    def _held(self, env_id: str) -> int:
        try:
            doc = self.reconciler.document(env_id)
        except RailnetError:
            return 0
        return doc.generation if doc else 0

    def _audited(
        self,
        context: grpc.ServicerContext,
        rpc: str,
        env_id: str,
        call: Callable[[], R],
        after: Callable[[R], int],
    ) -> R:
        """Run a mutating call (errors mapped as ``_guard`` maps them) and write its audit
        line, whatever the outcome."""
        who = caller(context)
        before = self._held(env_id)

        def audit(generation: int, result: str) -> None:
            audit_log.info(AuditEntry(rpc, who, env_id, before, generation, result).line())

        def audited() -> R:
            try:
                value = call()
            except RailnetError as exc:
                audit(self._held(env_id), f"{code_for(exc).name}: {exc}")
                raise
            except Exception as exc:
                audit(self._held(env_id), f"INTERNAL: {type(exc).__name__}")
                raise
            audit(after(value), "ok")
            return value

        return _guard(context, audited)

    def EnsureEnvironment(self, request: Any, context: grpc.ServicerContext) -> Any:
        env_id = request.env_id
        rotation = request.key_rotation if request.HasField("key_rotation") else None
        key, endpoint = self._audited(
            context,
            "EnsureEnvironment",
            env_id,
            lambda: self.reconciler.ensure(env_id, rotation),
            lambda _: self._held(env_id),
        )
        return pb.EnsureEnvironmentResponse(
            node=self.reconciler.node,
            public_key=key,
            endpoint=endpoint,
            key_rotation=rotation or "",
            document_formats=self.formats,
        )

    def ApplyDocument(self, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        result = "INVALID_ARGUMENT"
        try:
            doc = _guard(context, lambda: self._requested(request))
            result = "INTERNAL"

            def apply() -> tuple[int, list[str]]:
                nonlocal result
                try:
                    applied = self.reconciler.apply_document(doc, request.expected_generation)
                except RailnetError as exc:
                    result = code_for(exc).name
                    raise
                result = "ok"
                return applied

            generation, changes = self._audited(
                context, "ApplyDocument", doc.id, apply, lambda applied: applied[0]
            )
        finally:
            if self.on_apply is not None:
                self.on_apply(time.perf_counter() - started, result)
        return pb.ApplyDocumentResponse(generation=generation, changes=changes)

    def _requested(self, request: Any) -> EnvironmentDocument:
        """The document an ApplyDocument asks for: the whole one, or the one its delta
        makes of the document held here."""
        if request.delta_json:
            if request.document_json:
                raise InvalidField(
                    "document_json", "...", "give the whole document or a delta, not both"
                )
            delta = DocumentDelta.from_json(request.delta_json)
            return self.reconciler.resolve_delta(delta, self.formats)
        return EnvironmentDocument.from_json(request.document_json, self.formats)

    def GetDocument(self, request: Any, context: grpc.ServicerContext) -> Any:
        def held() -> EnvironmentDocument | None:
            try:
                return self.reconciler.document(request.env_id)
            except DamagedState as exc:
                # As if nothing were held: the writer's next apply replaces the file.
                log.error("environment %s: %s", request.env_id, exc)
                return None

        doc = _guard(context, held)
        if doc is None:
            return pb.GetDocumentResponse(
                found=False, document_formats=self.formats, delta_version=DELTA_VERSION
            )
        if request.known_digest and request.known_digest == doc.digest:
            return pb.GetDocumentResponse(
                found=True,
                unchanged=True,
                digest=doc.digest,
                generation=doc.generation,
                document_formats=self.formats,
                delta_version=DELTA_VERSION,
            )
        return pb.GetDocumentResponse(
            found=True,
            document_json=doc.to_json(),
            digest=doc.digest,
            generation=doc.generation,
            document_formats=self.formats,
            delta_version=DELTA_VERSION,
        )

    def DeleteEnvironment(self, request: Any, context: grpc.ServicerContext) -> Any:
        existed = self._audited(
            context,
            "DeleteEnvironment",
            request.env_id,
            lambda: self.reconciler.delete(request.env_id, request.expected_generation),
            lambda _: 0,
        )
        return pb.DeleteEnvironmentResponse(existed=existed)

    def Status(self, request: Any, context: grpc.ServicerContext) -> Any:
        reports = _guard(context, lambda: self.reconciler.status(request.env_id))
        response = pb.StatusResponse(node=self.reconciler.node, document_formats=self.formats)
        for doc in _guard(context, lambda: self._documents(request.env_id)):
            response.documents.add(
                env_id=doc.id,
                project=doc.project,
                environment=doc.environment,
                generation=doc.generation,
                hosted=doc.node(self.reconciler.node) is not None,
                format=doc.format,
            )
        for r in reports:
            env = response.environments.add(
                env_id=r.env_id,
                project=r.project,
                environment=r.environment,
                generation=r.generation,
                netns=r.netns,
                listen_port=r.listen_port,
                public_key=r.public_key,
                drift=list(r.drift),
                lost=list(r.lost),
            )
            for p in r.peers:
                env.peers.add(
                    node=p.node,
                    public_key=p.public_key,
                    endpoint=p.endpoint,
                    last_handshake=p.last_handshake,
                    rx_bytes=p.rx_bytes,
                    tx_bytes=p.tx_bytes,
                    allowed_ips=list(p.allowed_ips),
                )
            if r.local is not None:
                for i in r.local.instances:
                    env.instances.add(
                        service=i.service,
                        service_id=i.service_id,
                        index=i.index,
                        netns=i.netns,
                        ipv4=i.ipv4 or "",
                        ipv6=i.ipv6,
                    )
            for name, rtype, value, ttl in r.records:
                env.records.add(name=name, type=rtype, value=value, ttl=ttl)
        return response

    def _documents(self, env_id: str) -> list[EnvironmentDocument]:
        """Every document the node holds (hosted or only kept); damaged ones are skipped
        (``Status`` reports them as drift)."""
        ids = [env_id] if env_id else self.reconciler.state.document_ids()
        held = []
        for each in ids:
            try:
                doc = self.reconciler.document(each)
            except DamagedState:
                continue
            if doc is not None:
                held.append(doc)
        return held
