"""The one table from railnet errors to gRPC status codes, and back for clients."""

from __future__ import annotations

import grpc

from railnet.core.errors import (
    AgentUnreachable,
    DamagedState,
    DataPlaneError,
    EnvironmentNotFound,
    InvalidField,
    RailnetError,
    StaleGeneration,
    StaleIdentity,
)

# Most specific first: the first matching class wins.
ERROR_CODES: tuple[tuple[type[RailnetError], grpc.StatusCode], ...] = (
    (StaleIdentity, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (StaleGeneration, grpc.StatusCode.ABORTED),
    (EnvironmentNotFound, grpc.StatusCode.NOT_FOUND),
    (DamagedState, grpc.StatusCode.DATA_LOSS),
    (DataPlaneError, grpc.StatusCode.INTERNAL),
    (AgentUnreachable, grpc.StatusCode.UNAVAILABLE),
    (RailnetError, grpc.StatusCode.UNKNOWN),
)


def code_for(error: RailnetError) -> grpc.StatusCode:
    for cls, code in ERROR_CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.UNKNOWN
