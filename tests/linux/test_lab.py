"""Two labs at once never collide, and `lab down` removes all of one and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from railnet.control.client import AgentAddress, AgentClient, AgentError
from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.lab.local_cluster import Lab
from railnet.linux.netns import list_netns
from railnet.pki.certs import TlsFiles
from tests.certs import roleless_client

from .conftest import running_lab

pytestmark = pytest.mark.linux

SPEC = EnvironmentSpec(
    "twin", "production", services=(ServiceSpec("a", ("node-1",)), ServiceSpec("b", ("node-2",)))
)


def test_two_labs_at_once() -> None:
    with running_lab(2, dns=False) as first, running_lab(2, dns=False) as second:
        assert first.lab.prefix != second.lab.prefix
        docs = [first.deploy(SPEC).document, second.deploy(SPEC).document]
        # Same environment, same addresses, same underlay range: separate worlds.
        assert docs[0].services == docs[1].services
        for net, token in ((first, "one"), (second, "two")):
            net.serve(net.netns("twin", "production", "b"), token, 7700)
        for net, token in ((first, "one"), (second, "two")):
            b = docs[0].service("b")
            assert b is not None
            probe = net.tcp(net.netns("twin", "production", "a"), b.instances[0].ipv6, 7700)
            assert probe.output == f"{token}:ping"
        mine = {n for n in list_netns() if n.startswith(first.lab.prefix)}
        assert mine and not mine & {n for n in list_netns() if n.startswith(second.lab.prefix)}
        first.stop_servers()
        first.lab.down()
        assert not [n for n in list_netns() if n.startswith(first.lab.prefix)]
        # The second lab is untouched and still carries traffic.
        b = docs[1].service("b")
        assert b is not None
        probe = second.tcp(second.netns("twin", "production", "a"), b.instances[0].ipv6, 7700)
        assert probe.output == "two:ping"
    # Only the two labs' own namespaces count: other tests may run labs on this machine.
    prefixes = (first.lab.prefix, second.lab.prefix)
    assert not [n for n in list_netns() if n.startswith(prefixes)]


def test_lab_command_line_up_and_down(tmp_path: object) -> None:
    directory = f"{tmp_path}/lab"
    up = subprocess.run(
        [sys.executable, "-m", "railnet", "lab", "up", "--nodes", "2", "--dir", directory],
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert "2 nodes ready" in up.stdout
        # status reads with the operator's certificate: the provider's key is not needed.
        provider_key = Path(directory) / "tls" / "provider-key.pem"
        provider_key.rename(provider_key.with_suffix(".away"))
        status = subprocess.run(
            [sys.executable, "-m", "railnet", "status", "--cluster", f"{directory}/cluster.json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "node-1" in status.stdout and "node-2" in status.stdout
        provider_key.with_suffix(".away").rename(provider_key)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "railnet", "lab", "down", "--dir", directory],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stderr
    assert "removed" in down.stdout
    again = subprocess.run(
        [sys.executable, "-m", "railnet", "lab", "down", "--dir", directory],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Nothing to remove is no failure: lab down fits cleanup scripts.
    assert again.returncode == 0 and "holds no lab" in again.stdout, again.stderr


def test_lab_up_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    up = subprocess.run(
        [sys.executable, "-m", "railnet", "lab", "up", "--nodes", "1", "--dir", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if up.returncode == 0:  # do not leave a lab behind when this fails
        subprocess.run([sys.executable, "-m", "railnet", "lab", "down", "--dir", str(home)])
    assert up.returncode == 2, up.stdout
    assert str(home) in up.stderr and "not empty" in up.stderr
    assert (home / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]


def test_lab_down_removes_only_what_the_lab_made(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    fresh = tmp_path / "fresh" / "lab"
    for directory in (existing, fresh):
        lab = Lab.up(directory, 1, dns=False)
        (directory / "keep.txt").write_text("not the lab's")
        lab.down()
        assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]
        (directory / "keep.txt").unlink()
    # Made by the lab and now empty: gone. There before the lab: kept.
    made = tmp_path / "made" / "lab"
    lab = Lab.up(made, 1, dns=False)
    lab.down()
    assert not made.exists() and made.parent.exists()
    lab = Lab.up(existing, 1, dns=False)
    lab.down()
    assert existing.is_dir() and not any(existing.iterdir())


def test_a_real_agent_refuses_what_a_role_may_not_do(tmp_path: Path) -> None:
    with running_lab(2, dns=False) as net:
        tls = net.lab.directory / "tls"
        node_2 = net.lab.node(2)
        stranger = roleless_client(
            tls / "ca.pem", net.lab.directory / "ca" / "ca-key.pem", tmp_path
        )
        operator = TlsFiles(tls / "ca.pem", tls / "operator.pem", tls / "operator-key.pem")
        # Over the unix socket, and over TCP from another node's namespace.
        socket = AgentAddress("node-2", f"unix:{node_2.agent_socket}", stranger)
        with AgentClient(socket, timeout=10) as nobody, pytest.raises(AgentError) as denied:
            nobody.ensure("eaaaa")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        probe = (
            "import sys\nfrom pathlib import Path\n"
            "from railnet.control.client import AgentAddress, AgentClient, AgentError\n"
            "from railnet.pki.certs import TlsFiles\n"
            "files = TlsFiles(*map(Path, sys.argv[2:5]))\n"
            "with AgentClient(AgentAddress('node-2', sys.argv[1], files), timeout=10) as c:\n"
            "    print(len(c.status().environments))\n"
            "    try:\n"
            "        c.delete('eaaaa')\n"
            "    except AgentError as e:\n"
            "        print(e.code.name)\n"
        )
        over_tcp = subprocess.run(
            ["ip", "netns", "exec", net.lab.node(1).netns, sys.executable, "-c", probe,
             node_2.agent_tcp, *(str(f) for f in (operator.ca, operator.cert, operator.key))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert over_tcp.returncode == 0, over_tcp.stderr
        assert over_tcp.stdout.split() == ["0", "PERMISSION_DENIED"]
        assert not (node_2.state_dir / "environments" / "eaaaa").exists()


def test_lab_down_stops_a_resolver_that_never_answered(tmp_path: Path) -> None:
    """A lab whose build failed while agents were still starting resolvers: one that has
    not opened its control socket yet is found by its command line, and stopped."""
    lab = Lab.up(tmp_path / "lab", 1, dns=False)
    control = lab.directory / "node-1" / "state" / "resolver.sock"
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "resolver", "--control", str(control)]
    )
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "resolver", "--control",
         str(tmp_path / "lab2" / "resolver.sock")]
    )  # fmt: skip
    try:
        removed = lab.down()
        assert decoy.wait(timeout=10) is not None
        assert f"resolver not answering (pid {decoy.pid})" in removed
        assert other.poll() is None  # another directory's: left alone
    finally:
        for process in (decoy, other):
            if process.poll() is None:
                process.kill()
                process.wait()
