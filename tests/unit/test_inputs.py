"""The edge's checks alone: argument rules (coalition.api.inputs), the Long scalar, and
the JSON body (coalition.api.http_body)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cross_web import HTTPException

from coalition.api import inputs
from coalition.api.http_body import JSON_DEPTH_MAX, decode_json, request_data
from coalition.api.schema import build_schema
from coalition.api.types import _parse_long
from graphql import GraphQLInputObjectType, GraphQLObjectType


def _argument_names() -> set[str]:
    schema = build_schema(development=True)._schema
    names: set[str] = set()
    for named in schema.type_map.values():
        if isinstance(named, GraphQLObjectType):
            names |= {a for field in named.fields.values() for a in field.args}
        elif isinstance(named, GraphQLInputObjectType):
            names |= set(named.fields)
    return names


def test_every_rule_names_an_argument_the_schema_has() -> None:
    assert set(inputs.RULES) <= _argument_names()


@pytest.mark.parametrize(
    "value",
    ["R1", "Ромашка-1", "a b", "x" * inputs.TEXT_LENGTH_MAX, "café ☕"],
)
def test_sound_text_passes(value: str) -> None:
    assert inputs.problem({"reference": value}) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "\u3000",  # an ideographic space is blank too
        "a\u0000",
        "a\ud800",
        "a\udfff",
        "a\n",
        "a\u001b[31m",
        "a\u007f",
        "a\u0085",
        "a\u200b",
        "a\u2066",
        "\ufeffa",
        "x" * (inputs.TEXT_LENGTH_MAX + 1),
    ],
)
def test_unreasonable_text_is_refused_and_named(value: str) -> None:
    message = inputs.problem({"partnerId": "p", "reference": value})
    assert message is not None and message.startswith("reference: must be 1–128")


def test_input_objects_and_lists_name_the_path() -> None:
    assert str(inputs.problem({"member": {"memberId": "\u0000"}})).startswith("member.memberId:")
    assert str(inputs.problem({"labels": ["ok", " "]})).startswith("labels[1]:")


def test_records_may_hold_tabs_and_line_breaks_only() -> None:
    assert inputs.problem({"records": "ref\tkind\r\nR1\tearn\n"}) is None
    assert str(inputs.problem({"records": "R1\u0000"})).startswith("records:")


@pytest.mark.parametrize("value", ["0", "95", "0.5", "1000000", "0.000000000001", "12.340"])
def test_sound_rates_pass(value: str) -> None:
    assert inputs.problem({"issuancePricePerPoint": value}) is None


@pytest.mark.parametrize(
    "value",
    [
        "1e400",
        "1E2",
        "NaN",
        "nan",
        "Infinity",
        "-1",
        "-0",
        "+1",
        " 1",
        "1.",
        ".5",
        "1_0",
        "１",
        "٣",
        "1000000.000000000001",
        "0.0000000000001",
        "",
    ],
)
def test_rates_are_plain_bounded_decimals(value: str) -> None:
    message = inputs.problem({"issuancePricePerPoint": value})
    assert message is not None and message.startswith("issuancePricePerPoint: ")


def test_a_share_is_at_most_one() -> None:
    assert inputs.problem({"breakageShare": "1"}) is None
    assert str(inputs.problem({"breakageShare": "1.0001"})).startswith("breakageShare:")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1970-01-01T00:00:00.000000Z", True),
        ("9999-12-31T23:59:59.999999Z", True),
        ("1969-12-31T23:59:59.999999Z", False),
        ("0001-01-01T00:00:00.000000Z", False),
        ("2026-02-30T00:00:00.000000Z", False),
        ("2026-01-01T00:00:00Z", True),
        ("2026-01-01T03:00:00+03:00", True),
        ("2026-01-01T00:00:00.5Z", True),
        ("2026-09-01", True),
        ("2026-01-01T00:00:00", False),
        ("２０２６-01-01T00:00:00.000000Z", False),
    ],
)
def test_times_are_rfc_3339_or_dates_from_1970(value: str, ok: bool) -> None:
    assert (inputs.problem({"effectiveFrom": value}) is None) is ok


def test_amounts_and_tolerances_are_bounded() -> None:
    assert inputs.problem({"points": 2**53 - 1, "refundMinor": -(2**53 - 1)}) is None
    assert str(inputs.problem({"points": 2**53})).startswith("points:")
    assert str(inputs.problem({"toleranceSeconds": -1})).startswith("toleranceSeconds:")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("0", 0), ("-12", -12), (12, 12), ("9223372036854775807", 2**63 - 1)],
)
def test_a_long_parses_ascii_digits(value: Any, parsed: int) -> None:
    assert _parse_long(value) == parsed


@pytest.mark.parametrize(
    "value",
    ["１０００", "١٠", "+5", " 5", "5 ", "1_000", "", "-", "9223372036854775808", 2**63, True, 1.0],
)
def test_a_long_refuses_anything_else(value: Any) -> None:
    with pytest.raises(ValueError, match="Long"):
        _parse_long(value)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b"{",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"v": json.loads("[" * (JSON_DEPTH_MAX + 1) + "]" * (JSON_DEPTH_MAX + 1))}),
        b'{"a": NaN}',
        b'{"a": -Infinity}',
    ],
    ids=lambda b: repr(b[:16]),
)
def test_bad_json_is_a_400(body: bytes | str) -> None:
    with pytest.raises(HTTPException) as caught:
        decode_json(body)
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    "data",
    [
        123,
        "x",
        None,
        [],
        [{"query": "{ me { keyId } }"}],
        {"query": 1},
        {"operationName": 1},
        {"variables": []},
        {"extensions": "x"},
    ],
)
def test_anything_but_one_request_object_is_a_400(data: Any) -> None:
    with pytest.raises(HTTPException) as caught:
        request_data(data)
    assert caught.value.status_code == 400


def test_one_request_object_is_read() -> None:
    read = request_data({"query": "{ me { keyId } }", "variables": {"a": 1}, "operationName": "A"})
    assert (read.query, read.variables, read.operation_name) == (
        "{ me { keyId } }",
        {"a": 1},
        "A",
    )
