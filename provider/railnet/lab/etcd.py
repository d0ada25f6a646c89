"""The lab's control store: a real etcd cluster, one member in each of the first nodes.

Each member runs Debian's ``etcd`` as an ordinary process inside its node's namespace:
clients and peers on the underlay (``https://<underlay>:2379`` and ``:2380``), mutual TLS
from the lab's CA on both, and one more client listener, a unix socket in the member's
directory, for the processes of the lab's machine (the provider, the CLI, the tests), which
do not live on the underlay. etcd names such a socket ``<host>:<port>`` in its working
directory, hence ``client.sock:2379``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from railnet.core.errors import RailnetError
from railnet.pki.certs import STORE_SERVER_NAME, TlsFiles, store_member_tls_files
from railnet.store.etcd import EtcdStore, StoreAddress, StoreError

CLIENT_PORT = 2379
PEER_PORT = 2380
SOCKET_NAME = f"client.sock:{CLIENT_PORT}"
ETCD = "etcd"


@dataclass(frozen=True)
class EtcdMember:
    name: str
    netns: str
    host: str
    """The member's underlay address."""
    directory: Path
    """Its data, its socket and its log."""

    @property
    def client_url(self) -> str:
        return f"https://{self.host}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{PEER_PORT}"

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def local_endpoint(self) -> str:
        """How a process of the lab's machine reaches this member."""
        return f"unix:{self.socket}"

    @property
    def underlay_endpoint(self) -> str:
        """How an agent on the underlay reaches this member."""
        return f"{self.host}:{CLIENT_PORT}"


def start_member(member: EtcdMember, cluster: list[EtcdMember], tls_dir: Path) -> int:
    """Start one member (a new one or one that ran before: its data directory decides);
    returns its pid. ``cluster``: every member, for the initial cluster."""
    files = store_member_tls_files(tls_dir, member.name)
    member.directory.mkdir(parents=True, exist_ok=True)
    member.socket.unlink(missing_ok=True)
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster)
    command = [
        "nsenter",
        f"--net=/var/run/netns/{member.netns}",
        ETCD,
        "--name",
        member.name,
        "--data-dir",
        str(member.directory / "data"),
        "--listen-client-urls",
        f"{member.client_url},unixs://{SOCKET_NAME}",
        "--advertise-client-urls",
        member.client_url,
        "--listen-peer-urls",
        member.peer_url,
        "--initial-advertise-peer-urls",
        member.peer_url,
        "--initial-cluster",
        initial,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        cluster[0].netns,  # one per lab: the members of two labs never join each other
        "--cert-file",
        str(files.cert),
        "--key-file",
        str(files.key),
        "--trusted-ca-file",
        str(files.ca),
        "--client-cert-auth",
        "--peer-cert-file",
        str(files.cert),
        "--peer-key-file",
        str(files.key),
        "--peer-trusted-ca-file",
        str(files.ca),
        "--peer-client-cert-auth",
        # The lab shares two cores with every agent: a slower heartbeat keeps a busy
        # machine from starting elections for nothing.
        "--heartbeat-interval",
        "200",
        "--election-timeout",
        "2000",
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "10000",
        "--max-request-bytes",
        str(16 * 1024 * 1024),
        "--logger",
        "zap",
    ]
    with open(member.directory / "etcd.log", "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=member.directory,  # where etcd makes the unix socket
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return process.pid


def local_address(members: list[EtcdMember], tls: TlsFiles) -> StoreAddress:
    return StoreAddress(
        tuple(m.local_endpoint for m in members), tls, server_name=STORE_SERVER_NAME
    )


def wait_healthy(members: list[EtcdMember], admin: TlsFiles, timeout: float = 30.0) -> None:
    """Wait until the cluster has a leader and answers a linearizable read."""
    deadline = time.monotonic() + timeout
    last = ""
    with EtcdStore(local_address(members, admin), timeout=2.0) as store:
        while time.monotonic() < deadline:
            if all(m.socket.exists() for m in members):
                try:
                    store.get("/railnet/v1/health")
                    return
                except StoreError as exc:
                    last = str(exc)
            time.sleep(0.1)
    logs = "\n".join(f"{m.name}: {_tail(m.directory / 'etcd.log')}" for m in members)
    raise RailnetError(f"the lab's etcd did not become healthy in {timeout:.0f} s ({last})\n{logs}")


def stop_member(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
    """Stop one member by its pid; True when it has exited."""
    if not is_member(pid):
        return True
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid_done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pid_done = 0
        if pid_done == pid or not is_member(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def is_member(pid: int) -> bool:
    """Whether ``pid`` is a running etcd (not a zombie, not another process since)."""
    try:
        parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z" and any(p == ETCD.encode() or p.endswith(b"/etcd") for p in parts)


def remove_member_files(member: EtcdMember) -> None:
    shutil.rmtree(member.directory, ignore_errors=True)


def _tail(path: Path, size: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"
