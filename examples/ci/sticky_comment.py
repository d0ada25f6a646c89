"""Post the plan as one comment on the pull or merge request, or update the one posted
before: the comment carries a hidden marker, found again on the next run.

    python sticky_comment.py github PLAN.md   # GITHUB_TOKEN, GITHUB_REPOSITORY, PR_NUMBER
    python sticky_comment.py gitlab PLAN.md   # GITLAB_TOKEN, CI_PROJECT_ID, CI_MERGE_REQUEST_IID

The API roots come from the CI system's own variables (GITHUB_API_URL, CI_API_V4_URL).
Standard library only, so it runs wherever railnet is installed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any

MARKER = "<!-- railnet-plan -->"


def call(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode("utf-8")
    return json.loads(text) if text else None


def pages(url: str, headers: dict[str, str]) -> list[Any]:
    found: list[Any] = []
    page = 1
    while True:
        sep = "&" if "?" in url else "?"
        batch = call("GET", f"{url}{sep}per_page=100&page={page}", headers)
        found += batch
        if len(batch) < 100:
            return found
        page += 1


def github(body: str) -> str:
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    repo, number = os.environ["GITHUB_REPOSITORY"], os.environ["PR_NUMBER"]
    headers = {
        "Authorization": f"Bearer {os.environ['GITHUB_TOKEN']}",
        "Accept": "application/vnd.github+json",
    }
    comments = pages(f"{api}/repos/{repo}/issues/{number}/comments", headers)
    mine = next((c for c in comments if MARKER in (c.get("body") or "")), None)
    if mine is None:
        call("POST", f"{api}/repos/{repo}/issues/{number}/comments", headers, {"body": body})
        return "posted"
    call("PATCH", f"{api}/repos/{repo}/issues/comments/{mine['id']}", headers, {"body": body})
    return "updated"


def gitlab(body: str) -> str:
    api = os.environ["CI_API_V4_URL"]
    project, iid = os.environ["CI_PROJECT_ID"], os.environ["CI_MERGE_REQUEST_IID"]
    headers = {"PRIVATE-TOKEN": os.environ["GITLAB_TOKEN"]}
    notes_url = f"{api}/projects/{project}/merge_requests/{iid}/notes"
    notes = pages(notes_url, headers)
    mine = next((n for n in notes if MARKER in (n.get("body") or "")), None)
    if mine is None:
        call("POST", notes_url, headers, {"body": body})
        return "posted"
    call("PUT", f"{notes_url}/{mine['id']}", headers, {"body": body})
    return "updated"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("github", "gitlab"):
        print("usage: sticky_comment.py github|gitlab PLAN.md", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        body = f"{MARKER}\n{f.read()}"
    done = github(body) if argv[0] == "github" else gitlab(body)
    print(f"sticky_comment: {done} the railnet plan comment")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
