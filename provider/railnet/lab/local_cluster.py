"""A local cluster: every node a network namespace on a private underlay.

``Lab.up`` builds, under a fresh lab id:

* ``rl<id>-ul``: the underlay namespace with bridge ``br0``;
* ``rl<id>-n<i>``: node *i*'s host namespace, with ``ul0`` on the underlay at
  ``198.18.0.<i>/24`` (RFC 2544 benchmark range) and the node's agent running in it;
* the control store: a real etcd cluster, one member in each of the first three node
  namespaces (one member in a lab of one or two nodes), on the underlay, under
  ``DIR/etcd-<i>/`` (``railnet.lab.etcd``), with etcd's roles set up;
* ``DIR/cluster.json`` and ``DIR/tls/`` (mutual TLS material); the CA that signed it
  keeps its key in ``DIR/ca/``, which ``cluster.json`` does not reference, and so does the
  store administrator's certificate.

Every name the lab or its agents create starts with ``rl<id>``, so ``Lab.down`` removes
exactly those and nothing else, and two labs never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from railnet.agent.config import render_config
from railnet.agent.resolver import resolver_pid
from railnet.agent.wireguard import Uapi
from railnet.control.client import AgentAddress, AgentClient
from railnet.control.cluster import ClusterNode
from railnet.control.membership import add_member
from railnet.control.stored import StoredDocuments
from railnet.core.errors import AgentUnreachable, RailnetError
from railnet.core.names import wireguard_ifname
from railnet.lab import etcd
from railnet.lab.etcd import EtcdMember
from railnet.linux.netns import create_netns, delete_netns, list_netns, netlink, netns_fd
from railnet.pki.certs import (
    STORE_SERVER_NAME,
    node_store_tls_files,
    node_tls_files,
    operator_tls_files,
    provider_tls_files,
    store_admin_tls_files,
    write_cluster_tls,
    write_store_tls,
)
from railnet.store.etcd import EtcdStore
from railnet.store.roles import ensure_roles

UNDERLAY_PREFIX = "198.18.0."
AGENT_PORT = 7443
DEFAULT_DIR = Path("railnet-lab")
MAX_NODES = 200


@dataclass(frozen=True)
class LabNode:
    name: str
    netns: str
    underlay: str
    agent_socket: Path
    state_dir: Path
    netns_prefix: str

    @property
    def agent_tcp(self) -> str:
        return f"{self.underlay}:{AGENT_PORT}"


class NoLab(RailnetError):
    """The directory holds no lab."""


class Lab:
    def __init__(self, directory: Path, lab_id: str) -> None:
        self.directory = directory.resolve()
        self.lab_id = lab_id
        self.prefix = f"rl{lab_id}"

    # -- description ---------------------------------------------------------------------

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}-ul"

    def node(self, i: int) -> LabNode:
        name = f"node-{i}"
        return LabNode(
            name=name,
            netns=f"{self.prefix}-n{i}",
            underlay=f"{UNDERLAY_PREFIX}{i}",
            agent_socket=self.directory / f"{name}.sock",
            state_dir=self.directory / name / "state",
            netns_prefix=f"{self.prefix}n{i}",
        )

    def nodes(self) -> list[LabNode]:
        meta = self._meta()
        return [self.node(i) for i in range(1, int(meta["nodes"]) + 1)]

    def _meta(self) -> dict[str, object]:
        return dict(json.loads((self.directory / "lab.json").read_text()))

    def _write_meta(self, meta: dict[str, object]) -> None:
        (self.directory / "lab.json").write_text(json.dumps(meta))

    # -- the control store -----------------------------------------------------------------

    @staticmethod
    def store_size(nodes: int) -> int:
        """etcd members for a lab of ``nodes``: three, or one when there are fewer than
        three nodes (two members would halt when either stops)."""
        return 3 if nodes >= 3 else 1

    def etcd_member(self, i: int) -> EtcdMember:
        node = self.node(i)
        return EtcdMember(
            name=f"etcd-{i}",
            netns=node.netns,
            host=node.underlay,
            directory=self.directory / f"etcd-{i}",
        )

    def etcd_members(self) -> list[EtcdMember]:
        count = int(self._meta().get("store_members", 0))  # type: ignore[call-overload]
        return [self.etcd_member(i) for i in range(1, count + 1)]

    def etcd_pid(self, member: EtcdMember) -> int | None:
        pid = dict(self._meta().get("etcd", {})).get(member.name)  # type: ignore[call-overload]
        return int(pid) if pid and etcd.is_member(int(pid)) else None

    def store(self, role: str = "provider", timeout: float = 10.0) -> EtcdStore:
        """A client of the lab's etcd with the ``provider``'s, the ``operator``'s, a node's
        (its name) or the administrator's (``admin``) certificate."""
        tls_dir = self.directory / "tls"
        if role == "provider":
            files = provider_tls_files(tls_dir)
        elif role == "operator":
            files = operator_tls_files(tls_dir)
        elif role == "admin":
            files = store_admin_tls_files(self.directory / "ca")
        else:
            files = node_store_tls_files(tls_dir, role)
        return EtcdStore(etcd.local_address(self.etcd_members(), files), timeout=timeout)

    def stop_etcd(self, member: EtcdMember, sig: int = signal.SIGKILL) -> None:
        """Stop one etcd member (killed by default, as a crash would)."""
        pid = self.etcd_pid(member)
        if pid is not None:
            etcd.stop_member(pid, sig)

    def start_etcd(self, member: EtcdMember) -> int:
        """Start a stopped member again, on the data it had."""
        if self.etcd_pid(member) is not None:
            raise RailnetError(f"{member.name} is running already")
        pid = etcd.start_member(member, self.etcd_members(), self.directory / "tls")
        meta = self._meta()
        pids = dict(meta.get("etcd", {}))  # type: ignore[call-overload]
        pids[member.name] = pid
        meta["etcd"] = pids
        self._write_meta(meta)
        return pid

    def _start_store(self, count: int, say: Any) -> None:
        size = self.store_size(count)
        members = [self.etcd_member(i) for i in range(1, size + 1)]
        tls_dir = self.directory / "tls"
        write_store_tls(
            tls_dir,
            {m.name: [m.host] for m in members},
            [self.node(i).name for i in range(1, count + 1)],
            ca_dir=self.directory / "ca",
        )
        meta = self._meta()
        meta["store_members"] = size
        meta["etcd"] = {}
        self._write_meta(meta)
        pids: dict[str, int] = {}
        for member in members:
            pids[member.name] = etcd.start_member(member, members, tls_dir)
            meta["etcd"] = pids
            self._write_meta(meta)
        admin = store_admin_tls_files(self.directory / "ca")
        etcd.wait_healthy(members, admin)
        with self.store("admin") as store:
            ensure_roles(store, [self.node(i).name for i in range(1, count + 1)])
        say(f"  etcd: {size} member{'s' if size != 1 else ''} ({', '.join(pids)}), roles set")

    @property
    def cluster_file(self) -> Path:
        return self.directory / "cluster.json"

    def client(self, node: LabNode, timeout: float = 60.0) -> AgentClient:
        return AgentClient(
            AgentAddress(
                node.name, f"unix:{node.agent_socket}", provider_tls_files(self.directory / "tls")
            ),
            timeout=timeout,
        )

    # -- up ------------------------------------------------------------------------------

    @classmethod
    def up(
        cls,
        directory: Path = DEFAULT_DIR,
        nodes: int = 3,
        *,
        wireguard: str = "auto",
        dns_upstreams: tuple[str, ...] = (),
        dns: bool = True,
        progress: bool = False,
        reconcile_interval: float | None = None,
        self_heal: bool = True,
    ) -> Lab:
        """``reconcile_interval``: seconds between the agents' periodic repairs (None: the
        agent's default); a test that makes drift on purpose sets it long, so that only the
        repair it asks for fixes it, and may turn ``self_heal`` off (``--no-self-heal``)."""
        if not 1 <= nodes <= MAX_NODES:
            raise RailnetError(f"--nodes {nodes}: a lab has 1 to {MAX_NODES} nodes")
        directory = directory.resolve()
        if (directory / "lab.json").exists():
            raise RailnetError(
                f"{directory} already holds a lab; run 'railnet lab down --dir {directory}' first"
            )
        if directory.exists() and not directory.is_dir():
            raise RailnetError(f"--dir {directory} is a file; give a directory for the lab")
        if directory.exists() and any(directory.iterdir()):
            raise RailnetError(
                f"--dir {directory} is not empty and holds no lab; give a new or empty "
                "directory (lab down removes what the lab makes there)"
            )
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        lab = cls(directory, secrets.token_hex(3))
        (directory / "lab.json").write_text(
            json.dumps(
                {
                    "id": lab.lab_id,
                    "created_directory": created,
                    "nodes": nodes,
                    "agents": {},
                    "wireguard": wireguard,
                    "dns": dns,
                    "dns_upstreams": list(dns_upstreams),
                    "reconcile_interval": reconcile_interval,
                    "self_heal": self_heal,
                }
            )
        )
        try:
            lab._build(nodes, progress)
        except BaseException:
            lab.down()
            raise
        return lab

    def _build(self, count: int, progress: bool) -> None:
        say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
        members = [self.node(i) for i in range(1, count + 1)]
        write_cluster_tls(
            self.directory / "tls",
            [n.name for n in members],
            {n.name: [n.underlay] for n in members},
            ca_dir=self.directory / "ca",  # its own directory: cluster.json names only tls/
        )
        say(f"lab {self.lab_id}: underlay {UNDERLAY_PREFIX}0/24 in {self.underlay_netns}")
        create_netns(self.underlay_netns)

        def bridge(ul: Any) -> int:
            ul.link("set", index=ul.link_lookup(ifname="lo")[0], state="up")
            ul.link("add", ifname="br0", kind="bridge")
            index = ul.link_lookup(ifname="br0")[0]
            ul.link("set", index=index, state="up")
            return int(index)

        def attach(i: int, node: LabNode, bridge_index: int) -> Any:
            def work(ul: Any) -> None:
                fd = netns_fd(node.netns)
                try:
                    ul.link(
                        "add", ifname=f"n{i}", kind="veth", peer={"ifname": "ul0", "net_ns_fd": fd}
                    )
                finally:
                    os.close(fd)
                index = ul.link_lookup(ifname=f"n{i}")[0]
                ul.link("set", index=index, master=bridge_index, state="up")

            return work

        def address(node: LabNode) -> Any:
            def work(ns: Any) -> None:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                ul0 = ns.link_lookup(ifname="ul0")[0]
                ns.addr("add", index=ul0, address=node.underlay, prefixlen=24)
                ns.link("set", index=ul0, state="up")

            return work

        bridge_index = netlink(self.underlay_netns, bridge)
        for i, node in enumerate(members, start=1):
            create_netns(node.netns)
            netlink(self.underlay_netns, attach(i, node, bridge_index))
            netlink(node.netns, address(node))
        self._start_store(count, say)
        agents: dict[str, int] = {}
        # The agents share this machine's cores, and each starts a resolver it waits for:
        # a large lab starts them a wave at a time, each wave once the one before answers.
        wave = max(4, 2 * (os.cpu_count() or 1))
        for first in range(0, len(members), wave):
            started = members[first : first + wave]
            for node in started:
                agents[node.name] = self._start_agent(node)
                meta = self._meta()
                meta["agents"] = agents
                (self.directory / "lab.json").write_text(json.dumps(meta))
            for node in started:
                self._wait_ready(node)
        for node in members:
            say(f"  {node.name}: {node.underlay} in {node.netns}, agent pid {agents[node.name]}")
        # The membership goes to the control store, which every runner reads; the file
        # says only how to reach it.
        with self.store("provider") as store:
            for n in members:
                add_member(
                    store,
                    ClusterNode(n.name, f"unix:{n.agent_socket}", n.underlay),
                    {"agent_tcp": n.agent_tcp, "netns": n.netns},
                )
            # A new cluster: its environments' documents live in the store from the start.
            StoredDocuments(store).mark_documents_here()
        cluster = {
            "lab": self.lab_id,
            "tls": {"ca": "tls/ca.pem", "cert": "tls/provider.pem", "key": "tls/provider-key.pem"},
            "operator": {"cert": "tls/operator.pem", "key": "tls/operator-key.pem"},
            "store": {
                "endpoints": [m.local_endpoint for m in self.etcd_members()],
                "server_name": STORE_SERVER_NAME,
            },
        }
        self.cluster_file.write_text(json.dumps(cluster, indent=2) + "\n")
        nodes = f"{count} node{'s' if count != 1 else ''}"
        say(f"lab {self.lab_id}: {nodes} ready; cluster file {self.cluster_file}")

    def _start_agent(self, node: LabNode) -> int:
        meta = self._meta()
        files = node_tls_files(self.directory / "tls", node.name)
        node.state_dir.mkdir(parents=True, exist_ok=True)
        # The same config file a real node's service reads (railnet node install writes
        # one): the lab starts its agents the way real nodes start.
        settings: dict[str, object] = {
            "node": node.name,
            "listen": [f"unix:{node.agent_socket}", node.agent_tcp],
            "state_dir": str(node.state_dir),
            "endpoint_host": node.underlay,
            "netns_prefix": node.netns_prefix,
            "wireguard": str(meta["wireguard"]),
            "tls_ca": str(files.ca),
            "tls_cert": str(files.cert),
            "tls_key": str(files.key),
            "dns": bool(meta["dns"]),
            "self_heal": bool(meta.get("self_heal", True)),
            "dns_upstream": list(meta["dns_upstreams"]),  # type: ignore[call-overload]
        }
        members = self.etcd_members()
        if members:
            store_files = node_store_tls_files(self.directory / "tls", node.name)
            settings["store_endpoint"] = [m.underlay_endpoint for m in members]
            settings["store_server_name"] = STORE_SERVER_NAME
            settings["store_tls_cert"] = str(store_files.cert)
            settings["store_tls_key"] = str(store_files.key)
        if meta.get("reconcile_interval") is not None:
            settings["reconcile_interval"] = float(meta["reconcile_interval"])  # type: ignore[arg-type]
        config = self.directory / node.name / "agent.toml"
        config.write_text(render_config(settings))
        command = [
            "nsenter",
            f"--net=/var/run/netns/{node.netns}",
            sys.executable,
            "-m",
            "railnet",
            "agent",
            "--config",
            str(config),
        ]
        with open(self.directory / node.name / "agent.log", "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        return process.pid

    def _wait_ready(self, node: LabNode, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        # A whole timeout per call: an agent that holds hundreds of environments takes a
        # while to report on them all (one that is not listening yet fails at once).
        with self.client(node, timeout=timeout) as client:
            while True:
                try:
                    client.status()
                    return
                except AgentUnreachable:
                    if time.monotonic() > deadline:
                        log = (self.directory / node.name / "agent.log").read_text()[-2000:]
                        raise RailnetError(
                            f"agent of {node.name} did not answer within {timeout:.0f} s; "
                            f"its log ends:\n{log}"
                        ) from None
                    time.sleep(0.1)

    # -- agents ----------------------------------------------------------------------------

    def agent_pid(self, node: LabNode) -> int | None:
        pid = self._meta().get("agents", {}).get(node.name)  # type: ignore[attr-defined]
        return int(pid) if pid and _is_agent(int(pid)) else None

    def kill_agent(self, node: LabNode, sig: int = signal.SIGKILL, timeout: float = 60.0) -> None:
        """Signal the node's agent and wait until it has exited (an agent asked to stop
        finishes the environment it is repairing first)."""
        pid = self.agent_pid(node)
        if pid is not None:
            os.kill(pid, sig)
            if not _wait_gone(pid, timeout):
                raise RailnetError(f"agent of {node.name} (pid {pid}) did not exit in {timeout} s")

    def restart_agent(self, node: LabNode, timeout: float = 30.0) -> int:
        """Stop the node's agent and start it again; returns once it answers (it repairs
        every stored environment first), within ``timeout`` seconds."""
        self.kill_agent(node, signal.SIGTERM)
        pid = self._start_agent(node)
        meta = self._meta()
        agents = dict(meta.get("agents", {}))  # type: ignore[call-overload]
        agents[node.name] = pid
        meta["agents"] = agents
        (self.directory / "lab.json").write_text(json.dumps(meta))
        self._wait_ready(node, timeout)
        return pid

    def upgrade_agent(self, node: LabNode) -> int:
        """Start a new agent for ``node`` while the old one runs, as an upgrade does: the
        new one asks the old one to hand over, waits for it to stop, and takes over."""
        old = self.agent_pid(node)
        pid = self._start_agent(node)
        meta = self._meta()
        agents = dict(meta.get("agents", {}))  # type: ignore[call-overload]
        agents[node.name] = pid  # recorded at once, so that down stops it whatever happens
        meta["agents"] = agents
        (self.directory / "lab.json").write_text(json.dumps(meta))
        if old is not None and not _wait_gone(old, timeout=30.0):
            os.kill(old, signal.SIGKILL)
            raise RailnetError(f"agent of {node.name} (pid {old}) did not hand over")
        self._wait_ready(node)
        return pid

    def wireguard_pids(self, node: LabNode) -> list[int]:
        pids = []
        envs = node.state_dir / "environments"
        for env_dir in sorted(envs.iterdir()) if envs.exists() else []:
            uapi = Uapi(wireguard_ifname(node.netns_prefix, env_dir.name))
            if uapi.alive():
                pids.append(uapi.pid())
        return pids

    def resolver_pid(self, node: LabNode) -> int | None:
        """The node's DNS resolver process (it outlives the agent), if one runs."""
        return resolver_pid(node.state_dir / "resolver.sock")

    # -- down ------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path = DEFAULT_DIR) -> Lab:
        directory = directory.resolve()
        if directory.exists() and not directory.is_dir():
            raise RailnetError(f"--dir {directory} is a file, not a lab's directory")
        path = directory / "lab.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            raise NoLab(f"{directory} holds no lab (no lab.json)") from None
        except OSError as exc:
            raise RailnetError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise RailnetError(
                f"{path} is not JSON ({exc}); it is not a lab railnet made, or it was damaged: "
                "remove what it made by hand (ip netns list)"
            ) from None
        lab_id = meta.get("id") if isinstance(meta, dict) else None
        if not isinstance(lab_id, str) or not lab_id.isalnum():
            raise RailnetError(
                f"{path} has no lab id ('id'); it is not a lab railnet made, or it was damaged"
            )
        nodes = meta.get("nodes")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 0 <= nodes <= MAX_NODES:
            raise RailnetError(f"{path} has no node count ('nodes'); it was damaged")
        return cls(directory, lab_id)

    def down(self) -> list[str]:
        """Remove every process, namespace and file of this lab; return what was removed."""
        removed: list[str] = []
        try:
            members = self.nodes()
            agents = {str(k): int(v) for k, v in dict(self._meta().get("agents", {})).items()}  # type: ignore[call-overload]
        except (FileNotFoundError, ValueError):
            members, agents = [], {}
        for name, pid in agents.items():
            if _is_agent(pid):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)
                removed.append(f"agent {name} (pid {pid})")
        # The resolvers that answer on their sockets, and any started but not answering yet
        # (a lab whose build failed while its agents were starting them).
        resolvers = [(n.name, self.resolver_pid(n)) for n in members]
        found = {pid for _, pid in resolvers}
        resolvers += [
            ("not answering", pid)
            for pid in _processes_under(self.directory, b"resolver")
            if pid not in found
        ]
        for name, pid in resolvers:
            if pid is not None and _is_process(pid, b"resolver"):
                os.kill(pid, signal.SIGTERM)
                if not _wait_gone(pid, timeout=3.0):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid)
                removed.append(f"resolver {name} (pid {pid})")
        try:
            etcd_pids = {str(k): int(v) for k, v in dict(self._meta().get("etcd", {})).items()}  # type: ignore[call-overload]
        except (FileNotFoundError, ValueError):
            etcd_pids = {}
        found = set(etcd_pids.values())
        etcd_pids.update(
            (f"not recorded (pid {pid})", pid)
            for pid in _processes_under(self.directory, b"etcd")
            if pid not in found
        )
        for name, pid in etcd_pids.items():
            if etcd.is_member(pid):
                etcd.stop_member(pid, signal.SIGKILL)
                removed.append(f"etcd {name} (pid {pid})")
        wg_pids = [pid for node in members for pid in self.wireguard_pids(node)]
        for name in list_netns():
            if name.startswith(self.prefix):
                delete_netns(name)
                removed.append(f"namespace {name}")
        for pid in wg_pids:
            if _is_process(pid, b"wireguard-go"):
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid)
            removed.append(f"wireguard-go pid {pid}")
        self._remove_host_links()
        etc = Path("/etc/netns")
        for entry in sorted(etc.iterdir()) if etc.exists() else []:
            if entry.name.startswith(self.prefix):
                shutil.rmtree(entry, ignore_errors=True)
        uapi_dir = Path("/var/run/wireguard")
        for node in members:
            envs = node.state_dir / "environments"
            for env_dir in envs.iterdir() if envs.exists() else []:
                sock = uapi_dir / f"{wireguard_ifname(node.netns_prefix, env_dir.name)}.sock"
                sock.unlink(missing_ok=True)
        self._remove_files(members)
        return removed

    def _remove_files(self, members: list[LabNode]) -> None:
        """The lab's own files, by name; the directory too if the lab made it and nothing
        else was put there since."""
        try:
            created = bool(self._meta().get("created_directory", False))
        except (OSError, ValueError):
            created = False
        for node in members:
            shutil.rmtree(self.directory / node.name, ignore_errors=True)
            node.agent_socket.unlink(missing_ok=True)
        for i in range(1, len(members) + 1):
            etcd.remove_member_files(self.etcd_member(i))
        shutil.rmtree(self.directory / "tls", ignore_errors=True)
        shutil.rmtree(self.directory / "ca", ignore_errors=True)
        (self.directory / "cluster.json").unlink(missing_ok=True)
        (self.directory / "lab.json").unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only when empty

    def _remove_host_links(self) -> None:
        # Nothing of the lab lives in the root namespace; this only guards against a
        # WireGuard device that failed to move before its node namespace went away.
        with IPRoute() as ipr:
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME") or ""
                if name.startswith(self.prefix):
                    ipr.link("del", index=link["index"])


def _is_process(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _processes_under(directory: Path, needle: bytes) -> list[int]:
    """The processes whose command line has ``needle`` as an argument and names a path
    inside ``directory``."""
    inside = str(directory).rstrip("/").encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parts = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in parts and any(p.startswith(inside) for p in parts):
            found.append(int(entry.name))
    return found


def _is_agent(pid: int) -> bool:
    try:
        parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"railnet" in parts and b"agent" in parts


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """Wait until ``pid`` has exited (reaping it if it is our child); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").exists():
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            if state == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    return True
        time.sleep(0.02)
    return False
