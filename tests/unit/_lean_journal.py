"""Journals in memory for the lean verifier's tests: built by the ledger's own functions
(build_entry, the rules, canonical_bytes, the leaf hash), no database; and the means to
tamper with them, byte by byte or entry by entry with every later link recomputed."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from ledger.build import build_entry
from ledger.canonical import canonical_bytes
from ledger.rejections import Rejection
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, LotTake, PostingRequest
from ledger.rules import apply_entry
from ledger.state import State, moves_of_entry
from ledger.verify import VerificationFailed, Verified, verify_lines
from ledger.verify_lean import verify_lines_lean

DAY_US = 86_400_000_000
T0_US = 1_800_000_000_000_000  # 2027-01-15

ACCOUNTS = (
    AccountSpec("issuer:a", "PTS", overdraft=True),
    AccountSpec("issuer:b", "PTS", overdraft=True),
    AccountSpec("member:1", "PTS", lot_tracked=True),
    AccountSpec("member:2", "PTS", lot_tracked=True),
    AccountSpec("member:3", "PTS", overdraft=True, lot_tracked=True),  # may carry debt
    AccountSpec("sink", "PTS", overdraft=True),
    AccountSpec("breakage", "PTS", overdraft=True),
    AccountSpec("cash:EUR", "EUR", overdraft=True),
    AccountSpec("wallet:EUR", "EUR"),
)
MEMBERS = ("member:1", "member:2", "member:3")


class Builder:
    """Appends requests the way the journal does; a request the rules refuse is left out."""

    def __init__(self) -> None:
        self.state = State()
        self.lines: list[bytes] = []
        self.state.moves_of = lambda seq: moves_of_entry(json.loads(self.lines[seq])["postings"])
        self.now_us = T0_US

    def add(self, request: EntryRequest) -> int | None:
        time_us = max(self.now_us, self.state.last_time_us)
        entry = build_entry(request, self.state, time_us)
        canonical = canonical_bytes(entry)
        outcome = apply_entry(entry, self.state)
        if isinstance(outcome, Rejection):
            return None
        self.state.prev_leaf_hash_hex = hashlib.sha256(b"\x00" + canonical).hexdigest()
        self.lines.append(canonical + b"\n")
        return outcome.seq


def earn(
    member: str, amount: int, key: str, origin: str = "a", expires_us: int | None = None
) -> EntryRequest:
    return EntryRequest(
        "earn",
        "test",
        key,
        postings=(
            PostingRequest(f"issuer:{origin}", "PTS", -amount),
            PostingRequest(member, "PTS", amount, lot_origin=origin, lot_expires_us=expires_us),
        ),
    )


def transfer(
    source: str, target: str, unit: str, amount: int, key: str, **extra: Any
) -> EntryRequest:
    return EntryRequest(
        "spend",
        "test",
        key,
        postings=(PostingRequest(source, unit, -amount), PostingRequest(target, unit, amount)),
        **extra,
    )


def varied_lines() -> list[bytes]:
    """The thirteen entries of tests/integration/_journal_helpers.write_varied_journal,
    each kind once, one second apart (PAY = 9, TERMS = 6, as test_tamper names them)."""
    b = Builder()
    steps = [
        EntryRequest("open", "test", "open-accounts", open_accounts=ACCOUNTS),
        earn("member:1", 100, "earn-a", "a", T0_US + 30 * DAY_US),
        earn("member:1", 50, "earn-b", "b", T0_US + 10 * DAY_US),
        earn("member:2", 40, "earn-never", "a", None),
        transfer("cash:EUR", "wallet:EUR", "EUR", 5000, "fund"),
        transfer("member:1", "sink", "PTS", 70, "spend"),
        EntryRequest("terms", "test", "terms", meta={"rate": "0.0125", "partner": "a"}),
        EntryRequest(
            "authorise", "test", "hold", hold=HoldRequest("member:2", "PTS", 30, T0_US + DAY_US)
        ),
        EntryRequest(
            "capture",
            "test",
            "capture",
            capture_hold_seq=7,
            capture_amount=20,
            postings=(PostingRequest("member:2", "PTS", -20), PostingRequest("sink", "PTS", 20)),
        ),
        transfer("wallet:EUR", "cash:EUR", "EUR", 1250, "pay"),
        EntryRequest(
            "reversal",
            "test",
            "reversal",
            corrects_seq=5,
            meta={"reason": "goods returned"},
            postings=(
                PostingRequest("sink", "PTS", -12),
                PostingRequest("member:1", "PTS", 12, lots=(LotTake("2:1", 12),)),
            ),
        ),
        EntryRequest(
            "authorise",
            "test",
            "hold-open",
            hold=HoldRequest("member:1", "PTS", 10, T0_US + 2 * DAY_US),
        ),
        transfer("member:2", "sink", "PTS", 5, "spend-2"),
    ]
    for request in steps:
        b.now_us += 1_000_000
        assert b.add(request) is not None, request
    return b.lines


def random_lines(rng: random.Random, count: int) -> list[bytes]:
    """A journal of every kind of entry: earns that expire soon or never, spends, holds
    captured or voided or left to time out, refunds restoring lots, clawbacks into debt,
    expiry sweeps, money, facts with odd metadata (non-ASCII, nested, big integers)."""
    b = Builder()
    b.add(EntryRequest("open", "test", "open", open_accounts=ACCOUNTS))
    spends: list[int] = []
    earns: list[int] = []
    holds: list[int] = []
    key = 0
    while len(b.lines) < count:
        key += 1
        b.now_us += rng.choice((0, 0, 1_000_000, DAY_US // 2, 3 * DAY_US))
        member = rng.choice(MEMBERS)
        roll = rng.random()
        request: EntryRequest
        if roll < 0.3:
            expires = rng.choice((None, b.now_us + DAY_US, b.now_us + 10 * DAY_US))
            request = earn(member, rng.randint(1, 300), f"k{key}", rng.choice("ab"), expires)
        elif roll < 0.5:
            debt = member == "member:3" and rng.random() < 0.5
            amount = rng.randint(1, 120)
            request = EntryRequest(
                "spend",
                "test",
                f"k{key}",
                postings=(
                    PostingRequest(member, "PTS", -amount, allow_debt=debt),
                    PostingRequest("sink", "PTS", amount),
                ),
            )
        elif roll < 0.58:
            request = EntryRequest(
                "authorise",
                "test",
                f"k{key}",
                hold=HoldRequest(member, "PTS", rng.randint(1, 80), b.now_us + DAY_US),
            )
        elif roll < 0.66 and holds:
            hold_seq = holds.pop(rng.randrange(len(holds)))
            hold = b.state.holds.get(hold_seq)
            if hold is None or rng.random() < 0.4:
                request = EntryRequest("void", "test", f"k{key}", void_hold_seq=hold_seq)
            else:
                amount = rng.randint(1, hold.amount)
                request = EntryRequest(
                    "capture",
                    "test",
                    f"k{key}",
                    capture_hold_seq=hold_seq,
                    capture_amount=amount,
                    postings=(
                        PostingRequest(hold.account, "PTS", -amount),
                        PostingRequest("sink", "PTS", amount),
                    ),
                )
        elif roll < 0.74 and spends:
            request = _refund(b, rng.choice(spends), rng, f"k{key}")
        elif roll < 0.8 and earns:
            request = _clawback(b, rng.choice(earns), rng, f"k{key}")
        elif roll < 0.85:
            request = _expiry(b, member, f"k{key}")
        elif roll < 0.93:
            request = transfer("cash:EUR", "wallet:EUR", "EUR", rng.randint(1, 10**6), f"k{key}")
        else:
            request = EntryRequest("fact", "test", f"k{key}", meta=rng.choice(_METAS))
        seq = b.add(request)
        if seq is None:
            continue
        if request.kind == "spend":
            spends.append(seq)
        elif request.kind == "earn":
            earns.append(seq)
        elif request.hold is not None:
            holds.append(seq)
    return b.lines


_METAS: list[dict[str, Any]] = [
    {"note": "caf\u00e9 \u2028 \x7f", "n": 2**53 - 1, "m": -(2**53 - 1)},
    {"nested": {"b": [1, {"a": None, "t": True}], "a": []}},
    {"\ue000": 1, "\U0001f600": 2},  # keys whose order only UTF-16 decides
    {"quote": 'a"b\\c\n\t\x01'},
]


def _refund(b: Builder, spent: int, rng: random.Random, key: str) -> EntryRequest:
    entry = json.loads(b.lines[spent])
    debit = entry["postings"][0]
    takes = debit.get("lots") or []
    if not takes:
        return EntryRequest("fact", "test", key)
    take = rng.choice(takes)
    amount = rng.randint(1, take["amount"] + 2)  # sometimes beyond the bound: refused
    return EntryRequest(
        "refund",
        "test",
        key,
        corrects_seq=spent,
        postings=(
            PostingRequest("sink", "PTS", -amount),
            PostingRequest(debit["account"], "PTS", amount, lots=(LotTake(take["lot"], amount),)),
        ),
    )


def _clawback(b: Builder, earned: int, rng: random.Random, key: str) -> EntryRequest:
    entry = json.loads(b.lines[earned])
    issuer, member = entry["postings"][0]["account"], entry["postings"][1]["account"]
    amount = rng.randint(1, entry["postings"][1]["amount"] + 2)
    return EntryRequest(
        "clawback",
        "test",
        key,
        corrects_seq=earned,
        postings=(
            PostingRequest(member, "PTS", -amount, allow_debt=member == "member:3"),
            PostingRequest(issuer, "PTS", amount),
        ),
    )


def _expiry(b: Builder, member: str, key: str) -> EntryRequest:
    expired = sum(lot.remaining for lot in b.state.account_lots(member) if lot.is_expired(b.now_us))
    if not expired:
        return EntryRequest("fact", "test", key, meta={"swept": member})
    return EntryRequest(
        "expire",
        "test",
        key,
        postings=(
            PostingRequest(member, "PTS", -expired, take_expired=True),
            PostingRequest("breakage", "PTS", expired),
        ),
    )


# Tampering


def leaf_hex(line: bytes) -> str:
    return hashlib.sha256(b"\x00" + line.rstrip(b"\n")).hexdigest()


def rechain(lines: list[bytes], start: int) -> list[bytes]:
    """Recompute the ``prev`` of every line after ``start`` (lines that parse)."""
    out = list(lines)
    for seq in range(start + 1, len(out)):
        try:
            entry = json.loads(out[seq])
            entry["prev"] = leaf_hex(out[seq - 1])
            out[seq] = canonical_bytes(entry) + b"\n"
        except Exception:
            continue
    return out


def forge(lines: list[bytes], seq: int, mutate: Callable[[dict[str, Any]], None]) -> list[bytes]:
    """Edit entry ``seq`` as a forger with the hash function would: re-encode, re-link."""
    entry = json.loads(lines[seq])
    mutate(entry)
    try:
        encoded = canonical_bytes(entry)
    except Exception:  # floats and the like: written the way a careless forger would
        encoded = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    out = [*lines[:seq], encoded + b"\n", *lines[seq + 1 :]]
    return rechain(out, seq)


Outcome = tuple[Any, ...]


def outcome_of(verify: Callable[[], Verified]) -> Outcome:
    try:
        v = verify()
    except VerificationFailed as failed:
        return ("failed", failed.seq, failed.check, failed.expected, failed.actual)
    return ("ok", v.tree_size, v.root_hash, v.head_leaf_hash, v.roots_at)


def reference_and_lean(lines: list[bytes], sizes: tuple[int, ...] = ()) -> tuple[Outcome, Outcome]:
    reference = outcome_of(lambda: verify_lines(lines, sizes_wanted=sizes))
    lean = outcome_of(lambda: verify_lines_lean(lines, sizes_wanted=sizes))
    return reference, lean
