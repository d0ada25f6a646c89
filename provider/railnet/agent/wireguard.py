"""WireGuard devices: userspace (wireguard-go + UAPI) and kernel (pyroute2), one interface.

Both backends create the device in the host namespace, so that its UDP socket binds the
underlay at the environment's port, then move it into the environment namespace and name
it ``wg0`` there. With wireguard-go the process and its UAPI socket
(``/var/run/wireguard/<ifname>.sock``) stay in the host namespace and keep working after the
TUN device moves. Processes start in their own session, so they outlive the agent: the
agent is the control plane, not the data plane.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyroute2 import IPRoute, NetlinkError

from railnet.agent.backends import WireGuardBackend
from railnet.core.errors import DataPlaneError
from railnet.core.local import LocalEnvironment
from railnet.core.names import MESH_MTU, WG_LINK
from railnet.core.reconcile import ObservedDevice, ObservedPeer, RemovePeer, SetPeer
from railnet.linux.netns import netlink, netns_exists, netns_fd, run_in_netns

UAPI_DIR = Path("/var/run/wireguard")
KEEPALIVE = 0
"""No persistent keepalive. A keepalive is sent the moment a peer is configured, while the
other node may not know this one yet; its handshake is then dropped and WireGuard waits
5 s (REKEY_TIMEOUT) to retry, which would make the first connection after an apply slow.
Without it the first packet after the apply starts the handshake, once both ends agree.
The nodes reach each other directly on the underlay, so no NAT mapping needs keeping."""
NUDGE = 1
"""The keepalive interval a peer gets for a moment when it replaces a peer of the same node
under a rotated key (``SetPeer.handshake``): turning keepalive on sends one at once, so the
sessions of the new keys start now. Both ends try as they apply; the one that applies last
reaches a peer that already knows its new key, so the mesh never waits for a retry
(REKEY_TIMEOUT, 5 s) to carry traffic again."""


# -- keys ------------------------------------------------------------------------------


def generate_private_key() -> str:
    raw = X25519PrivateKey.generate().private_bytes_raw()
    return base64.b64encode(raw).decode()


def public_key_of(private_key: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _hex(key_b64: str) -> str:
    return base64.b64decode(key_b64).hex()


def _b64(key_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(key_hex)).decode()


# -- the UAPI protocol -------------------------------------------------------------------


class Uapi:
    """A client of wireguard-go's configuration socket (the cross-platform UAPI)."""

    def __init__(self, ifname: str, directory: Path = UAPI_DIR) -> None:
        self.path = directory / f"{ifname}.sock"

    def _exchange(self, request: str) -> list[tuple[str, str]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.path))
            sock.sendall(request.encode())
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        # One pass: a device's reply has a line per allowed IP of every peer.
        result: list[tuple[str, str]] = []
        errno_value = "0"
        for line in data.decode().split("\n"):
            key, sep, value = line.partition("=")
            if sep:
                result.append((key, value))
                if key == "errno":
                    errno_value = value
        if errno_value != "0":
            raise DataPlaneError(
                f"wireguard-go at {self.path} refused a change (errno {errno_value})"
            )
        return result

    def alive(self) -> bool:
        try:
            self._exchange("get=1\n\n")
        except (OSError, DataPlaneError):
            return False
        return True

    def pid(self) -> int:
        """The wireguard-go process behind the socket (from the socket's peer credentials)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(self.path))
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _, _ = struct.unpack("3i", creds)
        return int(pid)

    def get(self) -> ObservedDevice:
        device: dict[str, str] = {}
        peers: list[dict[str, Any]] = []
        for key, value in self._exchange("get=1\n\n"):
            if key == "public_key":
                peers.append({"public_key": _b64(value), "allowed": set()})
            elif peers and key == "allowed_ip":
                peers[-1]["allowed"].add(value)
            elif peers:
                peers[-1][key] = value
            else:
                device[key] = value
        private = device.get("private_key")
        return ObservedDevice(
            public_key=public_key_of(_b64(private)) if private else "",
            listen_port=int(device.get("listen_port", "0")),
            peers=tuple(
                ObservedPeer(
                    public_key=p["public_key"],
                    endpoint=p.get("endpoint"),
                    allowed_ips=frozenset(p["allowed"]),
                    last_handshake=int(p.get("last_handshake_time_sec", "0")),
                    rx_bytes=int(p.get("rx_bytes", "0")),
                    tx_bytes=int(p.get("tx_bytes", "0")),
                )
                for p in peers
            ),
        )

    def set(self, lines: Sequence[str]) -> None:
        self._exchange("set=1\n" + "".join(line + "\n" for line in lines) + "\n")


def peer_lines(change: SetPeer | RemovePeer) -> list[str]:
    lines = [f"public_key={_hex(change.public_key)}"]
    if isinstance(change, RemovePeer):
        return [*lines, "remove=true"]
    if change.endpoint:
        lines.append(f"endpoint={change.endpoint}")
    # Turning keepalive on sends one keepalive at once, which starts the handshake; the
    # second section of the same peer turns it off again.
    lines.append(f"persistent_keepalive_interval={NUDGE if change.handshake else KEEPALIVE}")
    if change.replace:
        lines.append("replace_allowed_ips=true")
    lines.extend(f"allowed_ip={ip}" for ip in change.allowed_ips)
    if change.handshake:
        lines += [lines[0], f"persistent_keepalive_interval={KEEPALIVE}"]
    return lines


# -- moving a fresh device into its environment ----------------------------------------------


def _move_into_environment(ifname: str, env: LocalEnvironment) -> None:
    def move(ipr: Any) -> None:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise DataPlaneError(f"WireGuard link {ifname} did not appear in the host namespace")
        fd = netns_fd(env.netns)
        try:
            ipr.link("set", index=found[0], net_ns_fd=fd)
        finally:
            os.close(fd)

    def rename(ns: Any) -> None:
        index = ns.link_lookup(ifname=ifname)[0]
        ns.link("set", index=index, ifname=WG_LINK, mtu=MESH_MTU)
        ns.link("set", index=index, state="up")

    netlink(None, move)
    netlink(env.netns, rename)


def _delete_link(netns_name: str, ifname: str) -> None:
    """Delete the device in the environment namespace, or in the host one if it never moved."""

    def remove(names: tuple[str, ...]) -> Any:
        def work(ns: Any) -> None:
            for name in names:
                for index in ns.link_lookup(ifname=name):
                    ns.link("del", index=index)

        return work

    if netns_exists(netns_name):
        netlink(netns_name, remove((WG_LINK, ifname)))
    netlink(None, remove((ifname,)))


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


def _uapi_hint(log_path: Path) -> str:
    """What to do about a wireguard-go that could not open its UAPI socket, when its log
    says: each process watches its socket with an inotify instance of its own, and the
    kernel's default allows 128 per user, so a node with more than about a hundred
    environments runs out."""
    try:
        tail = log_path.read_bytes()[-2000:].decode(errors="replace")
    except OSError:
        return ""
    if "too many open files" not in tail.lower():
        return ""
    try:
        limit = INOTIFY_INSTANCES.read_text().strip()
    except OSError:
        limit = "?"
    return (
        f": it ran out of inotify instances (fs.inotify.max_user_instances is {limit}; each "
        "wireguard-go takes one): raise it, e.g. sysctl -w fs.inotify.max_user_instances=8192"
    )


class UserspaceWireGuard(WireGuardBackend):
    """wireguard-go, one process per environment device, configured over UAPI."""

    name = "userspace"

    def __init__(self, log_dir: Path, binary: str = "wireguard-go") -> None:
        self.log_dir = log_dir
        self.binary = binary

    def read(self, env: LocalEnvironment) -> ObservedDevice | None:
        uapi = Uapi(env.wg_ifname)
        if not uapi.path.exists():
            return None
        try:
            return uapi.get()
        except (OSError, DataPlaneError):
            return None

    def create(self, env: LocalEnvironment, private_key: str, listen_port: int) -> None:
        uapi = Uapi(env.wg_ifname)
        if uapi.path.exists() and not uapi.alive():
            uapi.path.unlink(missing_ok=True)  # left by a process that was killed
        binary = shutil.which(self.binary)
        if binary is None:
            raise DataPlaneError(
                f"{self.binary} is not installed; install wireguard-go or use --wireguard kernel"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{env.wg_ifname}.log", "ab") as log:
            # setsid --fork: the process leaves our session and our children, so it
            # survives the agent and is reaped by init, not left as our zombie.
            subprocess.run(
                ["setsid", "--fork", binary, "-f", env.wg_ifname],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
                env={**os.environ, "LOG_LEVEL": "error"},
            )
        deadline = time.monotonic() + 10
        while not uapi.alive():
            if time.monotonic() > deadline:
                log_path = self.log_dir / f"{env.wg_ifname}.log"
                raise DataPlaneError(
                    f"wireguard-go for {env.wg_ifname} did not open {uapi.path} within 10 s"
                    f"{_uapi_hint(log_path)}; see {log_path}"
                )
            time.sleep(0.01)
        try:
            uapi.set([f"private_key={_hex(private_key)}", f"listen_port={listen_port}"])
            _move_into_environment(env.wg_ifname, env)
        except Exception:
            self.delete(env.netns, env.wg_ifname)
            raise

    def set_private_key(self, env: LocalEnvironment, private_key: str) -> None:
        Uapi(env.wg_ifname).set([f"private_key={_hex(private_key)}"])

    def process(self, env: LocalEnvironment) -> int | None:
        uapi = Uapi(env.wg_ifname)
        try:
            return uapi.pid()
        except OSError:
            return None  # no socket, or one left by a process that is gone

    def configure(self, env: LocalEnvironment, changes: Sequence[SetPeer | RemovePeer]) -> None:
        if not changes:
            return
        lines: list[str] = []
        for change in changes:
            lines.extend(peer_lines(change))
        Uapi(env.wg_ifname).set(lines)

    def delete(self, netns_name: str, ifname: str) -> None:
        uapi = Uapi(ifname)
        pid = None
        if uapi.alive():
            pid = uapi.pid()
        _delete_link(netns_name, ifname)
        if pid is not None:
            _stop_process(pid, "wireguard-go")
        uapi.path.unlink(missing_ok=True)


def _stop_process(pid: int, expected: str) -> None:
    """End ``pid`` if it still is ``expected`` (pids are reused)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if expected.encode() not in cmdline:
            return
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


