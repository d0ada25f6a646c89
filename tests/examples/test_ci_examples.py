"""The ready-made CI files under ``examples/ci/``: valid against their published schemas
(check-jsonschema's bundled copies, offline), doing what docs/plan.md says, and the scripts
they call run against fixture previews, the sticky comment against a loopback fake API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bench.plan_bench import generate_preview

pytestmark = pytest.mark.examples

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"
GITHUB = CI / "github" / "railnet-plan.yml"
GITLAB = CI / "gitlab" / "railnet-plan.gitlab-ci.yml"
FIXTURES = REPO / "tests" / "fixtures" / "preview"
BIN = Path(sys.executable).parent
CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(BIN)) or shutil.which(
    "check-jsonschema"
)
needs_check_jsonschema = pytest.mark.skipif(
    CHECK_JSONSCHEMA is None,
    reason="needs check-jsonschema (a dev dependency: pip install -e '.[dev]')",
)


def load_yaml(path: Path) -> Any:
    yaml = pytest.importorskip("ruamel.yaml", reason="needs ruamel.yaml (with check-jsonschema)")
    return yaml.YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA is not None
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        # The bundled schemas are enough: no network is asked for (CI runs it offline).
        env={**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"},
    )


# -- the files are what their CI systems accept --------------------------------------------------


@needs_check_jsonschema
@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", GITLAB)],
    ids=["github", "gitlab"],
)
def test_the_ci_files_validate_against_their_published_schemas(schema: str, path: Path) -> None:
    r = check_jsonschema(schema, path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok -- validation done" in r.stdout


@needs_check_jsonschema
@pytest.mark.parametrize(
    ("schema", "path", "old", "new"),
    [
        ("vendor.github-workflows", GITHUB, "    runs-on: ubuntu-latest\n", "    runs-on: 7\n"),
        ("vendor.gitlab-ci", GITLAB, "    when: always\n", "    when: sometimes\n"),
    ],
    ids=["github", "gitlab"],
)
def test_the_schemas_do_reject_a_broken_file(
    tmp_path: Path, schema: str, path: Path, old: str, new: str
) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / path.name
    broken.write_text(text.replace(old, new), encoding="utf-8")
    assert check_jsonschema(schema, broken).returncode != 0


def _runs(steps: list[dict[str, Any]]) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps)


def test_the_github_workflow_does_the_whole_check() -> None:
    flow = load_yaml(GITHUB)
    assert "pull_request" in flow["on"]  # YAML 1.2: "on" is a key, not true
    assert flow["permissions"]["pull-requests"] == "write"
    steps = flow["jobs"]["plan"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    runs = _runs(steps)
    assert "pip install" in runs and "railnet" in runs  # installs railnet
    assert any(u.startswith("pulumi/actions@") for u in uses)
    assert "pulumi preview --json" in runs
    assert '"$RAILNET_CI/railnet-pr-check.sh" preview.json railnet-plan' in runs
    assert 'cat railnet-plan/plan.md >> "$GITHUB_STEP_SUMMARY"' in runs
    assert 'sticky_comment.py" github railnet-plan/plan.md' in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "railnet-plan/plan.json" in upload["with"]["path"]
    assert upload["if"] == "always()"
    assert steps[-1]["run"] == 'exit "${{ steps.plan.outputs.status }}"'
    assert flow["env"]["RAILNET_FAIL_ON"]


def test_the_gitlab_job_does_the_whole_check() -> None:
    job = load_yaml(GITLAB)["railnet-plan"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    script = "\n".join([*job["before_script"], *job["script"]])
    assert "pip install" in script and "railnet" in script
    assert "pulumi preview --json" in script
    assert '"$RAILNET_CI/railnet-pr-check.sh" preview.json railnet-plan' in script
    assert 'sticky_comment.py" gitlab railnet-plan/plan.md' in script
    assert job["script"][-1] == 'exit "$status"'
    assert job["artifacts"]["when"] == "always" and "railnet-plan/" in job["artifacts"]["paths"]
    assert job["variables"]["RAILNET_FAIL_ON"]


# -- the check script on fixture previews --------------------------------------------------------


def pr_check(preview: Path, out: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    r = subprocess.run(
        ["bash", str(CI / "railnet-pr-check.sh"), str(preview), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=out.parent,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env},
    )
    return r, out


def test_a_clean_preview_passes_and_writes_every_file(tmp_path: Path) -> None:
    r, out = pr_check(FIXTURES / "create.json", tmp_path / "railnet-plan")
    assert r.returncode == 0, r.stderr
    assert (out / "plan.md").read_text(encoding="utf-8").startswith("## railnet network plan\n")
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert plan["format"] == 2 and plan["environments"]
    assert (out / "plan.txt").read_text(encoding="utf-8").endswith("Consequences: none\n")


def test_what_fail_on_names_fails_the_check(tmp_path: Path) -> None:
    r, out = pr_check(FIXTURES / "delete.json", tmp_path / "railnet-plan")
    assert r.returncode == 1
    assert "railnet plan: failing on delete" in r.stderr
    assert "| **delete** | 3 |" in (out / "plan.md").read_text(encoding="utf-8")


def test_a_failed_preview_fails_the_check_and_says_why(tmp_path: Path) -> None:
    preview = tmp_path / "preview.json"
    preview.write_text(
        json.dumps({"diagnostics": [{"message": "error: boom", "severity": "error"}]}),
        encoding="utf-8",
    )
    r, out = pr_check(preview, tmp_path / "railnet-plan")
    assert r.returncode == 2
    comment = (out / "plan.md").read_text(encoding="utf-8")
    assert "**No plan:**" in comment and "the preview failed" in comment


def test_a_big_preview_still_fits_the_comment(tmp_path: Path) -> None:
    preview = tmp_path / "preview.json"
    preview.write_text(generate_preview(), encoding="utf-8")
    r, out = pr_check(preview, tmp_path / "railnet-plan", RAILNET_MAX_BYTES="8000")
    assert r.returncode == 1, r.stderr  # the generated change deletes and replaces
    comment = (out / "plan.md").read_text(encoding="utf-8")
    assert len(comment.encode("utf-8")) <= 8000
    assert f"the full plan is in `{out / 'plan.json'}`" in comment


# -- the sticky comment against a loopback fake of each API ----------------------------------------


class FakeApi(BaseHTTPRequestHandler):
    comments: list[dict[str, Any]]
    calls: list[tuple[str, str]]

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        return loaded

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path))
        self._reply(self.comments if "page=1" in self.path else [])

    def do_POST(self) -> None:
        self.calls.append(("POST", self.path))
        comment = {"id": 100 + len(self.comments), "body": self._body()["body"]}
        self.comments.append(comment)
        self._reply(comment, 201)

    def _edit(self) -> None:
        self.calls.append((self.command, self.path))
        cid = int(self.path.rsplit("/", 1)[-1])
        comment = next(c for c in self.comments if c["id"] == cid)
        comment["body"] = self._body()["body"]
        self._reply(comment)

    do_PATCH = _edit
    do_PUT = _edit


@pytest.fixture()
def fake_api() -> Iterator[tuple[str, type[FakeApi]]]:
    handler = type("Handler", (FakeApi,), {"comments": [{"id": 7, "body": "LGTM"}], "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_the_comment_is_posted_once_then_updated(
    tmp_path: Path, fake_api: tuple[str, type[FakeApi]], system: str
) -> None:
    url, api = fake_api
    env = {
        **os.environ,
        "NO_PROXY": "127.0.0.1",
        "GITHUB_API_URL": url,
        "GITHUB_TOKEN": "t",
        "GITHUB_REPOSITORY": "acme/infra",
        "PR_NUMBER": "12",
        "CI_API_V4_URL": url,
        "GITLAB_TOKEN": "t",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "3",
    }
    plan = tmp_path / "plan.md"
    results = []
    for text in ("## railnet network plan\nfirst\n", "## railnet network plan\nsecond\n"):
        plan.write_text(text, encoding="utf-8")
        r = subprocess.run(
            [sys.executable, str(CI / "sticky_comment.py"), system, str(plan)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        results.append(r.stdout.strip())
    assert results == [
        "sticky_comment: posted the railnet plan comment",
        "sticky_comment: updated the railnet plan comment",
    ]
    mine = [c for c in api.comments if "railnet-plan" in c["body"]]
    assert len(mine) == 1 and mine[0]["body"].endswith("second\n")
    assert api.comments[0] == {"id": 7, "body": "LGTM"}  # someone else's stays
    edit = "PATCH" if system == "github" else "PUT"
    base = "/repos/acme/infra/issues" if system == "github" else "/projects/42/merge_requests/3"
    assert [m for m, _ in api.calls] == ["GET", "POST", "GET", edit]
    assert all(path.startswith(base) for _, path in api.calls)
