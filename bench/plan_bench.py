"""Plan rendering: `railnet plan` on a large preview, from the JSON text to all three renderings.

    python -m bench.plan_bench [--quick] [--runs N] [--output FILE]

The input is generated in memory in exactly the format of ``tests/fixtures/preview`` (what
``pulumi preview --json`` writes: 4-space indented, property maps sorted, ``"[secret]"``
for the dynamic provider's ``__provider``): one stack with 1,000 services over 20
environments of 50 services each. Two environments are new (an Environment ``create``
and 50 service ``create`` steps). Each of the other 18 has 30 service ``update`` steps
whose old state carries the outputs the agents reported (instances, addresses, env vars):
a third scale up, a third are renamed, a third scale down. It also has 15 ``create``
steps, 3 ``delete`` steps, and 2 logical ``replace`` steps that move a service to the next
environment. Services run on 5 nodes with 1 to 3 replicas.

One run times ``railnet.engine.preview_report.build_report`` (parse the text, group the steps per
environment, rebuild the old and new documents, ``plan_change`` each) followed by
``render_text``, ``render_markdown`` and ``render_json``. A first run warms the caches
and is not counted. The target applies to the median run; the max shows the noise.
No root, no network, no files unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from railnet.core.addressing import ula_prefix
from railnet.core.desired import service_id
from railnet.core.names import environment_id
from railnet.core.plan_render import PlanReport, render_json, render_markdown, render_text
from railnet.engine.preview_report import build_report

NAME = "Plan rendering"
TARGET_SECONDS = 1.0
TARGET = f"build_report + 3 renderers < {TARGET_SECONDS:g} s (median)"
FULL_RUNS = 9
QUICK_RUNS = 3

ENVIRONMENTS = 20
NEW_ENVIRONMENTS = 2
SERVICES_PER_ENVIRONMENT = 50
UPDATES, CREATES, DELETES, REPLACES = 30, 15, 3, 2
NODES = tuple(f"node-{i}" for i in range(1, 6))

PROJECT = "shop"
DOMAIN = "railway.internal"
STACK_URN = "urn:pulumi:dev::infra::pulumi:pulumi:Stack::infra-dev"
PROVIDER = (
    "urn:pulumi:dev::infra::pulumi:providers:pulumi-python::default::"
    "c6a2b0d4-5f3e-4c1a-9d7e-2b8f61a0e934"
)
SECRET = "[secret]"
CREATED = "2025-05-12T08:41:17.482913Z"
MODIFIED = "2025-06-03T14:02:55.90184Z"
SETTINGS_FROM_ENVIRONMENT = ("dns_ttl", "domain", "environment", "ip_mode", "ipv4_cidr", "project")


# -- the preview -------------------------------------------------------------------------------


def _urn(kind: str, name: str) -> str:
    return f"urn:pulumi:dev::infra::pulumi-python:dynamic/railnet:{kind}::{name}"


def _environment_name(index: int) -> str:
    return f"env-{index:02d}"


def _cidr(index: int) -> str:
    return f"10.{index}.0.0/16"


@dataclass(frozen=True)
class _Service:
    """One service as the program declares it (the new side) or as it was (the old side)."""

    resource: str
    """The Pulumi resource name (unique in the stack)."""
    environment: int
    name: str
    sid: str
    placement: tuple[str, ...]

    @property
    def env_name(self) -> str:
        return _environment_name(self.environment)

    @property
    def env_id(self) -> str:
        return environment_id(PROJECT, self.env_name)

    def inputs(self) -> dict[str, Any]:
        lines = [
            f"{PROJECT}/{self.env_name}: update",
            f"service {self.name}: {len(self.placement)} instance(s) on "
            f"{', '.join(self.placement) or 'no node'}",
        ]
        return {
            "__provider": SECRET,
            "dns_ttl": 5,
            "domain": DOMAIN,
            "env_id": self.env_id,
            "environment": self.env_name,
            "ip_mode": "dual",
            "ipv4_cidr": _cidr(self.environment),
            "name": self.name,
            "placement": list(self.placement),
            "plan": lines,
            "private_domain": f"{self.name}.{DOMAIN}",
            "project": PROJECT,
            "replicas": len(self.placement),
            "service_id": self.sid,
        }

    def outputs(self, first_offset: int) -> dict[str, Any]:
        """What the provider reported after the last update: inputs plus instances."""
        v4 = _cidr(self.environment).split("/")[0].rsplit(".", 2)[0]
        v6 = ula_prefix(self.env_id).network_address
        offsets = [first_offset + index for index in range(len(self.placement))]
        ipv4s = [f"{v4}.{offset // 256}.{offset % 256}" for offset in offsets]
        ipv6s = [str(v6 + offset) for offset in offsets]
        instances = [
            {"index": index, "ipv4": ipv4, "ipv6": ipv6, "node": node}
            for index, (node, ipv4, ipv6) in enumerate(
                zip(self.placement, ipv4s, ipv6s, strict=True)
            )
        ]
        out = self.inputs()
        out.update(
            {
                "env_vars": {
                    "RAILNET_PRIVATE_IPV4": ",".join(ipv4s),
                    "RAILNET_PRIVATE_IPV6": ",".join(ipv6s),
                    "RAILWAY_ENVIRONMENT_NAME": self.env_name,
                    "RAILWAY_PRIVATE_DOMAIN": f"{self.name}.{DOMAIN}",
                    "RAILWAY_PROJECT_NAME": PROJECT,
                    "RAILWAY_SERVICE_NAME": self.name,
                },
                "instances": instances,
                "ipv4_addresses": ipv4s,
                "ipv6_addresses": ipv6s,
            }
        )
        return dict(sorted(out.items()))


def _state(
    kind: str,
    resource: str,
    inputs: dict[str, Any],
    outputs: dict[str, Any] | None,
    *,
    id: str | None,
    environment: str | None,
    delete: bool = False,
    provider: str = PROVIDER,
) -> dict[str, Any]:
    """A ``ResourceV3`` in its declared field order, as the fixtures hold it."""
    state: dict[str, Any] = {"urn": _urn(kind, resource), "custom": True}
    if delete:
        state["delete"] = True
    if id is not None:
        state["id"] = id
    state["type"] = f"pulumi-python:dynamic/railnet:{kind}"
    state["inputs"] = dict(sorted(inputs.items()))
    if outputs is not None:
        state["outputs"] = outputs
    state["parent"] = STACK_URN
    depends_on = _urn("Environment", environment) if environment else _urn("Project", PROJECT)
    state["dependencies"] = [depends_on]
    state["provider"] = provider
    settings = SETTINGS_FROM_ENVIRONMENT if environment else ("project",)
    state["propertyDependencies"] = {key: [depends_on] for key in settings}
    if id is not None:
        state["created"] = CREATED
        state["modified"] = MODIFIED
    return state


def _step(op: str, urn: str, old: Any = None, new: Any = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"op": op, "urn": urn, "provider": PROVIDER}
    if old is not None:
        step["oldState"] = old
    if new is not None:
        step["newState"] = new
    step.update(extra)
    step["detailedDiff"] = None
    return step


def _placement(seed: int, replicas: int) -> tuple[str, ...]:
    return tuple(NODES[(seed + i) % len(NODES)] for i in range(replicas))


def _environment_create(index: int) -> dict[str, Any]:
    name = _environment_name(index)
    env_id = environment_id(PROJECT, name)
    prefix = ula_prefix(env_id)
    resolver4 = _cidr(index).split("/")[0].rsplit(".", 1)[0] + ".2"
    inputs = {
        "__provider": SECRET,
        "dns_ttl": 5,
        "domain": DOMAIN,
        "env_id": env_id,
        "ip_mode": "dual",
        "ipv4_cidr": _cidr(index),
        "ipv6_prefix": str(prefix),
        "name": name,
        "plan": [f"environment {PROJECT}/{name} ({env_id}): dual stack (IPv4 and IPv6)"],
        "project": PROJECT,
        "resolvers": [resolver4, str(prefix.network_address + 2)],
    }
    new = _state("Environment", name, inputs, None, id=None, environment=None)
    return _step("create", _urn("Environment", name), new=new)


def _service_step(
    op: str, old: _Service | None, new: _Service | None, offset: int, **extra: Any
) -> dict[str, Any]:
    old_state = new_state = None
    if old is not None:
        old_state = _state(
            "Service",
            old.resource,
            old.inputs(),
            old.outputs(offset),
            id=f"{old.env_id}/{old.sid}",
            environment=old.env_name,
            delete=op == "replace",
        )
    if new is not None:
        carried = op == "update"
        new_state = _state(
            "Service",
            new.resource,
            new.inputs(),
            dict(sorted(new.inputs().items())) if carried else None,
            id=f"{new.env_id}/{new.sid}" if carried else None,
            environment=new.env_name,
        )
    either = new if new is not None else old
    assert either is not None, "a step has an old side, a new side or both"
    return _step(op, _urn("Service", either.resource), old_state, new_state, **extra)


def _service(env: int, j: int, replicas: int, name: str = "") -> _Service:
    base = f"svc-{j:03d}"
    env_id = environment_id(PROJECT, _environment_name(env))
    return _Service(
        resource=f"{_environment_name(env)}-{base}",
        environment=env,
        name=name or base,
        sid=service_id(env_id, base),
        placement=_placement(env * 7 + j, replicas),
    )


def generate_preview() -> str:
    """The text of ``pulumi preview --json`` for the stack described in the module docstring."""
    steps: list[dict[str, Any]] = [
        {
            "op": "same",
            "urn": STACK_URN,
            "oldState": {"urn": STACK_URN, "custom": False, "type": "pulumi:pulumi:Stack"},
            "newState": {"urn": STACK_URN, "custom": False, "type": "pulumi:pulumi:Stack"},
            "detailedDiff": None,
        }
    ]
    ops = {"create": 0, "update": 0, "delete": 0, "replace": 0}
    existing = ENVIRONMENTS - NEW_ENVIRONMENTS
    for env in range(ENVIRONMENTS):
        if env >= existing:
            steps.append(_environment_create(env))
            ops["create"] += 1
            for j in range(SERVICES_PER_ENVIRONMENT):
                steps.append(_service_step("create", None, _service(env, j, 1 + j % 3), 0))
                ops["create"] += 1
            continue
        offset = 3  # the first assignable host: .1 is the gateway, .2 the resolver
        for j in range(SERVICES_PER_ENVIRONMENT):
            replicas = 1 + j % 3
            old = _service(env, j, replicas)
            if j < UPDATES:
                new = {
                    0: _service(env, j, replicas + 1),  # scale up
                    1: _service(env, j, replicas, name=f"svc-{j:03d}-v2"),  # rename
                    2: _service(env, j, replicas - 1),  # scale down
                }[j % 3]
                steps.append(_service_step("update", old, new, offset))
                ops["update"] += 1
            elif j < UPDATES + CREATES:
                steps.append(_service_step("create", None, old, 0))
                ops["create"] += 1
                continue
            elif j < UPDATES + CREATES + DELETES:
                steps.append(_service_step("delete", old, None, offset))
                ops["delete"] += 1
            else:
                moved = _Service(
                    old.resource,
                    (env + 1) % existing,
                    old.name + "-moved",
                    old.sid,
                    old.placement,
                )
                steps.append(
                    _service_step("replace", old, moved, offset, replaceReasons=["environment"])
                )
                ops["replace"] += 1
            offset += replicas
    digest = {
        "config": {"railnet:cluster": "/home/dev/railnet-lab/cluster.json"},
        "steps": steps,
        "duration": 41_276_338_102,
        # The root stack, the project and the environments that stay are unchanged.
        "changeSummary": dict(sorted({**ops, "same": 2 + existing}.items())),
    }
    return json.dumps(digest, indent=4, ensure_ascii=False) + "\n"


# -- the measurement -----------------------------------------------------------------------------


STAGES: tuple[tuple[str, Callable[[PlanReport], str]], ...] = (
    ("render_text", render_text),
    ("render_markdown", render_markdown),
    ("render_json", render_json),
)


@dataclass(frozen=True)
class Run:
    seconds: dict[str, float]
    """Stage → seconds; ``total`` is their sum."""
    sizes: dict[str, int]
    """Rendering → characters, to see that every run did the same work."""


def one_run(text: str) -> tuple[Run, PlanReport]:
    seconds: dict[str, float] = {}
    sizes: dict[str, int] = {}
    started = time.perf_counter()
    report = build_report(text, "bench-preview.json")
    seconds["build_report"] = time.perf_counter() - started
    for name, render in STAGES:
        t0 = time.perf_counter()
        sizes[name] = len(render(report))
        seconds[name] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    return Run(seconds, sizes), report


def check_report(report: PlanReport) -> dict[str, int]:
    """The plan covers what was generated, so the timing is of the real work."""
    envs = report.environments
    services_after = sum(dict(e.counts)["services_after"] for e in envs)
    failed = [n for n in report.notes if "cannot plan" in n]
    if len(envs) != ENVIRONMENTS or failed:
        raise SystemExit(
            f"plan_bench: the generated preview planned {len(envs)} of {ENVIRONMENTS} "
            f"environments ({'; '.join(failed) or 'no error noted'}); fix the generator"
        )
    return {
        "environments": len(envs),
        "services after": services_after,
        "service changes": sum(len(e.services) for e in envs),
        "DNS changes": sum(len(e.dns) for e in envs),
        "peer changes": sum(len(e.peers) for e in envs),
        "namespace changes": sum(len(e.namespaces) for e in envs),
        "consequences": sum(len(e.consequences) for e in envs),
        "resources": len(report.resources),
    }


@dataclass(frozen=True)
class Outcome:
    runs: list[Run]
    input_bytes: int
    steps: int
    services: int
    work: dict[str, int]

    def stat(self, stage: str) -> tuple[float, float]:
        values = [r.seconds[stage] for r in self.runs]
        return statistics.median(values), max(values)

    @property
    def passed(self) -> bool:
        return self.stat("total")[0] < TARGET_SECONDS


def measure(runs: int) -> Outcome:
    text = generate_preview()
    raw = json.loads(text)
    services = sum(1 for s in raw["steps"] if "railnet:Service::" in s["urn"])
    _, report = one_run(text)  # warm-up, not counted
    work = check_report(report)
    measured = []
    for i in range(runs):
        run, _ = one_run(text)
        measured.append(run)
        print(f"plan_bench: run {i + 1}/{runs}: {run.seconds['total']:.3f} s", file=sys.stderr)
    if len({tuple(sorted(r.sizes.items())) for r in measured}) != 1:
        raise SystemExit("plan_bench: the renderings differ between runs (not deterministic)")
    return Outcome(measured, len(text.encode()), len(raw["steps"]), services, work)


def markdown(outcome: Outcome) -> str:
    median, worst = outcome.stat("total")
    verdict = "pass" if outcome.passed else "**FAIL**"
    lines = [
        f"## {NAME}",
        "",
        f"`railnet plan` on a generated `pulumi preview --json` of {outcome.services:,} "
        f"services in {ENVIRONMENTS} environments ({outcome.steps:,} steps, "
        f"{outcome.input_bytes / 1e6:.1f} MB of JSON): creates, updates whose old state "
        "carries the instances and addresses, deletes and replaces. One run is "
        "`build_report` (parse, rebuild the documents, `plan_change` per environment) and "
        "the text, Markdown and JSON renderers, in one process "
        f"(Python {platform.python_version()}); {len(outcome.runs)} runs after a warm-up. "
        "Regenerate with `python -m bench.plan_bench`.",
        "",
        "| stage | median | max |",
        "|---|---|---|",
    ]
    for stage in ("build_report", *(name for name, _ in STAGES), "total"):
        m, w = outcome.stat(stage)
        label = f"**{stage}**" if stage == "total" else f"`{stage}`"
        lines.append(f"| {label} | {m * 1000:.0f} ms | {w * 1000:.0f} ms |")
    lines += [
        "",
        f"Target: {TARGET}. Result: median {median:.3f} s, max {worst:.3f} s: {verdict}.",
        "",
        "The plan it renders: "
        + ", ".join(f"{count:,} {what}" for what, count in outcome.work.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs, not {FULL_RUNS}")
    parser.add_argument("--runs", type=int, help="override the number of runs")
    parser.add_argument("--output", type=Path, help="also write the markdown section here")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else FULL_RUNS)
    if runs < 1:
        parser.error(f"--runs must be 1 or more, not {runs}")
    outcome = measure(runs)
    section = markdown(outcome)
    print(section, end="")
    if args.output is not None:
        args.output.write_text(section, encoding="utf-8")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
