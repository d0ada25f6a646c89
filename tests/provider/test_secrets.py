"""Secrets stay secret: the dynamic provider never receives them (the engine sends plain
values and marks an output secret again only when an input of the same name was), so the
SDK asks for every output derived from a secret to be secret, and the provider keeps what
comes from the stack's settings (agent addresses, TLS paths) out of its outputs. The
checkpoint is inspected for clear text."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from railnet.engine.emulator import (
    DynamicProvider,
    ResourceState,
    checkpoint,
    destroy,
    refresh,
    run_program,
)

from ..linux.conftest import LabNet, inline_cluster, running_lab
from .harness import Engine, engine_on
from .test_engine_protocol import environments_on_nodes, program

pytestmark = pytest.mark.provider

SEED = {"api": {"replicas": 2}, "worker": {"nodes": ["node-2"]}}


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(2) as net:
        yield net


@pytest.fixture()
def engine(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file)) as eng:
        yield eng


SECRET_PROGRAM = """
import pulumi
import pulumi_railnet as railnet

shop = railnet.Project("shop")
prod = railnet.Environment(
    "production", project=shop, ipv4_cidr=pulumi.Output.secret("10.77.0.0/16")
)
api = railnet.Service("api", environment=prod, nodes=["node-1", "node-2"])
pulumi.export("api_ipv4", api.ipv4_addresses)
"""


def _inline_cluster(lab: LabNet) -> str:
    return inline_cluster(lab.lab)


def _clear(value: Any) -> str:
    """Every value of a checkpoint, or of properties, outside their secrets."""
    if isinstance(value, dict) and "4dabf18193072939515e22adb298388d" in value:
        return ""
    if isinstance(value, dict):
        return " ".join(_clear(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_clear(v) for v in value)
    return str(value)


def test_no_secret_input_is_stored_in_clear_text(lab: LabNet, tmp_path: Path) -> None:
    source = tmp_path / "__main__.py"
    source.write_text(textwrap.dedent(SECRET_PROGRAM))
    inline = _inline_cluster(lab)
    config = {"railnet:cluster": inline, "railnet:domain": "hidden.internal"}
    provider = DynamicProvider(config, secret_keys=["railnet:cluster", "railnet:domain"])
    state: dict[str, ResourceState] = {}
    try:
        preview = run_program(source, provider, state, preview=True, config=config)
        previewed = {s.name: s for s in preview.steps}
        up = run_program(source, provider, state, preview=False, config=config)
        refreshed = refresh(provider, state, "railnet", "dev")
        assert set(refreshed) == {"shop", "production", "api"}
        assert up.exports["api_ipv4"][0].startswith("10.77.")

        stored = checkpoint(state, "railnet", "dev")
        text = _clear(json.loads(stored))
        secrets = ["10.77.", "hidden.internal", *json.loads(inline)["tls"].values()]
        secrets += json.loads(inline)["store"]["endpoints"]
        for value in secrets:
            assert value not in text, value
        # The check results a preview shows hold no clear text of them either.
        for step in previewed.values():
            shown = _clear(step.checked)
            assert "10.77." not in shown and "hidden.internal" not in shown, step.name
        # Secret, not gone: the provider computed them, the state keeps them encrypted.
        api = state["api"].outputs
        for key in ("plan", "ipv4_addresses", "instances", "env_vars", "private_domain"):
            assert api[key]["4dabf18193072939515e22adb298388d"], key
        assert state["production"].outputs["plan"]["value"]
        assert previewed["production"].checked["plan"]["value"]  # secret in the preview too
    finally:
        try:
            destroy(provider, state)
        finally:
            provider.close()
    assert environments_on_nodes(lab.lab) == {n.name: [] for n in lab.lab.nodes()}


def test_what_is_not_secret_stays_visible(engine: Engine) -> None:
    engine.up(program(SEED))
    stored = json.loads(engine.checkpoint())
    api = next(r for r in stored["deployment"]["resources"] if r["urn"].endswith("::api"))
    assert api["outputs"]["private_domain"] == "api.railway.internal"
    assert api["inputs"]["plan"][0] == "shop/production: create"
