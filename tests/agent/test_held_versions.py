"""What a node reports to the control store of the documents it holds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from railnet.agent.state import StateDir

from ..unit.test_delta import document

pytestmark = pytest.mark.agent


def test_each_stored_document_reports_its_generation_and_digest(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert state.held_versions() == {}
    doc = document(3)
    other = replace(document(2), id="otherenv", generation=7)
    state.save_document(doc)
    state.save_document(other)
    assert state.held_versions() == {
        doc.id: (doc.generation, doc.digest),
        "otherenv": (7, other.digest),
    }
    # A damaged file is left out (status reports it), the others still count.
    fresh = StateDir(tmp_path / "state")
    (tmp_path / "state" / "environments" / "otherenv" / "document.json").write_text("{nope")
    assert fresh.held_versions() == {doc.id: (doc.generation, doc.digest)}
