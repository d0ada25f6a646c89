"""The table of what derives from what covers every output, so no new output can carry a
secret input's value into the state in clear text unnoticed."""

from __future__ import annotations

import pytest

from railnet.core.resources import Kind, input_names
from railnet.core.secrecy import DERIVED_FROM, derived_outputs, secret_outputs

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", list(Kind))
def test_every_derived_output_is_in_the_table(kind: Kind) -> None:
    assert sorted(DERIVED_FROM[kind]) == sorted(derived_outputs(kind))


@pytest.mark.parametrize("kind", list(Kind))
def test_the_table_names_only_inputs(kind: Kind) -> None:
    inputs = set(input_names(kind))
    for output, sources in DERIVED_FROM[kind].items():
        assert sources <= inputs, (output, sources - inputs)


def test_a_secret_address_range_hides_every_address_and_the_plan() -> None:
    hidden = secret_outputs(Kind.SERVICE, ["ipv4_cidr"])
    assert hidden == ["ipv4_addresses", "instances", "env_vars", "plan"]
    assert secret_outputs(Kind.ENVIRONMENT, ["ipv4_cidr"]) == ["resolvers", "plan"]
    assert secret_outputs(Kind.SERVICE, []) == []
