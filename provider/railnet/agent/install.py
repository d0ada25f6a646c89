"""Installing the agent on a real node: its systemd unit and a config skeleton.

``railnet node install`` writes both and enables nothing unless asked (``--enable``).

Why the unit looks the way it does:

* ``KillMode=process``: stopping or restarting the unit stops the agent only. wireguard-go
  and the resolver run detached in sessions of their own but in the unit's cgroup, and the
  default (``control-group``) would kill them with it: every agent restart would take the
  data plane down.
* No mount-namespace sandboxing (``ProtectSystem=``, ``PrivateTmp=``, ``ReadWritePaths=``
  and friends): each of them gives the service a mount namespace of its own, and the
  network namespaces the agent bind-mounts under ``/run/netns`` would then be invisible to
  the rest of the node (``ip netns exec``, ``railnet exec``).
* Capabilities bounded to what it uses: ``CAP_NET_ADMIN`` (links, routes, WireGuard,
  ``/dev/net/tun``), ``CAP_SYS_ADMIN`` (``setns`` and the namespace bind mounts) and
  ``CAP_NET_BIND_SERVICE`` (DNS on port 53 inside environment namespaces).
* ``StateDirectory=railnet`` (``/var/lib/railnet``, 0700) and ``RuntimeDirectory=railnet``
  (``/run/railnet``, the local socket ``railnet exec`` uses), kept across restarts.
* ``Restart=always``: the agent is the control plane; it comes back and adopts what runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from railnet.agent.config import DEFAULT_CONFIG, DEFAULT_SOCKET, DEFAULT_STATE_DIR, render_config
from railnet.core.errors import RailnetError
from railnet.linux.files import write_atomic

UNIT_NAME = "railnet-agent.service"
UNIT_DIR = Path("/etc/systemd/system")


def railnet_command() -> str:
    """The ``railnet`` executable the unit runs: the one on PATH, else this interpreter's."""
    found = shutil.which("railnet")
    if found:
        return str(Path(found).resolve())
    return f"{sys.executable} -m railnet"


def render_unit(config: Path = DEFAULT_CONFIG, command: str | None = None) -> str:
    command = command or railnet_command()
    return f"""# railnet node agent. Written by 'railnet node install'; see docs/operating.md.
[Unit]
Description=railnet node agent (WireGuard meshes, namespaces and DNS of this node)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={command} agent --config {config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
# Stop the agent only: wireguard-go and the resolver are the data plane and stay up.
KillMode=process
StateDirectory=railnet
StateDirectoryMode=0700
RuntimeDirectory=railnet
RuntimeDirectoryPreserve=yes
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
LimitNOFILE=65536
# No ProtectSystem/PrivateTmp/ReadWritePaths: a private mount namespace would hide the
# network namespaces the agent mounts under /run/netns from the rest of the node.

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Installed:
    unit: Path
    config: Path
    config_written: bool
    """False when a config file was already there (it is never overwritten)."""
    enabled: bool


def install(
    *,
    node: str | None,
    endpoint_host: str | None,
    config: Path = DEFAULT_CONFIG,
    unit_dir: Path = UNIT_DIR,
    tls_dir: Path = Path("/etc/railnet/tls"),
    enable: bool = False,
    command: str | None = None,
) -> Installed:
    """Write the unit and, when none exists, a config skeleton; enable and start the unit
    only with ``enable``."""
    unit = unit_dir / UNIT_NAME
    write_atomic(unit, render_unit(config, command).encode(), 0o644)
    written = False
    if not config.exists():
        settings: dict[str, object] = {
            "listen": [f"unix:{DEFAULT_SOCKET}"],
            "state_dir": str(DEFAULT_STATE_DIR),
            "tls_ca": str(tls_dir / "ca.pem"),
            "tls_cert": str(tls_dir / f"{node or 'NODE'}.pem"),
            "tls_key": str(tls_dir / f"{node or 'NODE'}-key.pem"),
        }
        if node:
            settings["node"] = node
        if endpoint_host:
            settings["endpoint_host"] = endpoint_host
        write_atomic(config, render_config(settings).encode(), 0o600)
        written = True
    if enable:
        for args in (["daemon-reload"], ["enable", "--now", UNIT_NAME]):
            done = subprocess.run(["systemctl", *args], capture_output=True, text=True)
            if done.returncode != 0:
                raise RailnetError(
                    f"systemctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout}"
                )
    return Installed(unit, config, written, enable)
