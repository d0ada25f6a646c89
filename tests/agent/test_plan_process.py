"""``railnet plan`` as a real process: another hash seed and working directory than the
tests, the same bytes out, the same exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_plan_cli import GOLDEN, fixture, only_line

pytestmark = pytest.mark.agent


def test_as_a_subprocess(tmp_path: Path) -> None:
    # Another hash seed and working directory than this process: output must not care.
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    done = subprocess.run(
        [sys.executable, "-m", "railnet", "plan", str(fixture("create")), "--format", "json"],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == (GOLDEN / "create.json").read_bytes()

    broken = subprocess.run(
        [sys.executable, "-m", "railnet", "plan", str(fixture("truncated"))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert (broken.returncode, broken.stdout) == (2, "")
    assert only_line(broken.stderr).startswith(f"railnet plan: {fixture('truncated')} is truncated")
