"""Shared by the tamper and concurrency tests: a small journal that exercises every kind of
entry, direct (trigger-bypassing) database access, and spenders that run in threads or in
spawned processes (so everything a worker needs lives here, importable by module name)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import compact_range
from ledger._store import sealed_seq
from ledger.canonical import canonical_bytes
from ledger.journal import Appended, Journal, leaf_hash_of
from ledger.rejections import Rejection
from ledger.requests import AccountSpec, EntryRequest, HoldRequest, LotTake, PostingRequest
from ledger.verify import Replay

DAY_US = 86_400_000_000
T0_US = 1_800_000_000_000_000  # 2027-01-15
STEP_US = 1_000_000

Conn = psycopg.Connection[Any]


class Clock:
    def __init__(self, now_us: int = T0_US) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


ACCOUNTS = (
    AccountSpec("issuer:a", "PTS", overdraft=True),
    AccountSpec("issuer:b", "PTS", overdraft=True),
    AccountSpec("member:1", "PTS", lot_tracked=True),
    AccountSpec("member:2", "PTS", lot_tracked=True),
    AccountSpec("sink", "PTS", overdraft=True),
    AccountSpec("cash:EUR", "EUR", overdraft=True),
    AccountSpec("wallet:EUR", "EUR"),
    AccountSpec("wallet:EUR:2", "EUR"),
)


def open_accounts(key: str = "open-accounts") -> EntryRequest:
    return EntryRequest("open", "test", key, open_accounts=ACCOUNTS)


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


def transfer(source: str, target: str, unit: str, amount: int, key: str) -> EntryRequest:
    """A plain move between two accounts; for a lot-tracked source the ledger picks lots."""
    return EntryRequest(
        "spend",
        "test",
        key,
        postings=(PostingRequest(source, unit, -amount), PostingRequest(target, unit, amount)),
    )


def hold(account: str, amount: int, expires_us: int, key: str) -> EntryRequest:
    return EntryRequest(
        "authorise", "test", key, hold=HoldRequest(account, "PTS", amount, expires_us)
    )


def expect_appended(result: Appended | Rejection) -> Appended:
    assert isinstance(result, Appended), result
    return result


def write_varied_journal(conn: Conn, journal: Journal, clock: Clock) -> dict[str, int]:
    """Thirteen entries (an odd count, so one more leaf completes a Merkle node), each kind
    once: opens, earns with lots and expiries, spends, a fact without postings, holds, a
    capture, a money payment and a reversal. Returns the seq of each entry by name."""
    steps: list[tuple[str, EntryRequest]] = [
        ("open", open_accounts()),
        ("earn_a", earn("member:1", 100, "earn-a", "a", T0_US + 30 * DAY_US)),
        ("earn_b", earn("member:1", 50, "earn-b", "b", T0_US + 10 * DAY_US)),
        ("earn_never", earn("member:2", 40, "earn-never", "a", None)),
        ("fund", transfer("cash:EUR", "wallet:EUR", "EUR", 5000, "fund")),
        ("spend", transfer("member:1", "sink", "PTS", 70, "spend")),
        ("terms", EntryRequest("terms", "test", "terms", meta={"rate": "0.0125", "partner": "a"})),
        ("hold", hold("member:2", 30, T0_US + DAY_US, "hold")),
        ("capture", _capture()),
        ("pay", transfer("wallet:EUR", "cash:EUR", "EUR", 1250, "pay")),
        ("reversal", _reversal()),
        ("hold_open", hold("member:1", 10, T0_US + 2 * DAY_US, "hold-open")),
        ("spend_2", transfer("member:2", "sink", "PTS", 5, "spend-2")),
    ]
    seqs: dict[str, int] = {}
    for name, request in steps:
        clock.now_us += STEP_US
        [result] = journal.append(conn, [request])
        seqs[name] = expect_appended(result).seq
    assert list(seqs.values()) == list(range(len(steps)))
    return seqs


def _capture() -> EntryRequest:
    return EntryRequest(
        "capture",
        "test",
        "capture",
        capture_hold_seq=7,
        capture_amount=20,
        postings=(PostingRequest("member:2", "PTS", -20), PostingRequest("sink", "PTS", 20)),
    )


def _reversal() -> EntryRequest:
    # Entry 5 took 50 from lot 2:1 (expiring first) and 20 from lot 1:1; give 12 back to 2:1.
    return EntryRequest(
        "reversal",
        "test",
        "reversal",
        corrects_seq=5,
        meta={"reason": "goods returned"},
        postings=(
            PostingRequest("sink", "PTS", -12),
            PostingRequest("member:1", "PTS", 12, lots=(LotTake("2:1", 12),)),
        ),
    )


@contextmanager
def scratch_database(server_url: str, template_name: str) -> Iterator[str]:
    """A migrated database of one's own for a module-scoped fixture (``db_url`` makes one
    per test, which is wasteful when several tests only read the same journal)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    base, sep, query = server_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Direct database access, as a superuser would tamper.


