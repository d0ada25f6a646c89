"""schema.json, the SDK and the providers tell the same story about the three resources.

The schema is rendered from ``railnet.core.resources.PROPERTIES``; these tests hold the
other two sides to it: the SDK's constructors and attributes, and the providers' ``diff``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

import pulumi_railnet
from railnet.core.resources import Kind
from railnet.engine.schema import build_schema, render
from railnet.providers import EnvironmentProvider, ProjectProvider, ServiceProvider
from railnet.providers.base import RailnetProvider

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = build_schema()

SDK_CLASSES: dict[Kind, type] = {
    Kind.PROJECT: pulumi_railnet.Project,
    Kind.ENVIRONMENT: pulumi_railnet.Environment,
    Kind.SERVICE: pulumi_railnet.Service,
}

PROVIDERS: dict[Kind, type[RailnetProvider]] = {
    Kind.PROJECT: ProjectProvider,
    Kind.ENVIRONMENT: EnvironmentProvider,
    Kind.SERVICE: ServiceProvider,
}

# Constructor parameters that stand for several schema inputs. The SDK takes resource
# objects where the wire carries their names and settings:
# - ``Environment(project=Project | str)`` sends the project's name as ``project``;
# - ``Service(environment=Environment)`` sends the environment's project and name, and
#   copies its settings (ip_mode, ipv4_cidr, domain, dns_ttl, key_rotation) so that the service's
#   provider can plan without reading the environment's state.
# Every other parameter is one schema input of the same name.
SDK_PARAMETER_INPUTS: dict[Kind, dict[str, set[str]]] = {
    Kind.PROJECT: {},
    Kind.ENVIRONMENT: {"project": {"project"}, "resource_name": {"owner"}},
    Kind.SERVICE: {
        "environment": {
            "project",
            "environment",
            "ip_mode",
            "ipv4_cidr",
            "domain",
            "dns_ttl",
            "key_rotation",
            "environment_owner",
        },
        "resource_name": {"owner"},
    },
}
"""Constructor parameters → the inputs they set (the SDK derives ``owner``, the resource's
URN, from its name)."""

NOT_INPUTS = {"self", "opts"}


def schema_resource(kind: Kind) -> dict[str, Any]:
    return SCHEMA["resources"][kind.token]  # type: ignore[no-any-return]


# -- the checked-in file ------------------------------------------------------------------


def test_checked_in_schema_is_current() -> None:
    checked_in = (ROOT / "schema.json").read_text()
    assert json.loads(checked_in) == SCHEMA, (
        "schema.json is stale: run `make schema` (python -m railnet.engine.schema > schema.json)"
    )
    assert checked_in == render(), (
        "schema.json is not in canonical form: run `make schema` "
        "(python -m railnet.engine.schema > schema.json)"
    )


def test_schema_names_the_three_resources_and_the_instance_type() -> None:
    assert set(SCHEMA["resources"]) == {
        "railnet:index:Project",
        "railnet:index:Environment",
        "railnet:index:Service",
    }
    instances = schema_resource(Kind.SERVICE)["properties"]["instances"]
    assert instances["items"] == {"$ref": "#/types/railnet:index:Instance"}
    assert "railnet:index:Instance" in SCHEMA["types"]
    assert SCHEMA["language"]["python"]["packageName"] == "pulumi_railnet"
    assert SCHEMA["config"]["variables"]["domain"]["default"] == "railway.internal"


def test_every_ref_resolves() -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    assert refs
    for ref in refs:
        assert ref.startswith("#/types/"), ref
        assert ref.removeprefix("#/types/") in SCHEMA["types"], ref


# -- the SDK --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_sdk_constructor_covers_exactly_the_schema_inputs(kind: Kind) -> None:
    params = [
        name
        for name in inspect.signature(SDK_CLASSES[kind].__init__).parameters
        if name not in NOT_INPUTS
    ]
    mapping = SDK_PARAMETER_INPUTS[kind]
    covered: list[str] = []
    for name in params:
        covered.extend(sorted(mapping.get(name, set() if name == "resource_name" else {name})))
    assert len(covered) == len(set(covered)), f"{kind.value}: an input is set twice: {covered}"
    assert set(covered) == set(schema_resource(kind)["inputProperties"]), (
        f"pulumi_railnet.{kind.value}.__init__ parameters {params} do not match the schema's "
        f"inputProperties of {kind.token}"
    )


def railnet_annotations(cls: type) -> set[str]:
    """Attribute annotations the SDK declares itself. ``typing.get_type_hints`` would also
    evaluate pulumi.Resource's own annotations, some of which name types it never imports;
    the raw ``__annotations__`` (strings, under ``from __future__ import annotations``) of
    the SDK's classes are all this needs."""
    return {
        name
        for klass in cls.__mro__
        if klass.__module__.startswith("pulumi_railnet")
        for name in vars(klass).get("__annotations__", {})
    }


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_sdk_annotates_every_schema_output(kind: Kind) -> None:
    missing = sorted(
        set(schema_resource(kind)["properties"]) - railnet_annotations(SDK_CLASSES[kind])
    )
    assert not missing, (
        f"pulumi_railnet.{kind.value} has no attribute annotation for the outputs {missing}; "
        f"add e.g. `{missing[0]}: pulumi.Output[...]` to the class"
    )


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_sdk_attributes_are_outputs(kind: Kind) -> None:
    extra = railnet_annotations(SDK_CLASSES[kind]) - set(schema_resource(kind)["properties"])
    assert not extra, f"pulumi_railnet.{kind.value} annotates {sorted(extra)}, not outputs"


