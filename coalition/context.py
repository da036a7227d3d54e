"""The wiring every coalition use case shares: a journal whose batches also keep the
coalition's read models, a clock, and the translation of ledger rejections."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from coalition import outbox
from coalition.guards import before_append
from coalition.outcomes import Refusal, RefusalCode
from coalition.projections import project
from ledger import reads
from ledger.journal import Appended, Journal
from ledger.rejections import Rejection, RejectionCode
from ledger.requests import EntryRequest
from ledger.timefmt import now_us

Conn = psycopg.Connection[Any]

_REFUSAL_FOR = {
    RejectionCode.IDEMPOTENCY_CONFLICT: RefusalCode.DUPLICATE_REFERENCE,
    RejectionCode.INSUFFICIENT_BALANCE: RefusalCode.INSUFFICIENT_POINTS,
    RejectionCode.LOT_INSUFFICIENT: RefusalCode.BUSY,
    RejectionCode.LOT_EXPIRED: RefusalCode.POINTS_EXPIRED,
    RejectionCode.HOLD_UNKNOWN: RefusalCode.UNKNOWN_HOLD,
    RejectionCode.HOLD_NOT_ACTIVE: RefusalCode.HOLD_NOT_ACTIVE,
    RejectionCode.HOLD_EXPIRED: RefusalCode.HOLD_EXPIRED,
    RejectionCode.CAPTURE_EXCEEDS_HOLD: RefusalCode.OVER_CAPTURE,
    # Our refunds name the lots from state read before the append; losing that race is
    # BUSY (the use case chooses again), never a refund beyond its original.
    RejectionCode.LOT_RESTORE_EXCEEDS_CONSUMED: RefusalCode.BUSY,
    RejectionCode.CORRECTION_EXCEEDS_ORIGINAL: RefusalCode.REFUND_EXCEEDS_ORIGINAL,
}


def after_append(conn: Conn, appended: list[tuple[EntryRequest, Appended]]) -> None:
    """In each batch's transaction: the read models, then the outbox's events (so an
    event exists exactly when its entry does, on every append path)."""
    project(conn, appended)
    outbox.record_entries(conn, appended)


class Coalition:
    def __init__(self, clock_us: Callable[[], int] = now_us) -> None:
        self.clock_us = clock_us
        self.journal = Journal(
            clock_us=clock_us,
            after_append=after_append,
            before_append=lambda conn, requests: before_append(conn, requests, clock_us()),
        )

    def append(self, conn: Conn, request: EntryRequest) -> Appended | Refusal:
        [result] = self.journal.append(conn, [request])
        if isinstance(result, Rejection):
            return refusal_for(result)
        return result

    def append_once(
        self, conn: Conn, request: EntryRequest
    ) -> tuple[Appended, dict[str, Any]] | Refusal:
        """Append a request whose metadata holds the caller's ``input`` and what we derived
        from it (points, tier, lots …). A retry is recognised by its input alone, so it
        gets the original answer even if the derivation would differ today.

        The journal answers a retry whose derivation is unchanged by itself (same request
        hash: the original result); only a conflicting reference costs a second look."""
        result = self.append(conn, request)
        if isinstance(result, Refusal) and result.code is RefusalCode.DUPLICATE_REFERENCE:
            earlier = _earlier(conn, request, request.meta["input"])
            if earlier is not None:
                return earlier
        if isinstance(result, Refusal):
            return result
        return result, request.meta


def _earlier(
    conn: Conn, request: EntryRequest, inputs: dict[str, Any]
) -> tuple[Appended, dict[str, Any]] | Refusal | None:
    stored = reads.entry_by_ref(conn, request.ref_scope, request.ref_key)
    if stored is None:
        return None
    entry = json.loads(stored.canonical)
    if entry["kind"] != request.kind or entry["meta"].get("input") != inputs:
        return Refusal(
            RefusalCode.DUPLICATE_REFERENCE,
            f"reference {request.ref_key} was used for another request",
        )
    meta: dict[str, Any] = entry["meta"]
    return Appended(stored.seq, stored.leaf_hash, stored.time_us, replayed=True), meta


def refusal_for(rejection: Rejection) -> Refusal:
    if rejection.code is RejectionCode.PRECONDITION_FAILED:
        assert rejection.reason is not None, "our guards always name their rule"
        return Refusal(RefusalCode(rejection.reason), rejection.detail)
    code = _REFUSAL_FOR.get(rejection.code, RefusalCode.INVALID_REQUEST)
    return Refusal(code, rejection.detail)


def stored_entry(conn: Conn, seq: int) -> dict[str, Any]:
    """The entry as recorded — what a replayed (idempotent) call answers from."""
    stored = reads.entry(conn, seq)
    assert stored is not None, f"entry {seq} vanished"
    entry: dict[str, Any] = json.loads(stored.canonical)
    return entry