@contextmanager
def tampering(db_url: str) -> Iterator[Conn]:
    """A superuser session in which no trigger fires: neither the append-only guards nor
    the foreign-key checks."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        yield conn


def stored_canonical(conn: Conn, seq: int) -> bytes:
    row = conn.execute("SELECT canonical FROM ledger_entry WHERE seq = %s", (seq,)).fetchone()
    assert row is not None
    return bytes(row[0])


def stored_leaf(conn: Conn, seq: int) -> bytes:
    row = conn.execute("SELECT leaf_hash FROM ledger_entry WHERE seq = %s", (seq,)).fetchone()
    assert row is not None
    return bytes(row[0])


def entry_json(conn: Conn, seq: int) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(stored_canonical(conn, seq))
    return parsed


def rewrite_entry(conn: Conn, seq: int, entry: dict[str, Any], *, rehash: bool) -> bytes:
    """Store ``entry`` as the canonical bytes of ``seq``; return its (new) leaf hash."""
    canonical = canonical_bytes(entry)
    leaf = leaf_hash_of(canonical)
    if rehash:
        conn.execute(
            "UPDATE ledger_entry SET canonical = %s, leaf_hash = %s WHERE seq = %s",
            (canonical, leaf, seq),
        )
    else:
        conn.execute("UPDATE ledger_entry SET canonical = %s WHERE seq = %s", (canonical, seq))
    return leaf


def insert_entry(conn: Conn, entry: dict[str, Any], ref_key: str) -> bytes:
    """Insert a forged entry row whose columns agree with its canonical bytes."""
    from ledger.timefmt import parse_time_us

    canonical = canonical_bytes(entry)
    leaf = leaf_hash_of(canonical)
    conn.execute(
        "INSERT INTO ledger_entry (chain_id, seq, time_us, kind, ref_scope, ref_key,"
        " request_hash, canonical, leaf_hash) VALUES ('main', %s, %s, %s, 'test', %s, %s, %s, %s)",
        (
            entry["seq"],
            parse_time_us(entry["time"]),
            entry["kind"],
            ref_key,
            bytes(32),
            canonical,
            leaf,
        ),
    )
    conn.execute("INSERT INTO ledger_ref VALUES ('main', 'test', %s, %s)", (ref_key, entry["seq"]))
    return leaf


def fact_entry(seq: int, prev_leaf: bytes, time: str, key: str) -> dict[str, Any]:
    """A well-formed entry without postings, chained after ``prev_leaf``."""
    return {
        "v": 1,
        "seq": seq,
        "prev": prev_leaf.hex(),
        "time": time,
        "kind": "terms",
        "ref": {"scope": "test", "key": key},
        "meta": {"forged": "yes"},
        "postings": [],
    }


def replay_prefix(conn: Conn, tree_size: int) -> Replay:
    replay = Replay(keep_nodes=True)
    for (canonical,) in conn.execute(
        "SELECT canonical FROM ledger_entry WHERE seq < %s ORDER BY seq", (tree_size,)
    ):
        replay.feed(bytes(canonical))
    return replay


def truncate_consistently(conn: Conn, tree_size: int) -> Replay:
    """Cut the journal back to its first ``tree_size`` entries and make every derived row
    and the chain head agree, as an operator hiding the tail would."""
    replay = replay_prefix(conn, tree_size)
    state = replay.state
    for table in ("ledger_posting", "ledger_entry", "ledger_ref"):
        conn.execute(f"DELETE FROM {table} WHERE seq >= %s", (tree_size,))
    conn.execute(
        "DELETE FROM ledger_merkle_node WHERE ((node_index + 1) << level) > %s", (tree_size,)
    )
    conn.execute("DELETE FROM ledger_balance")
    conn.execute("DELETE FROM ledger_lot")
    conn.execute("DELETE FROM ledger_hold")
    conn.execute("DELETE FROM ledger_account WHERE opened_seq >= %s", (tree_size,))
    last_seq = dict(
        conn.execute("SELECT account, max(seq) FROM ledger_posting GROUP BY account").fetchall()
    )
    for name, balance in state.balances.items():
        conn.execute(
            "INSERT INTO ledger_balance VALUES (%s, %s, %s, 'main')",
            (name, balance, last_seq.get(name, state.accounts[name].opened_seq)),
        )
    for lot in state.lots.values():
        conn.execute(
            "INSERT INTO ledger_lot VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'main')",
            (
                lot.lot_id,
                lot.account,
                lot.origin,
                lot.expires_us,
                lot.opened_seq,
                lot.posting_index,
                lot.amount_opened,
                lot.remaining,
            ),
        )
    for h in state.holds.values():
        conn.execute(
            "INSERT INTO ledger_hold VALUES (%s, %s, %s, %s, %s, %s, %s, 'main')",
            (h.hold_seq, h.account, h.unit, h.amount, h.expires_us, h.status, h.closed_seq),
        )
    conn.execute(
        "UPDATE ledger_chain SET tree_size = %s, head_leaf_hash = %s, last_time_us = %s,"
        " frontier_hashes = %s",
        (
            tree_size,
            bytes.fromhex(state.prev_leaf_hash_hex),
            state.last_time_us,
            replay.frontier_hashes,
        ),
    )
    return replay


def advance_head(conn: Conn, new_leaf: bytes, *, with_nodes: bool) -> None:
    """Move the chain head over one more leaf, optionally storing the nodes it completes."""
    row = conn.execute("SELECT tree_size, frontier_hashes FROM ledger_chain").fetchone()
    assert row is not None
    tree_size, frontier = row[0], [bytes(h) for h in row[1]]
    frontier, nodes = compact_range.append(frontier, tree_size, new_leaf)
    conn.execute(
        "UPDATE ledger_chain SET tree_size = %s, head_leaf_hash = %s, frontier_hashes = %s",
        (tree_size + 1, new_leaf, frontier),
    )
    if with_nodes:
        for node_id, node_hash in nodes:
            conn.execute(
                "INSERT INTO ledger_merkle_node VALUES ('main', %s, %s, %s, %s)",
                (node_id.level, node_id.index, sealed_seq(node_id), node_hash),
            )


# Spenders for the concurrency tests.


@dataclass(frozen=True, slots=True)
class Funded:
    """An account the spenders drain: ``spend_amount`` at a time, to ``target``."""

    account: str
    unit: str
    target: str
    spend_amount: int
    spendable: int  # balance minus what holds reserve, once funded

    @property
    def spends_allowed(self) -> int:
        return self.spendable // self.spend_amount


FUNDED = (
    Funded("member:1", "PTS", "sink", 5, 100),
    Funded("member:2", "PTS", "sink", 7, 70),
    Funded("wallet:EUR", "EUR", "cash:EUR", 25, 1000),
    Funded("wallet:EUR:2", "EUR", "cash:EUR", 30, 1000),
)
MEMBER_2_HELD = 30


def fund_for_spenders(conn: Conn, journal: Journal) -> None:
    """Lots with different origins and expiries for member:1, a hold on member:2."""
    requests = [
        open_accounts(),
        earn("member:1", 30, "fund-1a", "a", T0_US + 5 * DAY_US),
        earn("member:1", 30, "fund-1b", "b", T0_US + 10 * DAY_US),
        earn("member:1", 40, "fund-1c", "a", None),
        earn("member:2", 100, "fund-2", "b", None),
        hold("member:2", MEMBER_2_HELD, T0_US + DAY_US, "fund-2-hold"),
        transfer("cash:EUR", "wallet:EUR", "EUR", 1000, "fund-3"),
        transfer("cash:EUR", "wallet:EUR:2", "EUR", 1000, "fund-4"),
    ]
    for result in journal.append(conn, requests):
        expect_appended(result)


SpendOutcome = tuple[str, str, int]  # account, "ok" or the rejection code, seq (-1 if none)


def spend_round_robin(conn: Conn, journal: Journal, worker: int, rounds: int) -> list[SpendOutcome]:
    """Each round tries one spend from every funded account, alternating single appends
    with two-entry batches so that both paths meet under contention."""
    outcomes: list[SpendOutcome] = []
    for round_index in range(rounds):
        requests = [
            transfer(f.account, f.target, f.unit, f.spend_amount, f"w{worker}-r{round_index}-{i}")
            for i, f in enumerate(FUNDED)
        ]
        if round_index % 2:
            results = journal.append(conn, requests[:2]) + journal.append(conn, requests[2:])
        else:
            results = [r for request in requests for r in journal.append(conn, [request])]
        for funded, result in zip(FUNDED, results, strict=True):
            if isinstance(result, Appended):
                outcomes.append((funded.account, "ok", result.seq))
            else:
                outcomes.append((funded.account, result.code.value, -1))
    return outcomes


def spend_in_process(db_url: str, worker: int, rounds: int) -> list[SpendOutcome]:
    """Entry point of a spawned process: its own connection, its own Journal."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return spend_round_robin(conn, Journal(clock_us=Clock()), worker, rounds)


def killed_writer_request() -> EntryRequest:
    return transfer("member:1", "sink", "PTS", 15, "killed-writer")


def append_and_hang(db_url: str, appended: Any) -> None:
    """Entry point of a spawned process: append inside an outer transaction it never
    commits, report the seq it was given, then wait to be killed holding the head lock."""
    import time

    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        [result] = Journal(clock_us=Clock()).append(conn, [killed_writer_request()])
        appended.put(expect_appended(result).seq)
        time.sleep(600)
