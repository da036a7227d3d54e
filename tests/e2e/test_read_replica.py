"""Reads from a streaming replica, over HTTP, against a real primary + hot standby pair
(tests/_replica_pair.py) whose replay the tests pause to make it lag:

- a caller that did not write reads from the standby (it sees the standby's older
  balance while replay is paused: the read really went there);
- the caller that wrote reads its own write at once (its reads wait for the standby a
  bounded time, then go to the primary), and so does any caller that names the write's
  position in ``Coalition-Read-After``;
- what the standby lacks altogether (an entry appended since) is read from the primary;
- with the standby gone, every read still answers, from the primary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.api_keys import create_key
from coalition.migrate import upgrade_to_head
from coalition.seed import seed_if_empty
from coalition.settings import Settings
from ledger.timefmt import now_us
from tests._replica_pair import ReplicaPair, start_pair

OPERATIONS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[ReplicaPair]:
    started = start_pair(tmp_path / "pg")
    try:
        upgrade_to_head(started.primary_url)
        yield started
    finally:
        started.stop()


class Caller:
    def __init__(self, url: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )

    def post(
        self, operation: str, headers: dict[str, str] | None = None, **variables: Any
    ) -> httpx.Response:
        document = (OPERATIONS / f"{operation}.graphql").read_text()
        response = self.client.post(
            "/graphql", json={"query": document, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert "errors" not in response.json(), response.text
        return response

    def points(self, member: str, headers: dict[str, str] | None = None) -> int:
        data = self.post("partner/MemberBalance", headers, memberId=member).json()["data"]
        return int(data["member"]["balancePoints"])


@pytest.fixture()
def callers(
    pair: ReplicaPair, settings: Settings, serve: Callable[[Starlette], str]
) -> Iterator[dict[str, Caller]]:
    keys = seed_if_empty(pair.primary_url)
    import psycopg

    with psycopg.connect(pair.primary_url, autocommit=True) as conn:
        auditor, _ = create_key(conn, "auditor", None, "replica auditor", now_us())
    url = serve(create_app(settings, pair.primary_url, replica_url=pair.standby_url))
    made = {
        "grocer": Caller(url, keys["partner grocer"]),
        "airline": Caller(url, keys["partner airline"]),
        "auditor": Caller(url, auditor),
    }
    pair.wait_replayed()
    yield made
    for caller in made.values():
        caller.client.close()


def _earn(grocer: Caller, reference: str) -> httpx.Response:
    return grocer.post(
        "partner/PostPurchase",
        reference=reference,
        member={"memberId": "M001"},
        purchaseMinor="150000",
        currency="RUB",
    )


def test_the_writer_reads_its_write_while_others_read_the_lagging_standby(
    pair: ReplicaPair, callers: dict[str, Caller]
) -> None:
    grocer, airline = callers["grocer"], callers["airline"]
    before = airline.points("M001")
    assert grocer.points("M001") == before
    pair.pause_replay()
    try:
        wrote = _earn(grocer, "replica-1")
        earned = int(wrote.json()["data"]["earn"]["points"])
        assert earned > 0
        lsn = wrote.headers["Coalition-Wal-Lsn"]
        # The writer sees its write; a caller that did not write reads the standby, which
        # has not replayed it (so the read did go to the standby).
        assert grocer.points("M001") == before + earned
        assert airline.points("M001") == before
        # Naming the write's position holds any caller to it (another worker's write).
        assert airline.points("M001", {"Coalition-Read-After": lsn}) == before + earned
        assert airline.points("M001", {"Coalition-Read-After": "not an lsn"}) == before
    finally:
        pair.resume_replay()
    pair.wait_replayed()
    assert airline.points("M001") == before + earned


def test_what_the_standby_lacks_is_read_from_the_primary_and_a_lost_standby_is_not_missed(
    pair: ReplicaPair, callers: dict[str, Caller]
) -> None:
    grocer, auditor = callers["grocer"], callers["auditor"]
    pair.pause_replay()
    try:
        seq = int(_earn(grocer, "replica-2").json()["data"]["earn"]["seq"])
        # The auditor wrote nothing; the standby has no entry `seq`: the primary's answer.
        entry = auditor.post("auditor/EntryBySeq", seq=seq).json()["data"]["entry"]
        assert entry is not None and entry["refKey"] == "replica-2"
    finally:
        pair.resume_replay()
    before = callers["airline"].points("M001")
    pair.stop_standby()
    assert callers["airline"].points("M001") == before
    seq_after = int(_earn(grocer, "replica-3").json()["data"]["earn"]["seq"])
    entry = auditor.post("auditor/EntryBySeq", seq=seq_after).json()["data"]["entry"]
    assert entry is not None and entry["refKey"] == "replica-3"
