"""Canonical bytes of a journal entry: RFC 8785 (JCS), restricted to what the journal holds.

Entries hold only objects, arrays, strings, booleans, null and integers within
±(2^53−1) — never floats — so JCS reduces to sorted keys, no whitespace and ECMAScript
string escaping. Python's ``json.dumps`` produces exactly that, except that it sorts keys
by code point where JCS sorts by UTF-16 code unit; the two orders differ only when a key
holds a character at or above U+E000, so such rare objects go through the reference
implementation (the ``rfc8785`` package). A property test checks the two agree.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

INTEGER_MAX = 2**53 - 1
DEPTH_MAX = 16

JsonValue = Any  # a JSON value made of dict/list/str/int/bool/None


class NotCanonicalizable(ValueError):
    """The value holds something JCS cannot encode exactly (a float, a huge integer, …)."""


def canonical_bytes(value: JsonValue) -> bytes:
    """The one byte representation of ``value`` (RFC 8785)."""
    needs_reference = _check(value, 0)
    if needs_reference:
        return bytes(rfc8785.dumps(value))
    return json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def _check(value: JsonValue, depth: int) -> bool:
    """Validate ``value``; return True when a key needs UTF-16 ordering."""
    if depth > DEPTH_MAX:
        raise NotCanonicalizable(f"nesting deeper than {DEPTH_MAX}")
    if value is None or value is True or value is False:
        return False
    if isinstance(value, int):
        if not -INTEGER_MAX <= value <= INTEGER_MAX:
            raise NotCanonicalizable(f"integer {value} outside ±(2^53−1)")
        return False
    if isinstance(value, str):
        _check_string(value)
        return False
    if isinstance(value, list):
        needs = False
        for item in value:
            needs = _check(item, depth + 1) or needs
        return needs
    if isinstance(value, dict):
        needs = False
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonicalizable(f"object key {key!r} is not a string")
            _check_string(key)
            if any(ord(ch) >= 0xE000 for ch in key):
                needs = True
            needs = _check(item, depth + 1) or needs
        return needs
    raise NotCanonicalizable(f"{type(value).__name__} is not allowed in an entry")


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotCanonicalizable("string holds a lone surrogate") from exc
