"""The gRPC face of the agent: translate messages, call the reconciler, map errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from railnet.agent.authz import AuditEntry, audit_log, caller
from railnet.agent.reconciler import Reconciler
from railnet.agent.status_codes import code_for
from railnet.agent.v1 import agent_pb2 as pb
from railnet.agent.v1 import agent_pb2_grpc as pb_grpc
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import DamagedState, RailnetError

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
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

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
        )

    def ApplyDocument(self, request: Any, context: grpc.ServicerContext) -> Any:
        doc = _guard(context, lambda: EnvironmentDocument.from_json(request.document_json))
        generation, changes = self._audited(
            context,
            "ApplyDocument",
            doc.id,
            lambda: self.reconciler.apply_document(doc, request.expected_generation),
            lambda applied: applied[0],
        )
        return pb.ApplyDocumentResponse(generation=generation, changes=changes)

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
            return pb.GetDocumentResponse(found=False)
        return pb.GetDocumentResponse(found=True, document_json=doc.to_json())

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
        response = pb.StatusResponse(node=self.reconciler.node)
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
