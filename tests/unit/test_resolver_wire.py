"""Views cross the agent → resolver control socket as JSON, whole."""

from __future__ import annotations

import json

import pytest

from railnet.agent.resolver import view_from_wire, view_to_wire
from railnet.core.dns import ResolverView
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
