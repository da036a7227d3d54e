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
        )


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
