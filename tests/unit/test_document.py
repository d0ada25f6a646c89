"""The environment document: canonical JSON, and validation that names the bad field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from railnet.core.addressing import DEFAULT_IPV4_CIDR, ula_prefix
from railnet.core.document import (
    DEFAULT_DNS_TTL,
    DEFAULT_DOMAIN,
    FORMAT_VERSION,
    READABLE_FORMATS,
    EnvironmentDocument,
    InstanceEntry,
    IpMode,
    NodeEntry,
    ServiceEntry,
    advertised_formats,
    check_formats,
    common_format,
)
from railnet.core.errors import InvalidField

pytestmark = pytest.mark.unit

ENV_ID = "e0123456789ab"
PREFIX = ula_prefix(ENV_ID).network_address
KEY_1 = "A" * 43 + "="  # 32 zero bytes: a well-formed base64 WireGuard key
KEY_2 = "B" * 43 + "="
KEY_3 = "C" * 43 + "="


def v6(host: int) -> str:
    return str(PREFIX + host)


def valid_dual() -> dict[str, Any]:
    return {
        "format": 1,
        "id": ENV_ID,
        "project": "shop",
        "environment": "production",
        "generation": 3,
        "ip_mode": "dual",
        "ipv4_cidr": "10.250.0.0/16",
        "domain": "railway.internal",
        "dns_ttl": 5,
        "nodes": [
            {"name": "node-1", "public_key": KEY_1, "endpoint": "198.18.0.1:51820"},
            {"name": "node-2", "public_key": KEY_2, "endpoint": "[2001:db8::2]:51821"},
        ],
        "services": [
            {
                "id": "sapi",
                "name": "api",
                "instances": [
                    {"node": "node-1", "ipv4": "10.250.0.3", "ipv6": v6(3)},
                    {"node": "node-2", "ipv4": "10.250.0.4", "ipv6": v6(4)},
                ],
            },
            {
                "id": "sdb",
                "name": "db",
                "instances": [{"node": "node-2", "ipv4": "10.250.0.5", "ipv6": v6(5)}],
            },
        ],
    }


def valid_ipv6_only() -> dict[str, Any]:
    raw = valid_dual()
    raw["ip_mode"] = "ipv6"
    raw["ipv4_cidr"] = None
    for svc in raw["services"]:
        for inst in svc["instances"]:
            inst["ipv4"] = None
    return raw


def expect_invalid(raw: object, field: str) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        EnvironmentDocument.from_dict(raw)
    assert caught.value.field == field, str(caught.value)
    return caught.value


# -- round trips ----------------------------------------------------------------------------


def test_valid_document_reads_into_typed_entries() -> None:
    doc = EnvironmentDocument.from_dict(valid_dual())
    assert doc.id == ENV_ID
    assert doc.generation == 3
    assert doc.ip_mode is IpMode.DUAL
    assert doc.nodes[1] == NodeEntry("node-2", KEY_2, "[2001:db8::2]:51821")
    assert doc.services[0] == ServiceEntry(
        id="sapi",
        name="api",
        instances=(
            InstanceEntry("node-1", "10.250.0.3", v6(3)),
            InstanceEntry("node-2", "10.250.0.4", v6(4)),
        ),
    )
    assert doc.service("db") is doc.services[1]
    assert doc.service("nope") is None
    assert doc.node("node-1") == doc.nodes[0]
    assert doc.node("node-9") is None


def test_json_round_trip_is_lossless_and_canonical() -> None:
    doc = EnvironmentDocument.from_dict(valid_dual())
    text = doc.to_json()
    assert EnvironmentDocument.from_json(text) == doc
    assert EnvironmentDocument.from_json(text.encode()) == doc
    # Canonical: sorted keys, no whitespace, so equal documents are equal bytes.
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    shuffled = dict(reversed(list(valid_dual().items())))
    assert EnvironmentDocument.from_dict(shuffled).to_json() == text


def test_ipv6_only_document_round_trips_without_ipv4() -> None:
    doc = EnvironmentDocument.from_dict(valid_ipv6_only())
    assert doc.ip_mode is IpMode.IPV6
    assert doc.ipv4_cidr is None
    assert all(i.ipv4 is None for s in doc.services for i in s.instances)
    assert doc.addresses.ipv4 is None
    assert doc.addresses.gateway4 is None and doc.addresses.resolver4 is None
    assert EnvironmentDocument.from_json(doc.to_json()) == doc


def test_defaults_fill_in_optional_fields() -> None:
    raw = valid_dual()
    for key in ("format", "ip_mode", "ipv4_cidr", "domain", "dns_ttl"):
        del raw[key]
    doc = EnvironmentDocument.from_dict(raw)
    assert doc.ip_mode is IpMode.DUAL
    assert doc.ipv4_cidr == DEFAULT_IPV4_CIDR
    assert doc.domain == DEFAULT_DOMAIN
    assert doc.dns_ttl == DEFAULT_DNS_TTL


def test_ipv6_only_defaults_to_no_ipv4_cidr() -> None:
    raw = valid_ipv6_only()
    del raw["ipv4_cidr"]
    assert EnvironmentDocument.from_dict(raw).ipv4_cidr is None


def test_empty_environment_is_valid() -> None:
    raw = valid_dual()
    raw["nodes"] = []
    raw["services"] = []
    doc = EnvironmentDocument.from_dict(raw)
    assert doc.nodes == () and doc.services == ()


def test_with_generation_changes_only_the_generation() -> None:
    doc = EnvironmentDocument.from_dict(valid_dual())
    bumped = doc.with_generation(4)
    assert bumped.generation == 4
    assert bumped.with_generation(3) == doc


def test_address_plan_uses_the_ula_prefix_of_the_id() -> None:
    doc = EnvironmentDocument.from_dict(valid_dual())
    assert doc.addresses.ipv6 == ula_prefix(ENV_ID)
    assert str(doc.addresses.ipv4) == "10.250.0.0/16"


# -- invalid documents name the field and the value ----------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    """A mutation that sets ``path`` (``a.b[1].c`` style) to ``value``."""

    def mutate(raw: dict[str, Any]) -> None:
        target: Any = raw
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


# (case, the field set and named, the bad value): every error names exactly that field.
INVALID: list[tuple[str, str, object]] = [
    ("gateway4", "services[1].instances[0].ipv4", "10.250.0.1"),
    ("resolver4", "services[0].instances[1].ipv4", "10.250.0.2"),
    ("network4", "services[0].instances[0].ipv4", "10.250.0.0"),
    ("broadcast4", "services[0].instances[0].ipv4", "10.250.255.255"),
    ("outside4", "services[0].instances[0].ipv4", "10.99.0.3"),
    ("not-ip4", "services[0].instances[0].ipv4", "ten"),
    ("v6-as-v4", "services[0].instances[0].ipv4", v6(9)),
    ("int-as-v4", "services[0].instances[0].ipv4", 167378947),
    ("missing4", "services[0].instances[0].ipv4", None),
    ("gateway6", "services[1].instances[0].ipv6", v6(1)),
    ("resolver6", "services[1].instances[0].ipv6", v6(2)),
    ("network6", "services[1].instances[0].ipv6", v6(0)),
    ("outside6", "services[0].instances[0].ipv6", "fd00::3"),
    ("v4-as-v6", "services[0].instances[0].ipv6", "10.250.0.9"),
    ("dup4", "services[1].instances[0].ipv4", "10.250.0.3"),
    ("dup6", "services[1].instances[0].ipv6", v6(4)),
    ("unknown-node", "services[0].instances[1].node", "node-7"),
    ("dup-service-name", "services[1].name", "api"),
    ("dup-service-id", "services[1].id", "sapi"),
    ("upper-name", "services[0].name", "API"),
    ("long-name", "services[0].name", "a" * 64),
    ("dash-name", "services[0].name", "-api"),
    ("bad-service-id", "services[0].id", "S_1"),
    ("instances-not-list", "services[0].instances", "node-1"),
    ("instance-not-object", "services[0].instances[0]", "x"),
    ("service-not-object", "services[0]", 7),
    ("services-not-list", "services", {}),
    ("nodes-not-list", "nodes", "node-1"),
    ("dup-node-name", "nodes[1].name", "node-1"),
    ("dup-endpoint", "nodes[1].endpoint", "198.18.0.1:51820"),
    ("dup-key", "nodes[1].public_key", KEY_1),
    ("short-key", "nodes[0].public_key", "AAAA"),
    ("not-base64-key", "nodes[0].public_key", "!" * 44),
    ("no-port", "nodes[0].endpoint", "198.18.0.1"),
    ("port-zero", "nodes[0].endpoint", "198.18.0.1:0"),
    ("port-high", "nodes[0].endpoint", "198.18.0.1:65536"),
    ("hostname", "nodes[0].endpoint", "node-1:51820"),
    ("bad-node-name", "nodes[0].name", "Node_1"),
    ("node-not-object", "nodes[0]", None),
    ("generation-zero", "generation", 0),
    ("generation-bool", "generation", True),
    ("generation-str", "generation", "3"),
    ("mode", "ip_mode", "ipv4"),
    ("public-cidr", "ipv4_cidr", "8.8.8.0/24"),
    ("tiny-cidr", "ipv4_cidr", "10.250.0.0/29"),
    ("host-bits", "ipv4_cidr", "10.250.0.1/16"),
    ("null-cidr-dual", "ipv4_cidr", None),
    ("ttl-negative", "dns_ttl", -1),
    ("ttl-huge", "dns_ttl", 3601),
    ("domain-upper", "domain", "Railway.internal"),
    ("domain-empty", "domain", ""),
    ("domain-trailing-dot", "domain", "railway.internal."),
    ("format", "format", 3),
    ("bad-id", "id", "E-1"),
    ("bad-project", "project", "Shop"),
    ("bad-environment", "environment", ""),
    ("rotation-not-string", "key_rotation", 7),
    ("rotation-newline", "key_rotation", "2024-06\n"),
    ("rotation-long", "key_rotation", "r" * 129),
]


@pytest.mark.parametrize(
    ("field", "value"), [pytest.param(f, v, id=case) for case, f, v in INVALID]
)
def test_invalid_document_names_field_path_and_value(field: str, value: object) -> None:
    raw = valid_dual()
    _set(field, value)(raw)
    error = expect_invalid(raw, field)
    assert error.value == value
    message = str(error)
    assert field in message
    assert repr(value) in message
    assert error.reason and error.reason in message


def test_the_cases_above_are_valid_before_mutation() -> None:
    # Guards the table: every failure above comes from its mutation, not the base.
    EnvironmentDocument.from_dict(valid_dual())
    EnvironmentDocument.from_dict(valid_ipv6_only())


def test_reserved_address_message_explains_the_reservation() -> None:
    raw = valid_dual()
    raw["services"][1]["instances"][0]["ipv4"] = "10.250.0.1"
    error = expect_invalid(raw, "services[1].instances[0].ipv4")
    assert "reserved" in str(error)
    assert "10.250.0.0/16" in str(error)


def test_duplicate_address_across_services_is_named_at_the_second_use() -> None:
    raw = valid_dual()
    raw["services"][1]["instances"][0]["ipv6"] = raw["services"][0]["instances"][0]["ipv6"]
    error = expect_invalid(raw, "services[1].instances[0].ipv6")
    assert "used twice" in str(error)


def test_duplicate_address_within_one_service() -> None:
    raw = valid_dual()
    raw["services"][0]["instances"][1]["ipv4"] = "10.250.0.3"
    expect_invalid(raw, "services[0].instances[1].ipv4")


def test_not_an_object() -> None:
    for raw in ([], "doc", None, 3):
        expect_invalid(raw, "document")


def test_not_json_names_the_document_and_shows_a_preview() -> None:
    with pytest.raises(InvalidField) as caught:
        EnvironmentDocument.from_json("{nope" + "x" * 200)
    assert caught.value.field == "document"
    assert isinstance(caught.value.value, str) and len(caught.value.value) <= 80
    with pytest.raises(InvalidField):
        EnvironmentDocument.from_json(b"\xff\xfe")


# -- ipv6-only rules -----------------------------------------------------------------------


def test_ipv6_only_refuses_an_instance_ipv4() -> None:
    raw = valid_ipv6_only()
    raw["services"][1]["instances"][0]["ipv4"] = "10.250.0.5"
    error = expect_invalid(raw, "services[1].instances[0].ipv4")
    assert "ipv6" in error.reason


def test_ipv6_only_refuses_an_ipv4_cidr() -> None:
    raw = valid_ipv6_only()
    raw["ipv4_cidr"] = "10.250.0.0/16"
    expect_invalid(raw, "ipv4_cidr")


def test_ipv6_only_still_checks_ipv6_addresses() -> None:
    raw = valid_ipv6_only()
    raw["services"][0]["instances"][0]["ipv6"] = v6(2)
    expect_invalid(raw, "services[0].instances[0].ipv6")


def test_dual_stack_requires_ipv4_on_every_instance() -> None:
    raw = valid_dual()
    del raw["services"][0]["instances"][1]["ipv4"]
    expect_invalid(raw, "services[0].instances[1].ipv4")


def test_validation_does_not_mutate_the_input() -> None:
    raw = valid_dual()
    before = copy.deepcopy(raw)
    EnvironmentDocument.from_dict(raw)
    assert raw == before


# -- key rotation ---------------------------------------------------------------------------


def test_key_rotation_token_round_trips_and_is_left_out_when_empty() -> None:
    plain = EnvironmentDocument.from_dict(valid_dual())
    assert plain.key_rotation == ""
    assert "key_rotation" not in json.loads(plain.to_json())  # older documents stay canonical
    raw = valid_dual()
    raw["key_rotation"] = "2024-06"
    rotated = EnvironmentDocument.from_dict(raw)
    assert rotated.key_rotation == "2024-06"
    assert json.loads(rotated.to_json())["key_rotation"] == "2024-06"
    assert EnvironmentDocument.from_json(rotated.to_json()) == rotated


# -- format versions ------------------------------------------------------------------------

GOLDEN_FORMAT_1 = Path(__file__).parents[1] / "golden" / "document" / "format-1.json"


def test_a_document_of_format_1_written_before_versioning_still_reads_and_stays_canonical() -> None:
    text = GOLDEN_FORMAT_1.read_text()  # canonical JSON as the release before format 2 wrote it
    doc = EnvironmentDocument.from_json(text)
    assert doc.format == 1
    assert doc.leaving == ("node-2",) and doc.key_rotation == "2024-06" and doc.freed
    assert doc.to_json() == text
    assert doc.with_format(2).to_json() == text.replace('"format":1', '"format":2')


def test_new_documents_are_written_in_the_newest_format() -> None:
    raw = valid_dual()
    del raw["format"]  # no format at all: the first one
    assert EnvironmentDocument.from_dict(raw).format == 1
    doc = EnvironmentDocument(ENV_ID, "shop", "production", 1)
    assert doc.format == FORMAT_VERSION == 2
    assert json.loads(doc.to_json())["format"] == 2
    assert FORMAT_VERSION - 1 in READABLE_FORMATS  # an agent reads the previous format


@pytest.mark.parametrize(
    "path",
    ["", "nodes[0]", "services[1]", "services[0].instances[1]", "freed[0]"],
)
def test_format_2_refuses_a_key_it_does_not_define_and_format_1_ignores_it(path: str) -> None:
    raw = valid_dual()
    raw["freed"] = [{"address": "10.250.0.9", "generation": 2, "at": 0}]
    target: Any = raw
    for part in filter(None, path.replace("]", "").replace("[", ".").split(".")):
        target = target[int(part)] if part.isdigit() else target[part]
    target["weight"] = 3
    assert EnvironmentDocument.from_dict(raw).format == 1  # format 1: ignored, as always
    raw["format"] = 2
    caught = expect_invalid(raw, f"{path}.weight" if path else "weight")
    assert "format 2" in str(caught)


def test_an_agent_limited_to_format_1_refuses_format_2_and_says_which_it_reads() -> None:
    text = EnvironmentDocument.from_dict(valid_dual()).with_format(2).to_json()
    with pytest.raises(InvalidField) as caught:
        EnvironmentDocument.from_json(text, formats=(1,))
    assert caught.value.field == "format" and caught.value.value == 2
    assert "[1]" in str(caught.value)
    assert EnvironmentDocument.from_json(text.replace('"format":2', '"format":1'), formats=(1,))


def test_the_deployer_picks_the_highest_format_every_holder_reads() -> None:
    assert common_format({"node-1": (1, 2), "node-2": (1, 2)}) == 2
    assert common_format({"node-1": (1, 2), "node-2": advertised_formats([])}) == 1
    assert common_format({}) == FORMAT_VERSION
    with pytest.raises(InvalidField) as caught:
        common_format({"node-1": (3,), "node-2": (1,)})
    assert "node-1 reads [3]" in str(caught.value)


@pytest.mark.parametrize("text", ["", "x", "3", "0,1"])
def test_a_format_limit_names_the_formats_this_release_reads(text: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_formats("RAILNET_DOCUMENT_FORMATS", text)
    assert caught.value.field == "RAILNET_DOCUMENT_FORMATS"
    assert check_formats("F", "1") == (1,) and check_formats("F", "2, 1") == (1, 2)


@settings(max_examples=200, deadline=None)
@given(
    owners=st.lists(st.text(st.characters(codec="utf-8"), max_size=30), min_size=2, max_size=2),
    owner=st.text(max_size=30),
    rotation=st.sampled_from(["", "r1", 'k"services":0']),
)
def test_the_canonical_json_is_the_whole_documents_sorted_dump(
    owners: list[str], owner: str, rotation: str
) -> None:
    """Written from the services' own parts, it is exactly ``json.dumps`` of the whole
    document with sorted keys, whatever text the free-form fields carry (quotes, the
    marker the header is written with, escapes)."""
    raw = valid_dual()
    for service, text in zip(raw["services"], owners, strict=True):
        if text.isprintable() and text:
            service["owner"] = text
    if owner.isprintable() and owner:
        raw["owner"] = owner
    if rotation:
        raw["key_rotation"] = rotation
    doc = EnvironmentDocument.from_dict(raw)
    assert doc.to_json() == json.dumps(doc.to_dict(), sort_keys=True, separators=(",", ":"))
    # A document sharing entries with another writes their cached parts the same.
    bigger = replace(doc, generation=4, services=(*doc.services[:1], doc.services[1]))
    assert bigger.to_json() == json.dumps(bigger.to_dict(), sort_keys=True, separators=(",", ":"))
