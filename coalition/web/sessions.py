"""Console sessions, stored server-side as the SHA-256 of a random token.

The browser holds only the session token (an HttpOnly cookie), never the API key; each
request finds the session's key and checks that it is live, so a revoked key ends its
sessions at once. CSRF tokens are derived from the session token (an HMAC), so they need
no storage and die with the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from coalition.api_keys import Principal
from coalition.context import Conn

SESSION_SECONDS = 8 * 3600  # a working day; then sign in again
# A key's live sessions at most: signing in once more ends its oldest. A person has a few
# browsers; a script signing in at every run (never out) would otherwise pile up rows.
SESSIONS_PER_KEY_MAX = 10
SESSION_LOCK = 727_022  # pg_advisory_xact_lock's first key (727_021: sign-in attempts)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_session(conn: Conn, principal: Principal, now_us: int) -> str:
    """A new session for an authenticated key; returns the token (kept only by the browser)."""
    token = secrets.token_urlsafe(32)
    with conn.transaction():
        # One lock per key serialises its sign-ins across processes, so the bound holds.
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SESSION_LOCK, principal.key_id)
        )
        conn.execute(
            "UPDATE coalition_console_session SET ended_at_us = %(now)s WHERE token_sha256 IN"
            " (SELECT token_sha256 FROM coalition_console_session WHERE key_id = %(key)s"
            " AND ended_at_us IS NULL AND expires_at_us > %(now)s"
            " ORDER BY created_at_us DESC OFFSET %(keep)s)",
            {"now": now_us, "key": principal.key_id, "keep": SESSIONS_PER_KEY_MAX - 1},
        )
        conn.execute(
            "INSERT INTO coalition_console_session (token_sha256, key_id, created_at_us,"
            " expires_at_us) VALUES (%s, %s, %s, %s)",
            (_digest(token), principal.key_id, now_us, now_us + SESSION_SECONDS * 1_000_000),
        )
    return token


def session_principal(conn: Conn, token: str, now_us: int) -> Principal | None:
    """The principal of a live session on a live key, else None (never which)."""
    if not 20 <= len(token) <= 100:
        return None
    row = conn.execute(
        "SELECT k.key_id, k.role, k.partner_id FROM coalition_console_session s"
        " JOIN coalition_api_key k USING (key_id)"
        " WHERE s.token_sha256 = %s AND s.ended_at_us IS NULL AND s.expires_at_us > %s"
        " AND k.revoked_at_us IS NULL",
        (_digest(token), now_us),
    ).fetchone()
    return None if row is None else Principal(row[0], row[1], row[2])


def end_session(conn: Conn, token: str, now_us: int) -> None:
    conn.execute(
        "UPDATE coalition_console_session SET ended_at_us = %s"
        " WHERE token_sha256 = %s AND ended_at_us IS NULL",
        (now_us, _digest(token)),
    )


def csrf_token(token: str) -> str:
    """The CSRF token of the forms of a session (or of the sign-in form's pre-session)."""
    return hmac.new(token.encode(), b"coalition console csrf", hashlib.sha256).hexdigest()


def csrf_ok(token: str | None, presented: str | None) -> bool:
    if not token or not presented:
        return False
    return hmac.compare_digest(csrf_token(token), presented)
