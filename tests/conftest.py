"""Tiers: tests under tests/linux and tests/provider build real kernel objects. On a machine
that cannot (not root, no /dev/net/tun, no wireguard-go) they are skipped with the reason,
never counted as passed."""

from __future__ import annotations

import pytest

from .capabilities import missing_capability

NEEDS_MACHINE = ("/tests/linux/", "/tests/provider/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = missing_capability()
    for item in items:
        path = str(item.path)
        if reason and any(part in path for part in NEEDS_MACHINE):
            item.add_marker(pytest.mark.skip(reason=f"skipped: this machine {reason}"))
