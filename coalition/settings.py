"""Settings from the environment, read once. Secrets never come from the database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from coalition.database import var_dir

DEFAULT_LOG_ORIGIN = "ledger.coalition.example"


@dataclass(frozen=True, slots=True)
class Settings:
    log_origin: str
    signing_key_text: str | None  # COALITION_SIGNING_KEY: the key itself (a secret)
    signing_key_file: Path  # COALITION_SIGNING_KEY_FILE, else var/keys/log.skey
    checkpoint_entries_max: int
    checkpoint_seconds_max: float
    development: bool
    # COALITION_TRUSTED_DOCUMENTS: roles (comma-separated) held to graphql/operations
    trusted_documents_roles: frozenset[str] = frozenset()
    # COALITION_WORKERS: processes ``coalition serve`` runs (default: the cores it may use)
    workers: int = 1
    # COALITION_WEBHOOK_KEY (base64 of 32 bytes) or COALITION_WEBHOOK_KEY_FILE: seals
    # webhook signing secrets (coalition/webhook_secrets.py); never in the database
    webhook_key_text: str | None = None
    webhook_key_file: Path | None = None
    # COALITION_WEBHOOK_ALLOW_HOSTS: host names and IP networks (comma-separated) that
    # webhooks may go to despite the address policy (coalition/webhook_urls.py)
    webhook_allow_hosts: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            log_origin=env.get("COALITION_LOG_ORIGIN", DEFAULT_LOG_ORIGIN),
            signing_key_text=env.get("COALITION_SIGNING_KEY") or None,
            signing_key_file=Path(
                env.get("COALITION_SIGNING_KEY_FILE", var_dir() / "keys" / "log.skey")
            ),
            checkpoint_entries_max=int(env.get("COALITION_CHECKPOINT_ENTRIES", "1000")),
            checkpoint_seconds_max=float(env.get("COALITION_CHECKPOINT_SECONDS", "60")),
            development=env.get("COALITION_ENV", "development") == "development",
            trusted_documents_roles=_roles(env.get("COALITION_TRUSTED_DOCUMENTS", "")),
            workers=_workers(env.get("COALITION_WORKERS", "")),
            webhook_key_text=env.get("COALITION_WEBHOOK_KEY") or None,
            webhook_key_file=Path(
                env.get("COALITION_WEBHOOK_KEY_FILE", var_dir() / "keys" / "webhook.key")
            ),
            webhook_allow_hosts=env.get("COALITION_WEBHOOK_ALLOW_HOSTS", ""),
        )


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _workers(text: str) -> int:
    if not text.strip():
        return cores()
    if not text.strip().isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"COALITION_WORKERS is a number of processes, 1–256 (not {text!r})")
    return int(text)


ROLES = ("partner", "auditor", "finance", "operator")


def _roles(text: str) -> frozenset[str]:
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = roles - set(ROLES)
    if unknown:
        raise ValueError(
            f"COALITION_TRUSTED_DOCUMENTS names unknown roles {sorted(unknown)};"
            f" roles are {', '.join(ROLES)}"
        )
    return roles
