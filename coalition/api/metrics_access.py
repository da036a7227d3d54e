"""Who may read ``/metrics``: a key of role ``metrics`` (made for the scraper, good for
nothing else) or ``operator``. No key: 401; another role: 403; an expired key: 401
``API_KEY_EXPIRED``.

The metrics matter most when the database is down (``database_up`` says so), and then a
key cannot be looked up. So a key this process let read the metrics within the last
``OUTAGE_GRACE_SECONDS`` is let in again while the database is unreachable — a key
cannot be revoked meanwhile, the revocation being a write to that database — unless its
recorded expiry has passed.
"""

from __future__ import annotations

import hashlib
import time

from starlette.responses import JSONResponse, Response

from coalition.api.db import Database
from coalition.api.errors import DatabaseUnavailable
from coalition.api.keycache import ApiKeyCache
from coalition.api_keys import KeyExpired
from ledger.timefmt import format_time_us, now_us

METRICS_ROLES = ("metrics", "operator")
OUTAGE_GRACE_SECONDS = 300.0
REMEMBERED_MAX = 64


def _refusal(
    message: str, code: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=headers)


def expired_refusal(expired: KeyExpired) -> Response:
    message = (
        f"API key {expired.key_id} expired at {format_time_us(expired.expired_at_us)};"
        " ask an operator for a new one"
    )
    return _refusal(message, "API_KEY_EXPIRED", 401, {"WWW-Authenticate": "Bearer"})


class MetricsAccess:
    def __init__(self, api_keys: ApiKeyCache, database: Database) -> None:
        self._api_keys = api_keys
        self._database = database
        # sha256 of a presented key → (monotonic time it was let in, its expiry or None)
        self._let_in: dict[bytes, tuple[float, int | None]] = {}

    async def refusal(self, authorization: str) -> Response | None:
        """None to answer, else the refusal to send."""
        if not authorization.lower().startswith("bearer "):
            return _refusal(
                "send a metrics (or operator) key as 'Authorization: Bearer <key>'",
                "UNAUTHENTICATED",
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        presented = authorization[7:].strip()
        digest = hashlib.sha256(presented.encode()).digest()
        try:
            principal = await self._api_keys.authenticate(self._database, presented)
        except DatabaseUnavailable:
            if self._remembered(digest):
                return None
            raise
        if isinstance(principal, KeyExpired):
            return expired_refusal(principal)
        if principal is None:
            return _refusal(
                "send a valid metrics (or operator) key",
                "UNAUTHENTICATED",
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        if principal.role not in METRICS_ROLES:
            return _refusal("the metrics are for a metrics or operator key", "FORBIDDEN", 403)
        if len(self._let_in) >= REMEMBERED_MAX:
            self._let_in.clear()
        self._let_in[digest] = (time.monotonic(), principal.expires_at_us)
        return None

    def _remembered(self, digest: bytes) -> bool:
        found = self._let_in.get(digest)
        if found is None:
            return False
        let_in_at, expiry = found
        fresh = time.monotonic() - let_in_at < OUTAGE_GRACE_SECONDS
        return fresh and (expiry is None or expiry > now_us())
