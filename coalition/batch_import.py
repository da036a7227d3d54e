"""Import a partner's batch file: every record through the very use case a single call
runs (``earn.earn_points``, ``redeem.redeem_points``, ``refunds.refund_*``), with the
record's own reference for idempotency, but appended many to a transaction.

How, without a second copy of any rule: each record's use case runs in its own greenlet
on one connection, with a coalition whose ``append`` does not write but hands the
request back to this driver and waits. When a chunk of records is waiting, the driver
appends all their requests through the journal's one write path in one transaction
(guards and ledger rules judge each entry there, under the chain's lock, and a refused
entry is refused alone) and resumes each use case with its own result, as if its single
append had returned it. A use case that then reads again and appends again (a refund
that lost a race: ``BUSY``) waits for the next round. Its reads pause it likewise, and
the driver sends the paused use cases' reads together (``coalition.batch_reads``): a
round trip for a round of reads, a statement for the reads of one statement.

What a use case reads before its append is read before its chunk (and, when appends run
on a second connection, the chunk before it) commits. So a record
that names one earlier in the same chunk (a refund of an earn in the batch) starts only
after that chunk is written; and so, when the coalition has a tier policy, does an earn
whose member's rolling spend an earlier line not yet written may change (an earn of the
same member, a purchase refund): its price is the one the single calls in file order
give. Anything else a record reads is re-judged inside the append (docs/DESIGN.md §3), as
it is for tills racing each other — the tier too (coalition.guards).

A re-submitted batch replays: each record's reference is in the journal already, so the
use case answers its first answer (``replayed``) and writes nothing.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from greenlet import greenlet

from coalition import earn, redeem, refunds
from coalition.batch_format import Batch, LineResult, Record
from coalition.batch_reads import PipelinedReads, Read, read_round
from coalition.context import Coalition, Conn, refusal_for
from coalition.outcomes import Earned, Redeemed, Refunded, Refusal, RefusalCode
from coalition.policy import tier_policy
from ledger.journal import Appended, AppendResult
from ledger.rejections import Rejection
from ledger.requests import EntryRequest

ENTRIES_PER_CHUNK = 1000

Progress = Callable[[int, int], None]


class _Deferred(Coalition):
    """A coalition whose single append pauses the use case until its chunk is appended."""

    def __init__(self, plain: Coalition, driver: greenlet) -> None:
        self.clock_us = plain.clock_us
        self.journal = plain.journal
        self._driver = driver

    def append(self, conn: Conn, request: EntryRequest) -> Appended | Refusal:
        result: AppendResult | Exception = self._driver.switch(request)
        if isinstance(result, Exception):  # the database refused what this entry carries
            return Refusal(RefusalCode.INVALID_REQUEST, "the record holds what cannot be stored")
        if isinstance(result, Rejection):
            return refusal_for(result)
        return result


@dataclass(slots=True)
class _Paused:
    record: Record
    task: greenlet
    pause: EntryRequest | Read


def import_batch(
    co: Coalition,
    conn: Conn,
    batch: Batch,
    append_conn: Conn | None = None,
    progress: Progress | None = None,
    entries_per_chunk: int = ENTRIES_PER_CHUNK,
) -> list[LineResult]:
    """Every line's result (the bad lines' refusals included), in no particular order.

    With ``append_conn`` (a second connection), chunk n is appended on it in a thread
    while the use cases of chunk n+1 read on ``conn``: the journal's wait for the server
    overlaps the Python and round trips of the next chunk's reads."""
    assert conn.autocommit, "each chunk is its own transaction"
    results = [LineResult(line, ref, refusal=why) for line, ref, why in batch.bad]
    total = batch.lines
    driver = greenlet.getcurrent()
    deferred = _Deferred(co, driver)
    reads_conn = cast(Conn, PipelinedReads(conn, driver))
    reading: list[_Paused] = []
    waiting: list[_Paused] = []
    # References of records started, not yet appended (and, with tiers, the spend keys
    # of ``_spends``) …
    forming: set[str | tuple[str, str]] = set()
    flying: set[str | tuple[str, str]] = set()  # … and of the chunk being appended
    tiered = tier_policy(conn) is not None
    spend_key_of_ref = {r.ref: _spend_key(r) for r in batch.records if r.kind == "earn"}
    inflight: list[tuple[Future[list[AppendResult | Exception]], list[_Paused]]] = []
    pool = ThreadPoolExecutor(1, "batch-append") if append_conn is not None else None

    def settle(record: Record, task: greenlet, value: Any) -> None:
        if task.dead:
            results.append(_line_result(record, value))
            return
        assert isinstance(value, EntryRequest | Read), "a use case pauses to read or append"
        (reading if isinstance(value, Read) else waiting).append(_Paused(record, task, value))
        forming.add(record.ref)
        if tiered:
            forming.update(_spends(record, spend_key_of_ref))

    def read() -> None:
        """Send the paused use cases' reads, round after round, until none reads."""
        while reading:
            items = reading[:]
            reading.clear()
            answers = read_round(conn, pipeline, [cast(Read, i.pause) for i in items])
            for item, answer in zip(items, answers, strict=True):
                settle(item.record, item.task, item.task.switch(answer))

    def land() -> None:
        """Resume the use cases of the chunk in flight with their results."""
        if not inflight:
            return
        future, items = inflight.pop()
        outcomes = future.result()
        flying.clear()
        for item, outcome in zip(items, outcomes, strict=True):
            settle(item.record, item.task, item.task.switch(outcome))
        read()  # what they read after their append (a redemption's issuers, a replay's entry)
        gc.collect(1)  # what the chunk's use cases left: young, so a short pass
        if progress is not None:
            progress(len(results), total)

    def launch() -> None:
        read()  # this chunk's reads: while the chunk before is still being appended
        land()  # one chunk in flight at a time: the next is appended after it commits
        if not waiting:
            return
        items = waiting[:]
        waiting.clear()
        flying.update(forming)
        forming.clear()
        if pool is None:
            done: Future[list[AppendResult | Exception]] = Future()
            done.set_result(_append(co, conn, items))
            inflight.append((done, items))
        else:
            assert append_conn is not None
            inflight.append((pool.submit(_append, co, append_conn, items), items))

    def drain() -> None:
        while reading or waiting or inflight:
            launch()
            land()

    try:
        with _collector_paused(), conn.pipeline() as pipeline:
            for record in batch.records:
                if record.target_ref in forming or record.target_ref in flying:
                    drain()  # it reads what those records write: after they commit
                elif tiered and record.kind == "earn" and _priced_by(record, forming, flying):
                    drain()  # its tier depends on what those records write
                elif len(reading) + len(waiting) >= entries_per_chunk:
                    launch()
                task = greenlet(_use_case)
                settle(record, task, task.switch(deferred, reads_conn, batch.partner_id, record))
            drain()
        if progress is not None:
            progress(len(results), total)
    finally:
        if pool is not None:
            pool.shutdown()
    return results


