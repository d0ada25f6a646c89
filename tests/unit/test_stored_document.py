"""The document as the store keeps it: a header and a part per service (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings

from railnet.core.errors import InvalidField
from railnet.core.stored_document import (
    BUCKETS,
    HEADER,
    assemble,
    bucket_key,
    part_writes,
    parts,
)

from .test_delta import document, edit, edits

pytestmark = pytest.mark.unit


@settings(max_examples=60, deadline=None)
@given(edits)
def test_the_writes_of_any_change_turn_the_stored_parts_into_the_next_document(
    steps: list[tuple[str, int, str]],
) -> None:
    doc = document(8)
    nxt = edit(doc, steps)
    stored = parts(doc)
    writes, deletes = part_writes(doc, nxt)
    for key in deletes:
        del stored[key]
    stored.update(writes)
    assert stored == parts(nxt)
    rebuilt = assemble(stored)
    assert rebuilt == nxt and rebuilt.digest == nxt.digest


def test_one_service_more_writes_its_bucket_and_the_header_only() -> None:
    for size in (10, 1000):
        doc = document(size)
        bigger = document(size + 1, doc)
        writes, deletes = part_writes(doc, bigger)
        added = bigger.services[-1]
        assert set(writes) == {HEADER, bucket_key(added.id)} and deletes == []


def test_no_change_writes_more_parts_than_a_transaction_may_hold() -> None:
    doc = document(3)
    huge = document(1000, doc)
    writes, deletes = part_writes(doc, huge)
    assert len(writes) + len(deletes) <= BUCKETS + 1 < 128
    assert len(parts(huge)) <= BUCKETS + 1
    # Every service leaving empties buckets: they are deleted, not left behind.
    empty = document(0, huge)
    writes, deletes = part_writes(huge, empty)
    assert set(writes) == {HEADER} and len(deletes) == len(parts(huge)) - 1


def test_a_new_document_is_written_whole() -> None:
    doc = document(3)
    writes, deletes = part_writes(None, doc)
    assert writes == parts(doc) and deletes == []
    assert assemble(writes) == doc


def _unlisted(p: dict[str, str]) -> None:
    key = bucket_key("sextra")
    bucket = json.loads(p.get(key, "{}"))
    bucket["sextra"] = {"id": "sextra"}
    p[key] = json.dumps(bucket)


def _misplaced(p: dict[str, str]) -> None:
    key = next(k for k in p if k != HEADER)
    other = next(f"services/{i:02x}" for i in range(BUCKETS) if f"services/{i:02x}" != key)
    p[other] = p.pop(key)


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda p: p.pop(HEADER), "store header"),
        (lambda p: p.pop(next(k for k in p if k != HEADER)), "store services/"),
        (_unlisted, "store services/"),
        (_misplaced, "store services/"),
        (lambda p: p.update({HEADER: "{not json"}), "store header"),
        (lambda p: p.update({HEADER: json.dumps({"id": "x"})}), "store header.service_order"),
        (lambda p: p.update({"services/zz": "[]"}), "store services/zz"),
    ],
)
def test_damaged_parts_are_named_by_their_key(damage: object, field: str) -> None:
    stored: dict[str, str] = parts(document(3))
    damage(stored)  # type: ignore[operator]
    with pytest.raises(InvalidField) as raised:
        assemble(stored)
    assert raised.value.field.startswith(field)
