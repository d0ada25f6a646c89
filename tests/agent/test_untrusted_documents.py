"""An agent given arbitrary documents: whatever is refused changes nothing, neither the
stored state nor the (fake) kernel."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railnet.agent.fakes import FakeKernel, FakeNetwork, FakeWireGuard
from railnet.agent.reconciler import Reconciler
from railnet.agent.state import StateDir
from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.errors import RailnetError
from tests.unit.test_untrusted_input import JSON, paths

pytestmark = pytest.mark.agent

SPEC = EnvironmentSpec(
    "shop",
    "production",
    services=(ServiceSpec("api", ("node-1",)), ServiceSpec("db", ("node-1", "node-1"))),
)
KEY = "A" * 43 + "="
# The shape every example starts from (only the node's own key and endpoint differ).
TEMPLATE = build_document(SPEC, None, {"node-1": (KEY, "198.18.0.1:51820")}).to_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=st.sampled_from(paths(TEMPLATE)), value=JSON)
def test_a_refused_document_changes_nothing(where: tuple[Any, ...], value: Any) -> None:
    directory = Path(tempfile.mkdtemp(prefix="rn-untrusted-"))
    try:
        kernel = FakeKernel()
        reconciler = Reconciler(
            node="node-1",
            netns_prefix="rn-h",
            endpoint_host="198.18.0.1",
            state=StateDir(directory),
            network=FakeNetwork(kernel),
            wireguard=FakeWireGuard(kernel),
            resolver=None,
            port_free=lambda port: True,
        )
        first = build_document(SPEC, None, {"node-1": reconciler.ensure(SPEC.id)})
        reconciler.apply(first.to_json(), 0)
        raw = copy.deepcopy(first.with_generation(2).to_dict())
        parent = raw
        for step in where[:-1]:
            parent = parent[step]
        parent[where[-1]] = value
        before = (kernel.mutations, reconciler.document(SPEC.id))
        try:
            reconciler.apply(json.dumps(raw), 1)
        except RailnetError:
            assert (kernel.mutations, reconciler.document(SPEC.id)) == before
        else:
            # Accepted: a valid next generation, now stored; applying it again is a no-op.
            mutations = kernel.mutations
            reconciler.apply(json.dumps(raw), 1)
            assert kernel.mutations == mutations
    finally:
        shutil.rmtree(directory, ignore_errors=True)
