"""The agent client under the engine's threads: one channel per client, however many
threads ask for it at once, and a fresh one after the node stopped answering."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from railnet.control.client import AgentAddress, AgentClient
from railnet.core.errors import AgentUnreachable

pytestmark = pytest.mark.agent


def test_threads_that_race_for_the_channel_share_one(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = grpc.insecure_channel

    def slow_channel(address: str, *args: Any, **kwargs: Any) -> grpc.Channel:
        time.sleep(0.05)  # widen the window in which a second thread could also make one
        channel = real(address, *args, **kwargs)
        made.append(channel)
        return channel

    monkeypatch.setattr(grpc, "insecure_channel", slow_channel)
    client = AgentClient(AgentAddress("node-1", "unix:/nonexistent/agent.sock", None))
    start = threading.Barrier(8)

    def stub(_: int) -> object:
        start.wait()
        return client._stub()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(stub, range(8)))
    client.close()
    assert len(made) == 1


def test_a_failed_call_drops_the_channel_so_the_next_call_reconnects(tmp_path: Any) -> None:
    client = AgentClient(AgentAddress("node-1", f"unix:{tmp_path}/none.sock", None), timeout=2)
    with pytest.raises(AgentUnreachable) as failed:
        client.document("e1")
    assert "node-1" in str(failed.value) and "none.sock" in str(failed.value)
    assert client._channel is None
