"""API key checks, cached in each process; revocations pushed by PostgreSQL.

Every GraphQL request presents a key. Looking it up costs a pooled connection, a ping and
a query — more than the balance read the request came for — so each process keeps the
key rows it has looked up (never their secrets: the SHA-256 the table holds) and checks
the presented secret against the row it keeps.

A revoked key must stop working everywhere at once, not when some cache entry ages out.
Migration 0008 has PostgreSQL announce every change to a key row on channel
``coalition_api_key`` (payload: the key id) when the change commits, and each process
keeps one connection that LISTENs on it and drops the key it names. That connection is
pinged every ``PING_SECONDS``; a cached row is used only while the last ping sent less
than ``FRESH_SECONDS`` ago was answered (so every notification committed before that
ping had been read), and a row is kept only if it was read while listening and no
notification came in between. So:

- a revocation committed at *t* is honoured by every process by *t* + ``FRESH_SECONDS``
  (in practice by the next ping, ``PING_SECONDS``), whether the listening connection
  works or not: while it is down, or its pings go unanswered, every request goes to the
  table, as without a cache;
- the process that revoked the key (``forget``) refuses it from its very next request;
- a row is never used for longer than ``TTL_SECONDS`` (a bound on what a missed
  notification could cost, were PostgreSQL ever to drop one).

Unknown key ids are not cached (a key made a moment ago works at once), nor wrong
secrets (each is checked against the row, in constant time, hit or miss).

A key's expiry is in its row and compared with the clock at every check, cached or not:
an expired key is refused from the microsecond it expires, with no notification. A
partner's suspension is read with the row (the partner's status); migration 0011 has a
change of status announced on the same channel (payload ``partner:<id>``), which drops
that partner's keys. A row whose partner is suspended is never kept, so a reactivation
is seen at the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from coalition.api.db import Database
from coalition.api_keys import (
    API_KEY_CHANNEL,
    KeyExpired,
    KeyRecord,
    Principal,
    check_secret,
    lookup_key,
    parse_key,
)
from coalition.database import psycopg_url
from ledger.timefmt import now_us

PING_SECONDS = 0.1
FRESH_SECONDS = 0.5
TTL_SECONDS = 60.0
RECONNECT_SECONDS = 0.5
ENTRIES_MAX = 10_000
APPLICATION_NAME = "coalition api-key listener"

_log = logging.getLogger("coalition.api.keys")


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord
    read_at: float


class ApiKeyCache:
    def __init__(
        self,
        database_url: str,
        *,
        ping_seconds: float = PING_SECONDS,
        fresh_seconds: float = FRESH_SECONDS,
        ttl_seconds: float = TTL_SECONDS,
    ) -> None:
        self._url = psycopg_url(database_url)
        self._ping_seconds = ping_seconds
        self._fresh_seconds = fresh_seconds
        self._ttl_seconds = ttl_seconds
        self._entries: dict[str, _Entry] = {}
        self._listening = False
        self._confirmed = float("-inf")  # when the last answered ping was sent
        self._epoch = 0  # moves on at every (re)connection of the listener
        self._changes = 0  # moves on at every notification and every forget()
        self._task: asyncio.Task[None] | None = None
        self.hits = 0
        self.misses = 0

    @property
    def listening(self) -> bool:
        """Whether cached rows may be used now."""
        return self._listening and time.monotonic() - self._confirmed < self._fresh_seconds

    def start(self) -> None:
        """Start listening (on the serving loop); until it listens, nothing is cached."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="api-key-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._stopped()

    def forget(self, key_id: str) -> None:
        """Drop a key (this process just revoked it: refuse it from the next request)."""
        self._changes += 1
        self._entries.pop(key_id, None)

    def forget_partner(self, partner_id: str) -> None:
        """Drop a partner's keys (its status changed: read it again at the next request)."""
        self._changes += 1
        for key_id in [k for k, e in self._entries.items() if e.record.partner_id == partner_id]:
            del self._entries[key_id]

    async def authenticate(
        self, database: Database, presented: str
    ) -> Principal | KeyExpired | None:
        """The key's principal, ``KeyExpired`` (the right secret of an expired key), or
        None (unknown, malformed, revoked or a wrong secret — never which)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        entry = self._entries.get(key_id)
        if entry is not None and now - entry.read_at < self._ttl_seconds and self.listening:
            self.hits += 1
            return check_secret(entry.record, secret, now_us())
        self.misses += 1
        keepable = self.listening
        epoch, changes = self._epoch, self._changes
        record = await database.run(lookup_key, key_id)
        if (
            record is not None
            and not record.revoked
            and not record.partner_suspended
            and keepable
            and self._listening
            and (epoch, changes) == (self._epoch, self._changes)
        ):
            if len(self._entries) >= ENTRIES_MAX:
                self._entries.clear()
            self._entries[key_id] = _Entry(record, now)
        return check_secret(record, secret, now_us())

    def _notified(self, notify: psycopg.Notify) -> None:
        self._changes += 1
        if notify.payload == "*":
            self._entries.clear()
        elif notify.payload.startswith("partner:"):
            self.forget_partner(notify.payload.removeprefix("partner:"))
        else:
            self._entries.pop(notify.payload, None)

    def _stopped(self) -> None:
        self._listening = False
        self._epoch += 1
        self._entries.clear()

    async def _listen(self) -> None:
        down_logged = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=APPLICATION_NAME,
                )
            except Exception as exc:
                if not down_logged:  # debug: the outage itself is logged once, by db
                    _log.debug("api-key listener cannot connect (%s); checking every key", exc)
                    down_logged = True
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            try:
                async with conn:
                    conn.add_notify_handler(self._notified)
                    sent = time.monotonic()
                    await conn.execute(f"LISTEN {API_KEY_CHANNEL}")
                    self._epoch += 1
                    self._confirmed = sent
                    self._listening = True
                    if down_logged:
                        _log.debug("api-key listener connected again")
                        down_logged = False
                    await self._ping(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not down_logged:
                    _log.debug("api-key listener lost (%s); checking every key", exc)
                    down_logged = True
            finally:
                self._stopped()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _ping(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Every notification committed before a ping is read (and handled) by the time
        its answer is: each answered ping makes the cache fresh from when it was sent."""
        while True:
            await asyncio.sleep(self._ping_seconds)
            sent = time.monotonic()
            await asyncio.wait_for(conn.execute("SELECT 1"), self._fresh_seconds)
            self._confirmed = sent
