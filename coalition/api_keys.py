"""API keys: create (the secret is shown once), list without secrets, revoke, and
authenticate a presented key — against a stored SHA-256 of its secret only.

A key reads ``ck_<key id>_<secret>``; the key id finds the row, the secret's hash is
compared in constant time. Secrets are 256 random bits, so a plain SHA-256 (not a slow
password hash) is the right tool, as for other high-entropy tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from coalition.context import Conn
from coalition.partners import get_partner

ROLES = ("partner", "auditor", "finance", "operator")
API_KEY_CHANNEL = "coalition_api_key"  # NOTIFY payload: the key id changed ("*": all)
_KEY = re.compile(r"ck_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: str
    partner_id: str | None


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: str
    role: str
    partner_id: str | None
    label: str
    created_at_us: int
    revoked_at_us: int | None


def create_key(
    conn: Conn, role: str, partner_id: str | None, label: str, now_us: int
) -> tuple[str, ApiKeyInfo]:
    """Return the key text (to hand over once; it is not kept) and its record."""
    if role not in ROLES:
        raise ValueError(f"role is one of {', '.join(ROLES)}")
    if (role == "partner") != (partner_id is not None):
        raise ValueError("a partner key names its partner; other keys name none")
    if partner_id is not None and get_partner(conn, partner_id) is None:
        raise ValueError(f"no partner {partner_id}")
    if not 0 < len(label) <= 100:
        raise ValueError("label: 1–100 characters")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO coalition_api_key (key_id, secret_sha256, role, partner_id, label,"
        " created_at_us) VALUES (%s, %s, %s, %s, %s, %s)",
        (key_id, _digest(secret), role, partner_id, label, now_us),
    )
    return f"ck_{key_id}_{secret}", ApiKeyInfo(key_id, role, partner_id, label, now_us, None)


def list_keys(conn: Conn) -> list[ApiKeyInfo]:
    rows = conn.execute(
        "SELECT key_id, role, partner_id, label, created_at_us, revoked_at_us"
        " FROM coalition_api_key ORDER BY created_at_us, key_id"
    ).fetchall()
    return [ApiKeyInfo(*row) for row in rows]


def revoke_key(conn: Conn, key_id: str, now_us: int) -> bool:
    """Revoke a key. The API's processes cache key checks; a trigger on the table
    (migration 0008) tells them on channel ``API_KEY_CHANNEL`` when the revocation commits."""
    row = conn.execute(
        "UPDATE coalition_api_key SET revoked_at_us = %s WHERE key_id = %s"
        " AND revoked_at_us IS NULL RETURNING key_id",
        (now_us, key_id),
    ).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the table holds for one key id: enough to check a presented secret."""

    key_id: str
    secret_sha256: bytes
    role: str
    partner_id: str | None
    revoked: bool


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key text, else None."""
    match = _KEY.fullmatch(presented)
    return None if match is None else (match[1], match[2])


def lookup_key(conn: Conn, key_id: str) -> KeyRecord | None:
    row = conn.execute(
        "SELECT secret_sha256, role, partner_id, revoked_at_us FROM coalition_api_key"
        " WHERE key_id = %s",
        (key_id,),
    ).fetchone()
    if row is None:
        return None
    return KeyRecord(key_id, bytes(row[0]), row[1], row[2], row[3] is not None)


def check_secret(record: KeyRecord | None, secret: str) -> Principal | None:
    """The principal if ``secret`` is the live key's, else None — the same work either way."""
    if record is None or record.revoked:
        hmac.compare_digest(_digest(secret), bytes(32))
        return None
    if not hmac.compare_digest(_digest(secret), record.secret_sha256):
        return None
    return Principal(record.key_id, record.role, record.partner_id)


def authenticate(conn: Conn, presented: str) -> Principal | None:
    """The key's principal, or None (unknown, malformed or revoked — never which)."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    key_id, secret = parsed
    return check_secret(lookup_key(conn, key_id), secret)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
