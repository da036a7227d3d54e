"""Two verifiers written apart agree on the journal: ours (ledger.verify) and
tests/tools/independent_verify.sh, which uses the standard library only.

They share no code, so agreeing on the head and root of a varied journal, and refusing the
same tampered exports at the same entry, is evidence that docs/FORMAT.md describes what
the code does rather than what either implementation happens to do.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger import reads
from ledger.canonical import canonical_bytes
from ledger.export import export_journal
from ledger.journal import Appended, Journal
from ledger.rejections import Rejection
from ledger.rejections import RejectionCode as Code
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, LotTake, PostingRequest
from ledger.verify import VerificationFailed, check_against_known, verify_export, verify_lines

TOOLS = Path(__file__).resolve().parents[1] / "tools"
SCRIPT = TOOLS / "independent_verify.sh"

SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
T0 = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z

# RFC 6962: the root of the empty tree is SHA-256 of nothing: `printf '' | sha256sum`.
EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        return self.now_us


@dataclass(frozen=True)
class Independent:
    returncode: int
    stdout: str
    stderr: str

    def head(self) -> tuple[int, str, str]:
        fields = dict(line.split(" ", 1) for line in self.stdout.splitlines())
        return int(fields["tree_size"]), fields["head_leaf_hash"], fields["root_hash"]

    def failed_seq(self) -> int:
        found = re.search(r"FAILED line (\d+) \(seq (\d+)\)", self.stderr)
        assert found is not None, self.stderr
        assert int(found[1]) == int(found[2]) + 1
        return int(found[2])


def run_independent(journal_path: Path, *options: str) -> Independent:
    # The interpreter is this one only so the test does not depend on PATH; the script
    # runs it isolated (-I), so the project's packages are out of its reach.
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(journal_path), *options],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    return Independent(done.returncode, done.stdout, done.stderr)


def ours(journal_path: Path) -> tuple[int, str, str]:
    verified = verify_export(str(journal_path))
    return verified.tree_size, verified.head_leaf_hash.hex(), verified.root_hash.hex()


# ---------------------------------------------------------------- a varied journal


def _post(account: str, unit: str, amount: int, **lot: Any) -> PostingRequest:
    return PostingRequest(account, unit, amount, **lot)


def _append(journal: Journal, conn: psycopg.Connection[Any], *requests: EntryRequest) -> list[int]:
    results = journal.append(conn, list(requests))
    assert all(isinstance(r, Appended) for r in results), results
    return [r.seq for r in results if isinstance(r, Appended)]


def build_varied_journal(conn: psycopg.Connection[Any], clock: Clock) -> int:
    """Opens, lot credits and FEFO debits, holds captured and voided, a reversal that
    restores lots, a clawback into debt and its repayment, expiry, a fact with awkward
    Unicode, two units in one entry and a multi-entry batch. Returns the tree size."""
    journal = Journal(clock_us=clock)

    def tick() -> None:
        clock.now_us += SECOND_US

    specs = (
        AccountSpec("issuer:a", "PTS", overdraft=True),
        AccountSpec("issuer:b", "PTS", overdraft=True),
        AccountSpec("shop:b", "PTS", overdraft=True),
        AccountSpec("breakage", "PTS", overdraft=True),
        AccountSpec("holder:1", "PTS", lot_tracked=True),
        AccountSpec("holder:2", "PTS", overdraft=True, lot_tracked=True),
        AccountSpec("cash:EUR", "EUR", overdraft=True),
        AccountSpec("clearing:EUR", "EUR", overdraft=True),
    )
    [_] = _append(journal, conn, EntryRequest("open", "ops", "open-1", open_accounts=specs))
    tick()
    [late, early] = _append(
        journal,
        conn,
        EntryRequest(
            "credit",
            "a",
            "c-1",
            meta={"basket_minor": 1999},
            postings=(
                _post("issuer:a", "PTS", -100),
                _post("holder:1", "PTS", 100, lot_origin="a", lot_expires_us=T0 + 60 * DAY_US),
            ),
        ),
        EntryRequest(
            "credit",
            "b",
            "c-2",
            postings=(
                _post("issuer:b", "PTS", -50),
                _post("holder:1", "PTS", 50, lot_origin="b", lot_expires_us=T0 + 30 * DAY_US),
            ),
        ),
    )
    tick()
    spend = EntryRequest(
        "debit",
        "b",
        "d-1",
        postings=(_post("holder:1", "PTS", -70), _post("shop:b", "PTS", 70)),
    )
    [spent] = _append(journal, conn, spend)
    tick()
    hold = HoldRequest("holder:1", "PTS", 20, clock.now_us + 900 * SECOND_US)
    [held] = _append(journal, conn, EntryRequest("authorise", "b", "h-1", hold=hold))
    tick()
    capture = EntryRequest(
        "capture",
        "b",
        "h-1-capture",
        capture_hold_seq=held,
        capture_amount=15,
        postings=(_post("holder:1", "PTS", -15), _post("shop:b", "PTS", 15)),
    )
    reversal = EntryRequest(
        "reversal",
        "b",
        "d-1-refund",
        corrects_seq=spent,
        postings=(
            _post("shop:b", "PTS", -70),
            _post(
                "holder:1", "PTS", 70, lots=(LotTake(f"{early}:1", 50), LotTake(f"{late}:1", 20))
            ),
        ),
    )
    _append(journal, conn, capture, reversal)
    tick()
    [held_again] = _append(
        journal,
        conn,
        EntryRequest("authorise", "a", "h-2", hold=HoldRequest("holder:1", "PTS", 10, T0 + DAY_US)),
    )
    tick()
    _append(journal, conn, EntryRequest("void", "a", "h-2-void", void_hold_seq=held_again))
    tick()
    awkward = {
        "note": 'tab\t quote" backslash\\ control\x01 ä € 😀 \u2028',
        "\ue000": "private use: sorts after 😀 in UTF-16, before it by code point",
        "😀": 2,
        "ä": [True, False, None, -(2**53 - 1)],
    }
    _append(journal, conn, EntryRequest("fact", "ops", "fact-1", meta=awkward))
    tick()
    [credited] = _append(
        journal,
        conn,
        EntryRequest(
            "credit",
            "a",
            "c-3",
            postings=(
                _post("issuer:a", "PTS", -40),
                _post("holder:2", "PTS", 40, lot_origin="a", lot_expires_us=None),
            ),
        ),
    )
    tick()
    # Takes back more than the credit gave (60 of 40, the rest as debt), so it may not
    # call itself that credit's correction (docs/FORMAT.md §3a); it names the credit in meta.
    clawback = EntryRequest(
        "clawback",
        "a",
        "c-3-clawback",
        meta={"after": credited},
        postings=(_post("holder:2", "PTS", -60, allow_debt=True), _post("issuer:a", "PTS", 60)),
    )
    repay = EntryRequest(
        "credit",
        "b",
        "c-4",
        postings=(
            _post("issuer:b", "PTS", -30),
            _post("holder:2", "PTS", 30, lot_origin="b", lot_expires_us=None),
        ),
    )
    _append(journal, conn, clawback, repay)
    clock.now_us += 31 * DAY_US
    expire = EntryRequest(
        "expire",
        "ops",
        "expire-1",
        postings=(_post("holder:1", "PTS", -50, take_expired=True), _post("breakage", "PTS", 50)),
    )
    two_units = EntryRequest(
        "settle",
        "ops",
        "settle-1",
        meta={"period": "2027-02"},
        postings=(
            _post("cash:EUR", "EUR", -1234),
            _post("clearing:EUR", "EUR", 1234),
            _post("issuer:b", "PTS", -5),
            _post("breakage", "PTS", 5),
        ),
    )
    refused = EntryRequest(
        "debit",
        "b",
        "d-too-much",
        postings=(_post("holder:1", "PTS", -(10**6)), _post("shop:b", "PTS", 10**6)),
    )
    results = journal.append(conn, [expire, refused, two_units])
    assert isinstance(results[0], Appended) and isinstance(results[2], Appended), results
    assert isinstance(results[1], Rejection) and results[1].code is Code.INSUFFICIENT_BALANCE
    return reads.head(conn).tree_size


@pytest.fixture()
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture()
def exported(conn: psycopg.Connection[Any], tmp_path: Path) -> Path:
    tree_size = build_varied_journal(conn, Clock())
    path = tmp_path / "journal.jsonl"
    summary = export_journal(conn, path)
    assert summary.tree_size == tree_size == 15
    return path


# ---------------------------------------------------------------- agreement


def test_both_verifiers_agree_on_size_head_and_root(
    exported: Path, conn: psycopg.Connection[Any]
) -> None:
    independent = run_independent(exported)
    assert independent.returncode == 0, independent.stderr
    assert independent.head() == ours(exported)
    head = reads.head(conn)
    assert independent.head()[:2] == (head.tree_size, head.head_leaf_hash.hex())


def test_the_awkward_unicode_entry_needs_utf16_key_order(exported: Path) -> None:
    # Guards the agreement test: unless some key sorts differently by UTF-16 code unit than
    # by code point, the two JCS implementations were never asked to differ.
    [line] = [raw for raw in exported.read_bytes().splitlines() if b'"kind":"fact"' in raw]
    assert line.index('"😀":2'.encode()) < line.index('"\ue000":"private'.encode())


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _find(lines: list[bytes], needle: bytes) -> int:
    [index] = [i for i, line in enumerate(lines) if needle in line]
    return index


def _alter_amount(lines: list[bytes]) -> int:
    at = _find(lines, b'"ref":{"key":"d-1",')
    lines[at] = lines[at].replace(b'"amount":-70,', b'"amount":-71,', 1)
    return at


def _over_correct(lines: list[bytes]) -> int:
    """The reversal of d-1 (70 points) made to give back 71, still balanced."""
    at = _find(lines, b'"ref":{"key":"d-1-refund",')
    lines[at] = (
        lines[at]
        .replace(b'"amount":-70,', b'"amount":-71,', 1)
        .replace(b'"amount":70,', b'"amount":71,', 1)
        .replace(b'"amount":50,', b'"amount":51,', 1)
    )
    return at


def _alter_reference(lines: list[bytes]) -> int:
    at = _find(lines, b'"ref":{"key":"c-2",')
    lines[at] = lines[at].replace(b'"key":"c-2"', b'"key":"c-3"', 1)
    return at + 1  # the entry still obeys every rule; the next one's prev no longer matches


def _alter_prev(lines: list[bytes]) -> int:
    at = 5
    start = lines[at].index(b'"prev":"') + len(b'"prev":"')
    digit = lines[at][start : start + 1]
    lines[at] = lines[at][:start] + (b"1" if digit == b"0" else b"0") + lines[at][start + 1 :]
    return at


def _remove_line(lines: list[bytes]) -> int:
    del lines[4]
    return 4


def _swap_lines(lines: list[bytes]) -> int:
    lines[2], lines[3] = lines[3], lines[2]
    return 2


def _add_whitespace(lines: list[bytes]) -> int:
    lines[1] = lines[1].replace(b'"v":1}', b'"v": 1}', 1)
    return 1


def _drop_last_newline(lines: list[bytes]) -> int:
    lines[-1] = lines[-1].rstrip(b"\n")
    return len(lines) - 1


@pytest.mark.parametrize(
    "tamper",
    [
        _alter_amount,
        _over_correct,
        _alter_reference,
        _alter_prev,
        _remove_line,
        _swap_lines,
        _add_whitespace,
        _drop_last_newline,
    ],
)
def test_both_verifiers_refuse_a_tampered_export_at_the_same_entry(
    exported: Path, tmp_path: Path, tamper: Callable[[list[bytes]], int]
) -> None:
    lines = _lines(exported)
    expected_seq = tamper(lines)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines))
    assert tampered.read_bytes() != exported.read_bytes()

    with pytest.raises(VerificationFailed) as failure:
        verify_export(str(tampered))
    independent = run_independent(tampered)

    assert independent.returncode == 1, independent.stdout
    assert failure.value.seq == independent.failed_seq() == expected_seq


def _rewrite_last_reference(lines: list[bytes]) -> None:
    lines[-1] = lines[-1].replace(b'"key":"settle-1"', b'"key":"settle-9"', 1)


@pytest.mark.parametrize("tamper", [lambda lines: lines.pop(), _rewrite_last_reference])
def test_a_cut_or_rewritten_head_shows_only_against_a_head_recorded_earlier(
    exported: Path, tmp_path: Path, tamper: Callable[[list[bytes]], object]
) -> None:
    recorded_size, _, recorded_root = ours(exported)
    lines = _lines(exported)
    tamper(lines)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines))

    # Internally consistent: both verifiers accept it on its own, and agree on it.
    alone = run_independent(tampered)
    assert alone.returncode == 0, alone.stderr
    assert alone.head() == ours(tampered)

    against = ("--expect-size", str(recorded_size), "--expect-root", recorded_root)
    assert run_independent(tampered, *against).returncode == 1
    verified = verify_export(str(tampered), sizes_wanted=[recorded_size])
    with pytest.raises(VerificationFailed):
        check_against_known(verified, recorded_size, bytes.fromhex(recorded_root))
    # ...while the intact export passes against the same recorded head.
    assert run_independent(exported, *against).returncode == 0


def test_an_earlier_head_is_a_prefix_of_the_later_export(exported: Path, tmp_path: Path) -> None:
    lines = _lines(exported)
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_bytes(b"".join(lines[:10]))
    size, _, root = run_independent(earlier).head()
    assert size == 10
    at_ten = ("--expect-size", "10", "--expect-root", root)
    assert run_independent(exported, *at_ten).returncode == 0
    verified = verify_export(str(exported), sizes_wanted=[10])
    check_against_known(verified, 10, bytes.fromhex(root))


# ---------------------------------------------------------------- pinned values


# Five minimal entries that obey every rule. Their prev values, and the root below, were
# computed with coreutils alone, after writing the lines to tiny.jsonl:
#   f=tiny.jsonl; l(){ { printf '\0'; sed -n "$1p" $f | tr -d '\n'; } | sha256sum | cut -c1-64; }
#   n(){ { printf '\1'; printf %s "$1$2" | xxd -r -p; } | sha256sum | cut -c1-64; }
#   n "$(n "$(n "$(l 1)" "$(l 2)")" "$(n "$(l 3)" "$(l 4)")")" "$(l 5)"
# i.e. MTH = H(1 ‖ H(1 ‖ H(1 ‖ L0 ‖ L1) ‖ H(1 ‖ L2 ‖ L3)) ‖ L4), RFC 6962 section 2.1 split 4+1.
TINY_PREVS = (
    "0" * 64,
    "07fbe30d7221634eef3db583beb3b8ce70d817471b225085edeb63aeb3195633",
    "93612b0f166da7003f8675ef9514c01b64af780232b0347724f38b3bf57b26d6",
    "a07d531536529c68f8dd581801d1d7f002c50102e96c1254dc497e6f30a788b7",
    "1204a3427427e45071aa81394e50b26c85a260eebe0532ed350b92bb4c182bf2",
)
TINY_HEAD_HEX = "ba2c7aae58c54a6e617ef8ee33aa4365ddbb8e61fd32fc2b651fa0dfc98bf0ee"
TINY_ROOT_HEX = "97191ae3fe01a7e9ca102d56ba0046215417d364fd54de9f9e472d966fb2d5b2"
TINY_LINE = (
    '{{"kind":"note","meta":{{}},"postings":[],"prev":"{prev}",'
    '"ref":{{"key":"n{seq}","scope":"tiny"}},"seq":{seq},'
    '"time":"2027-01-15T08:00:0{seq}.000000Z","v":1}}\n'
)


def test_independent_root_of_a_fixed_tiny_journal_is_the_rfc6962_value(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.jsonl"
    text = "".join(TINY_LINE.format(prev=p, seq=s) for s, p in enumerate(TINY_PREVS))
    tiny.write_text(text, encoding="ascii")
    independent = run_independent(tiny)
    assert independent.returncode == 0, independent.stderr
    assert independent.head() == (5, TINY_HEAD_HEX, TINY_ROOT_HEX)
    assert ours(tiny) == (5, TINY_HEAD_HEX, TINY_ROOT_HEX)


def test_both_verifiers_accept_an_empty_export(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert hashlib.sha256(b"").hexdigest() == EMPTY_ROOT_HEX
    assert run_independent(empty).head() == (0, "0" * 64, EMPTY_ROOT_HEX)
    assert ours(empty) == (0, "0" * 64, EMPTY_ROOT_HEX)


def test_unreadable_input_or_bad_options_are_usage_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert run_independent(empty).returncode == 0
    assert run_independent(tmp_path / "missing.jsonl").returncode == 2
    assert run_independent(empty, "--expect-root", "zz").returncode == 2
    assert run_independent(empty, "--expect-size", "-1").returncode == 2


def test_the_independent_verifier_imports_only_the_standard_library() -> None:
    tree = ast.parse((TOOLS / "independent_verify.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "hashlib" in imported  # the walk does see imports
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


# ---------------------------------------------------------------- known defects (failing)
# The patterns in ledger/rules.py (_NAME), ledger/units.py (_ISO_4217) and
# ledger/timefmt.py (_FORMAT) end in "$", which in Python also matches before a final
# "\n"; re.fullmatch or "\Z" would not. These tests fail until that is fixed.


@pytest.mark.parametrize(
    "spec",
    [AccountSpec("holder:9\n", "PTS"), AccountSpec("holder:9", "EUR\n")],
    ids=["account-name", "unit"],
)
def test_a_trailing_newline_is_not_a_valid_account_name_or_unit(
    conn: psycopg.Connection[Any], spec: AccountSpec
) -> None:
    journal = Journal(clock_us=Clock())
    [result] = journal.append(conn, [EntryRequest("open", "ops", "open-nl", open_accounts=(spec,))])
    assert isinstance(result, Rejection), "an account name or unit ending in \\n was accepted"
    assert result.code is Code.INVALID_ENTRY


def test_replay_refuses_a_time_with_a_trailing_newline() -> None:
    entry = {
        "v": 1,
        "seq": 0,
        "prev": "0" * 64,
        "time": "2027-01-15T08:00:00.000000Z\n",
        "kind": "note",
        "ref": {"scope": "tiny", "key": "nl"},
        "meta": {},
        "postings": [],
    }
    with pytest.raises(VerificationFailed, match="invalid_entry"):
        verify_lines([canonical_bytes(entry) + b"\n"])
