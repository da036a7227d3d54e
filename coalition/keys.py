"""The log's signing key: from COALITION_SIGNING_KEY, from a file, or (in development
only) generated once into var/keys/ — never stored in the database or the repository."""

from __future__ import annotations

import sys

from coalition.settings import Settings
from ledger.signed_note import Signer
from ledger.signing_key import (
    SigningKeyError,
    generate_signer_file,
    load_signer_file,
    signer_from_text,
)


def load_signer(settings: Settings) -> Signer:
    if settings.signing_key_text is not None:
        return _named(
            signer_from_text(settings.signing_key_text, source="COALITION_SIGNING_KEY"), settings
        )
    path = settings.signing_key_file
    if not path.exists():
        if not settings.development:
            raise SigningKeyError("missing", f"no signing key at {path}; set COALITION_SIGNING_KEY")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        generate_signer_file(path, settings.log_origin)
        print(f"generated a development signing key at {path}", file=sys.stderr)
    return _named(load_signer_file(path), settings)


def _named(signer: Signer, settings: Settings) -> Signer:
    # The checkpoint origin is the key name (docs/AUDITING.md §4): a mismatch is a setup error.
    if signer.name != settings.log_origin:
        raise SigningKeyError(
            "malformed",
            f"signing key is named {signer.name!r} but the log origin is {settings.log_origin!r}",
        )
    return signer
