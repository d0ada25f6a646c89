"""Reading `pulumi preview --json`: each fixture's steps, the stand-ins for secrets and
unknowns, and an error that names the place for every file out of shape."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from railnet.core.errors import InvalidField, RailnetError
from railnet.core.resources import Kind
from railnet.engine.preview_file import (
    SECRET,
    UNKNOWN,
    DiffKind,
    PreviewFile,
    PreviewFileError,
    PreviewStep,
    Severity,
    StepOp,
    parse_preview,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "preview"
ROOT = "urn:pulumi:dev::infra::pulumi:pulumi:Stack::infra-dev"
UNKNOWN_TEXT = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def load(name: str) -> PreviewFile:
    path = FIXTURES / name
    return parse_preview(path.read_text(encoding="utf-8"), str(path))


def urn(kind: str, name: str) -> str:
    return f"urn:pulumi:dev::infra::pulumi-python:dynamic/railnet:{kind}::{name}"


def summary(steps: tuple[PreviewStep, ...]) -> list[tuple[str, str | None, str]]:
    return [(s.op.value, s.kind.value if s.kind else None, s.name) for s in steps]


def by_name(preview: PreviewFile, name: str, op: StepOp | None = None) -> PreviewStep:
    found = [s for s in preview.steps if s.name == name and (op is None or s.op is op)]
    assert len(found) == 1, found
    return found[0]


def fails(text: str, *fragments: str) -> PreviewFileError:
    with pytest.raises(PreviewFileError) as caught:
        parse_preview(text, "plan.json")
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert message.startswith("plan.json")
    assert "pulumi preview --json > plan.json" in message
    return caught.value


def digest(*steps: Any, **top: Any) -> str:
    return json.dumps({"steps": list(steps), **top})


def step(**fields: Any) -> dict[str, Any]:
    return {"op": "create", "urn": urn("Service", "api"), "detailedDiff": None, **fields}


# -- the fixtures ---------------------------------------------------------------------------


def test_every_fixture_in_the_real_format_parses() -> None:
    good = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert good == [
        "create.json",
        "delete.json",
        "ipv6_switch.json",
        "malformed.json",
        "mixed.json",
        "refresh.json",
        "replace.json",
        "truncated.json",
        "unknown_op.json",
        "update.json",
    ]
    for name in good:
        if name not in ("malformed.json", "truncated.json"):
            assert load(name).steps


def test_create_a_fresh_stack() -> None:
    preview = load("create.json")
    assert summary(preview.railnet_steps()) == [
        ("create", "Project", "shop"),
        ("create", "Environment", "production"),
        ("create", "Service", "api"),
        ("create", "Service", "worker"),
        ("create", "Service", "database"),
    ]
    root = preview.steps[0]
    assert (root.op, root.urn, root.type, root.kind) == (
        StepOp.CREATE,
        ROOT,
        "pulumi:pulumi:Stack",
        None,
    )
    assert preview.change_summary == {StepOp.CREATE: 6}
    assert preview.config == {"railnet:cluster": "/home/dev/railnet-lab/cluster.json"}
    assert preview.duration_ns > 0
    assert preview.diagnostics == ()

    api = by_name(preview, "api")
    assert api.type == "pulumi-python:dynamic/railnet:Service"
    assert api.old is None and api.old_inputs == {} and api.old_outputs == {}
    # The provider does not exist yet: its id in the reference is the unknown marker.
    assert api.provider.endswith("::pulumi:providers:pulumi-python::default::" + UNKNOWN_TEXT)
    inputs = api.new_inputs
    assert inputs["__provider"] is SECRET
    assert inputs["replicas"] == 2
    assert inputs["private_domain"] == "api.railway.internal"
    assert inputs["placement"] == ("node-1", "node-2")
    assert isinstance(inputs["plan"], tuple) and inputs["plan"]
    assert str(inputs["env_id"]).startswith("e") and str(inputs["service_id"]).startswith("s")
    # Written before the step applied: no outputs, so no instances or addresses yet.
    assert api.new is not None and api.new.outputs is None and api.new_outputs == {}
    assert api.new.id == "" and api.new.parent == ROOT
    assert api.new.dependencies == (urn("Environment", "production"),)
    assert api.diff_reasons == () and api.replace_reasons == () and api.detailed_diff is None


def test_update_scales_one_service_and_renames_another() -> None:
    preview = load("update.json")
    assert summary(preview.railnet_steps()) == [
        ("update", "Service", "worker"),
        ("update", "Service", "database"),
    ]
    assert preview.steps[0].op is StepOp.SAME and preview.steps[0].urn == ROOT
    assert preview.change_summary == {StepOp.SAME: 4, StepOp.UPDATE: 2}

    worker = by_name(preview, "worker")
    assert (worker.old_inputs["replicas"], worker.new_inputs["replicas"]) == (1, 3)
    assert worker.new_inputs["placement"] == ("node-1", "node-2", "node-3")
    instances = worker.old_outputs["instances"]
    assert isinstance(instances, tuple) and len(instances) == 1
    first = instances[0]
    assert isinstance(first, Mapping)
    assert set(first) == {"index", "node", "ipv4", "ipv6"}
    assert (first["index"], first["node"]) == (0, worker.old_inputs["placement"][0])  # type: ignore[index]
    assert worker.old_outputs["ipv4_addresses"] == (first["ipv4"],)
    assert worker.old_outputs["ipv6_addresses"] == (first["ipv6"],)

    database = by_name(preview, "database")
    assert database.name == "database"  # the resource keeps its name; its `name` input changes
    assert (database.old_inputs["name"], database.new_inputs["name"]) == ("database", "postgres")
    assert database.new_inputs["service_id"] == database.old_inputs["service_id"]
    assert database.new_inputs["private_domain"] == "postgres.railway.internal"
    # Written after the step applied in preview: the id carries over and the dynamic
    # provider's inputs come back as its outputs.
    assert database.old is not None and database.new is not None
    assert database.new.id == database.old.id != ""
    assert database.new_outputs == database.new_inputs


def test_replace_with_its_two_halves() -> None:
    preview = load("replace.json")
    assert summary(preview.railnet_steps()) == [
        ("create-replacement", "Service", "worker"),
        ("replace", "Service", "worker"),
        ("delete-replaced", "Service", "worker"),
    ]
    assert preview.change_summary == {StepOp.REPLACE: 1, StepOp.SAME: 5}
    create, replace, delete = preview.railnet_steps()
    for half in (create, replace):
        assert half.replace_reasons == ("environment",)
        assert (half.old_inputs["environment"], half.new_inputs["environment"]) == (
            "production",
            "staging",
        )
    assert delete.new is None and delete.new_inputs == {}
    assert delete.old is not None and delete.old.delete
    assert delete.replace_reasons == ()
    assert delete.old_outputs["instances"]


def test_delete_an_environment_and_its_services() -> None:
    preview = load("delete.json")
    assert summary(preview.railnet_steps()) == [
        ("delete", "Service", "queue"),
        ("delete", "Service", "web"),
        ("delete", "Environment", "staging"),
    ]
    for gone in preview.railnet_steps():
        assert gone.new is None and gone.old is not None and gone.old.id
    staging = by_name(preview, "staging")
    assert staging.old_outputs["ipv4_cidr"] == "10.43.0.0/16"
    assert preview.change_summary == {StepOp.DELETE: 3, StepOp.SAME: 6}


def test_ipv6_switch_updates_the_environment_and_its_services() -> None:
    preview = load("ipv6_switch.json")
    assert summary(preview.railnet_steps()) == [
        ("update", "Environment", "production"),
        ("update", "Service", "api"),
        ("update", "Service", "worker"),
        ("update", "Service", "database"),
    ]
    for changed in preview.railnet_steps():
        assert (changed.old_inputs["ip_mode"], changed.new_inputs["ip_mode"]) == ("dual", "ipv6")
    env = by_name(preview, "production")
    assert len(env.old_inputs["resolvers"]) == 2  # type: ignore[arg-type]
    assert len(env.new_inputs["resolvers"]) == 1  # type: ignore[arg-type]


def test_mixed_secrets_unknowns_and_a_resource_that_is_not_railnet() -> None:
    preview = load("mixed.json")
    assert summary(preview.railnet_steps()) == [
        ("create", "Environment", "preview"),
        ("create", "Service", "web"),
        ("update", "Service", "api"),
        ("replace", "Service", "worker"),
        ("delete", "Service", "cache"),
    ]
    pet = by_name(preview, "preview-suffix")
    assert pet.type == "random:index/randomPet:RandomPet" and pet.kind is None
    assert pet not in preview.railnet_steps()
    assert preview.change_summary == {
        StepOp.CREATE: 3,
        StepOp.DELETE: 1,
        StepOp.REPLACE: 1,
        StepOp.SAME: 5,
        StepOp.UPDATE: 1,
    }
    # Secrets: a stack setting, and the input that came from it.
    assert preview.config["infra:previewCidr"] is SECRET
    assert preview.config["infra:previewPetLength"] == "2"
    env = by_name(preview, "preview")
    assert env.new_inputs["ipv4_cidr"] is SECRET
    # Unknowns: the domain comes from the pet, and everything check derives from it.
    for key in ("domain", "env_id", "ipv6_prefix"):
        assert env.new_inputs[key] is UNKNOWN, key
    # What derives from an Output (the secret range, the pet) the SDK asks to be secret.
    for key in ("resolvers", "plan"):
        assert env.new_inputs[key] is SECRET, key
    web = by_name(preview, "web")
    for key in ("domain", "service_id", "placement"):
        assert web.new_inputs[key] is UNKNOWN, key
    for key in ("private_domain", "plan"):
        assert web.new_inputs[key] is SECRET, key
    assert web.new_inputs["replicas"] == 1 and web.new_inputs["name"] == "web"
    # Without --show-replacement-steps only the logical replace is written.
    worker = by_name(preview, "worker")
    assert worker.op is StepOp.REPLACE and worker.replace_reasons == ("environment",)
    assert preview.diagnostics[0].severity is Severity.INFO
    assert preview.diagnostics[0].urn == ""
    assert "declaring 3 environments" in preview.diagnostics[0].message


def test_every_railnet_step_carries_the_provider_secret() -> None:
    for name in ("create.json", "update.json", "replace.json", "delete.json", "mixed.json"):
        for s in load(name).railnet_steps():
            state = s.new_inputs or s.old_inputs
            assert state["__provider"] is SECRET, (name, s.location)


# -- malformed files -------------------------------------------------------------------------


def test_truncated_file_names_where_it_stops() -> None:
    text = (FIXTURES / "truncated.json").read_text(encoding="utf-8")
    error = fails(text, "is truncated", "line 102 column 39", "string begun at line 102")
    assert isinstance(error, InvalidField) and isinstance(error, RailnetError)


def test_every_prefix_of_a_good_file_is_a_clear_error() -> None:
    text = (FIXTURES / "create.json").read_text(encoding="utf-8")
    for cut in range(1, len(text.rstrip()), 97):
        with pytest.raises(PreviewFileError, match="is truncated"):
            parse_preview(text[:cut], "plan.json")


def test_malformed_file_names_the_path() -> None:
    text = (FIXTURES / "malformed.json").read_text(encoding="utf-8")
    error = fails(text, "steps[3].newState.inputs must be a JSON object, not an array")
    assert error.where == "steps[3].newState.inputs"


@pytest.mark.parametrize("text", ["", "   \n", "\ufeff"])
def test_empty_file(text: str) -> None:
    fails(text, "plan.json is empty")


@pytest.mark.parametrize(
    ("text", "found"),
    [("[]", "an array"), ('"steps"', "a string"), ("null", "null"), ("42", "a number")],
)
def test_top_level_must_be_an_object(text: str, found: str) -> None:
    fails(text, "must hold a JSON object at the top", found)


def test_not_json_at_all() -> None:
    fails("Previewing update (dev):\n", "is not JSON", "line 1 column 1")


def test_engine_event_stream_is_recognised() -> None:
    lines = [
        {"sequence": 0, "timestamp": 1, "preludeEvent": {"config": {}}},
        {"sequence": 1, "timestamp": 1, "summaryEvent": {}},
    ]
    fails("\n".join(json.dumps(line) for line in lines), "one engine event per line")


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    fails(digest(step(newState={"inputs": {"x": "PLACE"}})).replace('"PLACE"', deep), "deeply")


def test_steps_must_be_a_list() -> None:
    fails('{"steps": {"op": "create"}}', "plan.json: steps must be an array of steps")


def test_step_must_be_an_object() -> None:
    fails(digest(step(), "create"), "steps[1] must be a JSON object, not a string")


def test_step_without_op() -> None:
    bad = step()
    del bad["op"]
    fails(digest(step(), bad), 'steps[1] has no "op"')


def test_step_without_urn() -> None:
    bad = step()
    del bad["urn"]
    fails(digest(bad), 'steps[0] has no "urn"')


def test_an_operation_railnet_does_not_know_is_a_warning_for_that_step() -> None:
    # Pulumi keeps adding operations: one step of a new kind never fails the whole file.
    preview = parse_preview(
        digest(step(op="modify"), step(urn=urn("Service", "web")), changeSummary={"modify": 1})
    )
    assert [s.name for s in preview.steps] == ["web"]
    assert preview.change_summary == {}
    assert len(preview.warnings) == 2
    assert "steps[0].op is 'modify', an operation railnet does not know" in preview.warnings[1]
    assert "(for api)" in preview.warnings[1]
    assert "changeSummary.modify" in preview.warnings[0]


def test_an_operation_must_still_be_a_string() -> None:
    fails(digest(step(op=7)), "steps[0].op must be a string")


def test_the_refresh_fixture_has_a_refresh_step_per_resource_and_hides_sames() -> None:
    # deploymentExecutor.refresh (deployment_executor.go) makes a refresh step for every
    # resource of the old snapshot, before the program runs; the default provider's is an
    # internal step and not shown. Then the program's steps: the root's same (always
    # shown) and database's update; the other sames are hidden.
    preview = load("refresh.json")
    assert [(s.op.value, s.name) for s in preview.steps] == [
        ("refresh", "infra-dev"),
        ("refresh", "shop"),
        ("refresh", "production"),
        ("refresh", "api"),
        ("refresh", "worker"),
        ("refresh", "database"),
        ("same", "infra-dev"),
        ("update", "database"),
    ]
    # previewActions.OnResourceStepPost (pkg/engine/update.go): a refresh step is not
    # logical, and only `pulumi refresh` counts its result, so a preview counts no refresh.
    assert preview.change_summary == {StepOp.SAME: 5, StepOp.UPDATE: 1}
    assert sum(preview.change_summary.values()) == len(
        {s.name for s in preview.steps if s.op is StepOp.REFRESH}
    )


def test_a_refresh_step_writes_the_state_before_it_twice() -> None:
    # The pre-event carries RefreshStep.New(), which is the old state until Apply copies
    # it (step.go); ShowPreviewDigest writes that pre-event and nothing later for a refresh.
    raw = json.loads((FIXTURES / "refresh.json").read_text(encoding="utf-8"))
    refreshes = [s for s in raw["steps"] if s["op"] == "refresh"]
    assert len(refreshes) == 6
    for s in refreshes:
        assert s["newState"] == s["oldState"], s["urn"]
        assert s["detailedDiff"] is None and "diffReasons" not in s
    # The step after it starts from the refreshed state: Read's inputs and outputs.
    update = next(s for s in raw["steps"] if s["op"] == "update")
    refreshed = update["oldState"]
    assert refreshed["inputs"]["service_id"] == refreshed["outputs"]["service_id"]
    assert "plan" not in refreshed["inputs"] and "plan" in refreshed["outputs"]
    assert refreshed["modified"] > next(
        s["oldState"]["modified"] for s in refreshes if s["urn"] == update["urn"]
    )


@pytest.mark.parametrize(
    "name", ["create", "delete", "ipv6_switch", "mixed", "refresh", "replace", "update"]
)
def test_new_states_follow_the_step_generator(name: str) -> None:
    # stepGenerator.generateSteps builds the new state with no id and no outputs and the old
    # state's created/modified; CreateStep/UpdateStep/SameStep.Apply fill in the rest. A
    # new state written before Apply therefore has no id; one written after it has both.
    raw = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    for s in raw["steps"]:
        new, old = s.get("newState"), s.get("oldState")
        if s["op"] in ("delete", "delete-replaced"):
            assert new is None, s["urn"]
            continue
        assert new is not None and new["urn"] == s["urn"] and "custom" in new
        if s["op"] == "refresh":
            continue
        if s["op"] in ("create", "create-replacement", "replace") or old is None:
            assert "id" not in new, s["urn"]
        if s["op"] in ("same", "update") and old and "created" in old and "id" not in new:
            assert (new.get("created"), new.get("modified")) == (
                old["created"],
                old["modified"],
            ), s["urn"]


def test_fixtures_are_written_as_go_writes_them() -> None:
    # json.MarshalIndent with 4 spaces: struct fields in declaration order, map keys
    # sorted, non-ASCII as UTF-8, <, > and & escaped; fmt.Println adds the newline.
    for path in sorted(FIXTURES.glob("*.json")):
        if path.name in ("truncated.json", "malformed.json"):
            continue
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
        assert list(doc) == [
            k for k in ("config", "steps", "diagnostics", "duration", "changeSummary") if k in doc
        ], path.name
        again = json.dumps(doc, indent=4, ensure_ascii=False)
        again = again.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        assert text == again + "\n", path.name


def test_a_new_state_before_its_step_ran_has_no_id_and_no_outputs() -> None:
    preview = parse_preview((FIXTURES / "create.json").read_text())
    api = by_name(preview, "api")
    assert api.new is not None and api.new.id == "" and api.new.outputs is None
    assert api.new_outputs == {}


def test_urn_that_is_not_a_urn() -> None:
    fails(digest(step(urn="api")), "steps[0].urn is 'api', not a Pulumi URN")


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"oldState": []}, "steps[0].oldState must be a JSON object"),
        ({"newState": {"outputs": "x"}}, "steps[0].newState.outputs must be a JSON object"),
        ({"newState": {"id": 7}}, "steps[0].newState.id must be a string"),
        ({"newState": {"delete": "yes"}}, "steps[0].newState.delete must be true or false"),
        ({"newState": {"dependencies": [1]}}, "steps[0].newState.dependencies[0] must be"),
        ({"diffReasons": "replicas"}, "steps[0].diffReasons must be an array of strings"),
        ({"replaceReasons": [None]}, "steps[0].replaceReasons[0] must be a string"),
        ({"provider": 3}, "steps[0].provider must be a string"),
        ({"detailedDiff": []}, "steps[0].detailedDiff must be a JSON object"),
        (
            {"detailedDiff": {"replicas": {"kind": "changed"}}},
            "steps[0].detailedDiff.replicas.kind is 'changed'",
        ),
    ],
)
def test_step_fields_out_of_shape(fields: dict[str, Any], where: str) -> None:
    fails(digest(step(**fields)), where)


@pytest.mark.parametrize(
    ("top", "where"),
    [
        ({"changeSummary": {"create": -1}}, "changeSummary.create must be a whole number"),
        ({"changeSummary": {"modify": -1}}, "changeSummary.modify must be a whole number"),
        ({"changeSummary": []}, "changeSummary must be a JSON object"),
        ({"config": {"railnet:cluster": 1}}, "config.railnet:cluster must be a string"),
        ({"duration": "2s"}, "duration must be a whole number"),
        ({"diagnostics": {}}, "diagnostics must be an array"),
        ({"diagnostics": [{"severity": "fatal"}]}, "diagnostics[0].severity is 'fatal'"),
        ({"maybeCorrupt": 1}, "maybeCorrupt must be true or false"),
    ],
)
def test_document_fields_out_of_shape(top: dict[str, Any], where: str) -> None:
    fails(digest(step(), **top), where)


# -- reading values --------------------------------------------------------------------------


def test_a_preview_without_steps_is_empty() -> None:
    preview = parse_preview('{"changeSummary": {"same": 1}}')
    assert preview.steps == () and preview.railnet_steps() == ()
    assert preview.change_summary == {StepOp.SAME: 1}


def test_placeholders_anywhere_in_a_value() -> None:
    secret_object = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}
    inputs = {
        "nodes": ["node-1", UNKNOWN_TEXT],
        "env_vars": {"TOKEN": "[secret]", "RAILWAY_SERVICE_NAME": "api"},
        "sealed": {**secret_object, "ciphertext": "AAAA"},
        "replicas": 2,
        "ratio": 0.5,
        "on": True,
        "nothing": None,
    }
    preview = parse_preview(digest(step(newState={"inputs": inputs})))
    read = preview.steps[0].new_inputs
    assert read["nodes"] == ("node-1", UNKNOWN)
    assert read["env_vars"] == {"TOKEN": SECRET, "RAILWAY_SERVICE_NAME": "api"}
    assert read["sealed"] is SECRET
    assert (read["replicas"], read["ratio"], read["on"], read["nothing"]) == (2, 0.5, True, None)
    assert repr(SECRET) == "SECRET" and repr(UNKNOWN) == "UNKNOWN"


def test_values_and_steps_are_read_only() -> None:
    preview = load("create.json")
    api = by_name(preview, "api")
    with pytest.raises(TypeError):
        api.new_inputs["replicas"] = 3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        api.op = StepOp.DELETE  # type: ignore[misc]


def test_kinds_from_both_type_tokens_and_a_parent_qualified_urn() -> None:
    schema_token = "urn:pulumi:dev::infra::railnet:index:Environment::production"
    nested = (
        "urn:pulumi:dev::infra::my:index:Platform$pulumi-python:dynamic/railnet:Service::web::blue"
    )
    preview = parse_preview(digest(step(urn=schema_token), step(urn=nested)))
    env, web = preview.railnet_steps()
    assert env.kind is Kind.ENVIRONMENT and env.name == "production"
    assert web.kind is Kind.SERVICE and web.type == "pulumi-python:dynamic/railnet:Service"
    assert web.name == "web::blue"


def test_detailed_diff_when_a_provider_gives_one() -> None:
    diff = {"replicas": {"kind": "update", "inputDiff": True}}
    preview = parse_preview(digest(step(op="update", detailedDiff=diff, diffReasons=["replicas"])))
    read = preview.steps[0]
    assert read.diff_reasons == ("replicas",)
    assert read.detailed_diff is not None
    assert read.detailed_diff["replicas"].kind is DiffKind.UPDATE
    assert read.detailed_diff["replicas"].input_diff


def test_a_step_location_names_its_index() -> None:
    assert load("delete.json").steps[2].location == "steps[2]"
