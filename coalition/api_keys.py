"""API keys: create (the secret is shown once, optionally with an expiry), list without
secrets, revoke, and authenticate a presented key — against a stored SHA-256 of its
secret only.

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

ROLES = ("partner", "auditor", "finance", "operator", "metrics")
API_KEY_CHANNEL = "coalition_api_key"  # NOTIFY payload: the key id changed ("*": all)
_KEY = re.compile(r"ck_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: str
    partner_id: str | None
    # A partner key's partner is suspended (as read when the key was checked): it may read
    # its own records and write nothing (docs/DESIGN.md, "Suspended partners").
    suspended: bool = False
    expires_at_us: int | None = None


@dataclass(frozen=True, slots=True)
class KeyExpired:
    """The presented key is the right secret of a key past its expiry: its holder is told
    so (they hold the secret, so this says nothing they could not know)."""

    key_id: str
    expired_at_us: int


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: str
    role: str
    partner_id: str | None
    label: str
    created_at_us: int
    revoked_at_us: int | None
    expires_at_us: int | None = None

    def state(self, now_us: int) -> str:
        if self.revoked_at_us is not None:
            return "revoked"
        if self.expires_at_us is not None and self.expires_at_us <= now_us:
            return "expired"
        return "active"


def create_key(
    conn: Conn,
    role: str,
    partner_id: str | None,
    label: str,
    now_us: int,
    expires_at_us: int | None = None,
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
    if expires_at_us is not None and expires_at_us <= now_us:
        raise ValueError("a key's expiry is in the future")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO coalition_api_key (key_id, secret_sha256, role, partner_id, label,"
        " created_at_us, expires_at_us) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (key_id, _digest(secret), role, partner_id, label, now_us, expires_at_us),
    )
    info = ApiKeyInfo(key_id, role, partner_id, label, now_us, None, expires_at_us)
    return f"ck_{key_id}_{secret}", info


def list_keys(conn: Conn) -> list[ApiKeyInfo]:
    rows = conn.execute(
        "SELECT key_id, role, partner_id, label, created_at_us, revoked_at_us, expires_at_us"
        " FROM coalition_api_key ORDER BY created_at_us, key_id"
    ).fetchall()
    return [ApiKeyInfo(*row) for row in rows]


KEYS_PAGE_MAX = 100


def keys_page(
    conn: Conn, after: tuple[int, str] | None, limit: int = 50
) -> tuple[list[ApiKeyInfo], bool]:
    """Keys in creation order after ``after`` (created at, key id), at most ``limit``, and
    whether more follow: the console's list, bounded however many keys were made."""
    limit = max(1, min(limit, KEYS_PAGE_MAX))
    created_us, key_id = after if after is not None else (-1, "")
    rows = conn.execute(
        "SELECT key_id, role, partner_id, label, created_at_us, revoked_at_us, expires_at_us"
        " FROM coalition_api_key WHERE (created_at_us, key_id) > (%s, %s)"
        " ORDER BY created_at_us, key_id LIMIT %s",
        (created_us, key_id, limit + 1),
    ).fetchall()
    return [ApiKeyInfo(*row) for row in rows[:limit]], len(rows) > limit


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
    expires_at_us: int | None = None
    partner_suspended: bool = False  # the partner's status as read with the row


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key text, else None."""
    match = _KEY.fullmatch(presented)
    return None if match is None else (match[1], match[2])


def lookup_key(conn: Conn, key_id: str) -> KeyRecord | None:
    row = conn.execute(
        "SELECT k.secret_sha256, k.role, k.partner_id, k.revoked_at_us, k.expires_at_us,"
        " coalesce(p.status <> 'active', false) FROM coalition_api_key k"
        " LEFT JOIN coalition_partner p ON p.partner_id = k.partner_id WHERE k.key_id = %s",
        (key_id,),
    ).fetchone()
    if row is None:
        return None
    return KeyRecord(key_id, bytes(row[0]), row[1], row[2], row[3] is not None, row[4], row[5])


def check_secret(
    record: KeyRecord | None, secret: str, now_us: int
) -> Principal | KeyExpired | None:
    """The principal if ``secret`` is the live key's, ``KeyExpired`` if it is the secret of
    a key past its expiry at ``now_us``, else None — the same work either way."""
    if record is None or record.revoked:
        hmac.compare_digest(_digest(secret), bytes(32))
        return None
    if not hmac.compare_digest(_digest(secret), record.secret_sha256):
        return None
    if record.expires_at_us is not None and record.expires_at_us <= now_us:
        return KeyExpired(record.key_id, record.expires_at_us)
    return Principal(
        record.key_id,
        record.role,
        record.partner_id,
        record.partner_suspended,
        record.expires_at_us,
    )


def authenticate(conn: Conn, presented: str, now_us: int) -> Principal | KeyExpired | None:
    """The key's principal, ``KeyExpired``, or None (unknown, malformed, revoked or a wrong
    secret — never which)."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    key_id, secret = parsed
    return check_secret(lookup_key(conn, key_id), secret, now_us)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
