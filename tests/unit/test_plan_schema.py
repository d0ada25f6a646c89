"""``--format json`` is a versioned contract: the JSON Schema shipped in the package
describes it, and every golden JSON plan (and a big one) validates against it."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from railnet.cli.main import main
from railnet.core.plan_render import JSON_FORMAT

jsonschema = pytest.importorskip(
    "jsonschema", reason="needs jsonschema (installed with check-jsonschema, a dev dependency)"
)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "plan"
SCHEMA_NAME = f"plan-v{JSON_FORMAT}.schema.json"


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (files("railnet") / "core" / SCHEMA_NAME).read_text(encoding="utf-8")
    )
    return loaded


def validator() -> Any:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def test_the_schema_is_the_version_the_renderer_writes() -> None:
    assert schema()["properties"]["format"] == {"const": JSON_FORMAT}
    assert schema()["$schema"].endswith("/draft/2020-12/schema")


def test_the_schema_ships_in_the_package() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"core/*.schema.json"' in pyproject


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.name)
def test_every_golden_json_plan_validates(path: Path) -> None:
    errors = sorted(validator().iter_errors(json.loads(path.read_text(encoding="utf-8"))), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_there_are_golden_json_plans() -> None:
    assert len(list(GOLDEN.glob("*.json"))) >= 8


@pytest.mark.parametrize(
    "broken",
    [
        lambda d: d["environments"][1]["dns"][0]["added"].append("(new: assigned at apply)"),
        lambda d: d.update(format=1),
        lambda d: d["consequences"][0].pop("environment"),
        lambda d: d["environments"][0].update(action="frobnicate"),
    ],
    ids=["placeholder-address", "old-format", "consequence-without-place", "unknown-action"],
)
def test_the_schema_refuses_what_the_contract_rules_out(broken: Any) -> None:
    doc = json.loads((GOLDEN / "mixed.json").read_text(encoding="utf-8"))
    assert validator().is_valid(doc)
    broken(doc)
    assert not validator().is_valid(doc)


def test_a_plan_from_the_file_alone_says_its_counts_are_the_previews(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fixture = Path(__file__).parent.parent / "fixtures" / "preview" / "update.json"
    assert main(["plan", str(fixture), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts_basis"] == "preview"
    assert validator().is_valid(doc)
