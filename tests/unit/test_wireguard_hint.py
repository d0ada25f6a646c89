"""A wireguard-go that cannot open its control socket: the error says why, when its log
does."""

from __future__ import annotations

from pathlib import Path

import pytest

from railnet.agent.wireguard import _uapi_hint

pytestmark = pytest.mark.unit


def test_running_out_of_inotify_instances_names_the_sysctl(tmp_path: Path) -> None:
    log = tmp_path / "wg0.log"
    log.write_text(
        "ERROR: (wg0) 2026/12/03 12:09:38 Failed to listen on uapi socket: too many open files\n"
    )
    hint = _uapi_hint(log)
    assert "fs.inotify.max_user_instances" in hint and "sysctl -w" in hint


@pytest.mark.parametrize("text", ["", "ERROR: Failed to create TUN device: permission denied\n"])
def test_other_failures_get_no_hint(tmp_path: Path, text: str) -> None:
    log = tmp_path / "wg0.log"
    log.write_text(text)
    assert _uapi_hint(log) == ""
    assert _uapi_hint(tmp_path / "missing.log") == ""
