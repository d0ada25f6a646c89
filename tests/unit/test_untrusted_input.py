"""Every field of a document, and every provider input, is untrusted: values that only
look right (a trailing newline, a space, an unbracketed IPv6 endpoint) are refused with an
error naming the field. Property-based tests throw arbitrary values at the validators."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from railnet.core.dns import Answerer, ResolverView
from railnet.core.document import EnvironmentDocument
from railnet.core.errors import InvalidField
from railnet.core.names import check_dns_label, check_domain, check_node_name, check_object_id
from railnet.core.resources import Kind, check_inputs
from tests.documents import make_document

pytestmark = pytest.mark.unit

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid() -> dict[str, Any]:
    return make_document({"api": 2, "db": 1}).to_dict()


@pytest.mark.parametrize(
    "endpoint",
    [
        "198.18.0.2:51820\n",
        "1.2.3.4: 51820",
        " 1.2.3.4:51820",
        "1.2.3.4:51820 ",
        "1.2.3.4:+5182",
        "1.2.3.4:0x10",
        "1.2.3.4:٥١٨٢٠",  # Arabic-Indic digits: int() reads them
        "fd00::1:51820",  # IPv6 without brackets
        "[1.2.3.4]:51820",
        "[fe80::1%eth0]:51820",
        "1.2.3.4:65536",
        "1.2.3.4:0",
        "1.2.3.4\t:51820",
    ],
)
def test_endpoints_are_exactly_host_and_port(endpoint: str) -> None:
    raw = valid()
    raw["nodes"][0]["endpoint"] = endpoint
    with pytest.raises(InvalidField) as refused:
        EnvironmentDocument.from_dict(raw)
    assert refused.value.field == "nodes[0].endpoint"


@pytest.mark.parametrize("endpoint", ["198.18.0.2:51820", "[fd00::2]:1", "10.0.0.1:65535"])
def test_good_endpoints_pass(endpoint: str) -> None:
    raw = valid()
    raw["nodes"][0]["endpoint"] = endpoint
    assert EnvironmentDocument.from_dict(raw).nodes[0].endpoint == endpoint


@pytest.mark.parametrize(
    "check, value",
    [
        (check_dns_label, "api\n"),
        (check_node_name, "node-1\n"),
        (check_object_id, "e1\n"),
        (check_domain, "railway.internal\n"),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(check: Any, value: str) -> None:
    with pytest.raises(InvalidField):
        check("field", value)


def test_a_public_key_is_32_bytes_of_base64() -> None:
    for key in ("A" * 43 + "=\n", "A" * 44, "AAAA", "A" * 42 + "==", " " + "A" * 43 + "="):
        raw = valid()
        raw["nodes"][0]["public_key"] = key
        with pytest.raises(InvalidField) as refused:
            EnvironmentDocument.from_dict(raw)
        assert refused.value.field == "nodes[0].public_key"


# -- properties --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def paths(raw: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(raw, dict):
        for key, value in raw.items():
            found += paths(value, (*prefix, key))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            found += paths(value, (*prefix, i))
    return found


PATHS = paths(valid())


@EXAMPLES
@given(where=st.sampled_from(PATHS), value=JSON)
def test_any_field_replaced_by_any_value_is_valid_or_refused_by_name(
    where: tuple[Any, ...], value: Any
) -> None:
    raw = copy.deepcopy(valid())
    parent = raw
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = value
    try:
        doc = EnvironmentDocument.from_dict(raw)
    except InvalidField as exc:
        assert exc.field  # the error names a field
        return
    # Accepted: it must survive its own canonical form unchanged.
    assert EnvironmentDocument.from_json(doc.to_json()) == doc


@EXAMPLES
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_is_a_document_or_refused(text: str) -> None:
    with contextlib.suppress(InvalidField):
        EnvironmentDocument.from_json(text)


@EXAMPLES
@given(
    kind=st.sampled_from(list(Kind)),
    news=st.dictionaries(
        st.sampled_from(
            ["name", "project", "environment", "ip_mode", "ipv4_cidr", "domain", "dns_ttl",
             "replicas", "nodes", "owner", "environment_owner"]
        ),
        JSON,
        max_size=6,
    ),
)  # fmt: skip
def test_provider_inputs_are_checked_or_refused_by_property(
    kind: Kind, news: dict[str, Any]
) -> None:
    _, failures = check_inputs(kind, "res", news, cluster_nodes=["node-1", "node-2"])
    for prop, message in failures:
        assert prop and message


ANSWERER = Answerer(ResolverView.from_document(make_document({"api": 2}), "ns"))


@EXAMPLES
@given(query=st.binary(max_size=600))
def test_any_datagram_gets_a_reply_or_silence(query: bytes) -> None:
    reply = ANSWERER.answer(query)  # never raises
    if isinstance(reply, bytes):
        assert len(query) >= 2 and reply[:2] == query[:2]  # a reply answers the query's id


def test_the_property_tests_ran() -> None:
    # A guard against a silently disabled property run (e.g. max_examples=0).
    assert EXAMPLES.max_examples >= 100 and json.dumps(PATHS)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 2.5, True])
def test_numbers_that_are_not_whole_are_refused_by_property(value: float) -> None:
    # Found by the property test above: infinity used to crash check with OverflowError.
    _, failures = check_inputs(Kind.ENVIRONMENT, "env", {"project": "shop", "dns_ttl": value})
    assert [p for p, _ in failures] == ["dns_ttl"]
    _, failures = check_inputs(
        Kind.SERVICE, "svc", {"project": "shop", "environment": "prod", "replicas": value}
    )
    assert [p for p, _ in failures] == ["replicas"]
