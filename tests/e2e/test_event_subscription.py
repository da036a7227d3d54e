"""GraphQL subscriptions end to end: a websockets client over real HTTP against the app
under uvicorn (graphql-transport-ws). A client resumes from the last seq it saw and gets
every later event of its partner exactly once, in order, with no gap, live ones
included; another partner's never; the limits (connections per key, idle timeout, a
partner key) close the connection with their codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from coalition import outbox_retention
from coalition.api import event_stream
from coalition.api.app import create_app
from coalition.settings import Settings
from ledger.timefmt import now_us
from tests.e2e.test_payable import Api
from tests.e2e.test_webhooks import earn, redeem

if TYPE_CHECKING:
    from tests.e2e.conftest import Seeded

EVENTS = Path(__file__).resolve().parents[2] / "graphql/operations/partner/Events.graphql"
TIMEOUT_SECONDS = 20


async def _open(base: str, key: str) -> ClientConnection:
    ws = await connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
    )
    return ws


async def _subscribe(ws: ClientConnection, **variables: Any) -> None:
    ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_SECONDS))
    assert ack["type"] == "connection_ack", ack
    await ws.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": EVENTS.read_text(), "variables": variables},
            }
        )
    )


async def _take(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < n:
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_SECONDS))
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        got.append(message["payload"]["data"]["events"])
    return got


def _outbox(db_url: str, partner: str, after_seq: int) -> list[tuple[int, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT event_seq, event_id::text FROM coalition_event WHERE partner_id = %s"
            " AND event_type = 'earn.recorded' AND event_seq > %s ORDER BY event_seq",
            (partner, after_seq),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


@pytest.fixture()
def base(seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]) -> str:
    return serve(create_app(settings, seeded.db_url))


def test_a_client_resumes_from_a_seq_without_gaps(base: str, seeded: Seeded) -> None:
    call = Api(base, seeded.keys)
    key = seeded.keys["grocer"]
    types = ["earn.recorded"]

    async def first_session() -> int:
        ws = await _open(base, key)
        await _subscribe(ws, afterSeq="0", eventTypes=types)
        seen = await _take(ws, 3)  # the seed's first three earns, then we go away
        await ws.close()
        return int(seen[-1]["seq"])

    last = asyncio.run(first_session())
    for i in range(4):  # while no one listens
        earn(call, "grocer", f"ws-earn-{i}", "M004")
        redeem(call, "airline", f"ws-redeem-{i}", "M004")
    missed = _outbox(seeded.db_url, "grocer", last)
    assert len(missed) == 2 + 4  # the seed's other two, and ours

    async def second_session() -> list[dict[str, Any]]:
        ws = await _open(base, key)
        await _subscribe(ws, afterSeq=str(last), eventTypes=types)
        got = await _take(ws, len(missed))
        await asyncio.to_thread(earn, call, "grocer", "ws-live", "M004")  # live, connected
        got += await _take(ws, 1)
        await ws.close()
        return got

    got = asyncio.run(second_session())
    expected = _outbox(seeded.db_url, "grocer", last)
    assert [(int(e["seq"]), e["id"]) for e in got] == expected  # each once, in order, no gap
    assert {e["partner"] for e in got} == {"grocer"}
    assert got[-1]["data"]["ref"] == "ws-live"
    call.client.close()


def test_limits_close_with_their_codes(
    base: str, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_stream, "CONNECTIONS_PER_KEY_MAX", 2)
    monkeypatch.setattr(event_stream, "IDLE_SECONDS", 1.0)

    async def closed_with(ws: ClientConnection) -> int | None:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT_SECONDS)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def scenario() -> tuple[int | None, int | None, int | None, int | None]:
        auditor = await _open(base, seeded.keys["auditor"])
        refused = await closed_with(auditor)
        bogus = await _open(base, "ck_nope_nope")
        unknown = await closed_with(bogus)
        one, two = (
            await _open(base, seeded.keys["grocer"]),
            await _open(base, seeded.keys["grocer"]),
        )
        for ws in (one, two):
            assert json.loads(await ws.recv())["type"] == "connection_ack"
        three = await _open(base, seeded.keys["grocer"])
        too_many = await closed_with(three)
        other = await _open(base, seeded.keys["airline"])  # another key is not counted
        assert json.loads(await other.recv())["type"] == "connection_ack"
        idle = await closed_with(one)  # no subscription, nothing said for a second
        for ws in (two, other):
            await ws.close()
        return refused, unknown, too_many, idle

    assert asyncio.run(scenario()) == (4403, 4403, 4429, 4408)


def test_resuming_below_the_pruned_horizon_is_refused_with_the_oldest_seq(
    base: str, seeded: Seeded
) -> None:
    """Once the outbox job pruned the oldest events, a client resuming from a seq below
    them gets the typed error EVENTS_PRUNED naming the oldest seq still kept — not the
    later events as if nothing were missing; resuming from the horizon works."""
    with psycopg.connect(seeded.db_url, autocommit=True) as conn:
        pruned = outbox_retention.prune(
            conn, now_us=now_us() + 31 * outbox_retention.DAY_US, retention_days=30, rows_max=3
        )
    assert pruned.horizon_seq == 3 and pruned.more
    key = seeded.keys["grocer"]

    async def resume(after_seq: int) -> dict[str, Any]:
        ws = await _open(base, key)
        await _subscribe(ws, afterSeq=str(after_seq))
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_SECONDS))
        await ws.close()
        return dict(message)

    refused = asyncio.run(resume(2))
    assert refused["type"] == "next" and refused["payload"]["data"] is None, refused
    [error] = refused["payload"]["errors"]
    assert error["extensions"]["code"] == "EVENTS_PRUNED", refused
    assert error["extensions"]["oldestAvailableSeq"] == "4"
    assert "seq 4" in error["message"]
    resumed = asyncio.run(resume(3))
    assert resumed["type"] == "next" and "errors" not in resumed["payload"], resumed
    assert int(resumed["payload"]["data"]["events"]["seq"]) > 3
