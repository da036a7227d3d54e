"""Canonical bytes of a journal entry: RFC 8785 (JCS), restricted to what the journal holds.

Entries hold only objects, arrays, strings, booleans, null and integers within
±(2^53−1) — never floats — so JCS reduces to sorted keys, no whitespace and ECMAScript
string escaping. Python's C ``json`` encoder produces exactly that, except that it sorts
keys by code point where JCS sorts by UTF-16 code unit. The two orders differ only when
a key holds a character at or above U+E000, whose UTF-8 form starts with a byte ≥ 0xEE;
output holding such a byte goes through the reference implementation (``rfc8785``). A
property test checks that the two agree on arbitrary values.
"""

from __future__ import annotations

import json
import re
from typing import Any

import rfc8785

INTEGER_MAX = 2**53 - 1
_INTEGER_DIGITS_MAX = len(str(INTEGER_MAX))
_DEPTH_MAX = 500  # deeper than any entry; the encoder's recursion would refuse it anyway
_UTF16_ORDER_BYTES = re.compile(rb"[\xee-\xff]")  # UTF-8 lead bytes of U+E000 and above

JsonValue = Any  # a JSON value made of dict/list/str/int/bool/None


class NotCanonicalizable(ValueError):
    """The value holds something JCS cannot encode exactly (a float, a huge integer, …)."""


def canonical_bytes(value: JsonValue) -> bytes:
    """The one byte representation of ``value`` (RFC 8785); refuses what JCS cannot hold."""
    try:
        encoded = _ENCODER.encode(value).encode("utf-8")
        # The round trip refuses floats and huge integers (hooks), and anything json.dumps
        # quietly converted (tuples, non-string keys): it would not come back equal.
        same = _strict_loads(encoded) == value
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotCanonicalizable(str(exc) or type(exc).__name__) from None
    if not same:
        raise NotCanonicalizable("value holds types JSON cannot carry unchanged")
    if _needs_utf16_order(encoded):
        return bytes(rfc8785.dumps(value))
    return encoded


def check_json(value: JsonValue, depth: int = 0) -> None:
    """Refuse what ``canonical_bytes`` refuses, without encoding: anything but objects with
    string keys, lists, strings (no lone surrogates), booleans, null and integers within
    ±(2^53−1). A walk, so that the write path encodes an entry once and decodes nothing."""
    kind = type(value)
    if kind is dict:
        if depth > _DEPTH_MAX:
            raise NotCanonicalizable("nested too deeply")
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                if not isinstance(key, str):
                    raise NotCanonicalizable(f"key {key!r} is not a string")
                _check_text(key)
            item_kind = type(item)
            if item_kind is str:  # the usual value, checked here rather than by a call
                if not item.isascii():
                    _check_text(item)
            elif item_kind is not int or not -INTEGER_MAX <= item <= INTEGER_MAX:
                check_json(item, depth + 1)
    elif kind is str:
        if not value.isascii():
            _check_text(value)
    elif kind is list:
        if depth > _DEPTH_MAX:
            raise NotCanonicalizable("nested too deeply")
        for item in value:
            check_json(item, depth + 1)
    elif value is None or value is True or value is False:
        return
    elif isinstance(value, int):
        if not -INTEGER_MAX <= value <= INTEGER_MAX:
            raise NotCanonicalizable(f"integer {value} outside ±(2^53−1)")
    elif isinstance(value, float):
        raise NotCanonicalizable(f"number {value!r} is not an integer")
    elif isinstance(value, str):
        _check_text(value)
    elif isinstance(value, (dict, list)):  # subclasses: what the encoder takes them for
        check_json(dict(value) if isinstance(value, dict) else list(value), depth)
    else:
        raise NotCanonicalizable(f"{type(value).__name__} is not a JSON value")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotCanonicalizable(str(exc)) from None


def encode_checked(value: JsonValue) -> bytes:
    """``canonical_bytes`` of a value already known to hold only what JCS can encode
    (``check_json``, or built by the ledger from typed fields the rules bound): one
    encoding, no round trip."""
    try:
        encoded = _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotCanonicalizable(str(exc) or type(exc).__name__) from None
    if _needs_utf16_order(encoded):
        return bytes(rfc8785.dumps(value))
    return encoded


def parse_canonical(data: bytes) -> JsonValue:
    """Parse ``data``, refusing it unless it is exactly the canonical bytes of its value."""
    try:
        value = _strict_loads(data)
        if _needs_utf16_order(data):
            again = bytes(rfc8785.dumps(value))
        else:
            again = _ENCODER.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotCanonicalizable(str(exc) or type(exc).__name__) from None
    if again != data:
        raise NotCanonicalizable("bytes are not the RFC 8785 form of their value")
    return value


def _strict_loads(data: bytes) -> JsonValue:
    return _DECODER.decode(data.decode("utf-8"))


def _refuse_float(text: str) -> None:
    raise ValueError(f"number {text} is not an integer")


def _bounded_int(text: str) -> int:
    value = int(text)
    if len(text) >= _INTEGER_DIGITS_MAX and not -INTEGER_MAX <= value <= INTEGER_MAX:
        raise ValueError(f"integer {text} outside ±(2^53−1)")
    return value


# Built once: constructing an encoder per call costs more than encoding a small entry.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_DECODER = json.JSONDecoder(
    parse_float=_refuse_float, parse_int=_bounded_int, parse_constant=_refuse_float
)


def _needs_utf16_order(data: bytes) -> bool:
    return not data.isascii() and _UTF16_ORDER_BYTES.search(data) is not None
