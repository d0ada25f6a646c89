"""The agent's side of the resolver's control socket, against a resolver that predates
``update``: the agent falls back to whole views and never restarts it."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.agent.resolver import PROTOCOL, ResolverProcess
from railnet.core.dns import ResolverView, ViewChange
from tests.documents import make_document

pytestmark = pytest.mark.agent


class OlderResolver:
    """A control socket that speaks protocol 1 without ``update``, as a resolver started by
    an older agent does; it records the ops it was asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ops: list[str] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: socket.socket) -> None:
        with peer, peer.makefile("rb") as reader:
            for line in reader:
                op = json.loads(line)["op"]
                self.ops.append(op)
                if op == "hello":
                    reply = {"ok": True, "pid": os.getpid(), "protocol": PROTOCOL, "views": {}}
                elif op == "apply":
                    reply = {"ok": True}
                else:
                    reply = {"ok": False, "error": f"unknown request {op!r}"}
                peer.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def older() -> Iterator[OlderResolver]:
    # unix socket paths must stay short (108 bytes): pytest's tmp_path may not be.
    where = Path(tempfile.mkdtemp(prefix="rn-resolver-", dir="/tmp"))
    resolver = OlderResolver(where / "control.sock")
    try:
        yield resolver
    finally:
        resolver.close()
        resolver.path.unlink(missing_ok=True)
        where.rmdir()


def test_a_resolver_without_update_is_kept_and_sent_whole_views(older: OlderResolver) -> None:
    backend = ResolverProcess(older.path)
    try:
        backend.start()
        assert backend.adopted  # protocol 1: the running resolver is kept, not replaced
        first = make_document({"api": 1})
        second = make_document({"api": 1, "db": 1}, generation=2)
        backend.apply(ResolverView.from_document(first, None))
        change = ViewChange.between(first, second, None)
        assert change is not None
        assert backend.update(change) is False
        # Refused, the view it held is forgotten: the whole view is sent, not skipped.
        backend.apply(ResolverView.from_document(first, None))
        assert [op for op in older.ops if op != "hello"] == ["apply", "update", "apply"]
    finally:
        backend.close()
