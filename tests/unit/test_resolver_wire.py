"""Views cross the agent → resolver control socket as JSON, whole."""

from __future__ import annotations

import json

import pytest

from railnet.agent.resolver import change_from_wire, change_to_wire, view_from_wire, view_to_wire
from railnet.core.dns import ResolverView, ViewChange
from railnet.core.errors import RailnetError

from ..documents import make_document

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("ip_mode", ["dual", "ipv6"])
@pytest.mark.parametrize("netns", [None, "rn-node-1-e1"])
def test_a_view_survives_the_control_socket(ip_mode: str, netns: str | None) -> None:
    doc = make_document({"api": 2, "db": 1}, ip_mode=ip_mode, generation=7)
    view = ResolverView.from_document(doc, netns)
    assert view_from_wire(json.loads(json.dumps(view_to_wire(view)))) == view


def test_a_view_missing_a_field_is_refused_by_name() -> None:
    raw = view_to_wire(ResolverView.from_document(make_document({"api": 1}), None))
    del raw["listen"]
    with pytest.raises(RailnetError, match="'listen'"):
        view_from_wire(raw)


@pytest.mark.parametrize("ip_mode", ["dual", "ipv6"])
def test_a_view_change_survives_the_control_socket(ip_mode: str) -> None:
    before = make_document({"api": 2, "db": 1, "old": 1}, ip_mode=ip_mode, generation=7)
    after = make_document({"api": 3, "db": 1}, ip_mode=ip_mode, generation=8)
    change = ViewChange.between(before, after, "rn-node-1-e1")
    assert change is not None and change.removed and change.records
    assert change_from_wire(json.loads(json.dumps(change_to_wire(change)))) == change


@pytest.mark.parametrize("field", ["head", "base_serial", "removed", "records"])
def test_a_view_change_missing_a_field_is_refused_by_name(field: str) -> None:
    doc = make_document({"api": 1})
    change = ViewChange.between(doc, make_document({"api": 2}, generation=2), None)
    assert change is not None
    raw = change_to_wire(change)
    del raw[field]
    with pytest.raises(RailnetError, match=f"'{field}'"):
        change_from_wire(raw)


def test_a_view_change_whose_head_carries_records_is_refused() -> None:
    doc = make_document({"api": 1})
    change = ViewChange.between(doc, make_document({"api": 2}, generation=2), None)
    assert change is not None
    raw = change_to_wire(change)
    raw["head"] = view_to_wire(ResolverView.from_document(doc, None))
    with pytest.raises(RailnetError, match="head must carry no records"):
        change_from_wire(raw)
