"""The checked-in gRPC stubs are exactly what ``make proto`` generates from agent.proto."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

grpc_tools = pytest.importorskip(
    "grpc_tools", reason="grpcio-tools (the dev extra) is not installed"
)
from grpc_tools import protoc  # noqa: E402

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROTO = "railnet/agent/v1/agent.proto"
GENERATED = ("agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py")


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    proto_root = ROOT / "provider" / "proto"
    include = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(proto_root / PROTO),
        ]
    )
    assert status == 0, "protoc failed on agent.proto"
    stale = [
        name
        for name in GENERATED
        if not filecmp.cmp(
            tmp_path / "railnet/agent/v1" / name,
            ROOT / "provider/railnet/agent/v1" / name,
            shallow=False,
        )
    ]
    assert not stale, f"stale generated stubs {stale}: run 'make proto' and commit the result"
