"""What the linux and provider tiers need from the machine."""

from __future__ import annotations

import os
import shutil


def missing_capability() -> str | None:
    """Why real namespaces, wireguard-go, etcd and agents cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    for tool in ("wireguard-go", "ip", "ping", "nsenter", "setsid", "etcd"):
        if shutil.which(tool) is None:
            return f"needs {tool} (run 'make setup')"
    return None
