"""One statement for a round of reads of the same statement (a batch's use cases read
alike: a thousand earns each ask ``policy.earn_context`` with their own member).

``shared_read`` turns statement Q and the parameters of n reads into one statement that
runs Q once per read, in one snapshot, as a lateral join over the reads' parameters sent
as one JSON array — so the Python and the round trip of a statement are paid once, not
n times. Each read gets the rows Q gives for its parameters, in Q's order (``Rows``):
the statement is the same, only who sends it changes. What cannot be shared so (other
placeholders, parameters that are not integers, texts, booleans or nulls) is None, and
the caller sends those reads one by one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s|%.")
_BIGINT_MAX = 2**63 - 1


class Rows:
    """A read's rows, fetched already: the part of a cursor the use cases use."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows
        self._next = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rest, self._next = self._rows[self._next :], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


def shared_read(query: str, params: Sequence[Any]) -> tuple[str, tuple[str]] | None:
    """The statement and its one parameter that answer every read of ``query`` with
    ``params`` (one entry per read): rows of (read's ordinal from 1, row number, Q's
    columns …), ordered by read then row."""
    keys: list[int | str] = []  # each placeholder's parameter, in order of appearance
    positional = 0
    for match in _PLACEHOLDER.finditer(query):
        text, name = match.group(0), match.group(1)
        if text == "%%":
            continue
        if text == "%s":
            keys.append(positional)
            positional += 1
        elif name is not None:
            keys.append(name)
        else:
            return None  # %b, %t: not ours to rewrite
    if not keys:
        return None
    distinct = list(dict.fromkeys(keys))
    columns: list[list[Any]] = [[] for _ in distinct]
    for p in params:
        try:
            values = [p[k] for k in distinct]
        except (KeyError, IndexError, TypeError):
            return None
        if isinstance(p, dict) != all(isinstance(k, str) for k in distinct):
            return None
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    types = [_sql_type(column) for column in columns]
    if None in types:
        return None
    slot = {k: i for i, k in enumerate(distinct)}
    counter = iter(keys)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%%"
        i = slot[next(counter)]
        return f"(r.p->>{i})::{types[i]}"

    inner = _PLACEHOLDER.sub(replace, query.strip().rstrip(";"))
    sql = (
        "SELECT r.i, q.* FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(p, i)"
        f" CROSS JOIN LATERAL (SELECT row_number() OVER () AS n, s.* FROM ({inner}) AS s) AS q"
        " ORDER BY r.i, q.n"
    )
    rows = [list(values) for values in zip(*columns, strict=True)]
    return sql, (json.dumps(rows),)


def _sql_type(values: list[Any]) -> str | None:
    """The one SQL type a parameter's values can be cast back to from JSON, or None."""
    present = [v for v in values if v is not None]
    if all(type(v) is str for v in present):
        return "text"
    if all(type(v) is bool for v in present):
        return "boolean"
    if all(type(v) is int and -_BIGINT_MAX - 1 <= v <= _BIGINT_MAX for v in present):
        return "bigint"
    return None
