"""The README's main command, end to end: `railnet demo` passes every check and leaves the
machine as it found it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from railnet.linux.netns import list_netns

pytestmark = pytest.mark.linux


def test_railnet_demo_passes_and_cleans_up() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "railnet", "demo"], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "railnet demo: all checks passed" in r.stdout
    assert "[FAIL]" not in r.stdout
    for phrase in ("api → worker → database", "does not resolve in staging", "pulumi preview"):
        assert phrase in r.stdout
    # Its own lab's namespaces are gone (other labs may run on the machine meanwhile).
    found = re.search(r"lab ([0-9a-f]+): 3 nodes ready; cluster file (\S+)/cluster.json", r.stdout)
    assert found is not None, r.stdout[-2000:]
    assert not [n for n in list_netns() if n.startswith(f"rl{found.group(1)}")]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert found.group(2) not in processes  # no agent or resolver of its lab runs on
