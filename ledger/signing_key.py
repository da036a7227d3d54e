"""The log's signing key: loaded from a file or an environment variable, never a database.

The key is the one thing that lets anyone forge checkpoints, so no error here ever
includes the key text (nor chains an exception that might), and a new key file is created
owner-only and never overwrites an existing one — overwriting would silently rotate the
log's identity and orphan every checkpoint already published.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ledger.signed_note import (
    NoteError,
    Signer,
    format_vkey,
    generate_signer,
    parse_signer_key,
)

# A signer key is under 200 characters; refuse to slurp a mistaken large file.
_MAX_KEY_FILE = 4096


class SigningKeyError(ValueError):
    """The signing key is missing, unreadable or garbled; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def signer_from_text(text: str, *, source: str = "signing key") -> Signer:
    """Parse ``PRIVATE+KEY+...``; surrounding whitespace (a final newline) is ignored."""
    stripped = text.strip()
    if not stripped:
        raise SigningKeyError("missing", f"{source} is empty")
    try:
        return parse_signer_key(stripped)
    except NoteError as exc:
        # Only the code: the parser's messages are safe, but keep the rule simple here.
        raise SigningKeyError(
            "malformed", f"{source} is not a valid signer key ({exc.code})"
        ) from None


def load_signer_file(path: str | os.PathLike[str]) -> Signer:
    source = f"key file {os.fspath(path)}"
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise SigningKeyError("missing", f"{source} does not exist") from None
    except OSError as exc:
        raise SigningKeyError("unreadable", f"{source}: {exc.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        raise SigningKeyError("malformed", f"{source} is too large to be a signer key")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SigningKeyError("malformed", f"{source} is not UTF-8 text") from None
    return signer_from_text(text, source=source)


def load_signer_env(variable: str, environ: Mapping[str, str] | None = None) -> Signer:
    """The signer key held in environment variable ``variable``."""
    env = os.environ if environ is None else environ
    value = env.get(variable)
    if value is None:
        raise SigningKeyError("missing", f"environment variable {variable} is not set")
    return signer_from_text(value, source=f"environment variable {variable}")


def generate_signer_file(path: str | os.PathLike[str], name: str) -> str:
    """Write a new signer key for ``name`` to ``path`` (mode 0600); return its vkey."""
    skey, vkey = generate_signer(name)
    target = Path(path)
    try:
        # O_EXCL also refuses a symlink planted at the path.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError("exists", f"{target} already exists; refusing to overwrite") from None
    except OSError as exc:
        raise SigningKeyError("unwritable", f"{target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)  # the umask could only narrow it; make it exact
            f.write(skey + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return vkey


def vkey_of(signer: Signer) -> str:
    """The public verifier key text to publish for ``signer``."""
    return format_vkey(signer.verifier())
