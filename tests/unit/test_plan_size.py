"""A plan always fits a PR comment: the 1,000-service preview in 20 environments (the one
``bench/plan_bench.py`` generates) renders within the bound and still names every
consequence kind with its count; what is cut is counted and points at the full plan."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.plan_bench import generate_preview

from railnet.cli.main import main
from railnet.core.plan_render import DEFAULT_MAX_BYTES, GITHUB_COMMENT_LIMIT

pytestmark = pytest.mark.unit

DETAILS = re.compile(r"^<details><summary><code>([^<]+)</code>", re.MULTILINE)


@pytest.fixture(scope="module")
def big_preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("big") / "preview.json"
    path.write_text(generate_preview(), encoding="utf-8")
    yield path


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_default_bound_is_under_githubs_comment_limit() -> None:
    assert DEFAULT_MAX_BYTES < GITHUB_COMMENT_LIMIT


@pytest.mark.parametrize("max_bytes", [None, 20_000, 4_000])
def test_a_big_plan_fits_and_keeps_what_a_reviewer_must_see(
    capsys: pytest.CaptureFixture[str], big_preview: Path, tmp_path: Path, max_bytes: int | None
) -> None:
    full = tmp_path / "plan.json"
    bound = ("--max-bytes", str(max_bytes)) if max_bytes else ()
    code, out, err = plan(
        capsys, str(big_preview), "--format", "markdown", "--output", str(full), *bound
    )
    assert (code, err) == (0, "")
    limit = max_bytes or DEFAULT_MAX_BYTES
    assert len(out.encode("utf-8")) <= limit
    assert len(out) <= GITHUB_COMMENT_LIMIT

    report = json.loads(full.read_text(encoding="utf-8"))
    assert len(report["environments"]) == 20
    # Every consequence kind, with its count, whatever was cut.
    counted = Counter(c["severity"] for c in report["consequences"])
    assert len(counted) >= 3
    for kind, n in counted.items():
        assert f"| **{kind}** | {n} |\n" in out
    # The summary table: a row per environment (the bound here leaves room for all 20).
    for env in report["environments"]:
        assert f"| `{env['project']}/{env['environment']}` | {env['action']} |" in out

    shown = DETAILS.findall(out)
    assert len(shown) < 20  # the full details are far over any of these bounds
    left = 20 - len(shown)
    changes_left = sum(
        len(e["services"]) + len(e["dns"]) + len(e["peers"]) + len(e["namespaces"])
        for e in report["environments"]
        if f"{e['project']}/{e['environment']}" not in shown
    )
    notice = re.search(r"\*\*Cut to fit a comment:\*\* (.*) left out; (.*)\.\n", out)
    assert notice is not None, out[-2000:]
    assert f"the details of {left} of 20 environments ({changes_left} changes)" in notice[1]
    assert notice[2] == f"the full plan is in `{full}`"


def test_details_come_smallest_first_so_the_largest_is_last(
    capsys: pytest.CaptureFixture[str], big_preview: Path
) -> None:
    code, out, _ = plan(capsys, str(big_preview), "--format", "markdown", "--max-bytes", "10000000")
    assert code == 0 and "Cut to fit" not in out
    blocks = re.findall(r"^<details>.*?^</details>$", out, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 20
    sizes = [len(b.encode("utf-8")) for b in blocks]
    assert sizes == sorted(sizes)


def test_without_output_the_cut_says_how_to_get_the_full_plan(
    capsys: pytest.CaptureFixture[str], big_preview: Path
) -> None:
    code, out, _ = plan(capsys, str(big_preview), "--format", "markdown")
    assert code == 0
    assert "run `railnet plan` again with `--output plan.txt` for the full plan." in out


def test_text_and_json_are_never_cut(capsys: pytest.CaptureFixture[str], big_preview: Path) -> None:
    _, text, _ = plan(capsys, str(big_preview), "--max-bytes", "4000")
    assert len(text) > 100_000 and "Cut to fit" not in text


@pytest.mark.parametrize(("value", "says"), [("lots", "whole number"), ("100", "at least")])
def test_a_bad_bound_is_one_line(
    capsys: pytest.CaptureFixture[str], big_preview: Path, value: str, says: str
) -> None:
    code, out, err = plan(capsys, str(big_preview), "--max-bytes", value)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "--max-bytes" in err and says in err


FIXTURES = Path(__file__).parent.parent / "fixtures" / "preview"


@pytest.mark.parametrize("name", ["create", "delete", "ipv6_switch", "mixed", "replace"])
@pytest.mark.parametrize("max_bytes", [2_000, 2_500, 3_500])
def test_every_fixture_fits_a_small_bound(
    capsys: pytest.CaptureFixture[str], name: str, max_bytes: int
) -> None:
    code, out, _ = plan(
        capsys,
        str(FIXTURES / f"{name}.json"),
        "--format",
        "markdown",
        "--max-bytes",
        str(max_bytes),
    )
    assert code == 0
    assert len(out.encode("utf-8")) <= max_bytes
    assert out.startswith("## railnet network plan\n")
