"""The real ``python -m railnet`` entry point: a failure is one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.agent


def test_the_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "RAILNET_AGENT_CONFIG": str(tmp_path / "none.toml")}
    r = subprocess.run(
        [sys.executable, "-m", "railnet", "exec", "a/b/c", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 125 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "none.toml" in r.stderr


def test_a_trial_of_a_program_that_fails_names_the_program_not_railnet(tmp_path: Path) -> None:
    program = tmp_path / "program"
    program.mkdir()
    (program / "__main__.py").write_text("raise ValueError('my typo')\n")
    cluster = tmp_path / "cluster.json"
    cluster.write_text('{"nodes": [{"name": "node-1", "agent": "127.0.0.1:9"}]}')
    r = subprocess.run(
        [sys.executable, "-m", "railnet", "up", str(program), "--cluster", str(cluster)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "raised ValueError: my typo" in r.stderr and "a bug in railnet" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
