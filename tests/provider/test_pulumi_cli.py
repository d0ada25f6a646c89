"""examples/basic through the real Pulumi CLI on a local file backend, where one exists.

The CLI cannot be installed on machines without its download host, so this test reports
itself skipped there; the engine-faithful harness covers the same protocol in every run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..linux.conftest import missing_capability, running_lab

pytestmark = pytest.mark.provider

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("pulumi") is None, reason="no pulumi binary on PATH")
@pytest.mark.skipif(missing_capability() is not None, reason=f"{missing_capability()}")
def test_basic_example_with_the_pulumi_cli(tmp_path: Path) -> None:
    work = tmp_path / "basic"
    shutil.copytree(ROOT / "examples" / "basic", work)
    backend = tmp_path / "state"
    backend.mkdir()
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{backend}",
        "PULUMI_CONFIG_PASSPHRASE": "",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_PYTHON_CMD": str(Path(os.sys.executable)),
    }

    def pulumi(*args: str) -> str:
        r = subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    with running_lab(3) as net:
        pulumi("stack", "init", "test")
        pulumi("config", "set", "railnet:cluster", str(net.lab.cluster_file))
        pulumi("preview", "--diff")
        pulumi("up", "--yes", "--skip-preview")
        outputs = json.loads(pulumi("stack", "output", "--json"))
        assert outputs["api_host"] == "api.railway.internal"
        pulumi("destroy", "--yes", "--skip-preview")