class KernelWireGuard(WireGuardBackend):
    """The kernel module, driven over generic netlink with pyroute2."""

    name = "kernel"

    @staticmethod
    def available() -> bool:
        probe = "rnprobe" + os.urandom(3).hex()
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=probe, kind="wireguard")
                ipr.link("del", index=ipr.link_lookup(ifname=probe)[0])
        except (NetlinkError, OSError, IndexError):
            return False
        return True

    def _in_env(self, env: LocalEnvironment, work: Any) -> Any:
        from pyroute2 import WireGuard

        def call() -> Any:
            with WireGuard() as wg:
                return work(wg)

        return run_in_netns(env.netns, call)

    def read(self, env: LocalEnvironment) -> ObservedDevice | None:
        try:
            messages = self._in_env(env, lambda wg: wg.info(WG_LINK))
        except (NetlinkError, DataPlaneError, OSError):
            return None
        private = ""
        port = 0
        peers: list[ObservedPeer] = []
        for msg in messages:
            private = private or _decode_key(msg.get_attr("WGDEVICE_A_PRIVATE_KEY"))
            port = port or int(msg.get_attr("WGDEVICE_A_LISTEN_PORT") or 0)
            for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
                peers.append(_kernel_peer(peer))
        if not private:
            return None
        return ObservedDevice(
            public_key=public_key_of(private), listen_port=port, peers=tuple(peers)
        )

    def create(self, env: LocalEnvironment, private_key: str, listen_port: int) -> None:
        from pyroute2 import WireGuard

        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=env.wg_ifname):
                ipr.link("del", index=index)
            ipr.link("add", ifname=env.wg_ifname, kind="wireguard")
        try:
            with WireGuard() as wg:
                wg.set(env.wg_ifname, private_key=private_key, listen_port=listen_port)
            _move_into_environment(env.wg_ifname, env)
        except Exception:
            _delete_link(env.netns, env.wg_ifname)
            raise

    def set_private_key(self, env: LocalEnvironment, private_key: str) -> None:
        self._in_env(env, lambda wg: wg.set(WG_LINK, private_key=private_key))

    def configure(self, env: LocalEnvironment, changes: Sequence[SetPeer | RemovePeer]) -> None:
        def work(wg: Any) -> None:
            for change in changes:
                peer: dict[str, Any] = {"public_key": change.public_key}
                if isinstance(change, RemovePeer):
                    peer["remove"] = True
                else:
                    if change.endpoint:
                        host, _, port = change.endpoint.rpartition(":")
                        peer["endpoint_addr"] = host.strip("[]")
                        peer["endpoint_port"] = int(port)
                    peer["persistent_keepalive"] = NUDGE if change.handshake else KEEPALIVE
                    peer["allowed_ips"] = list(change.allowed_ips)
                    peer["replace_allowed_ips"] = change.replace
                wg.set(WG_LINK, peer=peer)
                if isinstance(change, SetPeer) and change.handshake:
                    off = {"public_key": change.public_key, "persistent_keepalive": KEEPALIVE}
                    wg.set(WG_LINK, peer=off)

        if changes:
            self._in_env(env, work)

    def delete(self, netns_name: str, ifname: str) -> None:
        _delete_link(netns_name, ifname)


