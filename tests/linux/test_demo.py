"""The README's main command, end to end: `railnet demo` passes every check and leaves the
machine as it found it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from railnet.linux.netns import list_netns

pytestmark = pytest.mark.linux


def test_railnet_demo_passes_and_cleans_up() -> None:
    before = set(list_netns())
    r = subprocess.run(
        [sys.executable, "-m", "railnet", "demo"], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "railnet demo: all checks passed" in r.stdout
    assert "[FAIL]" not in r.stdout
    for phrase in ("api → worker → database", "does not resolve in staging", "pulumi preview"):
        assert phrase in r.stdout
    assert set(list_netns()) <= before
