"""The reads of a batch's use cases, sent together (coalition.batch_import).

Each use case runs in its own greenlet and reads on ``PipelinedReads``: its ``execute``
hands the statement to the driver and pauses. When every use case of a chunk is paused
(to read, or to append), the driver sends the round of reads in one pipeline and syncs
once (``read_round``), and resumes each with its own rows — a round trip for a round of
reads of the whole chunk, not one per read.

And the reads of one statement in a round are one statement (a thousand earns each ask
``policy.earn_context`` with their own member): ``shared_read`` turns statement Q and
the parameters of n reads into one statement that runs Q once per read, in one
snapshot, as a lateral join over the reads' parameters sent as one JSON array — so the
Python and the server's parse of a statement are paid once, not n times. Each read gets
the rows Q gives for its parameters, in Q's order (``Rows``): the statement is the
same, only who sends it changes. What cannot be shared so (other placeholders,
parameters that are not integers, texts, booleans or nulls) is sent as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from greenlet import greenlet

Conn = psycopg.Connection[Any]
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


Answer = psycopg.Cursor[Any] | Rows | Exception  # what a read gets back


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


@dataclass(frozen=True, slots=True)
class Read:
    """A use case's read, sent by the driver with the other use cases' reads."""

    query: str
    params: Any


class PipelinedReads:
    """The connection the use cases read on: each ``execute`` hands its statement to the
    driver and pauses the use case until the driver has sent it with every other paused
    use case's and synced once — a round trip for a round of reads of the whole chunk,
    not one per read. The cursor comes back with its rows, so ``fetchone``/``fetchall``
    wait for nothing. Only SELECTs: a batch's use cases write through ``append`` alone,
    and a read can be sent again alone (see ``read_round``)."""

    def __init__(self, conn: Conn, driver: greenlet) -> None:
        self._conn = conn
        self._driver = driver

    def execute(self, query: str, params: Any = None) -> psycopg.Cursor[Any] | Rows:
        assert query.lstrip().upper().startswith("SELECT"), "a batch's use cases only read"
        result: Answer = self._driver.switch(Read(query, params))
        if isinstance(result, Exception):
            raise result  # as the single call's own execute would have raised it
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def read_round(conn: Conn, pipeline: psycopg.Pipeline, reads: list[Read]) -> list[Answer]:
    """Each read's rows, or the error it met: the reads of one statement as one (see
    ``batch_reads``), all sent, then one sync. If the server refuses one (what a record
    carries, say), the rest of the round is aborted with it: then each read is sent
    again alone, so that only its own fails."""
    by_query: dict[str, list[int]] = {}
    for index, r in enumerate(reads):
        by_query.setdefault(r.query, []).append(index)
    sent: list[tuple[list[int], bool, psycopg.Cursor[Any]]] = []  # reads, shared, cursor
    for query, indexes in by_query.items():
        shared = (
            shared_read(query, [reads[i].params for i in indexes]) if len(indexes) > 1 else None
        )
        if shared is not None:
            sent.append((indexes, True, conn.execute(*shared)))
        else:
            sent += [([i], False, conn.execute(query, reads[i].params)) for i in indexes]
    try:
        pipeline.sync()
    except psycopg.Error:
        if conn.broken:
            raise
        _settle(conn, pipeline)
        return [_alone(conn, pipeline, r) for r in reads]
    answers: list[Answer] = [Rows([]) for _ in reads]
    for indexes, is_shared, cursor in sent:
        if not is_shared:
            answers[indexes[0]] = cursor
            continue
        by_read: dict[int, list[tuple[Any, ...]]] = {}
        for ordinal, _n, *row in cursor.fetchall():
            by_read.setdefault(ordinal, []).append(tuple(row))
        for ordinal, index in enumerate(indexes, start=1):
            answers[index] = Rows(by_read.get(ordinal, []))
    return answers


def _alone(conn: Conn, pipeline: psycopg.Pipeline, r: Read) -> Answer:
    try:
        cursor = conn.execute(r.query, r.params)
        pipeline.sync()
    except psycopg.DataError as exc:  # what this read carries; a broken link re-raises
        return exc
    return cursor


def _settle(conn: Conn, pipeline: psycopg.Pipeline) -> None:
    """Collect what an aborted round left unread (each sync raises at most the first of
    its errors), so that the next read's sync answers for that read alone."""
    for _ in range(3):
        try:
            pipeline.sync()
            return
        except psycopg.Error:
            if conn.broken:
                raise
    raise AssertionError("the pipeline kept failing after its round was collected")
