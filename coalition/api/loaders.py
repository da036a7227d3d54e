"""DataLoaders, one set per request: what a query asks of many members or entries at
once (aliases, nested fields) is read in one statement on one short-lived connection per
batch, instead of one round trip per object."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from coalition import reports
from coalition.api.replica import Reader
from coalition.context import Conn
from ledger import reads
from ledger.state import Lot
from ledger.timefmt import now_us

# (member_id, lines wanted, reference scope the lines must carry or None)
HistoryKey = tuple[str, int, str | None]
# (member_id, lots wanted, issuer the lots must have or None, after (seq, index) or None)
LotsKey = tuple[str, int, str | None, tuple[int, int] | None]


class Loaders:
    """Built on first use: most requests need one loader or none."""

    def __init__(self, reader: Reader) -> None:
        self._db = reader

    @cached_property
    def balance(self) -> DataLoader[str, reports.MemberBalance | None]:
        return DataLoader(load_fn=self._balances)

    @cached_property
    def lots(self) -> DataLoader[LotsKey, list[Lot]]:
        return DataLoader(load_fn=self._lots)

    @cached_property
    def history(self) -> DataLoader[HistoryKey, list[reports.HistoryLine]]:
        return DataLoader(load_fn=self._histories)

    @cached_property
    def entry(self) -> DataLoader[int, reads.StoredEntry | None]:
        return DataLoader(load_fn=self._entries)

    async def _balances(self, member_ids: Sequence[str]) -> list[reports.MemberBalance | None]:
        found = await self._db.run(
            reports.member_balances,
            member_ids,
            now_us(),
            missing=lambda got: any(m not in got for m in member_ids),
        )
        return [found.get(m) for m in member_ids]

    async def _lots(self, keys: Sequence[LotsKey]) -> list[list[Lot]]:
        found = await self._db.run(_lots, keys)
        return [found[k] for k in keys]

    async def _histories(self, keys: Sequence[HistoryKey]) -> list[list[reports.HistoryLine]]:
        found = await self._db.run(_histories, keys)
        return [found[k] for k in keys]

    async def _entries(self, seqs: Sequence[int]) -> list[reads.StoredEntry | None]:
        found = await self._db.run(
            _entries, seqs, missing=lambda got: any(s not in got for s in seqs)
        )
        return [found.get(s) for s in seqs]


def _histories(
    conn: Conn, keys: Sequence[HistoryKey]
) -> dict[HistoryKey, list[reports.HistoryLine]]:
    return _per_member(
        keys,
        lambda ids, limit, scope: reports.member_histories(conn, ids, limit=limit, ref_scope=scope),
    )


def _lots(conn: Conn, keys: Sequence[LotsKey]) -> dict[LotsKey, list[Lot]]:
    return _per_member(
        keys,
        lambda ids, limit, origin, after: reports.member_lots(
            conn, ids, limit=limit, origin=origin, after=after
        ),
    )


K = TypeVar("K", bound=tuple[Any, ...])
V = TypeVar("V")


def _per_member(keys: Sequence[K], read: Callable[..., dict[str, V]]) -> dict[K, V]:
    """Keys are (member_id, *options): one batched read per distinct options, for all the
    members asked with them (a query asks with one set of options, or a few)."""
    groups: defaultdict[tuple[Any, ...], list[str]] = defaultdict(list)
    for member_id, *options in keys:
        groups[tuple(options)].append(member_id)
    found: dict[Any, V] = {}
    for shared, member_ids in groups.items():
        for member_id, value in read(member_ids, *shared).items():
            found[(member_id, *shared)] = value
    return found


def _entries(conn: Conn, seqs: Sequence[int]) -> dict[int, Any]:
    return {e.seq: e for e in reads.entries(conn, list(seqs))}
