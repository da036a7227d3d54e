"""The webhook signature scheme (normative text: docs/WEBHOOKS.md).

``Coalition-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>``
where ``secret`` is the subscription's secret as shown (its UTF-8 bytes) and ``body``
the request body's exact bytes.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Coalition-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"
