"""The emulated engine does what the real one does around the hooks, and the provider holds up
under it (``railnet.engine.emulator`` cites the engine's source for each):

- a replacement is checked again with no old inputs, and the replaced resource is deleted
  after every create and update of the run, unless delete-before-replace applies;
- a preview of a create or update gets the checked inputs back as outputs, nothing else;
- refresh is Read, then Diff;
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from railnet.core.desired import ServiceSpec, with_service
from railnet.core.resources import service_ids
from railnet.engine.emulator import (
    DynamicProvider,
    ResourceState,
    destroy,
    run_program,
)

from ..linux.conftest import LabNet, running_lab
from .harness import Engine, engine_on
from .test_engine_protocol import program

pytestmark = pytest.mark.provider

SEED = {"api": {"replicas": 2}, "worker": {"nodes": ["node-2"]}}
MOVED = {"api": {"replicas": 2}, "worker": {"nodes": ["node-2"], "env": "staging"}}
BOTH = ("production", "staging")


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3) as net:
        yield net


@pytest.fixture()
def engine(lab: LabNet) -> Iterator[Engine]:
    with engine_on(str(lab.lab.cluster_file)) as eng:
        yield eng


def test_a_replacement_is_checked_again_and_the_old_one_deleted_after_the_run(
    engine: Engine,
) -> None:
    engine.up(program(SEED, BOTH))
    old_id = engine.state["worker"].id
    engine.calls.clear()

    steps = {s.name: s for s in engine.up(program(MOVED, BOTH))}

    assert steps["worker"].op == "replace"
    calls = engine.calls
    create = calls.index("Create worker")
    # step_generator.go: Check with the old inputs, Diff, then Check again with none.
    assert calls[create - 3 : create] == ["Check worker", "Diff worker", "Check worker"]
    # The delete-replaced step comes after every create and update of the run.
    delete = calls.index("Delete worker")
    last_write = max(i for i, c in enumerate(calls) if c.split()[0] in ("Create", "Update"))
    assert delete > last_write
    assert engine.state["worker"].id != old_id
    assert engine.state["worker"].outputs["environment"] == "staging"


def test_delete_before_replace_deletes_the_old_one_first(engine: Engine) -> None:
    engine.up(program(SEED, BOTH))
    engine.calls.clear()
    moved = program(MOVED, BOTH)
    for declared in moved:
        if declared.name == "worker":
            declared.delete_before_replace = True

    steps = {s.name: s for s in engine.up(moved)}

    assert steps["worker"].op == "replace"
    calls = engine.calls
    assert calls.index("Delete worker") < calls.index("Create worker")
    assert engine.state["worker"].outputs["environment"] == "staging"


def test_the_preview_of_a_replacement_shows_the_id_the_replacement_gets(engine: Engine) -> None:
    engine.up(program(SEED, BOTH))
    old_sid = engine.state["worker"].outputs["service_id"]

    preview = {s.name: s for s in engine.preview(program(MOVED, BOTH))}

    worker = preview["worker"]
    assert worker.op == "replace" and worker.replaces == ["environment"]
    staging_env, fresh_sid = service_ids(
        {"project": "shop", "environment": "staging", "name": "worker"}
    )
    assert worker.detail["service_id"] == fresh_sid != old_sid
    assert worker.detail["env_id"] == staging_env
    # staging has no service yet: the replacement's plan creates its document.
    assert worker.detail["plan"][0] == "shop/staging: create"
    assert any(line.startswith("service worker: added") for line in worker.detail["plan"])
    engine.up(program(MOVED, BOTH))
    assert engine.state["worker"].outputs["service_id"] == worker.detail["service_id"]


def test_a_preview_gets_the_checked_inputs_back_and_nothing_else(engine: Engine) -> None:
    engine.up(program(SEED))
    scaled = dict(SEED, api={"replicas": 3})

    preview = {s.name: s for s in engine.preview(program(scaled))}

    api = preview["api"]
    assert api.op == "update"
    # provider_plugin.go, Create/Update in a preview: the inputs as the state, so what only
    # the agents assign stays unknown to the program.
    for unknown in ("ipv4_addresses", "ipv6_addresses", "instances", "env_vars"):
        assert unknown not in api.outputs, unknown
    assert api.outputs["private_domain"] == "api.railway.internal"  # check computes it
    assert len(api.outputs["placement"]) == 3
    assert preview["worker"].op == "same"
    assert preview["worker"].outputs["ipv4_addresses"]  # a same step keeps its outputs


def test_a_program_sees_assigned_addresses_as_unknown_in_a_preview(lab: LabNet) -> None:
    basic = Path(__file__).resolve().parents[2] / "examples" / "basic" / "__main__.py"
    config = {"railnet:cluster": str(lab.lab.cluster_file)}
    provider = DynamicProvider(config)
    state: dict[str, ResourceState] = {}
    try:
        up = run_program(basic, provider, state, preview=False, config=config)
        assert up.exports["api_ipv4"]
        assert up.exports["api_host"] == "api.railway.internal"

        again = run_program(basic, provider, state, preview=True, config=config)

        assert {s.op for s in again.steps} == {"same"}
        assert again.exports["api_ipv4"] == up.exports["api_ipv4"]  # same: old outputs

        scaled = basic.read_text().replace(
            'railnet.Service("api", environment=prod, replicas=2)',
            'railnet.Service("api", environment=prod, replicas=3)',
        )
        assert "replicas=3" in scaled
        changed = lab.lab.directory / "scaled" / "__main__.py"
        changed.parent.mkdir(exist_ok=True)
        changed.write_text(scaled)
        preview = run_program(changed, provider, state, preview=True, config=config)

        assert {s.name: s.op for s in preview.steps}["api"] == "update"
        assert preview.exports["api_ipv4"] is None  # unknown until the update runs
        assert preview.exports["api_host"] == "api.railway.internal"
    finally:
        try:
            destroy(provider, state)
        finally:
            provider.close()


def test_refresh_reads_then_diffs_to_show_drift(lab: LabNet, engine: Engine) -> None:
    engine.up(program(SEED))
    sid = engine.state["api"].outputs["service_id"]
    lab.deployer.update(
        "shop",
        "production",
        lambda spec: with_service(spec, ServiceSpec("api", ("node-1",), id=sid)),
    )
    engine.calls.clear()

    seen = engine.refresh()

    assert engine.calls[engine.calls.index("Read api") + 1] == "Diff api"
    assert seen["api"].drift and seen["api"].drift_replaces == []
    assert len(seen["api"].after["ipv4_addresses"]) == 1
    assert not seen["worker"].drift and not seen["production"].drift and not seen["shop"].drift


def test_a_refreshed_service_keeps_its_id_and_placement_through_the_next_check(
    engine: Engine,
) -> None:
    # `pulumi preview --refresh` / `up --refresh`: the refreshed state's inputs are what Read
    # returned (RefreshStep.Apply, step.go), and the next Check gets them as its olds
    # (stepGenerator.generateSteps, step_generator.go). A rename must keep the service id
    # and the placement check would carry over from the stored inputs.
    engine.up(program({"api": {"replicas": 2}, "database": {}}))
    before = engine.state["database"].outputs
    engine.refresh()

    renamed = program({"api": {"replicas": 2}, "database": {"name": "postgres"}})
    steps = {s.name: s for s in engine.preview(renamed)}

    assert steps["database"].op == "update"
    checked = steps["database"].detail
    assert checked["service_id"] == before["service_id"]
    assert checked["placement"] == before["placement"]
    assert "service postgres: renamed (from database)" in checked["plan"]
    assert steps["api"].op == "same"