def _decode_key(raw: Any) -> str:
    if not raw:
        return ""
    if isinstance(raw, bytes):
        return "" if raw == bytes(32) else base64.b64encode(raw).decode()
    return str(raw)


def _kernel_peer(peer: Any) -> ObservedPeer:
    allowed = set()
    for entry in peer.get_attr("WGPEER_A_ALLOWEDIPS") or []:
        addr = entry.get_attr("WGALLOWEDIP_A_IPADDR")
        cidr = entry.get_attr("WGALLOWEDIP_A_CIDR_MASK")
        allowed.add(str(ipaddress.ip_network(f"{addr}/{cidr}", strict=False)))
    endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
    handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
    return ObservedPeer(
        public_key=_decode_key(peer.get_attr("WGPEER_A_PUBLIC_KEY")),
        endpoint=_format_endpoint(endpoint),
        allowed_ips=frozenset(allowed),
        last_handshake=int(handshake.get("tv_sec", 0)) if isinstance(handshake, dict) else 0,
        rx_bytes=int(peer.get_attr("WGPEER_A_RX_BYTES") or 0),
        tx_bytes=int(peer.get_attr("WGPEER_A_TX_BYTES") or 0),
    )


def _format_endpoint(endpoint: Any) -> str | None:
    if not endpoint:
        return None
    if isinstance(endpoint, dict):
        addr = endpoint.get("addr")
        port = endpoint.get("port")
        if addr is None or not port:
            return None
        return f"[{addr}]:{port}" if ":" in str(addr) else f"{addr}:{port}"
    return str(endpoint)


def select_backend(choice: str, log_dir: Path) -> WireGuardBackend:
    """``auto`` takes the kernel when it has WireGuard, else wireguard-go."""
    if choice == "kernel" or (choice == "auto" and KernelWireGuard.available()):
        return KernelWireGuard()
    if choice in ("auto", "userspace"):
        return UserspaceWireGuard(log_dir)
    raise DataPlaneError(f"--wireguard {choice!r}: choose auto, kernel or userspace")
