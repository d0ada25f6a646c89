"""`railnet agent` refuses to serve without mutual TLS unless told --insecure, and then
says so loudly."""

from __future__ import annotations

import json
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


def test_an_agent_runs_from_its_config_file_and_flags_override_it(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'node = "node-1"\n'
        f'listen = ["unix:{tmp_path}/a.sock"]\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        'endpoint_host = "198.18.0.1"\n'
        "insecure = true\n"
        "dns = false\n"
        'wireguard = "userspace"\n'
        f'netns_prefix = "rc{os.getpid()}"\n'
        'log_format = "text"\n'
    )
    cmd = [sys.executable, "-m", "railnet", "agent", "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--log-format", "json"],  # the flag wins over the file
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
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    assert {"time", "level", "logger", "node", "message"} <= set(lines[0])
    assert any("INSECURE" in line["message"] for line in lines)
    assert all(line["node"] == "node-1" for line in lines)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--listen", "bogus"], "--listen"),
        (["--endpoint-host", "notanip"], "--endpoint-host"),
        (["--log-level", "chatty"], "--log-level"),
        (["--reconcile-interval", "-5"], "--reconcile-interval"),
        (["--metrics-listen", "nowhere"], "--metrics-listen"),
    ],
)
def test_bad_settings_get_one_line_naming_the_flag_and_value(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    r = subprocess.run(
        [*agent(tmp_path, "--insecure"), *flags], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr
    assert says in r.stderr and flags[1] in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
