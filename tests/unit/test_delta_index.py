"""A delta is checked against the base's index of its services, not by walking them: these
properties hold that to what the whole-document reader says of the same result."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railnet.core.delta import DocumentDelta
from railnet.core.document import EnvironmentDocument, ServiceIndex
from railnet.core.errors import InvalidField
from tests.unit.test_delta import document, edit, edits

pytestmark = pytest.mark.unit


def index_of(doc: EnvironmentDocument) -> tuple[Any, ...]:
    index = doc.services_index
    return (index.by_id, index.by_name, index.by_address, index.on_node)


def whole(raw_base: dict[str, Any], delta: DocumentDelta) -> dict[str, Any]:
    """The document ``delta`` describes, put together as a whole one: what a node sent the
    whole document would read."""
    upserts = {u["id"]: u for u in delta.upserts}
    services = [
        upserts.pop(s["id"], s) for s in raw_base["services"] if s["id"] not in delta.removed
    ]
    services.extend(upserts.values())
    return {**delta.header, "services": services}


@settings(max_examples=60, deadline=None)
@given(st.lists(edits, min_size=1, max_size=4))
def test_a_chain_of_deltas_keeps_the_index_and_the_change(rounds: list[Any]) -> None:
    held = document(12)
    for r, steps in enumerate(rounds):
        nxt = edit(held, steps, 10 * r)
        delta = DocumentDelta.between(held, nxt)
        assert delta is not None
        got = DocumentDelta.from_json(delta.to_json()).apply_to(held)
        assert got == nxt
        # Derived by the change, the index is the one a whole read builds.
        assert index_of(got) == index_of(EnvironmentDocument.from_json(got.to_json()))
        fresh = ServiceIndex(got.services)
        assert (fresh.by_id, fresh.by_name, fresh.by_address, fresh.on_node) == index_of(got)
        # The change kept with it is what comparing the services finds.
        kept = got.services_changed_from(held)
        compared = got.services_changed_from(replace(held))  # another object: compared
        assert sorted(s.id for s in kept[0]) == sorted(s.id for s in compared[0])
        assert [s.id for s in kept[1]] == [s.id for s in compared[1]]
        assert kept[0] or kept[1] or nxt.services == held.services
        held = got


corruptions = st.lists(
    st.tuples(
        st.sampled_from(["name", "address", "node", "freed", "removed"]),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=3,
)


def corrupt(raw: dict[str, Any], base: EnvironmentDocument, how: list[tuple[str, int]]) -> None:
    """Make the delta ``raw`` clash with the base's services, the way a bad writer might."""
    for kind, pick in how:
        victim = base.services[pick % len(base.services)]
        upserts = raw["upserts"]
        if kind == "name" and upserts:
            upserts[pick % len(upserts)] = dict(upserts[pick % len(upserts)], name=victim.name)
        elif kind == "address" and upserts:
            u = upserts[pick % len(upserts)]
            if u["instances"]:
                first = dict(u["instances"][0], ipv6=victim.instances[0].ipv6)
                upserts[pick % len(upserts)] = dict(u, instances=[first, *u["instances"][1:]])
        elif kind == "node":
            nodes = raw["header"]["nodes"]
            if len(nodes) > 1:
                del nodes[pick % len(nodes)]
        elif kind == "freed":
            freed = raw["header"].setdefault("freed", [])
            freed.append({"address": victim.instances[0].ipv4, "generation": 1, "at": 5})
        elif kind == "removed":
            raw["removed"] = [*raw["removed"], victim.id]
            raw["upserts"] = [u for u in upserts if u["id"] != victim.id]


@settings(max_examples=150, deadline=None)
@given(edits, corruptions)
def test_a_delta_is_refused_exactly_when_the_whole_document_would_be(
    steps: list[tuple[str, int, str]], how: list[tuple[str, int]]
) -> None:
    base = document(10)
    delta = DocumentDelta.between(base, edit(base, steps))
    assert delta is not None
    raw = json.loads(delta.to_json())
    corrupt(raw, base, how)
    bad = DocumentDelta.from_json(json.dumps(raw))
    try:
        expected = EnvironmentDocument.from_dict(whole(base.to_dict(), bad))
    except InvalidField:
        with pytest.raises(InvalidField) as caught:
            bad.apply_to(base)
        assert caught.value.field != "delta.digest"  # refused for what is wrong, not after
        return
    # Whole, it reads: with the digest of what it makes, the delta applies and makes it.
    fixed = DocumentDelta.from_json(json.dumps(dict(raw, digest=expected.digest)))
    assert fixed.apply_to(base) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(edits, min_size=1, max_size=4))
def test_every_address_given_up_rests_and_none_is_handed_out_twice(rounds: list[Any]) -> None:
    """``build_document`` finds what changed hands among the services it does not carry
    whole: what it gives up is what a comparison of every address finds."""
    held = document(12)
    for r, steps in enumerate(rounds):
        nxt = edit(held, steps, 10 * r)
        assert EnvironmentDocument.from_json(nxt.to_json()) == nxt  # unique, none resting in use

        def addresses(doc: EnvironmentDocument) -> set[str]:
            return {a for s in doc.services for i in s.instances for a in (i.ipv4, i.ipv6) if a}

        given_up = addresses(held) - addresses(nxt)
        assert given_up <= {f.address for f in nxt.freed if f.generation == nxt.generation}
        assert not addresses(nxt) & {f.address for f in held.freed}  # rested ones wait
        held = nxt
