"""Generated journals, tampered at random: lean and reference name the same first failure.

Journals come from ``_lean_journal.random_lines`` (every kind of entry, corrections into
debt and beyond their bound, expiries, odd metadata); tampers are byte flips, numbers
rewritten in other forms or values, whitespace, keys out of order, lines dropped,
duplicated or swapped, and forgeries that change one value anywhere in an entry and
recompute every later link (so that a rule, not the chain, has to catch them).
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from typing import Any

from _lean_journal import forge, random_lines, reference_and_lean
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

_NUMBER = re.compile(rb"(?<=[:,\[])-?[0-9]+(?=[,\]}])")
_SEPARATOR = re.compile(rb"[:,]")


@lru_cache(maxsize=64)
def journal(seed: int, count: int) -> tuple[bytes, ...]:
    return tuple(random_lines(random.Random(seed), count))


journals = st.builds(journal, st.integers(0, 40), st.sampled_from([5, 30, 80]))
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _at(data: st.DataObject, lines: list[bytes]) -> int:
    return data.draw(st.integers(0, len(lines) - 1))


def _flip_byte(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    seq = _at(data, lines)
    line = bytearray(lines[seq])
    position = data.draw(st.integers(0, len(line) - 1))
    line[position] ^= 1 << data.draw(st.integers(0, 7))
    return [*lines[:seq], bytes(line), *lines[seq + 1 :]]


def _renumber(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    seq = _at(data, lines)
    numbers = list(_NUMBER.finditer(lines[seq]))
    if not numbers:
        return lines
    match = data.draw(st.sampled_from(numbers))
    text = match.group()
    new = data.draw(
        st.sampled_from([text + b".0", text + b"e0", b"0" + text, b"-0", b"+" + text, b" " + text])
        | st.integers(-(2**54), 2**54).map(lambda n: str(n).encode())
    )
    line = lines[seq][: match.start()] + new + lines[seq][match.end() :]
    return [*lines[:seq], line, *lines[seq + 1 :]]


def _whitespace(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    seq = _at(data, lines)
    separators = list(_SEPARATOR.finditer(lines[seq]))
    match = data.draw(st.sampled_from(separators))
    space = data.draw(st.sampled_from([b" ", b"\t", b"\r"]))
    line = lines[seq][: match.end()] + space + lines[seq][match.end() :]
    return [*lines[:seq], line, *lines[seq + 1 :]]


def _reorder_keys(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    seq = _at(data, lines)
    entry = json.loads(lines[seq])
    keys = data.draw(st.permutations(sorted(entry)))
    line = json.dumps({k: entry[k] for k in keys}, separators=(",", ":"), ensure_ascii=False)
    return [*lines[:seq], line.encode() + b"\n", *lines[seq + 1 :]]


def _lines_moved(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    seq = _at(data, lines)
    other = _at(data, lines)
    how = data.draw(st.sampled_from(["drop", "duplicate", "swap", "cut-newline"]))
    if how == "drop":
        return lines[:seq] + lines[seq + 1 :]
    if how == "duplicate":
        return [*lines[: seq + 1], lines[other], *lines[seq + 1 :]]
    if how == "swap":
        out = list(lines)
        out[seq], out[other] = out[other], out[seq]
        return out
    return [*lines[:seq], lines[seq][:-1]]


_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [
        0,
        1,
        -1,
        2,
        7,
        10**6,
        2**53 - 1,
        -(2**53 - 1),
        1.5,
        True,
        False,
        None,
        "",
        "x",
        "0:1",
        "1:1",
        "2:1",
        "member:1",
        "sink",
        "PTS",
        "EUR",
        "2027-01-15T08:00:00.000000Z",
        "2027-02-15T08:00:00.000000Z",
        [],
        {},
        {"hold": 3},
        "\U0001f600",
        "a b",
    ]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _forge_value(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    seq = _at(data, lines)
    entry = json.loads(lines[seq])
    path = data.draw(st.sampled_from(_paths(entry)))
    how = data.draw(st.sampled_from(["set", "nudge", "delete", "add"]))
    value = data.draw(_VALUES)
    nudge = data.draw(st.integers(-3, 3))

    def mutate(e: dict[str, Any]) -> None:
        parent: Any = e
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if how == "delete":
            del parent[last]
        elif how == "add":
            if isinstance(parent, dict):
                parent[data.draw(st.sampled_from(["corrects", "void", "lot", "debt", "zz"]))] = (
                    value
                )
            else:
                parent.append(value)
        elif how == "nudge" and type(parent[last]) is int:
            parent[last] += nudge
        else:
            parent[last] = value

    return forge(lines, seq, mutate)


def _nudge_number(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    """An amount, a lot take, a hold or a correction target changed, links recomputed:
    balances, lots, holds and the bounds on corrections have to catch it."""
    seq = _at(data, lines)
    entry = json.loads(lines[seq])
    paths = [p for p in _paths(entry) if p[0] != "seq" and _get(entry, p).__class__ is int]
    if not paths:
        return lines
    path = data.draw(st.sampled_from(paths))
    delta = data.draw(st.integers(-60, 60).filter(bool))

    def mutate(e: dict[str, Any]) -> None:
        parent = _get(e, path[:-1])
        parent[path[-1]] += delta

    return forge(lines, seq, mutate)


def _balanced_nudge(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    """Move ``d`` more from one posting to another of the same unit (and a lot opened by
    the credit with it): the entry still balances, so a deeper rule must catch it."""
    movers = [seq for seq, line in enumerate(lines) if line.count(b'"account"') >= 2]
    movers = [seq for seq in movers if len(json.loads(lines[seq])["postings"]) >= 2]
    if not movers:
        return lines
    seq = data.draw(st.sampled_from(movers))
    delta = data.draw(st.integers(1, 80))

    def mutate(e: dict[str, Any]) -> None:
        debit, credit = sorted(e["postings"][:2], key=lambda p: p["amount"])
        debit["amount"] -= delta
        credit["amount"] += delta
        if "lot" in credit:
            credit["lot"]["amount"] += delta
        for p in (debit, credit):
            if p.get("lots") and data.draw(st.booleans()):
                p["lots"][-1]["amount"] += delta

    return forge(lines, seq, mutate)


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


TAMPERS = [
    _flip_byte,
    _renumber,
    _whitespace,
    _reorder_keys,
    _lines_moved,
    _forge_value,
    _nudge_number,
    _balanced_nudge,
]


@PROPERTY
@given(journals)
def test_untampered_journals_agree(lines: tuple[bytes, ...]) -> None:
    reference, lean = reference_and_lean(list(lines), (0, len(lines) // 2, len(lines)))
    assert reference[0] == "ok"
    assert lean == reference


@PROPERTY
@given(journals, st.sampled_from(TAMPERS), st.data())
def test_tampered_journals_fail_alike(
    lines: tuple[bytes, ...], tamper: Any, data: st.DataObject
) -> None:
    tampered = tamper(data, list(lines))
    reference, lean = reference_and_lean(tampered)
    event(f"{tamper.__name__}: {reference[2] if reference[0] == 'failed' else 'ok'}")
    assert lean == reference


@PROPERTY
@given(journals, st.lists(st.sampled_from(TAMPERS), min_size=2, max_size=3), st.data())
def test_several_tampers_fail_alike(
    lines: tuple[bytes, ...], tampers: Any, data: st.DataObject
) -> None:
    tampered = list(lines)
    for tamper in tampers:
        try:
            tampered = tamper(data, tampered)
        except (ValueError, IndexError, KeyError, TypeError):
            continue  # an earlier tamper left nothing this one can edit
    reference, lean = reference_and_lean(tampered)
    assert lean == reference
