"""Stacks outlive releases: a stack's state holds each resource's ``__provider``, the
provider object pickled *by reference* (module and class name) by the railnet that created
it. Those modules must keep their import path, or every existing stack loses the ability to
refresh and destroy. The fixture holds ``__provider`` values serialized by an earlier
revision of railnet (each entry names its ``revision``: f2254f4, and 0fb29ff, the release
before the engine-fidelity work); they drive Read and Delete against a lab through the real
``python -m pulumi.dynamic`` server. Add an entry whenever a release ships."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..linux.conftest import LabNet, running_lab
from .harness import PROVIDERS, DynamicProvider, Engine, State
from .test_engine_protocol import environments_on_nodes, program

pytestmark = pytest.mark.provider

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pickled" / "providers.json"
REVISIONS: dict[str, dict[str, str]] = {
    entry["revision"][:7]: entry["providers"]
    for entry in json.loads(FIXTURE.read_text())["revisions"]
}


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(2) as net:
        yield net


def test_the_fixture_keeps_the_releases_that_wrote_state() -> None:
    assert {"f2254f4", "0fb29ff"} <= set(REVISIONS)


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_the_fixture_names_the_provider_classes_by_module(revision: str) -> None:
    # dill pickles by reference: the module path is in the bytes, not the code.
    PICKLED = REVISIONS[revision]
    for kind, module in (
        ("Project", b"railnet.providers.project"),
        ("Environment", b"railnet.providers.environment"),
        ("Service", b"railnet.providers.service"),
    ):
        assert module in base64.b64decode(PICKLED[kind])
        assert kind.encode() + b"Provider" in base64.b64decode(PICKLED[kind])


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_read_and_delete_work_with_providers_pickled_by_an_earlier_release(
    lab: LabNet, revision: str
) -> None:
    PICKLED = REVISIONS[revision]
    provider = DynamicProvider({"railnet:cluster": str(lab.lab.cluster_file)})
    engine = Engine(provider)
    try:
        engine.up(program({"api": {"replicas": 2}}))
        env_ids = {e for held in environments_on_nodes(lab.lab).values() for e in held}
        assert len(env_ids) == 1
        # The stack as an earlier release left it: its pickles in every resource's state.
        for name, st in list(engine.state.items()):
            assert st.outputs["__provider"] == PROVIDERS[st.kind]
            engine.state[name] = State(
                st.id,
                st.kind,
                {**st.inputs, "__provider": PICKLED[st.kind]},
                {**st.outputs, "__provider": PICKLED[st.kind]},
            )
        before = {n: (st.id, dict(st.outputs)) for n, st in engine.state.items()}

        refreshed = engine.refresh()

        assert set(refreshed) == set(before)
        for name, seen in refreshed.items():
            old_outputs, new_outputs = seen.before, seen.after
            assert engine.state[name].id == before[name][0], name
            for key in ("private_domain", "ipv4_addresses", "ipv6_addresses", "instances"):
                assert new_outputs.get(key) == old_outputs.get(key), (name, key)

        engine.destroy()  # Delete, with the earlier release's pickles in the state

        assert engine.state == {}
        assert environments_on_nodes(lab.lab) == {n.name: [] for n in lab.lab.nodes()}
    finally:
        try:
            engine.destroy()
        finally:
            provider.close()