# -- the providers' diff --------------------------------------------------------------------

BASE_INPUTS: dict[Kind, dict[str, Any]] = {
    Kind.PROJECT: {"name": "shop"},
    Kind.ENVIRONMENT: {"name": "production", "project": "shop"},
    Kind.SERVICE: {
        "name": "api",
        "project": "shop",
        "environment": "production",
        "ip_mode": "dual",
        "ipv4_cidr": "10.250.0.0/16",
        "domain": "railway.internal",
        "dns_ttl": 5,
        "nodes": ["node-1", "node-2"],
    },
}

PROVIDER_BLOB = "serialized-provider-v1"


def other_value(type_spec: dict[str, Any], value: Any) -> Any:
    """A value of the same schema type that differs from ``value``."""
    kind = type_spec.get("type")
    if kind == "string":
        return "other" if value != "other" else "another"
    if kind == "integer":
        return (value or 0) + 1
    if kind == "boolean":
        return not value
    if kind == "array":
        return [*(value or []), "node-9"]
    if kind == "object":
        return {**(value or {}), "extra": "x"}
    raise AssertionError(f"no alternative value for schema type {type_spec}")


def checked(kind: Kind) -> dict[str, Any]:
    """The base inputs as the provider's own check hands them to diff."""
    provider = PROVIDERS[kind]()
    result = provider.check({}, {**BASE_INPUTS[kind], "__provider": PROVIDER_BLOB})
    assert not result.failures, [(f.property, f.reason) for f in result.failures]
    assert result.inputs is not None
    return dict(result.inputs)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_replace_on_changes_matches_provider_diff(kind: Kind) -> None:
    resource = schema_resource(kind)
    olds = checked(kind)
    provider = PROVIDERS[kind]()
    for prop, spec in resource["inputProperties"].items():
        news = {**olds, prop: other_value(spec, olds.get(prop))}
        result = provider.diff("id", olds, news)
        expected = [prop] if spec.get("replaceOnChanges") else []
        assert result.changes is True, f"{kind.value}: changing {prop} is not a change"
        assert list(result.replaces or []) == expected, (
            f"{kind.value}: changing {prop} replaces {result.replaces}, but the schema says "
            f"replaceOnChanges={bool(spec.get('replaceOnChanges'))}"
        )


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_a_new_provider_blob_alone_is_no_change(kind: Kind) -> None:
    olds = checked(kind)
    news = {**olds, "__provider": "serialized-provider-v2"}
    result = PROVIDERS[kind]().diff("id", olds, news)
    assert result.changes is False
    assert not result.replaces


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_unchanged_inputs_are_no_change(kind: Kind) -> None:
    olds = checked(kind)
    result = PROVIDERS[kind]().diff("id", olds, dict(olds))
    assert result.changes is False
