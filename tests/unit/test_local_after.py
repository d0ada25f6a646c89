"""A node's part of the next document, derived from its part of the previous one by the
services that differ, is exactly the part derived from the whole document."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.document import IpMode
from railnet.core.local import local_environment, local_environment_after

pytestmark = pytest.mark.unit

NODES = ("node-1", "node-2", "node-3", "node-4")
PREFIX = "rn"
IDENTITIES = {
    n: (f"{c * 43}=", f"198.18.0.{i + 1}:51820")
    for i, (n, c) in enumerate(zip(NODES, "ABCD", strict=True))
}

placements = st.lists(st.sampled_from(NODES), min_size=1, max_size=3).map(tuple)
services = st.dictionaries(
    st.sampled_from([f"svc-{i}" for i in range(12)]), placements, max_size=10
).map(lambda d: tuple(ServiceSpec(name, nodes) for name, nodes in sorted(d.items())))
edits = st.lists(st.tuples(services, st.sampled_from(NODES[:3])), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(first=services, steps=edits, ip_mode=st.sampled_from(IpMode))
def test_the_part_after_a_change_is_the_part_of_the_whole(
    first: tuple[ServiceSpec, ...],
    steps: list[tuple[tuple[ServiceSpec, ...], str]],
    ip_mode: IpMode,
) -> None:
    doc = build_document(
        EnvironmentSpec("shop", "production", ip_mode=ip_mode, services=first), None, IDENTITIES
    )
    parts = {node: local_environment(doc, node, PREFIX) for node in NODES}
    for nxt, _ in steps:
        spec = EnvironmentSpec("shop", "production", ip_mode=ip_mode, services=nxt)
        new = build_document(spec, doc, IDENTITIES)
        for node in NODES:
            after = local_environment_after(doc, parts[node], new, PREFIX)
            assert after == local_environment(new, node, PREFIX), node
            parts[node] = after
        doc = new


def test_a_new_service_adds_only_its_routes_and_instance() -> None:
    base = tuple(ServiceSpec(f"svc-{i}", (NODES[i % 4],)) for i in range(8))
    doc = build_document(EnvironmentSpec("shop", "production", services=base), None, IDENTITIES)
    grown = build_document(
        EnvironmentSpec("shop", "production", services=(*base, ServiceSpec("new", ("node-2",)))),
        doc,
        IDENTITIES,
    )
    before = local_environment(doc, "node-1", PREFIX)
    after = local_environment_after(doc, before, grown, PREFIX)
    assert after == local_environment(grown, "node-1", PREFIX)
    # Unchanged peers and instances are the same objects' values; node-2 gained two routes.
    old2, new2 = (next(p for p in e.peers if p.node == "node-2") for e in (before, after))
    assert len(new2.allowed_ips) == len(old2.allowed_ips) + 2
    assert after.instances == before.instances
    # The same document again is the same part.
    assert local_environment_after(grown, after, grown, PREFIX) is after
