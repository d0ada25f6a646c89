"""`railnet plan`: golden renderings of every preview fixture, exit codes for CI, and one-line
errors for bad input.

Golden files live in ``tests/golden/plan/<fixture>.<txt|md|json>`` and are compared byte
for byte. After a deliberate change to the output, rewrite them with
``RAILNET_UPDATE_GOLDEN=1 pytest tests/unit/test_plan_cli.py`` and read the diff before
committing it.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from railnet.cli.main import main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "preview"
GOLDEN = REPO / "tests" / "golden" / "plan"
BROKEN = ("malformed", "truncated")
"""Fixtures that are bad input on purpose: they have no plan, only an error."""
EXTENSIONS = {"text": "txt", "markdown": "md", "json": "json"}
UPDATE_GOLDEN = os.environ.get("RAILNET_UPDATE_GOLDEN") == "1"

WITHHELD: dict[str, str] = {}
"""Fixtures whose output is wrong today: no golden is blessed for them until it is fixed."""

WARNED = {
    "unknown_op": (
        "railnet plan: warning: changeSummary.frobnicate is 'frobnicate', an operation railnet "
        "does not know (a newer Pulumi?); left out of the plan\n"
        "railnet plan: warning: steps[2].op is 'frobnicate', an operation railnet does not "
        "know (a newer Pulumi?) (for later); left out of the plan\n"
    )
}
"""Fixtures that plan with a warning on stderr (and exit 0)."""

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem not in BROKEN)


def fixture(name: str) -> Path:
    return FIXTURES / f"{name}.json"


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``railnet plan ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    data = actual.encode("utf-8")
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.exists(), f"{path} is missing; write it with RAILNET_UPDATE_GOLDEN=1"
    expected = path.read_bytes()
    if data != expected:
        # The assertion shows a line diff; the bytes comparison above is the real check.
        assert actual == expected.decode("utf-8"), f"{path} differs"
        pytest.fail(f"{path} differs in its bytes only (line endings or encoding)")


def golden_cases() -> list[object]:
    cases: list[object] = []
    for name in FIXTURE_NAMES:
        marks = (
            [pytest.mark.skip(reason=f"golden withheld: {WITHHELD[name]}")]
            if name in WITHHELD
            else []
        )
        for fmt, ext in EXTENSIONS.items():
            cases.append(pytest.param(name, fmt, id=f"{name}.{ext}", marks=marks))
    return cases


# -- golden renderings -----------------------------------------------------------------------------


def test_every_usable_fixture_is_covered() -> None:
    assert FIXTURE_NAMES == [
        "create",
        "delete",
        "ipv6_switch",
        "mixed",
        "refresh",
        "replace",
        "unknown_op",
        "update",
    ]
    assert set(WITHHELD) <= set(FIXTURE_NAMES)


@pytest.mark.parametrize(("name", "fmt"), golden_cases())
def test_golden(capsys: pytest.CaptureFixture[str], name: str, fmt: str) -> None:
    code, out, err = plan(capsys, str(fixture(name)), "--format", fmt)
    assert (code, err) == (0, WARNED.get(name, ""))
    check_golden(f"{name}.{EXTENSIONS[fmt]}", out)


def test_no_stale_golden_files() -> None:
    expected = {
        f"{name}.{ext}"
        for name in FIXTURE_NAMES
        if name not in WITHHELD
        for ext in EXTENSIONS.values()
    }
    present = {p.name for p in GOLDEN.iterdir()} if GOLDEN.exists() else set()
    assert present == expected


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_three_formats_agree(capsys: pytest.CaptureFixture[str], name: str) -> None:
    """Independent of the golden files: the same report whatever the format."""
    _, text, _ = plan(capsys, str(fixture(name)))
    _, markdown, _ = plan(capsys, str(fixture(name)), "--format", "markdown")
    _, raw, _ = plan(capsys, str(fixture(name)), "--format", "json")
    report = json.loads(raw)
    assert report["format"] == 2
    counted = Counter(c["severity"] for c in report["consequences"])
    assert set(counted) == set(report["severities"])
    kinds = ", ".join(f"{k} ({n})" for k, n in sorted(counted.items())) or "none"
    assert text.endswith(f"Consequences: {kinds}\n")
    for kind, n in counted.items():
        assert f"| **{kind}** | {n} |\n" in markdown
    for env in report["environments"]:
        title = f"{env['project']}/{env['environment']}"
        assert f"Environment {title} [{env['action']}]\n" in text
        assert f"<summary><code>{title}</code>: {env['action']}</summary>" in markdown
        for c in env["consequences"]:
            assert f"  ! {c['severity']}: {c['message']}\n" in text
        # The summary row's Consequences column is what the list says of this environment.
        listed = {
            c["severity"]
            for c in report["consequences"]
            if (c["project"], c["environment"]) == (env["project"], env["environment"])
        }
        assert set(env["severities"]) == listed
        column = ", ".join(sorted(listed)) or "none"
        assert f"| `{title}` | {env['action']} |" in markdown
        row = next(line for line in markdown.splitlines() if line.startswith(f"| `{title}` |"))
        assert row.endswith(f"| {column} |")
    for c in report["consequences"]:
        # Every consequence names its project/environment and what it happens to.
        assert c["project"] and c["environment"] and c["subject"], c
        assert f"- **{c['severity']}** `{c['project']}/{c['environment']}`: {c['message']}\n" in (
            markdown
        )
    for note in report["notes"]:
        assert f"note: {note}\n" in text
        assert f"> note: {note}" in markdown
    assert len(report["notes"]) == len(set(report["notes"]))
    for r in report["resources"]:
        assert f" {r['kind']} {r['name']}" in text


# -- exit codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fail_on", "hit"),
    [
        ("replace", "replace", "replace"),
        ("mixed", "replace", "replace"),
        ("delete", "delete", "delete"),
        ("replace", "delete,replace", "delete, replace"),
        ("ipv6_switch", "address-change", "address-change"),
        ("ipv6_switch", "records-removed", "records-removed"),
        ("update", "connections-drop", "connections-drop"),
        ("update", "any", "connections-drop"),
        ("delete", "any", "delete"),
        ("ipv6_switch", "any", "address-change, records-removed"),
        ("mixed", "any", "connections-drop, delete, replace"),
        ("replace", " delete , address-change", "delete"),
    ],
)
def test_fail_on_a_consequence_that_happens_exits_1(
    capsys: pytest.CaptureFixture[str], name: str, fail_on: str, hit: str
) -> None:
    _, plain, _ = plan(capsys, str(fixture(name)))
    code, out, err = plan(capsys, str(fixture(name)), "--fail-on", fail_on)
    assert code == 1
    assert out == plain  # the plan is printed all the same
    assert err == f"railnet plan: failing on {hit}\n"


@pytest.mark.parametrize(
    ("name", "fail_on"),
    [
        ("create", "any"),
        ("create", "delete,replace"),
        ("delete", "address-change"),
        ("delete", "replace,records-removed,connections-drop"),
        ("ipv6_switch", "delete,replace,connections-drop"),
        ("update", "address-change"),
        ("update", ""),
        ("replace", "records-removed"),
    ],
)
def test_fail_on_something_absent_exits_0(
    capsys: pytest.CaptureFixture[str], name: str, fail_on: str
) -> None:
    code, out, err = plan(capsys, str(fixture(name)), "--fail-on", fail_on)
    assert (code, err) == (0, "")
    assert out.startswith("Resources\n")


def test_address_change_appears_only_where_addresses_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    codes = {
        name: plan(capsys, str(fixture(name)), "--fail-on", "address-change")[0]
        for name in FIXTURE_NAMES
    }
    assert codes == {
        "create": 0,
        "delete": 0,
        "ipv6_switch": 1,
        "mixed": 0,
        "refresh": 0,
        "replace": 0,
        "unknown_op": 0,
        "update": 0,
    }


def test_a_refresh_step_is_no_change(capsys: pytest.CaptureFixture[str]) -> None:
    # `pulumi preview --refresh` writes a refresh step for every resource and hides the
    # same step after it: worker is refreshed and stays; only database's update shows.
    code, out, err = plan(capsys, str(fixture("refresh")), "--fail-on", "delete,replace")
    assert (code, err) == (0, "")
    assert "worker" not in out
    assert out.startswith("Resources\n  update Service database in shop/production\n")
    # The same plan as the update file's database change alone.
    assert "service postgres: renamed (from database)" in out
    assert "service worker" not in out


def _refresh_preview(tmp_path: Path, program_steps: list[dict[str, Any]]) -> Path:
    """refresh.json with its program steps (everything after the refreshes) replaced."""
    raw = json.loads(fixture("refresh").read_text(encoding="utf-8"))
    raw["steps"] = [s for s in raw["steps"] if s["op"] == "refresh"] + program_steps
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _refreshed(name: str) -> dict[str, Any]:
    raw = json.loads(fixture("refresh").read_text(encoding="utf-8"))
    return next(s for s in raw["steps"] if s["op"] == "refresh" and s["urn"].endswith(name))


def test_a_refresh_with_nothing_after_it_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = plan(capsys, str(_refresh_preview(tmp_path, [])), "--fail-on", "any")
    assert (code, err) == (0, "")
    assert "Resources" not in out and "Consequences: none" in out


def test_a_refresh_then_a_delete_is_a_delete(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # worker left the program: its refresh step, then the delete the program causes.
    worker = _refreshed("::worker")
    delete = {
        "op": "delete",
        "urn": worker["urn"],
        "provider": worker["provider"],
        "oldState": worker["oldState"],
        "detailedDiff": None,
    }
    path = _refresh_preview(tmp_path, [delete])
    code, out, err = plan(capsys, str(path), "--fail-on", "delete")
    assert code == 1 and err == "railnet plan: failing on delete\n"
    assert "delete Service worker" in out
    assert "service worker: removed" in out


def test_a_refresh_then_a_create_is_a_create(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # database was gone from the nodes: the refresh drops it and the program creates it.
    database = _refreshed("::database")
    state = {k: v for k, v in database["newState"].items() if k not in ("id", "outputs")}
    create = {
        "op": "create",
        "urn": database["urn"],
        "provider": database["provider"],
        "newState": state,
        "detailedDiff": None,
    }
    code, out, err = plan(capsys, str(_refresh_preview(tmp_path, [create])))
    assert (code, err) == (0, "")
    assert "create Service database" in out
    assert "service database: added" in out


def test_an_unknown_operation_warns_and_plans_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = plan(capsys, str(fixture("unknown_op")), "--fail-on", "delete")
    assert code == 0
    assert "steps[2].op is 'frobnicate'" in err and "(for later)" in err
    assert "later" not in out.split("note:")[0]
    assert "create Service api" in out
    assert "note: warning: steps[2].op is 'frobnicate'" in out


# -- bad input: exit 2, one line, no traceback -----------------------------------------------------


def only_line(err: str) -> str:
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("railnet plan: "), err
    return err.removesuffix("\n")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{}", "is an empty JSON object, not a preview"),
        ('{"steps": []}', "holds no steps and no changeSummary"),
        (
            json.dumps({"nodes": [{"name": "node-1", "agent": "198.18.0.1:7443"}]}),
            'is a railnet cluster file (it has "nodes")',
        ),
        ('{"stack": "dev", "outputs": {}}', "has none of a preview's fields"),
        (
            json.dumps(
                {
                    "diagnostics": [
                        {
                            "urn": "urn:pulumi:dev::infra::pulumi:pulumi:Stack::infra-dev",
                            "message": "error: Program failed with an unhandled exception:\n"
                            "  KeyError: 'railnet:cluster'\n",
                            "severity": "error",
                        }
                    ],
                    "duration": 1200000000,
                    "changeSummary": {"same": 1},
                }
            ),
            'the preview failed (infra-dev): "error: Program failed with an unhandled '
            "exception: KeyError: 'railnet:cluster'\"",
        ),
    ],
    ids=["empty-object", "no-steps", "cluster-file", "other-json", "failed-preview"],
)
def test_what_is_not_a_finished_preview_never_passes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "preview.json"
    path.write_text(content, encoding="utf-8")
    code, out, err = plan(capsys, str(path), "--fail-on", "any")
    assert (code, out) == (2, "")
    assert says in only_line(err)


def test_truncated_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = fixture("truncated")
    code, out, err = plan(capsys, str(path))
    assert (code, out) == (2, "")
    assert only_line(err) == (
        f"railnet plan: {path} is truncated: the text stops at line 102 column 39, inside a "
        "string begun at line 102 column 25, before the JSON is complete (was the preview "
        "interrupted, or the file read while it was still being written?); expected the JSON "
        f"that `pulumi preview --json` writes (run `pulumi preview --json > {path}` again)"
    )


def test_malformed_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = fixture("malformed")
    code, out, err = plan(capsys, str(path), "--format", "json")
    assert (code, out) == (2, "")
    assert only_line(err) == (
        f"railnet plan: {path}: steps[3].newState.inputs must be a JSON object, not an array "
        '(["__provider", "dns_ttl", "domain", "env_id", "environmen...); expected the JSON '
        f"that `pulumi preview --json` writes (run `pulumi preview --json > {path}` again)"
    )


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    code, out, err = plan(capsys, str(path))
    assert (code, out) == (2, "")
    assert only_line(err) == (
        f"railnet plan: invalid preview '{path}': cannot be read: No such file or directory"
    )


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank"])
def test_empty_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str) -> None:
    path = tmp_path / "preview.json"
    path.write_text(content)
    code, out, err = plan(capsys, str(path))
    assert (code, out) == (2, "")
    assert only_line(err) == (
        f"railnet plan: {path} is empty; expected the JSON that `pulumi preview --json` "
        f"writes (run `pulumi preview --json > {path}` again)"
    )


@pytest.mark.parametrize(
    ("fail_on", "named"),
    [("bogus", "bogus"), ("delete,Replace", "Replace"), ("any,", ""), ("deletes", "deletes")],
)
def test_bad_fail_on_names_the_value(
    capsys: pytest.CaptureFixture[str], fail_on: str, named: str
) -> None:
    code, out, err = plan(capsys, str(fixture("create")), "--fail-on", fail_on)
    assert (code, out) == (2, "")
    assert only_line(err) == (
        f"railnet plan: invalid --fail-on {named!r}: choose from address-change, "
        "connections-drop, delete, records-removed, replace or any"
    )


def test_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["plan", str(fixture("create")), "--format", "yaml"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "argument --format: invalid choice: 'yaml'" in err
    assert "Traceback" not in err


# -- where the plan goes ---------------------------------------------------------------------------


def test_output_writes_the_full_plan_in_the_format_of_its_suffix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, shown, _ = plan(capsys, str(fixture("delete")), "--format", "markdown")
    _, as_json, _ = plan(capsys, str(fixture("delete")), "--format", "json")
    _, as_text, _ = plan(capsys, str(fixture("delete")))
    md, js, txt = tmp_path / "plan.md", tmp_path / "plan.json", tmp_path / "plan.log"
    code, out, err = plan(
        capsys,
        str(fixture("delete")),
        "--format",
        "markdown",
        *("--output", str(md), "--output", str(js), "--output", str(txt)),
    )
    # stdout keeps the --format rendering; each file gets the format its suffix names.
    assert (code, out, err) == (0, shown, "")
    assert md.read_bytes() == shown.encode("utf-8")
    assert js.read_text(encoding="utf-8") == as_json
    assert txt.read_text(encoding="utf-8") == as_text
    assert shown.startswith("## railnet network plan\n")


def test_output_is_written_when_fail_on_hits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "plan.txt"
    code, out, err = plan(
        capsys, str(fixture("delete")), "--output", str(target), "--fail-on", "delete"
    )
    assert code == 1 and out.endswith("Consequences: delete (3)\n")
    assert err == "railnet plan: failing on delete\n"
    assert target.read_text(encoding="utf-8") == out


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, from_file, _ = plan(capsys, str(fixture("ipv6_switch")), "--format", "json")
    text = fixture("ipv6_switch").read_text(encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, err = plan(capsys, "-", "--format", "json")
    assert (code, err) == (0, "")
    assert out == from_file


def test_stdin_errors_name_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = plan(capsys, "-")
    assert (code, out) == (2, "")
    assert only_line(err).startswith("railnet plan: <stdin> is empty;")


# -- known bugs (strict: they fail loudly once fixed, so the marker comes off) ---------------------


def test_a_file_that_is_not_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "preview.json"
    path.write_bytes(b"\xff\xfe{\x00}\x00")
    code, out, err = plan(capsys, str(path))
    assert (code, out) == (2, "")
    assert str(path) in only_line(err)


def test_an_output_that_cannot_be_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "no" / "such" / "dir" / "plan.txt"
    code, out, err = plan(capsys, str(fixture("create")), "--output", str(target))
    assert (code, out) == (2, "")
    assert str(target) in only_line(err)


def _dns_added(report: dict[str, Any], environment: str, name: str) -> set[str]:
    envs = [e for e in report["environments"] if e["environment"] == environment]
    return {a for e in envs for d in e["dns"] if d["name"] == name for a in d["added"]}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            ("update", "production", "worker.railway.internal", {"10.250.0.3", "10.250.0.4"}),
            id="update-worker-takes-api-addresses",
        ),
        pytest.param(
            ("mixed", "production", "api.railway.internal", {"10.250.0.6"}),
            id="mixed-api-takes-a-held-address",
        ),
    ],
)
def test_new_addresses_are_not_guessed_from_a_partial_file(
    capsys: pytest.CaptureFixture[str], case: tuple[str, str, str, set[str]]
) -> None:
    """Unchanged services are not in a preview file, so the addresses they hold are not
    known: a new instance's address is named as new, never guessed into a held one."""
    name, environment, record, held = case
    _, raw, _ = plan(capsys, str(fixture(name)), "--format", "json")
    added = _dns_added(json.loads(raw), environment, record)
    assert not added & held
    assert added == set()
    pending = [
        d["pending"]
        for e in json.loads(raw)["environments"]
        if e["environment"] == environment
        for d in e["dns"]
        if d["name"] == record
    ]
    assert pending and all(n > 0 for n in pending)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_no_two_names_are_planned_at_one_address(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    _, raw, _ = plan(capsys, str(fixture(name)), "--format", "json")
    for env in json.loads(raw)["environments"]:
        named = [(a, d["name"]) for d in env["dns"] for a in d["added"]]
        assert len({a for a, _ in named}) == len(named), (env["environment"], named)


def test_new_services_get_their_addresses_at_apply(capsys: pytest.CaptureFixture[str]) -> None:
    # create.json: three new services, four instances. No agent holds an address for any of
    # them, so the plan counts them rather than guessing the first free one for each.
    _, raw, _ = plan(capsys, str(fixture("create")), "--format", "json")
    (env,) = json.loads(raw)["environments"]
    assert all(d["added"] == [] for d in env["dns"])
    assert sum(d["pending"] for d in env["dns"] if d["type"] == "A") == 4
    assert sum(d["pending"] for d in env["dns"] if d["type"] == "AAAA") == 4


def test_an_environment_the_stack_does_not_declare_is_flagged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing in replace.json declares shop/staging: whether it exists is not in the file,
    and the plan says so rather than claiming a creation."""
    _, raw, _ = plan(capsys, str(fixture("replace")), "--format", "json")
    report = json.loads(raw)
    assert any("shop/staging is not declared in this stack" in n for n in report["notes"])


def test_the_hint_never_tells_to_overwrite_a_file_that_is_not_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# not a preview\n")
    code, out, err = plan(capsys, str(readme))
    assert (code, out) == (2, "")
    assert f"> {readme}" not in err
    assert "`pulumi preview --json > preview.json` again" in err
