"""Every subcommand with bad arguments and bad files: one line saying what was wrong and
with which value, never a traceback, and a documented exit code (``railnet --help``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from railnet.cli.errors import EXIT_CODES
from railnet.cli.main import build_parser, main

pytestmark = pytest.mark.unit

DOCUMENTED = {code for code, _ in EXIT_CODES}


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors, --help, --version
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no railnet-lab/cluster.json to fall back on
    monkeypatch.delenv("RAILNET_CLUSTER", raising=False)
    monkeypatch.setenv("RAILNET_AGENT_CONFIG", str(tmp_path / "no-agent.toml"))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    corrupt = tmp_path / "corrupt-lab"
    corrupt.mkdir()
    (corrupt / "lab.json").write_text("{not json")
    no_id = tmp_path / "lab-without-id"
    no_id.mkdir()
    (no_id / "lab.json").write_text(json.dumps({"nodes": 3}))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("node = \n")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text('nodename = "node-1"\n')
    program = tmp_path / "program"
    program.mkdir()
    (program / "__main__.py").write_text("raise SystemExit('never run')\n")
    (program / ".railnet-trial").mkdir()
    (program / ".railnet-trial" / "damaged.json").write_text("[]")
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"nodes": [{"name": "node-1", "agent": "127.0.0.1:9"}]}))
    return {
        "FILE": str(a_file),
        "CORRUPT": str(corrupt),
        "NOID": str(no_id),
        "MISSING": str(tmp_path / "missing"),
        "BADTOML": str(bad_toml),
        "UNKNOWNKEY": str(unknown_key),
        "PROGRAM": str(program),
        "CLUSTER": str(cluster),
    }


AGENT = ["agent", "--node", "node-1", "--endpoint-host", "198.18.0.1", "--insecure"]

# (argv, the exit code, what the message must name)
CASES: list[tuple[list[str], int, str]] = [
    # the list
    (["lab", "down", "--dir", "FILE"], 2, "FILE"),
    (["lab", "down", "--dir", "CORRUPT"], 2, "lab.json"),
    (["lab", "down", "--dir", "NOID"], 2, "'id'"),
    ([*AGENT, "--listen", "bogus"], 2, "'bogus'"),
    ([*AGENT, "--state-dir", "FILE"], 2, "FILE"),
    ([*AGENT, "--log-level", "chatty"], 2, "'chatty'"),
    (["certs", "init", "--dir", "FILE", "--node", "node-1"], 2, "FILE"),
    ([*AGENT[:3], "--endpoint-host", "notanip", "--insecure"], 2, "'notanip'"),
    ([*AGENT, "--reconcile-interval", "-5"], 2, "-5"),
    # more bad arguments and files, command by command
    ([*AGENT, "--reconcile-interval", "soon"], 2, "'soon'"),
    ([*AGENT, "--wireguard", "quantum"], 2, "'quantum'"),
    ([*AGENT, "--metrics-listen", "9464"], 2, "'9464'"),
    ([*AGENT, "--dns-upstream", "resolver.lan"], 2, "'resolver.lan'"),
    (["lab", "up", "--dns-upstream", "8.8.8.8:99999", "--dir", "MISSING"], 2, "99999"),
    (["agent", "--config", "MISSING"], 2, "MISSING"),
    (["agent", "--config", "BADTOML"], 2, "BADTOML"),
    (["agent", "--config", "UNKNOWNKEY"], 2, "nodename"),
    (["agent", "--node", "Node_1", "--endpoint-host", "198.18.0.1", "--insecure"], 2, "Node_1"),
    (["lab", "up", "--nodes", "0", "--dir", "MISSING"], 2, "--nodes 0"),
    (["lab", "up", "--nodes", "three"], 2, "'three'"),
    (["lab", "up", "--dir", "FILE"], 2, "FILE"),
    (["lab", "frobnicate"], 2, "frobnicate"),
    (["certs", "init", "--dir", "MISSING", "--node", "node-1", "--node-ip", "node-2=10.0.0.2"],
     2, "node-2"),
    (["certs", "init", "--dir", "MISSING", "--node", "node-1", "--node-ip", "node-1=ten"],
     2, "'ten'"),
    (["certs", "init", "--dir", "MISSING", "--node", "Bad_Name"], 2, "Bad_Name"),
    (["certs", "init", "--dir", "MISSING", "--node", "node-1", "--days", "0"], 2, "--days 0"),
    (["certs", "node", "--dir", "MISSING", "--node", "node-1"], 2, "MISSING"),
    (["certs", "renew", "--dir", "MISSING"], 2, "MISSING"),
    (["certs", "revoke", "--dir", "MISSING", "--serial", "zz"], 2, "'zz'"),
    (["certs", "revoke", "--dir", "MISSING", "--cert", "FILE"], 2, "FILE"),
    (["certs", "init", "--dir", "MISSING", "--node", "node-1", "--ca-passphrase-file",
      "MISSING"], 2, "MISSING"),
    (["cluster", "show", "--cluster", "FILE"], 2, "FILE"),
    (["cluster", "show", "--cluster", "MISSING"], 2, "MISSING"),
    (["cluster", "cordon", "node-1", "--cluster", "MISSING"], 2, "MISSING"),
    (["cluster", "add-node", "node-1", "--agent", "nowhere", "--cluster", "MISSING",
      "--insecure"], 2, "'nowhere'"),
    (["status", "--cluster", "FILE"], 2, "FILE"),
    (["status", "--cluster", "MISSING"], 2, "MISSING"),
    (["status"], 2, "railnet-lab/cluster.json"),
    (["plan", "MISSING"], 2, "MISSING"),
    (["plan", "FILE"], 2, "FILE"),
    (["plan", "FILE", "--fail-on", "everything"], 2, "everything"),
    (["up", "MISSING"], 2, "MISSING"),
    (["up", "FILE"], 2, "FILE"),
    (["up", "PROGRAM", "--cluster", "MISSING"], 2, "MISSING"),
    (["destroy", "PROGRAM", "--cluster", "FILE"], 2, "FILE"),
    (["up", "PROGRAM", "--cluster", "CLUSTER", "--stack", "damaged"], 2, "damaged.json"),
    (["up", "PROGRAM", "--stack", "a/b", "--cluster", "FILE"], 2, "FILE"),
    (["demo", "--dir", "FILE"], 2, "FILE"),
    (["node", "install", "--node", "Bad_Name", "--config", "MISSING/agent.toml",
      "--unit-dir", "MISSING"], 2, "Bad_Name"),
    (["resolver"], 2, "--control"),
    # exec and build-exec: railnet's own failures are 125, never a command's status
    (["exec", "shop/production", "--", "true"], 125, "'shop/production'"),
    (["exec", "shop/production/api#x", "--", "true"], 125, "#"),
    (["exec", "shop/production/api"], 125, "'--'"),
    (["exec", "shop/production/api", "--", "true"], 125, "no-agent.toml"),
    (["exec", "shop/production/api", "--cluster", "FILE", "--", "true"], 125, "FILE"),
    (["exec", "--agent-config", "BADTOML", "shop/production/api", "--", "true"], 125,
     "BADTOML"),
    (["exec", "--bogus", "shop/production/api", "--", "true"], 125, "--bogus"),
    (["exec", "shop/production/api", "ls", "-l"], 125, "-l"),
    (["build-exec", "shop/production/api", "--", "true"], 125, "no-agent.toml"),
    (["build-exec", "Shop/production/api", "--", "true"], 125, "'Shop'"),
    (["build-exec", "--node", "node-9", "--cluster", "MISSING", "x/y/z", "--", "true"], 125,
     "MISSING"),
    (["frobnicate"], 2, "frobnicate"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "named"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_clear_line_with_a_documented_exit_code(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    argv: list[str],
    code: int,
    named: str,
) -> None:
    argv = [files.get(a, a) for a in argv]
    named = files.get(named, named)
    got, out, err = run(capsys, argv)
    assert "Traceback" not in out + err
    assert got == code and got in DOCUMENTED, (got, err)
    # The message: one line (argparse prints its usage first), naming the value.
    lines = [line for line in err.splitlines() if line.strip()]
    message = [
        line for line in lines if not line.startswith(("usage:", " ")) and "usage:" not in line
    ]
    assert len(message) == 1, err
    assert message[0].startswith("railnet"), message
    assert named in message[0], message


def test_the_exit_codes_and_environment_variables_are_in_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, ["--help"])
    assert code == 0
    for number, _ in EXIT_CODES:
        assert f"\n  {number:>3}  " in out
    for name in ("RAILNET_CLUSTER", "RAILNET_AGENT_CONFIG", "RAILNET_AGENT_SOCKET"):
        assert name in out
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for number, _ in EXIT_CODES:
        assert f"| {number} |" in readme
    assert "RAILNET_CLUSTER" in readme and "RAILNET_AGENT_SOCKET" in readme


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["--version"])
    assert code == 0 and out.startswith("railnet ") and out.split()[1][0].isdigit()


def test_no_lab_to_take_down_is_not_an_error(
    capsys: pytest.CaptureFixture[str], files: dict[str, str]
) -> None:
    code, out, err = run(capsys, ["lab", "down", "--dir", files["MISSING"]])
    assert code == 0 and "nothing to remove" in out and err == ""


def test_certs_init_again_keeps_every_key_and_certificate_unless_forced(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    base = ["certs", "init", "--dir", str(tls), "--node", "node-1"]
    code, _, err = run(capsys, [*base, "--node-ip", "node-1=10.0.0.1"])
    assert code == 0, err
    files = [tls / "nodes" / "node-1-key.pem", tls / "nodes" / "node-1.pem",
             tls / "provider-key.pem", tls / "operator-key.pem"]  # fmt: skip
    before = [f.read_bytes() for f in files]
    code, out, _ = run(capsys, base)  # the case: no --node-ip this time
    assert code == 0 and [f.read_bytes() for f in files] == before
    assert "kept node node-1" in out and "kept provider" in out and "kept operator" in out
    code, out, _ = run(capsys, [*base, "--node-ip", "node-1=10.0.0.2"])
    assert [f.read_bytes() for f in files] == before
    assert "kept node node-1: it does not name 10.0.0.2; --force reissues it" in out
    code, out, _ = run(capsys, [*base, "--node-ip", "node-1=10.0.0.2", "--force"])
    assert code == 0 and "wrote node node-1" in out
    after = [f.read_bytes() for f in files]
    assert all(a != b for a, b in zip(after, before, strict=True))
    code, out, _ = run(capsys, ["certs", "node", "--dir", str(tls), "--node", "node-1"])
    assert code == 0 and "kept node node-1" in out
    assert [f.read_bytes() for f in files] == after


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, (*path, name))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            found.append((" ".join(path), action))
    return found


NOT_HERE: tuple[str, ...] = ()


def test_every_flag_has_help_with_its_default_or_says_it_is_required() -> None:
    missing = []
    for command, action in _options(build_parser(), ("railnet",)):
        if command.startswith(NOT_HERE) or action.help == argparse.SUPPRESS:
            continue
        name = f"{command} {'/'.join(action.option_strings) or action.dest}"
        text = action.help or ""
        if not text:
            missing.append(f"{name}: no help")
        elif (
            action.option_strings
            and action.nargs != 0
            and "default" not in text
            and "required" not in text
        ):
            missing.append(f"{name}: says neither its default nor that it is required")
    assert missing == []


def test_shared_flags_have_one_name_and_meaning() -> None:
    cluster_help = {
        command: action.help
        for command, action in _options(build_parser(), ("railnet",))
        if "--cluster" in action.option_strings
    }
    assert {"railnet status", "railnet cluster show", "railnet exec", "railnet up"} <= set(
        cluster_help
    )
    for command, text in cluster_help.items():
        assert "cluster file" in str(text) and "RAILNET_CLUSTER" in str(text), command


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["lab", "up", "--dir", "MISSING"], 3),
        (["demo", "--dir", "MISSING"], 3),
        (["exec", "a/b/c", "--", "true"], 125),
        (["build-exec", "a/b/c", "--", "true"], 125),
    ],
)
def test_without_root_the_message_says_run_as_root(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    got, _, err = run(capsys, [files.get(a, a) for a in argv])
    assert got == code and "needs root" in err and "run it as root" in err, err
    assert err.count("\n") == 1
    assert not Path(files["MISSING"]).exists()  # nothing was made