_ANY_MEMBER = ("spend", "")  # a change of spend whose member the driver does not know


def _spend_key(record: Record) -> tuple[str, str]:
    return ("spend", record.member) if record.member is not None else _ANY_MEMBER


def _spends(record: Record, spend_key_of_ref: dict[str, tuple[str, str]]) -> set[tuple[str, str]]:
    """Whose rolling spend a record may change: an earn its member's, a purchase refund
    its earn's member (if that earn is in the batch, named by member id), else anyone's."""
    if record.kind == "earn":
        return {_spend_key(record)}
    if record.kind == "refund_purchase":
        return {spend_key_of_ref.get(record.target_ref or "", _ANY_MEMBER)}
    return set()


def _priced_by(record: Record, *unwritten: set[str | tuple[str, str]]) -> bool:
    """Whether the earn's tier may depend on a record started and not yet written. A
    member named by card may be anyone: it waits for every change of spend."""
    for keys in unwritten:
        if _ANY_MEMBER in keys or ("spend", record.member) in keys:
            return True
        if record.member is None and any(isinstance(key, tuple) for key in keys):
            return True
    return False


# Imports running with the collector paused (by any thread), and whether it was on
# before the first of them.
_paused = {"imports": 0, "was_enabled": 1}
_paused_lock = threading.Lock()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No automatic collection while importing; ``land`` collects the young generations
    once a chunk. A batch keeps every record and result alive until it ends, and each
    line allocates some hundred objects more: the collector's automatic passes kept
    walking that whole heap, a quarter of the import's CPU (docs/BATCH.md §6). Counted,
    so that of two imports at once the last to end turns the collector back on."""
    with _paused_lock:
        if _paused["imports"] == 0:
            _paused["was_enabled"] = int(gc.isenabled())
        _paused["imports"] += 1
        gc.disable()
    try:
        yield
    finally:
        with _paused_lock:
            _paused["imports"] -= 1
            if _paused["imports"] == 0 and _paused["was_enabled"]:
                gc.enable()


def _append(co: Coalition, conn: Conn, waiting: list[_Paused]) -> list[AppendResult | Exception]:
    """One transaction for the round; if the database refuses it whole (something one
    entry carries), each entry alone, so that only the one at fault fails."""
    requests = [cast(EntryRequest, w.pause) for w in waiting]
    try:
        return list(co.journal.append(conn, requests))
    except psycopg.Error:
        if conn.broken or len(requests) == 1:
            raise
    alone: list[AppendResult | Exception] = []
    for request in requests:
        try:
            [result] = co.journal.append(conn, [request])
        except psycopg.DataError as exc:  # what this entry carries; a broken link re-raises
            alone.append(exc)
            continue
        alone.append(result)
    return alone


def _use_case(co: Coalition, conn: Conn, partner_id: str, r: Record) -> object:
    """The single call's use case for the record (the same functions the API calls)."""
    if r.kind == "earn":
        assert r.currency is not None
        return earn.earn_points(
            co,
            conn,
            partner_id=partner_id,
            ref_key=r.ref,
            purchase_minor=r.amount,
            currency=r.currency,
            member_id=r.member,
            card_number=r.card,
            category=r.category,
        )
    if r.kind == "redeem":
        return redeem.redeem_points(
            co,
            conn,
            partner_id=partner_id,
            ref_key=r.ref,
            points=r.amount,
            member_id=r.member,
            card_number=r.card,
        )
    assert r.target_ref is not None
    if r.kind == "refund_purchase":
        return refunds.refund_purchase(
            co,
            conn,
            partner_id=partner_id,
            ref_key=r.ref,
            earn_ref_key=r.target_ref,
            refund_minor=r.amount,
        )
    assert r.kind == "refund_redemption", r.kind
    return refunds.refund_redemption(
        co,
        conn,
        partner_id=partner_id,
        ref_key=r.ref,
        redemption_ref_key=r.target_ref,
        points=r.amount,
    )


def _line_result(record: Record, outcome: object) -> LineResult:
    if isinstance(outcome, Refusal):
        return LineResult(record.line, record.ref, refusal=outcome)
    assert isinstance(outcome, Earned | Redeemed | Refunded), outcome
    return LineResult(record.line, record.ref, outcome.seq, outcome.points, outcome.replayed)
