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
