"""Document deltas: the change a node applies to the document it holds, checked as strictly
as a whole document and refused when the node holds another base."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railnet.core.delta import DocumentDelta
from railnet.core.desired import (
    EnvironmentSpec,
    ServiceSpec,
    build_document,
    spec_from_document,
    with_service,
    without_service,
)
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import InvalidField, StaleBase, StaleGeneration

pytestmark = pytest.mark.unit

NODES = ("node-1", "node-2", "node-3", "node-4")
KEYS = {n: (chr(ord("A") + i) * 43 + "=", f"198.18.0.{i + 1}:51820") for i, n in enumerate(NODES)}


def document(services: int, previous: EnvironmentDocument | None = None) -> EnvironmentDocument:
    spec = EnvironmentSpec(
        "shop",
        "production",
        services=tuple(ServiceSpec(f"svc-{i:03d}", (NODES[i % 3],)) for i in range(services)),
    )
    return build_document(spec, previous, {n: KEYS[n] for n in spec.nodes}, now=1000)


def next_of(doc: EnvironmentDocument, spec: EnvironmentSpec) -> EnvironmentDocument:
    return build_document(spec, doc, {n: KEYS[n] for n in spec.nodes}, now=2000)


def edited(delta: DocumentDelta, **changes: Any) -> DocumentDelta:
    raw = json.loads(delta.to_json())
    for key, value in changes.items():
        raw[key] = value
    return DocumentDelta.from_json(json.dumps(raw))


BASE = document(40)
ADDED = next_of(
    BASE, with_service(spec_from_document(BASE), ServiceSpec("new", ("node-1",), "snew1"))
)


def test_a_one_service_change_travels_as_that_service() -> None:
    delta = DocumentDelta.between(BASE, ADDED)
    assert delta is not None
    assert [u["name"] for u in delta.upserts] == ["new"] and delta.removed == ()
    assert len(delta.to_json()) * 5 < len(ADDED.to_json())
    again = DocumentDelta.from_json(delta.to_json())
    assert again.apply_to(BASE) == ADDED
    assert again.apply_to(BASE).digest == ADDED.digest


def test_the_delta_size_does_not_grow_with_the_environment() -> None:
    sizes = []
    for count in (20, 200):
        base = document(count)
        spec = with_service(spec_from_document(base), ServiceSpec("new", ("node-2",), "snew1"))
        delta = DocumentDelta.between(base, next_of(base, spec))
        assert delta is not None
        sizes.append(len(delta.to_json()))
    assert sizes[1] <= sizes[0] * 1.1


def test_a_removal_and_a_move_keep_the_order() -> None:
    spec = spec_from_document(ADDED)
    moved = replace(spec.services[3], nodes=("node-4",))
    spec = with_service(without_service(spec, spec.services[1].id), moved)
    doc = next_of(ADDED, spec)
    delta = DocumentDelta.between(ADDED, doc)
    assert delta is not None
    assert delta.removed == (ADDED.services[1].id,)
    assert [u["id"] for u in delta.upserts] == [moved.id]
    assert delta.apply_to(ADDED) == doc


def test_a_reordering_is_sent_whole() -> None:
    spec = spec_from_document(BASE)
    doc = next_of(BASE, replace(spec, services=spec.services[::-1]))
    assert DocumentDelta.between(BASE, doc) is None


def test_a_change_of_the_address_plan_is_sent_whole() -> None:
    doc = next_of(BASE, replace(spec_from_document(BASE), ipv4_cidr="10.77.0.0/16"))
    assert DocumentDelta.between(BASE, doc) is None


def test_a_delta_against_another_base_is_refused_as_a_conflict() -> None:
    delta = DocumentDelta.between(BASE, ADDED)
    assert delta is not None
    other = document(39)  # same generation, another document: racing writers
    with pytest.raises(StaleBase) as caught:
        delta.apply_to(other)
    assert isinstance(caught.value, StaleGeneration)  # ABORTED, like any conflict
    with pytest.raises(StaleBase):
        delta.apply_to(ADDED)  # already a generation further


def taking_a_kept_address(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    inst = dict(d.upserts[0]["instances"][0], ipv4=b.services[5].instances[0].ipv4)
    return {"upserts": [dict(d.upserts[0], instances=[inst])]}


def taking_a_kept_name(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    return {"upserts": [dict(d.upserts[0], name=b.services[2].name)]}


def dropping_a_node_still_used(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    nodes = [n for n in d.header["nodes"] if n["name"] != "node-3"]
    return {"header": dict(d.header, nodes=nodes)}


def resting_an_address_in_use(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    freed = [{"address": b.services[0].instances[0].ipv6, "generation": 1, "at": 5}]
    return {"header": dict(d.header, freed=freed)}


def moving_the_address_plan(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    return {"header": dict(d.header, ipv4_cidr="10.9.0.0/16")}


def a_bad_label(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    return {"upserts": [dict(d.upserts[0], name="Not A Label")]}


def removing_an_upsert(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    return {"removed": [d.upserts[0]["id"]]}


def services_in_the_header(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    return {"header": dict(d.header, services=[])}


def another_digest(d: DocumentDelta, b: EnvironmentDocument) -> dict[str, Any]:
    return {"digest": "0" * 64}  # the right change, said to make something else


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (taking_a_kept_address, "delta.upserts"),
        (taking_a_kept_name, "delta.upserts"),
        (dropping_a_node_still_used, "delta.header.nodes"),
        (resting_an_address_in_use, "delta.header.freed"),
        (moving_the_address_plan, "delta.header.ipv4_cidr"),
        (a_bad_label, "services[0].name"),  # checked with its path, as in a whole document
        (removing_an_upsert, "delta.removed[0]"),
        (services_in_the_header, "delta.header.services"),
        (another_digest, "delta.digest"),
    ],
)
def test_a_bad_delta_is_refused_naming_the_field(change: Any, field: str) -> None:
    delta = DocumentDelta.between(BASE, ADDED)
    assert delta is not None
    bad = edited(delta, **change(delta, BASE))
    with pytest.raises(InvalidField) as caught:
        bad.apply_to(BASE)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "raw",
    ["not json", "[]", '{"base_generation": 0}', '{"unknown": 1}'],
)
def test_a_malformed_delta_is_refused(raw: str) -> None:
    with pytest.raises(InvalidField):
        DocumentDelta.from_json(raw)


edits = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "move", "scale"]),
        st.integers(0, 10_000),
        st.sampled_from(NODES),
    ),
    max_size=6,
)


def edit(
    doc: EnvironmentDocument, steps: list[tuple[str, int, str]], first: int = 0
) -> EnvironmentDocument:
    """The next document after ``steps`` (from ``edits``) on ``doc``'s declaration; new
    services are numbered from ``first``."""
    spec = spec_from_document(doc)
    for k, (kind, pick, node) in enumerate(steps, first):
        services = spec.services
        if kind == "add" or not services:
            spec = with_service(spec, ServiceSpec(f"add-{k}", (node,), f"sadd{k:05d}"))
        elif kind == "remove":
            spec = without_service(spec, services[pick % len(services)].id)
        elif kind == "move":
            s = services[pick % len(services)]
            spec = with_service(spec, replace(s, nodes=(node,)))
        else:
            s = services[pick % len(services)]
            spec = with_service(spec, replace(s, nodes=(*s.nodes, node)))
    return next_of(doc, spec)


@settings(max_examples=60, deadline=None)
@given(edits)
def test_any_sequence_of_edits_round_trips(steps: list[tuple[str, int, str]]) -> None:
    doc = document(8)
    nxt = edit(doc, steps)
    delta = DocumentDelta.between(doc, nxt)
    assert delta is not None
    assert DocumentDelta.from_json(delta.to_json()).apply_to(doc) == nxt


def test_a_delta_of_the_same_nodes_leaves_them_out_and_applies_the_same() -> None:
    delta = DocumentDelta.between(BASE, ADDED)
    assert delta is not None
    compact = delta.leaving_out_nodes(BASE)
    assert compact.same_nodes and "nodes" not in compact.header
    text = compact.to_json()
    assert len(text) < len(delta.to_json()) - 100 * len(BASE.nodes) // 2
    assert DocumentDelta.from_json(text).apply_to(BASE) == ADDED
    # Nodes that change travel: the delta stays whole.
    spec = with_service(spec_from_document(BASE), ServiceSpec("far", ("node-4",), "sfar1"))
    moved = next_of(BASE, spec)
    full = DocumentDelta.between(BASE, moved)
    assert full is not None and full.leaving_out_nodes(BASE) is full
    assert "nodes" in json.loads(full.to_json())["header"]
    assert "same_nodes" not in json.loads(full.to_json())  # what a version-1 agent reads


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"same_nodes": "yes"}, "delta.same_nodes"),
        ({"header_nodes": True}, "delta.header.nodes"),  # said left out, and sent
    ],
)
def test_a_bad_same_nodes_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    delta = DocumentDelta.between(BASE, ADDED)
    assert delta is not None
    raw = json.loads(delta.leaving_out_nodes(BASE).to_json())
    if change.pop("header_nodes", False):
        raw["header"]["nodes"] = json.loads(delta.to_json())["header"]["nodes"]
    raw.update(change)
    with pytest.raises(InvalidField) as caught:
        DocumentDelta.from_json(json.dumps(raw)).apply_to(BASE)
    assert caught.value.field == field
