"""The isolation matrix: 2 projects by 2 environments (one IPv6-only) over 3 nodes. Every
instance tries every other over TCP, UDP and ICMP, IPv4 and IPv6, and by its DNS name.
Inside an environment every cell succeeds; across any boundary every cell fails. The
matrix is printed in docs/security.md, and this test checks that it is the one it saw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from railnet.core.desired import EnvironmentSpec, ServiceSpec
from railnet.core.document import IpMode

from .conftest import running_lab

pytestmark = pytest.mark.linux

PROBE = str(Path(__file__).with_name("isolation_probe.py"))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
PORT = 7980
NODES = ("node-1", "node-2", "node-3")
# Distinct IPv4 ranges, so that an address names one instance in the whole lab and a ping
# by address cannot be answered by a different instance that happens to share it.
ENVIRONMENTS = (
    ("shop", "production", IpMode.DUAL, "10.250.0.0/16"),
    ("shop", "staging", IpMode.IPV6, "10.250.0.0/16"),
    ("blog", "production", IpMode.DUAL, "10.252.0.0/16"),
    ("blog", "staging", IpMode.DUAL, "10.253.0.0/16"),
)


def specs() -> list[EnvironmentSpec]:
    found = []
    for i, (project, env, mode, cidr) in enumerate(ENVIRONMENTS):
        x, y = NODES[i % 3], NODES[(i + 1) % 3]
        found.append(
            EnvironmentSpec(
                project,
                env,
                ip_mode=mode,
                ipv4_cidr=cidr,
                services=(ServiceSpec("x", (x,)), ServiceSpec("y", (y,))),
            )
        )
    return found


def render(labels: list[str], cells: dict[tuple[str, str], str]) -> str:
    short = [label.replace("/", " ") for label in labels]
    lines = ["| from \\ to | " + " | ".join(short) + " |", "|---" * (len(labels) + 1) + "|"]
    for src, name in zip(labels, short, strict=True):
        row = [cells.get((src, dst), "·") for dst in labels]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def test_isolation_matrix() -> None:
    with running_lab(3) as net:
        targets = []
        for spec in specs():
            doc = net.deploy(spec).document
            for svc in doc.services:
                inst = svc.instances[0]
                label = f"{spec.project}/{spec.environment}/{svc.name}"
                netns = net.netns(spec.project, spec.environment, svc.name)
                net.serve(netns, label, PORT)
                targets.append(
                    {
                        "label": label,
                        "token": label,
                        "name": f"{svc.name}.{doc.domain}",
                        "ipv4": inst.ipv4,
                        "ipv6": inst.ipv6,
                        "netns": netns,
                    }
                )
        results: dict[str, dict[str, dict[str, bool]]] = {}
        for source in targets:
            others = [{k: v for k, v in t.items() if k != "netns"} for t in targets]
            others = [t for t in others if t["label"] != source["label"]]
            done = net.run(
                str(source["netns"]), sys.executable, PROBE, json.dumps(others), str(PORT),
                timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            results[str(source["label"])] = json.loads(done.stdout)

    labels = [str(t["label"]) for t in targets]
    cells: dict[tuple[str, str], str] = {}
    wrong = []
    for src, row in results.items():
        for dst, probes in row.items():
            same = src.rsplit("/", 1)[0] == dst.rsplit("/", 1)[0]
            ok = [name for name, passed in probes.items() if passed]
            cells[(src, dst)] = "✓" if len(ok) == len(probes) else "✗" if not ok else "!"
            if same and len(ok) != len(probes):
                wrong.append(f"{src} → {dst}: failed {sorted(set(probes) - set(ok))}")
            if not same and ok:
                wrong.append(f"{src} → {dst}: crossed the boundary by {ok}")
    assert not wrong, "\n".join(wrong)
    table = render(labels, cells)
    assert table in DOCS.read_text(), f"docs/security.md does not show this matrix:\n{table}"
