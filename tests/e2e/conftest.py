"""End-to-end fixtures: the real app under uvicorn on a loopback port (in a thread),
against a fresh seeded database, with one API key per role.

The log's signing key is fixed here and handed to the server through its Settings, so the
test process opens the server's checkpoints with the very key the server signs with —
without writing var/keys or changing the environment of other tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg
import pytest
import uvicorn
from starlette.applications import Starlette

from coalition import settle
from coalition.api.app import create_app
from coalition.api_keys import create_key
from coalition.database import psycopg_url
from coalition.keys import load_signer
from coalition.seed import seed_if_empty
from coalition.settings import Settings
from coalition.settle import timezone
from ledger.signed_note import Signer, Verifier, format_signer_key
from ledger.timefmt import now_us

ORIGIN = "ledger.e2e.example"
SERVER_START_SECONDS_MAX = 15

# The seed's key labels, by the short names the tests use.
_SEED_LABELS = {
    "grocer": "partner grocer",
    "airline": "partner airline",
    "auditor": "auditor",
    "finance": "finance",
    "finance2": "finance (second)",
    "operator": "operator",
}


@pytest.fixture(scope="session")
def settings() -> Settings:
    signer = Signer.from_seed(ORIGIN, hashlib.sha256(b"coalition e2e log key").digest())
    return dataclasses.replace(
        Settings.from_env(),
        log_origin=ORIGIN,
        signing_key_text=format_signer_key(signer),
        development=True,
    )


@pytest.fixture(scope="session")
def signer(settings: Settings) -> Signer:
    # Loaded the way the server loads it, so a mismatch would show up as a failed check.
    return load_signer(settings)


@pytest.fixture(scope="session")
def verifier(signer: Signer) -> Verifier:
    return signer.verifier()


@pytest.fixture()
def period(monkeypatch: pytest.MonkeyPatch) -> str:
    """This month in the coalition's time zone, taken as ended: a period holds the
    entries of its label (docs/SETTLEMENT.md §3), and the seed's and the test's are this
    month's. The server keeps real time, so only its check that the period is over is
    moved on (the server runs in this process)."""
    monkeypatch.setattr(settle, "_period_over", lambda co, end_us: True)
    today = datetime.now(ZoneInfo(timezone())).date()
    return f"{today.year:04d}-{today.month:02d}"


@dataclass(frozen=True)
class Seeded:
    db_url: str
    keys: dict[str, str]  # short name (grocer, fuel, airline, auditor, …) → key text


def _seed(db_url: str) -> Seeded:
    by_label = seed_if_empty(db_url)
    keys = {name: by_label[label] for name, label in _SEED_LABELS.items()}
    with psycopg.connect(db_url, autocommit=True) as conn:
        keys["fuel"], _ = create_key(conn, "partner", "fuel", "e2e partner fuel", now_us())
    return Seeded(db_url, keys)


@pytest.fixture()
def seeded(db_url: str) -> Seeded:
    """The demo coalition (grocer, fuel, airline; five members) and a key per role."""
    return _seed(db_url)


@pytest.fixture(scope="module")
def shared(server_url: str, template_name: str) -> Iterator[Seeded]:
    """Like ``seeded``, but one database for a whole module: for tests that change nothing
    another test looks at (a fresh database costs seconds; a suite of them, a minute)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield _seed(psycopg_url(_with_database(server_url, name)))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"


class _Servers:
    """Apps under uvicorn, each on 127.0.0.1 and a free port, in threads; stop() ends all."""

    def __init__(self) -> None:
        self.running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, app: Starlette) -> str:
        # Bind here and hand the socket over: no window for another process to take the port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        self.running.append((server, thread))
        deadline = time.monotonic() + SERVER_START_SECONDS_MAX
        while not server.started:
            assert thread.is_alive(), "the server stopped while starting (see its log)"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for server, _ in self.running:
            server.should_exit = True
        for _, thread in self.running:
            thread.join(timeout=10)


@pytest.fixture()
def serve() -> Iterator[Callable[[Starlette], str]]:
    """Start an app and get its base URL; every app started is stopped after the test."""
    servers = _Servers()
    yield servers.start
    servers.stop()


@pytest.fixture()
def api(seeded: Seeded, settings: Settings, serve: Callable[[Starlette], str]) -> str:
    """The base URL of the app serving the seeded database."""
    return serve(create_app(settings, seeded.db_url))


@pytest.fixture(scope="module")
def shared_api(shared: Seeded, settings: Settings) -> Iterator[str]:
    """The base URL of the app serving the module's shared database."""
    servers = _Servers()
    yield servers.start(create_app(settings, shared.db_url))
    servers.stop()
