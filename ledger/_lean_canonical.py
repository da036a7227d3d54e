"""Canonical bytes checked by orjson's round trip, with the argument that it is exact.

``ledger.canonical.parse_canonical`` (the reference) decodes with the standard library,
encodes again with ``json.JSONEncoder`` and compares: about 11 µs an entry. The lean
verifier decodes with orjson (it needs the value anyway), encodes with orjson and
compares, which is a re-encode too, but in C and about ten times cheaper; no scan of the
bytes written in Python is faster than that. Why the result is the reference's:

Claim. Let B be bytes holding no byte ≥ 0xEE. If ``orjson.loads(B)`` gives V, V holds no
float, and ``orjson.dumps(V, OPT_SORT_KEYS | OPT_STRICT_INTEGER) == B``, then B is the
RFC 8785 form of V, so ``parse_canonical(B)`` returns V. Conversely, if B is canonical
and holds no byte ≥ 0xEE, the round trip gives B back (so a valid line is never sent to
the slow path).

- orjson.loads is a strict RFC 8259 parser: it refuses NaN/Infinity, leading zeros,
  invalid UTF-8, control characters in strings and lone surrogates. Of duplicate keys
  it keeps the last, so dumps writes fewer keys than B holds: not equal.
- dumps writes no whitespace, and integers in shortest decimal form (``-0`` parses to 0
  and is written ``0``: not equal). OPT_STRICT_INTEGER refuses |i| > 2^53 − 1; an
  integer beyond 64 bits parses as a float, which is written with an exponent.
- dumps escapes exactly ``"``, ``\\`` and U+0000–U+001F, as ``\\b \\t \\n \\f \\r`` and
  ``\\u00xx`` in lower case otherwise, and writes every other character (U+007F,
  U+2028, non-ASCII) as itself in UTF-8: ECMAScript's ``JSON.stringify`` rules, which
  RFC 8785 §3.2.2.2 adopts. Any other escape in B (``\\u0041``, ``\\/``) is decoded and
  written back differently: not equal. ``tests/unit/test_verify_lean_canonical.py``
  compares the two encoders on every code point below U+0800 and the special ones.
- dumps sorts keys by code point (the order of their UTF-8 bytes). RFC 8785 sorts by
  UTF-16 code unit; the orders differ only between a character ≥ U+E000 and one above
  U+FFFF (a surrogate pair, which sorts first in UTF-16). Both have a UTF-8 lead byte
  ≥ 0xEE, so in B without such a byte the orders agree. A line holding such a byte
  (an emoji in ``meta``, say) is parsed and checked by ``parse_canonical`` itself.
- Floats are the one thing the round trip cannot see (``1.5`` is written ``1.5``). The
  lean rules test the exact type of every value outside ``meta`` (an amount is
  ``type(x) is int``, a flag ``is True``/``is False``, …), so a float there fails them
  and the line goes to the reference, which names it ``canonical``; ``meta``, which the
  rules do not read, is walked by ``meta_has_float`` below.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ledger.canonical import parse_canonical

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_dumps = orjson.dumps
_UTF16_ORDER_BYTES = re.compile(rb"[\xee-\xff]")  # UTF-8 lead bytes of U+E000 and above

loads = orjson.loads


def canonical_value(body: bytes) -> Any:
    """The value of ``body`` (an entry's bytes, without the newline) if they are
    canonical, or None. Floats are left to the caller (see above: the rules and
    ``meta_has_float``)."""
    if not body.isascii() and _UTF16_ORDER_BYTES.search(body) is not None:
        try:  # only the reference knows UTF-16 order
            return parse_canonical(body)
        except ValueError:
            return None
    try:
        value = loads(body)
        # equal bytes: no whitespace (orjson accepts some around the value), no escape
        # or number spelled otherwise, no key repeated or out of order
        return value if _dumps(value, option=_OPTIONS) == body else None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # beyond ±(2^53 − 1)
        return None


def meta_has_float(meta: dict[str, Any]) -> bool:
    """Whether a float hides anywhere in ``meta`` (usually a few strings: one pass)."""
    return any(type(value) is not str and _has_float(value) for value in meta.values())


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        return any(_has_float(v) for v in value.values())
    if kind is list:
        return any(_has_float(v) for v in value)
    return False
