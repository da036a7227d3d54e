"""Webhook signing secrets: made here, shown once, stored sealed.

A secret signs (HMAC-SHA256) every delivery, so the server needs it back in clear at
each delivery: a hash for verification (as API keys are kept) cannot sign. So it is
sealed with AES-256-GCM under the webhook key, which comes from settings
(``COALITION_WEBHOOK_KEY``, base64 of 32 bytes, or ``COALITION_WEBHOOK_KEY_FILE``; in
development only, generated once into var/keys/) and never from the database. The
subscription id is the associated data: a sealed secret copied onto another
subscription does not open. ``key_id`` (the key's SHA-256, first 16 hex digits) is
stored beside it, so a deployment started with the wrong key says so.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coalition.settings import Settings

SECRET_PREFIX = "whsec_"
_NONCE_BYTES = 12


class WebhookKeyError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class WebhookKey:
    key: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.key).hexdigest()[:16]

    def seal(self, subscription_id: str, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, secret.encode(), subscription_id.encode())

    def open(self, subscription_id: str, sealed: bytes, key_id: str) -> str:
        if key_id != self.key_id:
            raise WebhookKeyError(
                f"subscription {subscription_id} was sealed with webhook key {key_id},"
                f" this process has {self.key_id}"
            )
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return AESGCM(self.key).decrypt(nonce, body, subscription_id.encode()).decode()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def load_webhook_key(settings: Settings) -> WebhookKey:
    if settings.webhook_key_text is not None:
        return _parsed(settings.webhook_key_text, "COALITION_WEBHOOK_KEY")
    path = settings.webhook_key_file
    if path is None:
        raise WebhookKeyError("no webhook key: set COALITION_WEBHOOK_KEY")
    if not path.exists():
        if not settings.development:
            raise WebhookKeyError(f"no webhook key at {path}; set COALITION_WEBHOOK_KEY")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        print(f"generated a development webhook key at {path}", file=sys.stderr)
    return _parsed(path.read_text(), str(path))


def _parsed(text: str, source: str) -> WebhookKey:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise WebhookKeyError(f"{source}: the webhook key is base64 of 32 bytes")
    return WebhookKey(key)
