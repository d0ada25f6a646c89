"""The agent's config file: every flag is a key, flags override the file, and every bad
value is named with where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from railnet.agent.config import SETTINGS, load_agent_config, read_config_file, render_config
from railnet.agent.install import render_unit
from railnet.core.errors import RailnetError

pytestmark = pytest.mark.unit

BASE = (
    'node = "node-1"\nendpoint_host = "198.18.0.1"\ninsecure = true\n'
    'listen = ["unix:/run/railnet/agent.sock", "198.18.0.1:7443"]\n'
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_file_gives_every_setting_and_flags_override_it(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'log_level = "debug"\ndns_upstream = "10.0.0.53:53"\n')
    config = load_agent_config(path, {"log_level": "warning", "listen": None})
    assert config.node == "node-1" and config.endpoint_host == "198.18.0.1"
    assert config.listen == ("unix:/run/railnet/agent.sock", "198.18.0.1:7443")
    assert config.log_level == "warning"  # the flag
    assert config.dns_upstreams == ("10.0.0.53:53",)
    assert config.tls is None and config.reconcile_interval == 30.0


def test_self_healing_is_on_unless_the_file_or_the_flag_turns_it_off(tmp_path: Path) -> None:
    assert load_agent_config(write(tmp_path, BASE), {}).self_heal is True
    off = write(tmp_path, BASE + "self_heal = false\n")
    assert load_agent_config(off, {}).self_heal is False
    assert load_agent_config(write(tmp_path, BASE), {"self_heal": False}).self_heal is False
    with pytest.raises(RailnetError, match="self_heal"):
        load_agent_config(write(tmp_path, BASE + 'self_heal = "no"\n'), {})


def test_the_no_self_heal_flag(tmp_path: Path) -> None:
    import argparse

    from railnet.cli.agent import add_agent_parser

    parser = argparse.ArgumentParser()
    add_agent_parser(parser.add_subparsers())
    assert parser.parse_args(["agent", "--no-self-heal"]).self_heal is False
    assert parser.parse_args(["agent"]).self_heal is None  # not given: the file decides


def test_every_flag_is_a_key_of_the_file() -> None:
    keys = {s.key for s in SETTINGS}
    assert {"node", "listen", "state_dir", "endpoint_host", "tls_ca", "metrics_listen"} <= keys
    assert all(s.flag == "--" + s.key.replace("_", "-") for s in SETTINGS)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nodes = 3\n", "nodes"),
        ('reconcile_interval = "soon"\n', "reconcile_interval"),
        ("dns_upstream = [1]\n", "dns_upstream"),
        ("not toml at all\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_key_and_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, BASE + text)
    with pytest.raises(RailnetError) as caught:
        load_agent_config(path, {})
    assert says in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("endpoint_host", "notanip", "must be an IP address"),
        ("log_level", "chatty", "must be one of"),
        ("reconcile_interval", -5.0, "seconds > 0"),
        ("listen", ["bogus"], "HOST:PORT or unix:/PATH"),
        ("wireguard", "maybe", "must be one of"),
    ],
)
def test_bad_values_name_the_flag(tmp_path: Path, key: str, value: object, says: str) -> None:
    with pytest.raises(RailnetError) as caught:
        load_agent_config(write(tmp_path, BASE), {key: value})
    text = str(caught.value)
    assert says in text and "--" + key.replace("_", "-") in text and str(value).strip("[]'") in text


def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RailnetError, match="is a file"):
        load_agent_config(write(tmp_path, BASE), {"state_dir": str(tmp_path / "file")})


def test_missing_files_and_required_settings(tmp_path: Path) -> None:
    with pytest.raises(RailnetError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")
    with pytest.raises(RailnetError, match="--endpoint-host"):
        load_agent_config(write(tmp_path, 'node = "node-1"\ninsecure = true\n'), {})


def test_the_rendered_skeleton_loads_back(tmp_path: Path) -> None:
    text = render_config({"node": "node-7", "endpoint_host": "2001:db8::7", "insecure": True})
    config = load_agent_config(write(tmp_path, text), {})
    assert config.node == "node-7" and config.endpoint_host == "2001:db8::7"
    assert all(f"# {s.help}" in text for s in SETTINGS)


def test_the_unit_keeps_the_data_plane_through_restarts() -> None:
    unit = render_unit(Path("/etc/railnet/agent.toml"), "/usr/local/bin/railnet")
    lines = set(unit.splitlines())
    assert "ExecStart=/usr/local/bin/railnet agent --config /etc/railnet/agent.toml" in lines
    assert "KillMode=process" in lines and "Restart=always" in lines
    assert "StateDirectory=railnet" in lines
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_NET_BIND_SERVICE" in lines
    # A private mount namespace would hide /run/netns from the node.
    assert not any(line.startswith(("ProtectSystem=", "PrivateTmp=")) for line in lines)
