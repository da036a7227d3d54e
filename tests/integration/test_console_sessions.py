"""Console sessions in PostgreSQL: only a hash is stored, and a session ends when it
expires, when it is signed out and when its key is revoked."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from coalition.api_keys import Principal, create_key, revoke_key
from coalition.seed import seed_if_empty
from coalition.web.sessions import SESSION_SECONDS, create_session, end_session, session_principal

pytestmark = pytest.mark.postgres
T0 = 1_800_000_000_000_000


def test_session_lifecycle(db_url: str) -> None:
    seed_if_empty(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _, info = create_key(conn, "partner", "grocer", "session test", T0)
        who = Principal(info.key_id, "partner", "grocer")
        token = create_session(conn, who, T0)
        [stored] = conn.execute(
            "SELECT token_sha256 FROM coalition_console_session WHERE key_id = %s", (info.key_id,)
        ).fetchone() or [None]
        assert bytes(stored) == hashlib.sha256(token.encode()).digest()  # not the token
        assert session_principal(conn, token, T0 + 1) == who
        assert session_principal(conn, token + "x", T0 + 1) is None
        assert session_principal(conn, token, T0 + SESSION_SECONDS * 1_000_000) is None  # expired

        other = create_session(conn, who, T0)
        end_session(conn, other, T0 + 2)
        assert session_principal(conn, other, T0 + 3) is None  # signed out

        third = create_session(conn, who, T0)
        assert revoke_key(conn, info.key_id, T0 + 4)
        assert session_principal(conn, third, T0 + 5) is None  # its key revoked
        assert session_principal(conn, token, T0 + 5) is None
