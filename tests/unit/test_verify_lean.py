"""The lean verifier names the same first failure as the reference, on every tamper case.

The export tampers are those of tests/integration/test_tamper.py (same journal, same
edits, same expected check and seq), on a journal built in memory; then forgeries that
recompute every hash so that only a rule can catch them, and over-corrections
(tests/integration/test_tamper_corrections.py). Each case asserts the reference's
expected check and seq, and that lean and reference agree on seq, check, expected and
actual (or, when nothing fails, on size, root, head and the roots asked for).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from _lean_journal import Builder, earn, forge, leaf_hex, reference_and_lean, transfer, varied_lines

from ledger import rules
from ledger.canonical import canonical_bytes
from ledger.requests import AccountSpec, EntryRequest, LotTake, PostingRequest

LINES = varied_lines()
ENTRY_COUNT = len(LINES)
LAST = ENTRY_COUNT - 1
PAY = 9
TERMS = 6

Edit = Callable[[list[bytes]], list[bytes]]


def _replace(seq: int, old: bytes, new: bytes) -> Edit:
    def edit(lines: list[bytes]) -> list[bytes]:
        assert lines[seq].count(old) == 1, (old, lines[seq])
        return [*lines[:seq], lines[seq].replace(old, new), *lines[seq + 1 :]]

    return edit


def _forged_line(lines: list[bytes], seq: int) -> bytes:
    previous = json.loads(lines[seq - 1])
    entry = {
        "v": 1,
        "seq": seq,
        "prev": leaf_hex(lines[seq - 1]),
        "time": previous["time"],
        "kind": "terms",
        "ref": {"scope": "test", "key": "forged"},
        "meta": {"forged": "yes"},
        "postings": [],
    }
    return canonical_bytes(entry) + b"\n"


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(entry: dict[str, Any]) -> None:
        target = entry
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(entry: dict[str, Any]) -> None:
        target = entry
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


EXPORT_TAMPERS = [
    # as tests/integration/test_tamper.py
    pytest.param(
        _replace(PAY, b"-1250", b"-1251"), "rule:postings_must_balance", PAY, id="amount-byte"
    ),
    pytest.param(_replace(TERMS, b"0.0125", b"0.0126"), "prev_link", TERMS + 1, id="meta-byte"),
    pytest.param(lambda ls: ls[:TERMS] + ls[TERMS + 1 :], "seq", TERMS, id="removed-line"),
    pytest.param(lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]], "seq", 3, id="swapped-lines"),
    pytest.param(
        lambda ls: [*ls[: TERMS + 1], ls[TERMS], *ls[TERMS + 1 :]],
        "seq",
        TERMS + 1,
        id="duplicated-line",
    ),
    pytest.param(
        lambda ls: [*ls[:TERMS], _forged_line(ls, TERMS), *ls[TERMS:]],
        "seq",
        TERMS + 1,
        id="forged-line",
    ),
    pytest.param(lambda ls: [*ls, ls[0]], "seq", ENTRY_COUNT, id="foreign-line-at-end"),
    pytest.param(_replace(TERMS, b'"kind":', b'"kind": '), "canonical", TERMS, id="whitespace"),
    pytest.param(
        _replace(TERMS, b'"kind":"terms",', b""), "rule:invalid_entry", TERMS, id="field-removed"
    ),
    pytest.param(_replace(PAY, b"-1250", b"-1250.0"), "canonical", PAY, id="float-amount"),
    pytest.param(_replace(PAY, b"-1250", b"-1.25e3"), "canonical", PAY, id="exponent-amount"),
    pytest.param(
        _replace(TERMS, b'"meta":{', b'"meta":{"x":0.5,'), "canonical", TERMS, id="float-meta"
    ),
    pytest.param(
        _replace(TERMS, b'"kind":"terms"', b'"kind":"\\u0074erms"'),
        "canonical",
        TERMS,
        id="escaped-char",
    ),
    pytest.param(_replace(TERMS, b"}\n", b"}\r\n"), "canonical", TERMS, id="crlf"),
    pytest.param(lambda ls: [*ls[:-1], ls[-1][:-1]], "line_end", LAST, id="no-final-newline"),
    pytest.param(_replace(TERMS, b'"meta":{', b'"meta":['), "canonical", TERMS, id="not-json"),
    pytest.param(
        lambda ls: [*ls[:TERMS], b"[]\n", *ls[TERMS + 1 :]], "json", TERMS, id="not-an-object"
    ),
    # more byte-level edits
    pytest.param(_replace(PAY, b"-1250", b"-01250"), "canonical", PAY, id="leading-zero"),
    pytest.param(_replace(PAY, b'"v":1}', b'"v":1,"v":1}'), "canonical", PAY, id="duplicate-key"),
    pytest.param(
        _replace(PAY, b'"kind":"spend",', b""), "rule:invalid_entry", PAY, id="kind-removed"
    ),
    pytest.param(
        lambda ls: [
            *ls[:TERMS],
            ls[TERMS]
            .replace(b'{"kind":"terms",', b"{")
            .replace(b'"v":1}', b'"v":1,"kind":"terms"}'),
            *ls[TERMS + 1 :],
        ],
        "canonical",
        TERMS,
        id="keys-reordered",
    ),
    pytest.param(
        _replace(TERMS, b'"v":1', b'"v":9007199254740992'), "canonical", TERMS, id="huge-int"
    ),
    pytest.param(_replace(TERMS, b'"v":1', b'"v":NaN'), "canonical", TERMS, id="nan"),
    pytest.param(_replace(TERMS, b'"v":1', b'"v":-0'), "canonical", TERMS, id="minus-zero"),
    pytest.param(
        _replace(TERMS, b'"kind":"terms"', b'"kind":"\\ud800"'),
        "canonical",
        TERMS,
        id="lone-surrogate",
    ),
    pytest.param(
        _replace(TERMS, b'"kind":"terms"', b'"kind":"t\xffrms"'), "canonical", TERMS, id="bad-utf8"
    ),
    pytest.param(lambda ls: [*ls[:TERMS], b"\n", *ls[TERMS:]], "canonical", TERMS, id="blank-line"),
    # forgeries with every later link recomputed: only a rule can tell
    pytest.param(
        lambda ls: forge(ls, PAY, _set(("postings", 0, "amount"), -1251)),
        "rule:postings_must_balance",
        PAY,
        id="forged-amount",
    ),
    pytest.param(
        lambda ls: forge(ls, 5, _set(("postings", 0, "lots", 0, "amount"), 51)),
        "rule:lot_insufficient",
        5,
        id="forged-lot-take",
    ),
    pytest.param(
        lambda ls: forge(ls, 5, _set(("postings", 0, "lots", 0, "lot"), "3:1")),
        "rule:lot_unknown",
        5,
        id="forged-lot-of-another-account",
    ),
    pytest.param(
        lambda ls: forge(ls, 8, _set(("capture", "amount"), 31)),
        "rule:capture_exceeds_hold",
        8,
        id="forged-capture",
    ),
    pytest.param(
        lambda ls: forge(ls, 8, _set(("capture", "hold"), 6)),
        "rule:hold_unknown",
        8,
        id="forged-capture-hold",
    ),
    pytest.param(
        lambda ls: forge(ls, 12, _set(("time",), "2027-01-15T08:00:00.000000Z")),
        "rule:invalid_entry",
        12,
        id="forged-time-backwards",
    ),
    pytest.param(
        lambda ls: forge(ls, 3, _set(("postings", 1, "lot", "amount"), 41)),
        "rule:invalid_entry",
        3,
        id="forged-lot-amount",
    ),
    pytest.param(
        lambda ls: forge(ls, 9, _set(("postings", 0, "unit"), "USD")),
        "rule:unit_mismatch",
        9,
        id="forged-unit",
    ),
    pytest.param(
        lambda ls: forge(ls, 9, _set(("postings", 0, "account"), "wallet:USD")),
        "rule:unknown_account",
        9,
        id="forged-account",
    ),
    pytest.param(
        lambda ls: forge(ls, 10, _set(("postings", 1, "lots", 0, "amount"), 13)),
        "rule:invalid_entry",
        10,
        id="forged-restore-sum",
    ),
    pytest.param(
        lambda ls: forge(ls, 10, _set(("corrects",), 10)),
        "rule:corrects_unknown_entry",
        10,
        id="forged-corrects",
    ),
    pytest.param(
        lambda ls: forge(ls, 10, _set(("corrects",), 1)),
        "rule:correction_exceeds_original",
        10,
        id="forged-corrects-other-entry",
    ),
    pytest.param(
        lambda ls: forge(ls, 7, _set(("hold", "amount"), 41)),
        "rule:insufficient_balance",
        7,
        id="forged-hold-too-big",
    ),
    pytest.param(
        lambda ls: forge(
            ls,
            9,
            _set(
                ("open",),
                [{"account": "wallet:EUR", "lots": True, "overdraft": False, "unit": "EUR"}],
            ),
        ),
        "rule:account_exists",
        9,
        id="forged-reopen",
    ),
    pytest.param(
        lambda ls: forge(ls, 6, _set(("meta", "rate"), 0.0125)),
        "canonical",
        6,
        id="forged-float-meta",
    ),
    pytest.param(
        lambda ls: forge(ls, 9, _set(("postings", 0, "debt"), True)),
        "rule:invalid_entry",
        9,
        id="forged-debt-flag",
    ),
    pytest.param(
        lambda ls: forge(ls, 5, _set(("postings", 0, "expired"), True)),
        "rule:lot_not_expired",
        5,
        id="forged-expired-flag",
    ),
    pytest.param(
        lambda ls: forge(ls, 12, _delete(("postings", 0, "lots"))),
        "rule:invalid_entry",
        12,
        id="forged-lots-removed",
    ),
    pytest.param(
        lambda ls: forge(ls, 11, _set(("void",), {"hold": 7})),
        "rule:invalid_entry",
        11,
        id="forged-hold-and-void",
    ),
    pytest.param(
        lambda ls: forge(ls, 9, _set(("void",), {"hold": 7})),
        "rule:hold_not_active",
        9,
        id="forged-void-of-captured",
    ),
    pytest.param(
        lambda ls: forge(ls, 6, _set(("meta", "\U0001f600"), {"\ue000": 1, "\U0001f601": [True]})),
        None,
        None,
        id="forged-emoji-meta-valid",
    ),
]


@pytest.mark.parametrize(("edit", "check", "seq"), EXPORT_TAMPERS)
def test_lean_names_the_reference_failure(edit: Edit, check: str | None, seq: int | None) -> None:
    reference, lean = reference_and_lean(edit(list(LINES)))
    if check is None:
        assert reference[0] == "ok", reference
    else:
        assert reference[:3] == ("failed", seq, check), reference
    assert lean == reference


def test_honest_journal_gives_the_same_heads() -> None:
    sizes = (0, 1, 7, ENTRY_COUNT, ENTRY_COUNT + 5)
    reference, lean = reference_and_lean(list(LINES), sizes)
    assert reference[0] == "ok" and lean == reference
    assert reference_and_lean([]) == (("ok", 0, reference_and_lean([])[0][2], bytes(32), {}),) * 2


def _story() -> tuple[Builder, dict[str, int]]:
    """As test_tamper_corrections: member:1 earns 100 and spends 60 then 40, 40 of the 60
    refunded; member:3 (may owe) earns 50, spends 30, 20 of the earn clawed back."""
    b = Builder()
    owes = AccountSpec("member:3", "PTS", overdraft=True, lot_tracked=True)
    steps = [
        (
            "open",
            EntryRequest(
                "open",
                "test",
                "o",
                open_accounts=(
                    AccountSpec("issuer:a", "PTS", overdraft=True),
                    AccountSpec("member:1", "PTS", lot_tracked=True),
                    AccountSpec("sink", "PTS", overdraft=True),
                    owes,
                ),
            ),
        ),
        ("earn1", earn("member:1", 100, "e1")),
        ("spend1", transfer("member:1", "sink", "PTS", 60, "s1")),
        ("spend1b", transfer("member:1", "sink", "PTS", 40, "s1b")),
        ("earn2", earn("member:3", 50, "e2")),
        ("spend2", transfer("member:3", "sink", "PTS", 30, "s2")),
    ]
    seqs: dict[str, int] = {}
    for name, request in steps:
        b.now_us += 1_000_000
        seq = b.add(request)
        assert seq is not None
        seqs[name] = seq
    seqs["refund"] = _add(b, _refund(seqs["spend1"], "r1", 40, f"{seqs['earn1']}:1"))
    seqs["clawback"] = _add(b, _clawback(seqs["earn2"], "c1", 20))
    return b, seqs


def _add(b: Builder, request: EntryRequest) -> int:
    seq = b.add(request)
    assert seq is not None
    return seq


def _refund(spent_seq: int, key: str, points: int, lot: str) -> EntryRequest:
    return EntryRequest(
        "refund",
        "test",
        key,
        corrects_seq=spent_seq,
        postings=(
            PostingRequest("sink", "PTS", -points),
            PostingRequest("member:1", "PTS", points, lots=(LotTake(lot, points),)),
        ),
    )


def _clawback(earn_seq: int, key: str, points: int) -> EntryRequest:
    return EntryRequest(
        "clawback",
        "test",
        key,
        corrects_seq=earn_seq,
        postings=(
            PostingRequest("member:3", "PTS", -points, allow_debt=True),
            PostingRequest("issuer:a", "PTS", points),
        ),
    )


@pytest.mark.parametrize("forgery", ["over_refund", "over_clawback", "within"])
def test_over_corrections_are_named_alike(monkeypatch: pytest.MonkeyPatch, forgery: str) -> None:
    b, seqs = _story()
    forged = {
        "over_refund": _refund(seqs["spend1"], "forged", 21, f"{seqs['earn1']}:1"),
        "over_clawback": _clawback(seqs["earn2"], "forged", 31),
        "within": _refund(seqs["spend1"], "forged", 20, f"{seqs['earn1']}:1"),
    }[forgery]
    with monkeypatch.context() as m:  # the forger's writer: the bound switched off
        m.setattr(rules, "_bounded_correction", lambda seq, fx, state: state.correction_bounds(seq))
        forged_seq = _add(b, forged)
    b.now_us += 1_000_000
    _add(b, earn("member:1", 5, "after"))
    reference, lean = reference_and_lean(b.lines)
    if forgery == "within":
        assert reference[0] == "ok"
    else:
        assert reference[:3] == ("failed", forged_seq, "rule:correction_exceeds_original")
    assert lean == reference
