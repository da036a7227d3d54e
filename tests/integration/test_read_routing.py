"""Read routing when the standby is gone (coalition/api/replica.py): the primary answers,
and the standby is not tried again for a while — an unreachable host would otherwise
cost every read a connect timeout, which the tills would notice."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from coalition.api.db import Database
from coalition.api.replica import ReadRouting
from coalition.context import Conn


class Counting(Database):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.runs = 0

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.runs += 1
        return await super().run(fn, *args, **kwargs)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once this closes


def _answer(conn: Conn) -> int:
    row = conn.execute("SELECT 41 + 1").fetchone()
    assert row is not None
    return int(row[0])


def test_a_standby_that_failed_is_left_alone_then_tried_again(db_url: str) -> None:
    async def main() -> tuple[list[int], list[int]]:
        primary = Counting(db_url)
        standby = Counting(f"postgresql://postgres@127.0.0.1:{_closed_port()}/none")
        routing = ReadRouting(primary, standby)
        answers, tries = [], []
        try:
            for _ in range(3):
                answers.append(await routing.run(None, None, _answer))
                tries.append(standby.runs)
            routing._down_until = 0.0  # as if REPLICA_RETRY_SECONDS had passed
            answers.append(await routing.run(None, None, _answer))
            tries.append(standby.runs)
        finally:
            await routing.close()
            await primary.close()
        return answers, tries

    answers, tries = asyncio.run(main())
    assert answers == [42, 42, 42, 42]  # every read answered, by the primary
    assert tries == [1, 1, 1, 2]  # tried once, left alone, then tried again
