"""Who may call what: the one per-RPC role table, enforced by a server interceptor, and the
audit line every mutating call writes.

The caller's role comes from its certificate (a ``spiffe://railnet/<role>/<name>`` URI; see
``railnet.pki.certs.Role``). TLS has already proved the certificate is the cluster CA's; this
decides what its holder may do. A denied call is refused with PERMISSION_DENIED, naming the
role and the RPC, before the servicer sees it, so it changes nothing.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from railnet.pki.certs import Holder, Role, holder_of

SERVICE = "railnet.agent.v1.NodeAgent"

RPC_ROLES: dict[str, frozenset[Role]] = {
    "EnsureEnvironment": frozenset({Role.PROVIDER}),
    "ApplyDocument": frozenset({Role.PROVIDER}),
    "DeleteEnvironment": frozenset({Role.PROVIDER}),
    "GetDocument": frozenset({Role.PROVIDER, Role.OPERATOR}),
    "Status": frozenset({Role.PROVIDER, Role.OPERATOR}),
}
"""RPC → the roles that may call it. ``node`` serves and calls nothing; an RPC missing
here is refused to everyone."""
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_ROLES: dict[str, frozenset[Role]] = {
    "Check": frozenset({Role.PROVIDER, Role.OPERATOR}),
    "Watch": frozenset({Role.PROVIDER, Role.OPERATOR}),
}
"""The standard health service on the agent's port: for whoever may read."""


MUTATING = frozenset({"EnsureEnvironment", "ApplyDocument", "DeleteEnvironment"})

audit_log = logging.getLogger("railnet.audit")

ANONYMOUS = Holder(role=None, name="", subject="(plaintext: --insecure)", serial=0)


@functools.lru_cache(maxsize=256)
def _holder(pem: bytes) -> Holder:
    return holder_of(pem)


def caller(context: grpc.ServicerContext) -> Holder:
    """The certificate holder behind a call (``ANONYMOUS`` on a plaintext server)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return ANONYMOUS
    return _holder(bytes(pems[0]))


@dataclass(frozen=True)
class AuditEntry:
    """One mutating call, as the audit log records it."""

    rpc: str
    caller: Holder
    env_id: str
    generation_before: int
    generation_after: int
    result: str
    """``ok``, or the status code and message of the refusal."""

    def line(self) -> str:
        return json.dumps(
            {
                "audit": self.rpc,
                "caller": self.caller.subject,
                "role": self.caller.role.value if self.caller.role else None,
                "serial": format(self.caller.serial, "x"),
                "env_id": self.env_id,
                "generation_before": self.generation_before,
                "generation_after": self.generation_after,
                "result": self.result,
            },
            sort_keys=True,
        )


class RoleInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call unless the caller's role may make it (``RPC_ROLES``).

    ``enforce=False`` (a plaintext ``--insecure`` agent, which has no certificates to read)
    lets every call through.
    """

    def __init__(
        self, enforce: bool = True, revoked: Callable[[], frozenset[int]] = frozenset
    ) -> None:
        self.enforce = enforce
        self.revoked = revoked

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None or not self.enforce:
            return handler
        service, _, rpc = details.method.lstrip("/").partition("/")
        table = {SERVICE: RPC_ROLES, HEALTH_SERVICE: HEALTH_ROLES}.get(service, {})
        allowed = table.get(rpc, frozenset())
        streaming = handler.unary_unary is None
        inner = handler.unary_stream if streaming else handler.unary_unary
        if inner is None:  # no streaming-in RPC exists: refuse whatever it is
            return None

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            holder = caller(context)
            if holder.serial in self.revoked():
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"certificate {format(holder.serial, 'x')} ({holder.subject}) is revoked",
                )
            if holder.role not in allowed:
                role = holder.role.value if holder.role else "none"
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"role {role} ({holder.subject}) may not call {rpc}; it needs one of: "
                    f"{', '.join(sorted(r.value for r in allowed)) or 'no role may'}",
                )
            return inner(request, context)

        make = (
            grpc.unary_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return make(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
