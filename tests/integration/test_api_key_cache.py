"""The API's cache of key checks (coalition/api/keycache.py) against a real PostgreSQL:
it answers from memory while its listener is live, forgets a key when a change to its row
commits (migration 0008's trigger, whatever made the change), and goes to the table for
every request while the listener is down — so a revoked key never works for more than
about a second, whatever happens to the listening connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from coalition.api.db import Database
from coalition.api.keycache import APPLICATION_NAME, ApiKeyCache
from coalition.api_keys import Principal, create_key, revoke_key
from ledger.timefmt import now_us

T = TypeVar("T")
WITHIN_SECONDS = 1.0


def _key(db_url: str) -> tuple[str, str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        key, info = create_key(conn, "auditor", None, "cached", now_us())
    return key, info.key_id


def _sql(db_url: str, statement: str, *params: object) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(statement, params)


def _with_cache(db_url: str, body: Callable[[ApiKeyCache, Database], Awaitable[T]]) -> T:
    async def main() -> T:
        database = Database(db_url, connections_max=2)
        cache = ApiKeyCache(db_url)
        cache.start()
        try:
            deadline = time.monotonic() + 10
            while not cache.listening:
                assert time.monotonic() < deadline, "the listener never started"
                await asyncio.sleep(0.02)
            return await body(cache, database)
        finally:
            await cache.close()
            await database.close()

    return asyncio.run(main())


async def _refused_within(cache: ApiKeyCache, database: Database, key: str) -> float:
    """Seconds until the cache refuses ``key`` (asserted within WITHIN_SECONDS)."""
    started = time.monotonic()
    while await cache.authenticate(database, key) is not None:
        assert time.monotonic() - started < WITHIN_SECONDS, "the revoked key still works"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_a_cached_key_is_answered_from_memory_and_a_wrong_secret_is_still_refused(
    db_url: str,
) -> None:
    key, key_id = _key(db_url)

    async def body(cache: ApiKeyCache, database: Database) -> None:
        first = await cache.authenticate(database, key)
        assert first == Principal(key_id, "auditor", None)
        for _ in range(20):
            assert await cache.authenticate(database, key) == first
        assert (cache.misses, cache.hits) == (1, 20)
        wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert await cache.authenticate(database, wrong) is None
        assert await cache.authenticate(database, "ck_nonsense") is None

    _with_cache(db_url, body)


def test_a_key_made_after_a_miss_works_at_once(db_url: str) -> None:
    async def body(cache: ApiKeyCache, database: Database) -> None:
        assert await cache.authenticate(database, "ck_000000000000_" + "A" * 43) is None
        key, key_id = _key(db_url)
        principal = await cache.authenticate(database, key)
        assert principal is not None and principal.key_id == key_id

    _with_cache(db_url, body)


def test_a_revocation_by_sql_reaches_the_cache_within_a_second(db_url: str) -> None:
    """Revoked with the use case (as the CLI does) and by hand in SQL: both commits are
    announced by the table's trigger, and the cached check is dropped."""
    by_use_case, id_1 = _key(db_url)
    by_hand, id_2 = _key(db_url)

    async def body(cache: ApiKeyCache, database: Database) -> None:
        for key in (by_use_case, by_hand):
            assert await cache.authenticate(database, key) is not None
            assert await cache.authenticate(database, key) is not None
        hits = cache.hits
        assert hits >= 2
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert revoke_key(conn, id_1, now_us())
        await _refused_within(cache, database, by_use_case)
        _sql(db_url, "UPDATE coalition_api_key SET revoked_at_us = 1 WHERE key_id = %s", id_2)
        await _refused_within(cache, database, by_hand)

    _with_cache(db_url, body)


def test_without_the_notification_the_cache_would_keep_the_key(db_url: str) -> None:
    """What the trigger is for: with it disabled, a revoked key stays cached (up to the
    TTL). Shows the tests above measure the notification, not a lookup per request."""
    key, key_id = _key(db_url)

    async def body(cache: ApiKeyCache, database: Database) -> None:
        assert await cache.authenticate(database, key) is not None
        _sql(db_url, "ALTER TABLE coalition_api_key DISABLE TRIGGER coalition_api_key_changed")
        try:
            _sql(db_url, "UPDATE coalition_api_key SET revoked_at_us = 1 WHERE key_id = %s", key_id)
            await asyncio.sleep(WITHIN_SECONDS)
            assert await cache.authenticate(database, key) is not None
        finally:
            _sql(db_url, "ALTER TABLE coalition_api_key ENABLE TRIGGER coalition_api_key_changed")

    _with_cache(db_url, body)


def test_while_the_listener_is_down_every_check_goes_to_the_table(db_url: str) -> None:
    """The listening connection is killed and the key revoked at once, so the
    notification is lost: the cache stops answering from memory within a second all the
    same (its pings go unanswered), and takes up again once it listens anew."""
    key, key_id = _key(db_url)

    async def body(cache: ApiKeyCache, database: Database) -> None:
        assert await cache.authenticate(database, key) is not None
        # Revoke in the transaction that kills the listener: it is gone before the
        # revocation commits, so no notification can reach it.
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (APPLICATION_NAME,),
            ).fetchone()
            assert killed is not None and killed[0] == 1
            assert revoke_key(conn, key_id, now_us())
        await _refused_within(cache, database, key)
        deadline = time.monotonic() + 10
        while not cache.listening:
            assert time.monotonic() < deadline, "the listener did not come back"
            await asyncio.sleep(0.05)
        other, _ = _key(db_url)
        assert await cache.authenticate(database, other) is not None
        hits = cache.hits
        assert await cache.authenticate(database, other) is not None
        assert cache.hits == hits + 1

    _with_cache(db_url, body)


def test_a_cache_that_never_listened_checks_every_key_against_the_table(db_url: str) -> None:
    key, key_id = _key(db_url)

    async def main() -> None:
        database = Database(db_url, connections_max=1)
        cache = ApiKeyCache(db_url)  # not started
        try:
            for _ in range(3):
                assert await cache.authenticate(database, key) is not None
            assert (cache.hits, cache.misses) == (0, 3)
            _sql(db_url, "UPDATE coalition_api_key SET revoked_at_us = 1 WHERE key_id = %s", key_id)
            assert await cache.authenticate(database, key) is None
        finally:
            await database.close()

    asyncio.run(main())
