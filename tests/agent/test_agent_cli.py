"""`railnet agent` refuses to serve without mutual TLS unless told --insecure, and then
says so loudly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.agent


def agent(tmp_path: Path, *extra: str) -> list[str]:
    """`railnet agent` for node-1 on a unix socket in ``tmp_path``, plus ``extra``."""
    return [
        sys.executable, "-m", "railnet", "agent", "--node", "node-1",
        "--listen", f"unix:{tmp_path}/a.sock", "--state-dir", str(tmp_path / "state"),
        "--endpoint-host", "198.18.0.1", "--no-dns", *extra,
    ]  # fmt: skip


def test_agent_without_tls_material_refuses_to_start(tmp_path: Path) -> None:
    r = subprocess.run(
        agent(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "--tls-ca, --tls-cert, --tls-key" in r.stderr and "--insecure" in r.stderr
    assert not (tmp_path / "a.sock").exists()


def test_insecure_agent_says_so_loudly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        agent(
            tmp_path,
            "--insecure",
            "--wireguard",
            "userspace",
            "--netns-prefix",
            f"rt{os.getpid()}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "a.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "a.sock").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "INSECURE: serving plaintext gRPC with no client authentication" in out
